"""`contend race`: the headline lesson on one screen.

For each model: start a server, run the `incr` and `bank` scenarios with
`sync off` and the race window open, then with `sync lock`, and show one
table of what was lost. The unguarded rows lose updates and create or
destroy money in every model, the async ones too; the locked rows are exact.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from rich.console import Console
from rich.table import Table

from contend.client.load import run_load
from contend.client.loadgen import Plan
from contend.client.scenarios import Bank, Incr
from contend.client.servers import start_contend


@dataclass
class RaceRow:
    model: str
    sync: str
    ops: int
    lost_updates: int
    money_delta: int
    holds: bool


def race_model(model: str, sync: str, clients: int, requests: int, window_us: int,
               driver: str = "threads") -> RaceRow:
    with start_contend(model, "--sync", sync, "--race-window-us", str(window_us)) as server:
        incr = run_load(Plan(server.host, server.port, Incr(clients), clients, requests), driver)
        bank = run_load(Plan(server.host, server.port, Bank(clients), clients, requests), driver)
    lost = incr.invariant["expected"] - incr.invariant["observed"]
    delta = bank.invariant["observed"] - bank.invariant["expected"]
    return RaceRow(model, sync, incr.ops + bank.ops, lost, delta,
                   incr.invariant["holds"] and bank.invariant["holds"])


def add_race_arguments(parser) -> None:
    from contend.server import MODEL_MODULES
    parser.add_argument("--models", default=",".join(MODEL_MODULES),
                        help="comma-separated models (default: every model built)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=25, help="requests per client per scenario")
    parser.add_argument("--race-window-us", dest="race_window_us", type=int, default=2000)
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")


def render(rows: list[RaceRow], console: Console, window_us: int) -> None:
    table = Table(title=f"contend race: incr and bank, race window {window_us} us")
    for column in ("model", "sync", "ops", "lost updates", "money delta", "verdict"):
        left = column in ("model", "sync", "verdict")
        table.add_column(column, justify="left" if left else "right")
    for row in rows:
        verdict = "[green]exact[/]" if row.holds else "[red]races[/]"
        table.add_row(row.model, row.sync, f"{row.ops:,}", str(row.lost_updates),
                      f"{row.money_delta:+d}", verdict)
    console.print(table)


def main(options) -> int:
    console = Console()
    rows = []
    models = [m for m in options.models.split(",") if m]
    with console.status("racing...") as status:
        for model in models:
            for sync in ("off", "lock"):
                status.update(f"{model}, sync {sync}: {options.clients} clients...")
                try:
                    rows.append(race_model(model, sync, options.clients, options.requests,
                                           options.race_window_us))
                except (OSError, RuntimeError) as problem:
                    Console(stderr=True).print(f"contend race: {model}: {problem}")
                    return 2
    render(rows, console, options.race_window_us)
    console.print("sync off: read, wait out the window, write over whatever changed meanwhile. "
                  "sync lock: the same steps under a lock, so nothing is lost.")
    if options.json:
        with open(options.json, "w") as out:
            json.dump([asdict(row) for row in rows], out, indent=2)
    # The lesson stands when every locked run is exact.
    return 0 if all(row.holds for row in rows if row.sync == "lock") else 1

