"""`contend demo`: the tour, with nothing but Python, in well under a minute.

It starts every model, shows the race table (sync off loses updates and
money, sync lock is exact), then a small comparison of the models under the
same load, and ends by saying what to try next.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from contend.client.load import run_load
from contend.client.loadgen import Plan
from contend.client.race import race_model
from contend.client.race import render as render_race
from contend.client.scenarios import SCENARIOS
from contend.client.servers import start_contend

COMPARISON = ("ping", "incr", "sleep", "work")


def compare(models: list[str], clients: int, seconds: float, console: Console) -> Table:
    table = Table(title=f"The same load on each model: {clients} clients, {seconds:g} s a cell, "
                        "ops/s (p99 ms)")
    table.add_column("model")
    for scenario in COMPARISON:
        table.add_column(scenario, justify="right")
    with console.status("comparing...") as status:
        for model in models:
            cells = []
            with start_contend(model) as server:
                for scenario in COMPARISON:
                    status.update(f"{model}: {scenario} with {clients} clients...")
                    plan = Plan(server.host, server.port, SCENARIOS[scenario](clients), clients,
                                duration=seconds)
                    result = run_load(plan)
                    cells.append(f"{result.ops_per_sec:,.0f} ({result.latency_ms['p99']:.1f})")
            table.add_row(model, *cells)
    return table


def run_demo(options) -> int:
    from contend.server import MODEL_MODULES
    console = Console()
    models = list(MODEL_MODULES)
    console.print(f"[bold]contend demo[/]: {len(models)} server models ({', '.join(models)}), "
                  f"{options.clients} clients each, race window {options.race_window_us} us\n")
    rows = []
    with console.status("racing...") as status:
        for model in models:
            for sync in ("off", "lock"):
                status.update(f"{model}, sync {sync}: {options.clients} clients...")
                rows.append(race_model(model, sync, options.clients, options.requests,
                                       options.race_window_us))
    render_race(rows, console, options.race_window_us)
    console.print(
        "With [bold]sync off[/] each INCR reads the counter, waits out the race window, then "
        "writes its own result over whatever the others wrote meanwhile; transfers lose and "
        "make money the same way. With [bold]sync lock[/] the read and the write happen under "
        "one lock: exact, in every model, the async ones too.\n")
    console.print(compare(models, clients=10, seconds=options.seconds, console=console))
    console.print(
        "WORK is pure-Python CPU: threads share one GIL, and the single-threaded models stall "
        "their whole loop on it. SLEEP only waits, and every model overlaps the waiting.\n"
        "\nTry next:\n"
        "  contend serve --sync off --race-window-us 2000        # then, in another terminal:\n"
        "  redis-cli -p 7070 INCR counter\n"
        "  contend load --scenario incr --clients 16 --requests 200\n"
        "  contend race                                         # the race table again\n"
        "  the lab sheets in labs/, one per primitive\n")
    # The lesson holds when every unguarded run lost something and every locked run was exact.
    lesson = all((not row.holds) if row.sync == "off" else row.holds for row in rows)
    return 0 if lesson else 1
