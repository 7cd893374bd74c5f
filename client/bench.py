"""`contend bench`: every model under the same loads, one matrix, a table and charts.

    contend bench                                   # the default matrix, a few minutes
    contend bench --models threads --clients 1,100 --scenarios ping --duration 1

The matrix is servers x client counts x scenarios. Every cell starts its
server fresh (a contend model, or a real redis-server for the scenarios whose
commands are Redis's own: ping and incr), runs `contend load`'s engine
against it, and stops it, so no cell inherits another's threads, keys or
fragmented heap. When redis-benchmark is installed it also measures the ping
and incr cells at the same -c, so the C client's figures sit beside ours.

Results: a table on the terminal, bench.csv, bench.json and bench.md in
--out, and two charts (throughput and p99 against clients, a line per
server) when matplotlib is installed: `pip install '.[charts]'` from the repository.

`--pin` runs each server on CPU 1 and the load client (and redis-benchmark)
on CPU 0, as `python -m contend.client.redis_baseline` does. It is off by default:
the load client is Python too and the processes driver wants both CPUs, and
on a machine that others share, whatever else is pinned there competes for
the same core (docs/benchmarks.md, "Which driver, pinned or not").

`--python PATH`, given once or more, runs the contend servers on those
interpreters (redis-server runs once): the server dimension becomes models x
interpreters, and each cell says whether its server's GIL was on.

    contend bench --models threads --python python3.11 --python python3.13t

Exit status: 0 when every cell ran and every invariant held, 1 when a cell
failed or an invariant broke (the table and files are written all the same),
2 for usage errors.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from contend.client.load import run_load
from contend.client.loadgen import DEFAULT_DRIVER, DRIVERS, Plan
from contend.client.redis_baseline import redis_benchmark
from contend.client.scenarios import SCENARIOS
from contend.client.servers import (
    client_on_cpu,
    find_interpreters,
    on_cpu,
    raise_open_files_limit,
    start_contend,
    start_redis,
    worth_naming,
)

DEFAULT_CLIENTS = "1,10,100,1000"
DEFAULT_SCENARIOS = "ping,incr,pool,work,sleep"
DEFAULT_DURATION = 1.5      # seconds of load per cell: the default matrix takes a few minutes
REDIS = "redis"             # the name of redis-server's row
# Scenarios whose commands are Redis's own, and redis-benchmark's test for each.
REDIS_TESTS = {"ping": "ping_mbulk", "incr": "incr"}
REDIS_BENCHMARK_REQUESTS = 20_000
INSTALL_CHARTS = "pip install '.[charts]' in the repository   (or: pip install matplotlib)"
SERVER_CPU, CLIENT_CPU = 1, 0
BUSY = 1.0   # a one-minute load average above this before the bench: others use the CPUs


@dataclass
class Cell:
    """One server under one load: what `contend load` measured, and what redis-benchmark did."""
    scenario: str
    clients: int
    server: str                  # a contend model, or "redis" for redis-server
    driver: str
    python: str = ""             # the contend server's interpreter, by its label ("3.13t")
    gil: str = ""                # "on" or "off" in that server after the load, as INFO said
    ops: int = 0
    errors: int = 0
    duration_s: float = 0.0      # from the start line to the last reply
    wall_s: float = 0.0          # the whole cell: start the server, connect, load, verdict, stop
    ops_per_sec: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    p999_ms: float = 0.0
    max_ms: float = 0.0
    x_redis: float | None = None  # ops_per_sec over redis-server's, same scenario and clients
    invariant_holds: bool | None = None
    invariant: str = ""
    redis_benchmark_rps: float | None = None
    redis_benchmark_p99_ms: float | None = None
    problem: str = ""            # why the cell (or its redis-benchmark run) failed, if it did

    @property
    def ok(self) -> bool:
        return not self.problem and bool(self.invariant_holds)


# -- the matrix -------------------------------------------------------------------

def plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def client_counts(text: str) -> list[int]:
    try:
        counts = [int(item) for item in comma_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("client counts must be at least 1")
    return sorted(set(counts))


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    from contend.server import MODEL_MODULES
    parser.add_argument("--models", default=",".join(MODEL_MODULES),
                        help="comma-separated models (default: every model built)")
    parser.add_argument("--clients", type=client_counts, default=client_counts(DEFAULT_CLIENTS),
                        help=f"comma-separated client counts (default: {DEFAULT_CLIENTS})")
    parser.add_argument("--scenarios", default=DEFAULT_SCENARIOS,
                        help=f"comma-separated scenarios (default: {DEFAULT_SCENARIOS})")
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--duration", type=float,
                        help=f"seconds of load per cell (default: {DEFAULT_DURATION:g})")
    amount.add_argument("--requests", type=int, help="requests per client per cell, instead")
    parser.add_argument("--driver", choices=sorted(DRIVERS), default=DEFAULT_DRIVER,
                        help=f"how the load client runs its clients (default: {DEFAULT_DRIVER})")
    parser.add_argument("--out", type=Path, default=Path("bench-results"),
                        help="folder for bench.csv, bench.json, bench.md and the charts "
                             "(default: bench-results/)")
    parser.add_argument("--no-redis", dest="redis", action="store_false",
                        help="leave out redis-server and redis-benchmark")
    parser.add_argument("--no-charts", dest="charts", action="store_false",
                        help="write no PNG charts")
    parser.add_argument("--pin", action="store_true",
                        help="run servers on CPU 1, the load client and redis-benchmark on CPU 0")
    parser.add_argument("--python", metavar="PATH", action="append",
                        help="run the contend servers on this interpreter; again for another, "
                             "to compare (--python python3.11 --python python3.13t; default: "
                             "this one)")


def plan_matrix(options) -> list[Cell]:
    """Every cell to run, in order: scenario, then client count, then server (each model on
    each of options.pythons, then redis). Raises ValueError for a model or scenario that
    does not exist."""
    from contend.server import MODEL_MODULES
    models, scenarios = comma_list(options.models), comma_list(options.scenarios)
    unknown = [m for m in models if m not in MODEL_MODULES]
    if unknown or not models:
        raise ValueError(f"unknown model {', '.join(unknown) or '(none)'}; "
                         f"choose from {', '.join(MODEL_MODULES)}")
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown or not scenarios:
        raise ValueError(f"unknown scenario {', '.join(unknown) or '(none)'}; "
                         f"choose from {', '.join(SCENARIOS)}")
    if options.requests is None:
        needy = [s for s in scenarios if SCENARIOS[s].needs_request_count]
        if needy:
            raise ValueError(f"the {', '.join(needy)} scenario needs --requests "
                             "(every client must do the same number of rounds)")
    if (options.requests or 1) < 1 or (options.duration or 1) <= 0:
        raise ValueError("--requests and --duration must be positive")
    cells = []
    for scenario in scenarios:
        with_redis = options.redis_server and scenario in REDIS_TESTS
        for clients in options.clients:
            cells += [Cell(scenario, clients, model, options.driver, python=python)
                      for model in models for python in options.pythons]
            if with_redis:
                cells.append(Cell(scenario, clients, REDIS, options.driver))
    return cells


def server_names(cells: list[Cell]) -> list[str]:
    """Each cell's server as the tables and charts name it: the model, and its Python too
    ("threads 3.13t") when some server ran on another than contend's own."""
    by_python = worth_naming(cell.python for cell in cells)
    return [f"{cell.server} {cell.python}" if by_python and cell.python else cell.server
            for cell in cells]


def run_cell(cell: Cell, options) -> None:
    """Start the cell's server, load it, ask redis-benchmark too where it applies, stop it."""
    began = time.perf_counter()
    server_cpu = on_cpu(SERVER_CPU if options.pin else None)
    try:
        if cell.server == REDIS:
            server = start_redis("--maxclients", "10000", preexec_fn=server_cpu)
        else:
            server = start_contend(cell.server, preexec_fn=server_cpu,
                                   python=options.pythons[cell.python].path)
    except (OSError, RuntimeError) as problem:
        cell.problem = f"server did not start: {problem}"
        return
    with server:
        plan = Plan(server.host, server.port, SCENARIOS[cell.scenario](cell.clients), cell.clients,
                    requests=options.requests,
                    duration=None if options.requests else options.duration or DEFAULT_DURATION)
        try:
            with client_on_cpu(CLIENT_CPU if options.pin else None):
                result = run_load(plan, cell.driver)
        except Exception as problem:   # a crashed server is a finding: record it, go on
            cell.problem = f"load failed: {type(problem).__name__}: {problem}"
            cell.wall_s = round(time.perf_counter() - began, 2)
            return
        cell.ops, cell.errors, cell.duration_s = result.ops, result.errors, result.duration_s
        cell.ops_per_sec = result.ops_per_sec
        for name in ("p50", "p90", "p99", "p999", "max"):
            setattr(cell, f"{name}_ms", round(result.latency_ms[name], 3))
        cell.invariant_holds = result.invariant["holds"]
        cell.invariant = result.invariant["detail"]
        if cell.server != REDIS:
            try:
                cell.gil = server.gil()
            except OSError as problem:
                cell.problem = f"INFO after the load: {problem}"
        if options.redis_benchmark and cell.scenario in REDIS_TESTS:
            # As many requests as ours made (ten a client at least), but no more than
            # REDIS_BENCHMARK_REQUESTS: where it is much slower than ours it would run on.
            requests = max(cell.clients * 10, min(result.ops, REDIS_BENCHMARK_REQUESTS))
            try:
                rows = redis_benchmark(server.host, server.port, requests,
                                       ["-c", str(cell.clients), "-t", REDIS_TESTS[cell.scenario]],
                                       cpu=CLIENT_CPU if options.pin else None, timeout=120)
                cell.redis_benchmark_rps = float(rows[0]["rps"])
                cell.redis_benchmark_p99_ms = float(rows[0]["p99_latency_ms"])
            except (OSError, RuntimeError, subprocess.SubprocessError, LookupError,
                    ValueError) as problem:
                cell.problem = f"redis-benchmark: {problem}"
    cell.wall_s = round(time.perf_counter() - began, 2)


def compare_with_redis(cells: list[Cell]) -> None:
    """x redis: each cell's throughput over redis-server's for the same scenario and clients."""
    redis = {(c.scenario, c.clients): c.ops_per_sec for c in cells
             if c.server == REDIS and not c.problem and c.ops_per_sec}
    for cell in cells:
        base = redis.get((cell.scenario, cell.clients))
        if base and not cell.problem:
            cell.x_redis = round(cell.ops_per_sec / base, 2)


# -- the results ------------------------------------------------------------------

def render(cells: list[Cell], console: Console, title: str) -> None:
    table = Table(title=title)
    has_redis = any(c.x_redis is not None for c in cells)
    has_rb = any(c.redis_benchmark_rps is not None for c in cells)
    by_python = worth_naming(c.python for c in cells)
    which = ["scenario", "clients", "server", *(["python", "gil"] if by_python else [])]
    columns = [*which, "ops/s", *(["x redis"] if has_redis else []),
               "p50 ms", "p99 ms", *(["r-b ops/s", "r-b p99"] if has_rb else []),
               "errors", "invariant"]
    for column in columns:
        left = column in ("scenario", "server", "python", "gil", "invariant")
        table.add_column(column, justify="left" if left else "right", overflow="fold")
    for i, cell in enumerate(cells):
        last_of_scenario = i + 1 == len(cells) or cells[i + 1].scenario != cell.scenario
        row = [cell.scenario, str(cell.clients), cell.server,
               *([cell.python, cell.gil] if by_python else [])]
        if cell.problem and cell.invariant_holds is None:
            row += [""] * (len(columns) - len(which) - 1) + [f"[red]{escape(cell.problem)}[/]"]
            table.add_row(*row, end_section=last_of_scenario)
            continue
        row.append(f"{cell.ops_per_sec:,.0f}")
        if has_redis:
            row.append("" if cell.x_redis is None else f"{cell.x_redis:.2f}")
        row += [f"{cell.p50_ms:.2f}", f"{cell.p99_ms:.2f}"]
        if has_rb:
            row += ["", ""] if cell.redis_benchmark_rps is None else [
                f"{cell.redis_benchmark_rps:,.0f}", f"{cell.redis_benchmark_p99_ms:.2f}"]
        row.append(str(cell.errors))
        verdict = "[green]holds[/]" if cell.invariant_holds else f"[red]{escape(cell.invariant)}[/]"
        if cell.problem:
            verdict += f" [red]({escape(cell.problem)})[/]"
        row.append(verdict)
        table.add_row(*row, end_section=last_of_scenario)
    console.print(table)


def markdown(cells: list[Cell]) -> str:
    """The same table for docs/benchmarks.md."""
    by_python = worth_naming(c.python for c in cells)
    lines = [f"| scenario | clients | server |{' python | gil |' if by_python else ''} ops/s | "
             "x redis | p50 ms | p99 ms | redis-benchmark ops/s | its p99 ms | errors | "
             "invariant |",
             f"|---|---:|---|{'---|---|' if by_python else ''}"
             "---:|---:|---:|---:|---:|---:|---:|---|"]
    for c in cells:
        server = f"{c.server} | {c.python} | {c.gil}" if by_python else c.server
        if c.invariant_holds is None:
            lines.append(f"| {c.scenario} | {c.clients} | {server} | | | | | | | | "
                         f"failed: {c.problem} |")
            continue
        x = "" if c.x_redis is None else f"{c.x_redis:.2f}"
        rb = ("", "") if c.redis_benchmark_rps is None else (
            f"{c.redis_benchmark_rps:,.0f}", f"{c.redis_benchmark_p99_ms:.2f}")
        verdict = "holds" if c.invariant_holds else f"**{c.invariant}**"
        lines.append(f"| {c.scenario} | {c.clients} | {server} | {c.ops_per_sec:,.0f} | {x} | "
                     f"{c.p50_ms:.2f} | {c.p99_ms:.2f} | {rb[0]} | {rb[1]} | {c.errors} | "
                     f"{verdict}{' (' + c.problem + ')' if c.problem else ''} |")
    return "\n".join(lines)


def milliseconds(value: float) -> str:
    """Three significant figures, never an exponent: 0.0753, 3.77, 32.3, 2,060."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def glance_markdown(cells: list[Cell]) -> str:
    """The matrix at a glance: a row per scenario and client count, a column per server,
    each cell "ops/s (p99 ms)"."""
    names = server_names(cells)
    servers = list(dict.fromkeys(names))
    lines = [f"| scenario | clients | {' | '.join(servers)} |",
             f"|---|---:|{'---:|' * len(servers)}"]
    found = {(c.scenario, c.clients, name): c for c, name in zip(cells, names, strict=True)}
    for scenario, clients in dict.fromkeys((c.scenario, c.clients) for c in cells):
        row = []
        for server in servers:
            cell = found.get((scenario, clients, server))
            if cell is None:
                row.append("")
            elif cell.invariant_holds is None:
                row.append("failed")
            else:
                row.append(f"{cell.ops_per_sec:,.0f} ({milliseconds(cell.p99_ms)})")
        lines.append(f"| {scenario} | {clients} | {' | '.join(row)} |")
    return "\n".join(lines)


def write_files(cells: list[Cell], about: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    names = [f.name for f in fields(Cell)]
    with open(out / "bench.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=names)
        writer.writeheader()
        for cell in cells:
            writer.writerow({k: "" if v is None else v for k, v in asdict(cell).items()})
    with open(out / "bench.json", "w") as stream:
        json.dump({"about": about, "cells": [asdict(cell) for cell in cells]}, stream, indent=2)
    (out / "bench.md").write_text(
        f"`{about['command']}`\n\n{about['summary']}\n\n"
        f"ops/s (p99 ms):\n\n{glance_markdown(cells)}\n\nEvery cell:\n\n{markdown(cells)}\n")
    return [out / "bench.csv", out / "bench.json", out / "bench.md"]


# -- the charts -------------------------------------------------------------------

def import_pyplot():
    """matplotlib's pyplot drawing to files (the Agg backend), or None when matplotlib is
    not installed: it is an optional extra, and the table, CSV and JSON need none of it."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot
    return pyplot


CHARTS = {  # file name: (Cell field, y-axis label, title, log y)
    "throughput.png": ("ops_per_sec", "ops/s", "throughput against clients (higher is better)",
                       False),
    "p99.png": ("p99_ms", "p99 latency, ms", "p99 latency against clients (lower is better)",
                True),
}


def plain_number(value: float, _position=None) -> str:
    """Axis labels a person reads at a glance: 0.1, 20, 1.5k, 30k (not 10^-1 or 3e4)."""
    return f"{value / 1000:g}k" if value >= 1000 else f"{value:g}"


def draw_charts(pyplot, cells: list[Cell], about: dict, out: Path) -> list[Path]:
    """One PNG per chart, a panel per scenario, a line per server, clients on a log axis."""
    from matplotlib import ticker
    scenarios = list(dict.fromkeys(c.scenario for c in cells))
    names = server_names(cells)
    servers = list(dict.fromkeys(names))
    palette = pyplot.get_cmap("tab10")
    style = {server: dict(color=palette(i), marker="o") for i, server in
             enumerate(s for s in servers if s != REDIS)}
    style[REDIS] = dict(color="black", marker="s", linestyle="--")
    columns = min(3, len(scenarios))
    rows = math.ceil(len(scenarios) / columns)
    spare = rows * columns > len(scenarios)
    written = []
    for name, (field, label, title, log_y) in CHARTS.items():
        figure, axes = pyplot.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows),
                                       squeeze=False, dpi=80)
        flat = list(axes.flat)
        for panel, scenario in zip(flat, scenarios, strict=False):
            for server in servers:
                points = sorted((c.clients, getattr(c, field))
                                for c, name in zip(cells, names, strict=True)
                                if c.scenario == scenario and name == server
                                and c.invariant_holds is not None and getattr(c, field) > 0)
                if points:
                    panel.plot(*zip(*points, strict=True), label=server, linewidth=1.6,
                               markersize=4,
                               **style[server])
            panel.set_title(scenario, fontsize=11)
            panel.set_xscale("log")
            if log_y:
                panel.set_yscale("log")
            else:
                panel.set_ylim(bottom=0)
            panel.yaxis.set_major_formatter(ticker.FuncFormatter(plain_number))
            panel.set_xticks(sorted({c.clients for c in cells}))
            panel.xaxis.set_major_formatter(ticker.ScalarFormatter())
            panel.xaxis.set_minor_locator(ticker.NullLocator())
            panel.grid(True, which="major", alpha=0.3)
            panel.set_xlabel("clients", fontsize=9)
            panel.set_ylabel(label, fontsize=9)
            panel.tick_params(labelsize=8)
        for panel in flat[len(scenarios):]:
            panel.axis("off")
        handles, labels = flat[0].get_legend_handles_labels()
        for panel in flat[1:len(scenarios)]:   # a server missing from the first panel (redis)
            for handle, text in zip(*panel.get_legend_handles_labels(), strict=True):
                if text not in labels:
                    handles.append(handle)
                    labels.append(text)
        if spare:
            flat[-1].legend(handles, labels, loc="center", title="server", frameon=False)
        else:
            figure.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
        figure.suptitle(f"contend bench: {title}\n{about['summary']}", fontsize=10)
        figure.tight_layout(rect=(0, 0 if spare else 0.05, 1, 1))
        path = out / name
        figure.savefig(path)
        pyplot.close(figure)
        written.append(path)
    return written


# -- the command ------------------------------------------------------------------

def describe(options, cells: list[Cell], limits: tuple[int, int]) -> dict:
    amount = (f"{options.requests} requests a client" if options.requests
              else f"{options.duration or DEFAULT_DURATION:g} s a cell")
    pinned = "servers on CPU 1, load client on CPU 0" if options.pin else "not pinned"
    redis_version = ""
    if any(c.server == REDIS for c in cells):
        version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
        redis_version = f", redis-server {version.stdout.split()[2].removeprefix('v=')}"
    python = f"Python {platform.python_version()}"
    if worth_naming(options.pythons):   # the servers' Pythons are not (only) this one
        python = f"servers on Python {', '.join(options.pythons)}, load client on {python}"
    summary = (f"{python}{redis_version}, {platform.machine()}, "
               f"{os.cpu_count()} CPUs, {amount}, {options.driver} driver, {pinned}")
    return {"summary": summary, "python": platform.python_version(),
            "servers_python": {label: interpreter.path
                               for label, interpreter in options.pythons.items()},
            "machine": platform.machine(),
            "cpus": os.cpu_count(), "driver": options.driver, "duration_s": options.duration,
            "requests_per_client": options.requests, "pinned": options.pin,
            "open_files": limits[0], "load_average_before": os.getloadavg()[0],
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": reproduce(options)}


def reproduce(options) -> str:
    """The command line that runs this same matrix again."""
    words = ["contend bench", "--models", options.models, "--clients",
             ",".join(map(str, options.clients)), "--scenarios", options.scenarios,
             *(["--requests", str(options.requests)] if options.requests
               else ["--duration", f"{options.duration:g}"]), "--driver", options.driver]
    flags = {"--no-redis": not options.redis, "--pin": options.pin}
    words += [flag for flag, on in flags.items() if on]
    for path in options.python or ():
        words += ["--python", path]
    return " ".join(words)


def main(options) -> int:
    # In a file or a pipe nothing needs wrapping at 80 columns: keep table rows whole.
    console, err = Console(), Console(stderr=True)
    if not console.is_terminal:
        console = Console(width=160)
    if not err.is_terminal:
        err = Console(stderr=True, width=160)
    options.duration = None if options.requests else (options.duration or DEFAULT_DURATION)
    options.pin = options.pin and (os.cpu_count() or 1) >= 2
    options.redis_server = options.redis and shutil.which("redis-server") is not None
    options.redis_benchmark = options.redis and shutil.which("redis-benchmark") is not None
    try:
        options.pythons = {python.label: python for python in find_interpreters(options.python)}
        cells = plan_matrix(options)
    except ValueError as problem:
        err.print(f"contend bench: {problem}", markup=False, highlight=False, soft_wrap=True)
        return 2
    pyplot = import_pyplot() if options.charts else None
    if options.charts and pyplot is None:
        err.print(f"contend bench: matplotlib is not installed, so no charts this time; "
                  f"the table, CSV and JSON are written all the same. For charts: {INSTALL_CHARTS}",
                  markup=False)

    # Every client is a socket on both ends: the load client and each server need a
    # descriptor per client, more than the usual soft limit of 1024 at 1000 clients.
    before = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    limits = raise_open_files_limit()
    wanted = max(options.clients) + 64
    if limits[0] != before:
        console.print(f"open files: soft limit raised from {before} to {limits[0]} for "
                      f"{max(options.clients)} clients, in the bench and the servers it starts")
    elif max(options.clients) >= 500:
        console.print(f"open files: soft limit {limits[0]}, enough for {max(options.clients)} "
                      "clients")
    if limits[0] < wanted:
        err.print(f"contend bench: only {limits[0]} open files allowed (the hard limit); "
                  f"{max(options.clients)} clients need about {wanted}: expect connection "
                  "errors, or raise the hard limit (ulimit -Hn, LimitNOFILE)")
    about = describe(options, cells, limits)
    if options.redis and not options.redis_server:
        console.print("redis-server is not installed, so it is no row of the matrix "
                      "(apt-get install redis-server)")
    if options.redis and not options.redis_benchmark:
        console.print("redis-benchmark is not installed, so no figures of its own "
                      "(apt-get install redis-tools)")
    console.print(f"[bold]contend bench[/]: {plural(len(cells), 'cell')}, each on a fresh server; "
                  f"{about['summary']}")

    interrupted = False
    try:
        run_cells(cells, options, console, err)
    except KeyboardInterrupt:
        interrupted = True
        cells = [c for c in cells if c.wall_s or c.problem]
    about["load_average_after"] = os.getloadavg()[0]
    compare_with_redis(cells)
    render(cells, console, f"contend bench: {plural(len(cells), 'cell')}, ops/s and latency"
                           f"{' (interrupted)' if interrupted else ''}")
    written = write_files(cells, about, options.out)
    if pyplot is not None and cells:
        written += draw_charts(pyplot, cells, about, options.out)
    console.print("written: " + ", ".join(str(path) for path in written))
    if any(c.redis_benchmark_rps is not None for c in cells):
        console.print("r-b: redis-benchmark with the same -c against the same fresh server "
                      f"(-t {' and '.join(REDIS_TESTS.values())}), as many requests as ours made "
                      f"(at most {REDIS_BENCHMARK_REQUESTS:,}).")
    if about["load_average_before"] > BUSY:
        console.print(f"[yellow]The machine was busy before the bench began (load average "
                      f"{about['load_average_before']:.1f} on {os.cpu_count()} CPUs): other "
                      "work competed for the CPUs, so run it again when `uptime` shows it idle."
                      "[/]")
    if interrupted:
        return 130
    return 0 if all(cell.ok for cell in cells) else 1


def run_cells(cells: list[Cell], options, console: Console, err: Console) -> None:
    """Each cell in turn, a progress bar over them (a line per cell when not on a terminal)."""
    def label(cell: Cell, server: str) -> str:
        return f"{server} · {cell.scenario} · {plural(cell.clients, 'client')}"

    def result(cell: Cell) -> str:
        if cell.invariant_holds is None:
            return f"failed: {cell.problem}"
        return (f"{cell.ops_per_sec:,.0f} ops/s, p99 {cell.p99_ms:.2f} ms, {cell.errors} errors"
                + (f", {cell.problem}" if cell.problem else ""))

    names = server_names(cells)
    if not console.is_terminal:
        for number, (cell, server) in enumerate(zip(cells, names, strict=True), 1):
            run_cell(cell, options)
            err.print(f"[{number}/{len(cells)}] {label(cell, server)}: {result(cell)}",
                      markup=False, highlight=False)
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("cells"), TimeElapsedColumn(), TextColumn("{task.fields[last]}"),
                  console=console) as bar:
        task = bar.add_task("bench", total=len(cells), last="")
        for cell, server in zip(cells, names, strict=True):
            bar.update(task, description=label(cell, server))
            run_cell(cell, options)
            bar.update(task, advance=1, last=escape(f"last: {result(cell)}"))
        bar.update(task, description="bench done")
