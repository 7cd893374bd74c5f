"""`contend race`: the headline lesson on one screen.

For each model: start a server, run the `incr` and `bank` scenarios with
`sync off` and the race window open, then with `sync lock`, and show one
table of what was lost. The unguarded rows lose updates and create or
destroy money in every model, the async ones too; the locked rows are exact.

`--python PATH`, given once or more, runs the servers on those interpreters:
a row per model, interpreter and sync, each saying whether its GIL was on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from rich.console import Console
from rich.table import Table

from contend.client.load import json_path_problem, run_load
from contend.client.loadgen import Plan
from contend.client.scenarios import Bank, Incr
from contend.client.servers import (
    Interpreter,
    find_interpreters,
    start_contend,
    this_interpreter,
    worth_naming,
)
from contend.shared.config import LOOPS, MODEL_NAMES, at_least


@dataclass
class RaceRow:
    model: str
    python: str     # the server's interpreter, by its label: "3.11", "3.13t"
    gil: str        # "on" or "off" in the server after the run, as its INFO said
    sync: str
    ops: int
    lost_updates: int
    money_delta: int
    holds: bool


def race_model(model: str, sync: str, clients: int, requests: int, window_us: int,
               driver: str = "threads", python: Interpreter | None = None) -> RaceRow:
    python = python or this_interpreter()
    with start_contend(model, "--sync", sync, "--race-window-us", str(window_us),
                       python=python.path) as server:
        incr = run_load(Plan(server.host, server.port, Incr(clients), clients, requests), driver)
        bank = run_load(Plan(server.host, server.port, Bank(clients), clients, requests), driver)
        gil = server.gil()
    lost = incr.invariant["expected"] - incr.invariant["observed"]
    delta = bank.invariant["observed"] - bank.invariant["expected"]
    return RaceRow(model=model, python=python.label, gil=gil, sync=sync,
                   ops=incr.ops + bank.ops, lost_updates=lost, money_delta=delta,
                   holds=incr.invariant["holds"] and bank.invariant["holds"])


def add_race_arguments(parser) -> None:
    from contend.server import MODEL_MODULES
    parser.add_argument("--models", default=",".join(MODEL_MODULES),
                        help="comma-separated models (default: every model built)")
    parser.add_argument("--clients", type=at_least(1), default=16)
    parser.add_argument("--requests", type=at_least(1), default=25,
                        help="requests per client per scenario")
    parser.add_argument("--race-window-us", dest="race_window_us", type=at_least(0),
                        default=2000)
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.add_argument("--python", metavar="PATH", action="append",
                        help="run the servers on this interpreter; again for another, to compare "
                             "(--python python3.11 --python python3.13t; default: this one)")


def unknown_models(models: list[str]) -> list[str]:
    """The names that are no model: `MODEL` or `MODEL+LOOP` (asyncio+uvloop)."""
    def known(name: str) -> bool:
        model, plus, loop = name.partition("+")
        return model in MODEL_NAMES and (not plus or loop in LOOPS)
    return [name for name in models if not known(name)]


def render(rows: list[RaceRow], console: Console, window_us: int) -> None:
    table = Table(title=f"contend race: incr and bank, race window {window_us} us")
    by_python = worth_naming(row.python for row in rows)
    for column in ("model", *(("python", "gil") if by_python else ()), "sync", "ops",
                   "lost updates", "money delta", "verdict"):
        left = column in ("model", "python", "gil", "sync", "verdict")
        table.add_column(column, justify="left" if left else "right",
                         overflow="fold" if column == "python" else "ellipsis")
    for row in rows:
        verdict = "[green]exact[/]" if row.holds else "[red]races[/]"
        table.add_row(row.model, *((row.python, row.gil) if by_python else ()), row.sync,
                      f"{row.ops:,}", str(row.lost_updates), f"{row.money_delta:+d}", verdict)
    console.print(table)


def main(options) -> int:
    console, err = Console(), Console(stderr=True)

    def fail(problem: str, status: int) -> int:
        err.print(f"contend race: {problem}", markup=False, highlight=False, soft_wrap=True)
        return status

    models = [m for m in options.models.split(",") if m]
    unknown = unknown_models(models)
    if unknown or not models:
        return fail(f"no model named {', '.join(unknown) or '(none)'}; the models: "
                    f"{', '.join(MODEL_NAMES)} (asyncio+uvloop: asyncio on uvloop)", 2)
    problem = json_path_problem(options.json)
    if problem:
        return fail(problem, 2)
    try:
        pythons = find_interpreters(options.python)
    except ValueError as problem:
        return fail(str(problem), 2)
    by_python = worth_naming(python.label for python in pythons)
    rows = []
    with console.status("racing...") as status:
        for model in models:
            for python in pythons:
                server = f"{model} on {python.label}" if by_python else model
                for sync in ("off", "lock"):
                    status.update(f"{server}, sync {sync}: {options.clients} clients...")
                    try:
                        rows.append(race_model(model, sync, options.clients, options.requests,
                                               options.race_window_us, python=python))
                    except (OSError, RuntimeError) as problem:
                        # A server that would not start (RuntimeError: its last words),
                        # or one that stopped answering.
                        return fail(f"{server}: {problem}", 3)
    render(rows, console, options.race_window_us)
    console.print("sync off: read, wait out the window, write over whatever changed meanwhile. "
                  "sync lock: the same steps under a lock, so nothing is lost.")
    gil_back_on = sorted({row.python for row in rows if row.gil == "on"}
                         & {python.label for python in pythons if python.free_threaded})
    if gil_back_on:
        console.print(f"{', '.join(gil_back_on)}: a free-threaded build, yet the servers' GIL "
                      "was on: PYTHON_GIL=1, or a C extension they imported that is not "
                      "marked safe without it turned it back on.")
    if options.json:
        with open(options.json, "w") as out:
            json.dump([asdict(row) for row in rows], out, indent=2)
    # The lesson stands when every locked run is exact.
    return 0 if all(row.holds for row in rows if row.sync == "lock") else 1

