"""`contend load`: many clients against one server, a latency table and a verdict.

    contend load --target 127.0.0.1:7070 --scenario incr --clients 16 --requests 200

Exit status: 0 when the run completed and its invariant held, 1 when it
completed and the invariant broke, 2 for a usage error, 3 when the server cannot
be reached or refuses us (NOAUTH: it wants --password), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

from hdrh.histogram import HdrHistogram
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from contend.client.loadgen import (
    DEFAULT_DRIVER,
    DRIVERS,
    Plan,
    connect,
    new_histogram,
    shared_progress,
)
from contend.client.scenarios import SCENARIOS
from contend.shared.resp import ReplyError

PERCENTILES = {"p50": 50, "p90": 90, "p99": 99, "p999": 99.9}
# Past this share of the CPU the client could use, it was the bottleneck: a faster
# server would not have made the figures better.
SATURATED = 0.9


@dataclass
class LoadResult:
    scenario: str
    clients: int
    driver: str
    ops: int
    errors: int
    errors_by_kind: dict
    duration_s: float
    ops_per_sec: float
    latency_ms: dict
    invariant: dict
    figures: dict = field(default_factory=dict)   # the scenario's own (cas: retries)
    client_cpu: dict = field(default_factory=dict)   # see client_cpu()

    def as_dict(self) -> dict:
        return asdict(self)


def parse_target(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", type=parse_target, default=("127.0.0.1", 7070),
                        metavar="HOST:PORT", help="the server (default: 127.0.0.1:7070)")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="ping")
    parser.add_argument("--clients", type=int, default=10, help="concurrent clients (default: 10)")
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--requests", type=int, help="requests per client")
    amount.add_argument("--duration", type=float, help="seconds to run")
    parser.add_argument("--driver", choices=sorted(DRIVERS), default=DEFAULT_DRIVER,
                        help=f"how the clients run (default: {DEFAULT_DRIVER})")
    parser.add_argument("--workers", type=int,
                        help="worker processes of the processes and selectors drivers "
                             "(default: one per CPU this process may use)")
    parser.add_argument("--pipeline", type=int, default=1, help="commands in flight per client")
    parser.add_argument("--rate", type=float,
                        help="total requests per second (default: as fast as replies come)")
    parser.add_argument("--password", help="AUTH with this password first")
    parser.add_argument("--prefix", default="contend",
                        help="key prefix, so several load runs can share one server "
                             "(default: contend)")
    parser.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    # Declared here, run by client/locust_load.py: importing Locust patches the standard
    # library for gevent, which the other drivers must never get.
    spread = parser.add_argument_group(
        "across processes and machines, on Locust (pip install 'contend[locust]')")
    role = spread.add_mutually_exclusive_group()
    role.add_argument("--locust-master", action="store_true",
                      help="run the clients on Locust workers: wait for --expect-workers, "
                           "spread --clients over them, merge, judge here")
    role.add_argument("--locust-worker", action="store_true",
                      help="be one of those workers: run the clients the master hands this "
                           "process (the master decides everything else)")
    spread.add_argument("--locust-address", type=parse_target, default=("127.0.0.1", 5557),
                        metavar="HOST:PORT",
                        help="where the master listens for workers (0.0.0.0:5557 takes them "
                             "from other machines) or where a worker finds it "
                             "(default: 127.0.0.1:5557)")
    spread.add_argument("--expect-workers", type=int, default=1,
                        help="workers the master waits for before it starts (default: 1)")


def merged_latency(histograms: list[str]) -> dict:
    total = new_histogram()
    for encoded in histograms:
        if encoded:
            total.add(HdrHistogram.decode(encoded.encode()))
    if total.get_total_count() == 0:
        return {name: 0.0 for name in [*PERCENTILES, "max"]}
    latency = {name: total.get_value_at_percentile(p) / 1000 for name, p in PERCENTILES.items()}
    latency["max"] = total.get_max_value() / 1000
    return latency


def client_cpu(cpu_s: float, wall_s: float, ceiling: int, wait_s: float | None = None) -> dict:
    """How hard the load client itself worked, in CPUs kept busy on average over the run.

    `cores` is what it used (its CPU seconds over the run's wall time). `waiting`
    is how many more it was ready to use but waited for, other work having them
    (Linux's run-queue time, summed over its threads, so a crowd of threads
    waking together counts every one; None where the system does not say): a
    client starved of CPU looks idle by its CPU time alone. `ceiling` is how many
    it can use at all (one per interpreter with a GIL), `share` the first two over
    the third, and `saturated` says the client, not the server, set the pace.
    """
    cores = cpu_s / wall_s if wall_s > 0 else 0.0
    waiting = wait_s / wall_s if wall_s > 0 and wait_s is not None else None
    share = round((cores + (waiting or 0.0)) / ceiling, 2)   # rounded first: the JSON agrees
    return {"cores": round(cores, 2), "waiting": None if waiting is None else round(waiting, 2),
            "ceiling": ceiling, "share": share, "saturated": share >= SATURATED}


def run_load(plan: Plan, driver: str = DEFAULT_DRIVER, show_progress: bool = False) -> LoadResult:
    """Set up, run every client from one start line, merge, and judge. Raises OSError
    (or ConnectionError) when the server cannot be reached."""
    scenario = plan.scenario
    with connect(plan) as admin:
        # A server that wants a password answers NOAUTH to everything: say so once, here,
        # rather than let the scenario trip over an error where it expected a value.
        answer = admin.call("PING")
        if isinstance(answer, ReplyError):
            raise ConnectionError(answer.text)
        scenario.setup(admin)
    progress = shared_progress(driver, plan.clients)
    indices = list(range(plan.clients))
    with _ProgressBar(progress, plan, enabled=show_progress):
        ran = DRIVERS[driver](plan, indices, progress)
    outcomes = ran.outcomes
    # From the first client's start to the last reply: connecting and setting up are not
    # the load, and a late starter must not make the run look shorter than it was.
    took = max(o.ended for o in outcomes) - min(o.started for o in outcomes)
    ops = sum(o.ops for o in outcomes)
    errors = Counter()
    for outcome in outcomes:
        errors.update(outcome.errors)
    tallies = [o.tally for o in outcomes]
    with connect(plan) as admin:
        invariant = scenario.verdict(admin, tallies, ops, sum(errors.values()))
    return LoadResult(scenario.name, plan.clients, driver, ops, sum(errors.values()), dict(errors),
                      round(took, 4), round(ops / took, 1) if took else 0.0,
                      merged_latency([o.histogram for o in outcomes]), invariant.as_dict(),
                      scenario.figures(tallies, ops),
                      client_cpu(ran.cpu_s, took, ran.ceiling, ran.wait_s))


class _ProgressBar:
    """A live bar (ops/s, errors, elapsed) on a terminal; nothing otherwise."""

    def __init__(self, progress, plan: Plan, enabled: bool):
        self.counts, self.plan = progress, plan
        self.enabled = enabled and Console().is_terminal
        self.done = threading.Event()

    def __enter__(self):
        if self.enabled:
            self.thread = threading.Thread(target=self._show, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        if self.enabled:
            self.thread.join()

    def _show(self) -> None:
        clients = self.plan.clients
        total = (self.plan.requests or 0) * clients or None
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                      TextColumn("{task.fields[done]:>9,} requests  {task.fields[rate]:>9,.0f}/s  "
                                 "{task.fields[errors]:,} errors"),
                      TimeElapsedColumn(), transient=True) as bar:
            task = bar.add_task(f"{self.plan.scenario.name} x {clients}",
                                total=total or self.plan.duration, done=0, rate=0, errors=0)
            began, last, last_at = time.perf_counter(), 0, time.perf_counter()
            while not self.done.wait(0.2):
                counts = self.counts[:]
                done, errors = sum(counts[:clients]), sum(counts[clients:])
                now = time.perf_counter()
                rate, last, last_at = (done - last) / (now - last_at), done, now
                bar.update(task, completed=done if total else now - began, done=done,
                           rate=rate, errors=errors)


def render(result: LoadResult, console: Console) -> None:
    table = Table(title=f"contend load: {result.scenario}, {result.clients} clients, "
                        f"{result.driver} driver")
    figures = [name.replace("_per_", "/") for name in result.figures]   # retries_per_op: retries/op
    for column in ("ops", "ops/s", *figures, "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms",
                   "errors"):
        table.add_column(column, justify="right")
    latency = result.latency_ms
    errors = ", ".join(f"{kind} {n}" for kind, n in sorted(result.errors_by_kind.items())) or "0"
    table.add_row(f"{result.ops:,}", f"{result.ops_per_sec:,.0f}",
                  *(f"{value:,.2f}" if isinstance(value, float) else f"{value:,}"
                    for value in result.figures.values()),
                  *(f"{latency[k]:.3f}" for k in ("p50", "p90", "p99", "p999", "max")), errors)
    console.print(table)
    console.print(client_cpu_line(result.client_cpu), highlight=False)
    invariant = result.invariant
    mark = "[green]holds[/]" if invariant["holds"] else "[red]BROKEN[/]"
    console.print(f"invariant {mark}: {invariant['detail']} "
                  f"(expected {invariant['expected']}, observed {invariant['observed']})")


def client_cpu_line(cpu: dict) -> str:
    """What the client's own CPU says about the figures above it."""
    waited = f" + {cpu['waiting']:.2f} waited for" if cpu["waiting"] else ""
    line = (f"client CPUs: {cpu['cores']:.2f} used{waited}, of {cpu['ceiling']} it can use "
            f"({cpu['share']:.0%})")
    if not cpu["saturated"]:
        return f"[dim]{line}[/]"
    return (f"[bold yellow]the client was the bottleneck[/]: {line}; these figures measure "
            "the client, not the server")


def json_path_problem(path: str | None) -> str | None:
    """Why --json PATH could not be written, said before the run rather than after it."""
    if path is None:
        return None
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"--json {path}: no folder {folder}"
    if os.path.isdir(path):
        return f"--json {path}: a folder, not a file"
    if not os.access(folder, os.W_OK):
        return f"--json {path}: cannot write in {folder}"
    return None


def plan_from_options(options) -> Plan:
    scenario_class = SCENARIOS[options.scenario]
    if options.clients < 1 or options.pipeline < 1:
        raise ValueError("--clients and --pipeline must be at least 1")
    if options.workers is not None and options.workers < 1:
        raise ValueError("--workers must be at least 1")
    if options.rate is not None and options.rate <= 0:
        raise ValueError("--rate must be positive")
    if options.requests is None and options.duration is None:
        options.requests = 100
    if scenario_class.conversational and options.pipeline > 1:
        raise ValueError(f"the {options.scenario} scenario cannot pipeline (each step waits for "
                         "the replies to the one before): leave out --pipeline")
    if scenario_class.needs_request_count and options.requests is None:
        raise ValueError(f"the {options.scenario} scenario needs --requests "
                         "(every client must do the same number of rounds)")
    scenario = scenario_class(options.clients, prefix=options.prefix)
    host, port = options.target
    return Plan(host, port, scenario, options.clients, options.requests, options.duration,
                options.pipeline, options.rate, options.password, workers=options.workers)


def checked_plan(options) -> Plan:
    """The plan the options describe; ValueError saying what is wrong with them (exit 2)."""
    plan = plan_from_options(options)
    problem = json_path_problem(options.json)
    if problem:
        raise ValueError(problem)
    return plan


def fail(problem: str, status: int) -> int:
    """One line on stderr for a run that cannot go on; returns the exit status to give."""
    Console(stderr=True).print(f"contend load: {problem}", markup=False, highlight=False,
                               soft_wrap=True)
    return status


def main(options) -> int:
    console = Console()
    if options.locust_master or options.locust_worker:
        if importlib.util.find_spec("locust") is None:
            return fail("--locust-master and --locust-worker need Locust: "
                        "pip install 'contend[locust]' (from the repository: '.[locust]')", 2)
        from contend.client.locust_load import main as locust_main
        return locust_main(options)
    try:
        plan = checked_plan(options)
    except ValueError as problem:
        return fail(str(problem), 2)
    try:
        result = run_load(plan, options.driver, show_progress=True)
    except KeyboardInterrupt:
        # The processes driver's workers would run on to their end, and exit waits for
        # them: a Ctrl-C at the terminal reaches them too, a signal to this process alone not.
        for worker in multiprocessing.active_children():
            worker.terminate()
        raise
    except (OSError, ConnectionError) as problem:
        return fail(f"cannot run against {plan.host}:{plan.port}: {problem}", 3)
    render(result, console)
    if options.json:
        with open(options.json, "w") as out:
            json.dump(result.as_dict(), out, indent=2)
    return 0 if result.invariant["holds"] else 1

