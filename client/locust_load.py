"""contend load from many processes and machines, on Locust's master/worker engine.

One machine's load client tops out; a classroom has many. Locust already knows
how to spread users over worker processes and hosts and to keep them in touch
with a master, so here a contend client is a Locust `User` (`ContendUser`)
that speaks RESP with loadgen's own pieces (`ClientRun` decides what to send
when and what each reply means; hiredis reads the replies) and runs any of
contend's scenarios. Two ways to run it:

    contend load --locust-master --expect-workers 2 --scenario incr --clients 32 --requests 200
    contend load --locust-worker            # twice: here, or elsewhere with --locust-address

or with Locust's own command line, this file as the locustfile (its web UI, its
CSV and HTML reports; the master still prints contend's table and verdict):

    locust -f client/locust_load.py --master --headless --expect-workers 2 -u 32 -r 32 \\
        --host 127.0.0.1:7070 --contend-scenario incr --contend-requests 200
    locust -f client/locust_load.py --worker            # twice

Why contend keeps figures of its own beside Locust's: Locust keeps its
latencies in milliseconds, rounded (to the millisecond below 100 ms, coarser
above), and its users time a request from when it was sent, in closed loop;
a server that answers in 80 us reads as 0 ms, and a stall hides behind the
requests it held up. So each worker also keeps contend's HdrHistogram
(microseconds; with --rate, timed from when each request was due, as every
contend driver does) and sends it to the master, which adds the workers'
histograms together: the counts add up exactly. Every request still goes into
Locust's statistics too (its web UI, its reports), with contend's latency,
rounded as Locust rounds. The invariant is read back from the server once, by
the master, after every worker has reported.

A worker is one process on one CPU, its clients greenlets. gevent's timers
wake in whole milliseconds, so with --rate a request goes out up to a
millisecond after it was due, and that lateness is counted, as it must be:
for a fixed rate timed to the microsecond, the selectors driver.

How the master and the workers talk, beside Locust's own messages:

    plan             rides Locust's spawn message (the master's parsed_options, which
                     Locust forwards to every worker): target, scenario, clients,
                     requests or duration, rate, pipeline, password; each user connects
                     as Locust spawns it
    worker -> master contend:ready    {connected, problem}: every user this worker has
                                      been given is connected (or one could not be)
    master -> worker contend:go       {first, count}: your users are clients first ..
                                      first+count-1; sent to every worker at once when every
                                      client is connected, the drivers' start line
    worker -> master contend:outcome  once its clients are done: ops, errors by kind, its
                                      merged histogram (encoded) and that histogram's count,
                                      the scenario's tallies, how long it ran, its CPU

Importing this module imports Locust, which patches the standard library for
gevent (sockets, sleep, threads): `contend load` imports it only for
--locust-master and --locust-worker, never for the other drivers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import gevent
from gevent.event import Event
from hdrh.histogram import HdrHistogram
from locust import User, events, task
from locust.argument_parser import default_args_dict
from locust.env import Environment
from locust.event import Events
from locust.exception import RPCError
from locust.runners import STATE_MISSING, MasterRunner, WorkerRunner
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from contend.client.connection import Connection
from contend.client.load import (
    LoadResult,
    checked_plan,
    client_cpu,
    fail,
    json_path_problem,
    merged_latency,
    parse_target,
    plan_from_options,
    render,
)
from contend.client.loadgen import (
    HARD_LIMIT,
    ClientOutcome,
    ClientRun,
    Plan,
    connect,
    new_histogram,
    new_reply_reader,
    runqueue_wait,
    summed,
    waited_since,
)
from contend.client.scenarios import SCENARIOS
from contend.shared.resp import NEED_MORE, ReplyError

READY, GO, OUTCOME = "contend:ready", "contend:go", "contend:outcome"
WORKERS_WAIT = 300.0   # seconds the master waits for --expect-workers to connect
# Seconds past the clients' own end (their --duration, or loadgen's HARD_LIMIT) for the
# last report to arrive: connecting a crowd of clients takes time too.
REPORT_GRACE = 60.0

log = logging.getLogger("contend.locust")


@dataclass
class LocustResult(LoadResult):
    """contend load's result, plus each worker's own figures, so the merge can be checked."""
    latency_count: int = 0    # values in the merged histogram: the workers' counts, added
    workers: list = field(default_factory=list)


class ContendError(Exception):
    """What contend counts as an error (an error reply's code, a timeout, a lost
    connection), given to Locust's failure statistics, which want an exception."""


def plan_message(plan: Plan, run: str) -> dict:
    """The plan as a worker needs it (plain values: Locust's messages travel as msgpack).
    `run` tells one run from the next, for a Locust web UI that starts several."""
    return {"run": run, "host": plan.host, "port": plan.port, "scenario": plan.scenario.name,
            "prefix": plan.scenario.prefix, "clients": plan.clients, "requests": plan.requests,
            "duration": plan.duration, "pipeline": plan.pipeline, "rate": plan.rate,
            "password": plan.password, "timeout": plan.timeout}


def plan_from_message(data: dict) -> Plan:
    scenario = SCENARIOS[data["scenario"]](data["clients"], prefix=data["prefix"])
    return Plan(data["host"], data["port"], scenario, data["clients"], data["requests"],
                data["duration"], data["pipeline"], data["rate"], data["password"],
                timeout=data["timeout"])


def open_admin(plan: Plan) -> Connection:
    """A connection for setting up and reading back; a server that wants a password
    answers NOAUTH to everything, said here rather than tripped over in the verdict."""
    admin = connect(plan)
    answer = admin.call("PING")
    if isinstance(answer, ReplyError):
        admin.close()
        raise ConnectionError(answer.text)
    return admin


def locust_options() -> argparse.Namespace:
    """Locust's defaults, as its own command line would give them, and no locust.conf read:
    the master's options are what Locust forwards to its workers (with the plan in them)."""
    return argparse.Namespace(**default_args_dict())


# -- a worker's side --------------------------------------------------------------

class ContendUser(User):
    """One contend client: a connection, a ClientRun, and one request per Locust task.

    Locust spawns it and schedules it; contend decides what it sends, when, and
    when it is done. It stops itself between two requests once its ClientRun
    is done (its --requests sent, or its --duration over): a request cut off
    mid-flight would be counted by the server and not by us.
    """

    def __init__(self, environment: Environment):
        super().__init__(environment)
        self.crew = Crew.of(environment)
        self.connection: Connection | None = None
        self.reader = new_reply_reader()
        self.client_run: ClientRun | None = None   # not `run`: that is Locust's User.run

    def wait_time(self) -> float:
        """Locust's pause between two tasks: none in closed loop; with --rate, until the
        next request is due (ClientRun times it from then, however late we wake)."""
        due = self.client_run.due() if self.client_run is not None else None
        return 0.0 if due is None else max(0.0, due - time.perf_counter())

    def on_start(self) -> None:
        plan = self.crew.plan_in(self.environment)
        if plan is None:   # no master of ours sent a plan: a stray user, with nothing to do
            self.stop()
            return
        try:
            self.connection = connect(plan)
        except (OSError, ConnectionError) as problem:
            self.crew.cannot_connect(f"cannot run against {plan.host}:{plan.port}: {problem}")
            self.stop()
            return
        self.client_run = self.crew.line_up()   # waits until every client is connected
        if self.client_run is None:
            self.stop()

    @task
    def request(self) -> None:
        """One request: its batch (a pipeline, or each step of a conversation) and replies."""
        run = self.client_run
        assert run is not None and self.connection is not None
        due = run.due()
        if due is not None:   # the first request; wait_time waited for the others
            gevent.sleep(max(0.0, due - time.perf_counter()))
        while True:
            data = run.next_batch(time.perf_counter())
            if data is None:   # done
                self.stop()
                return
            try:
                self.connection.send(data)
                for position in range(len(run.batch)):
                    self.judge(run, position, self.read())
            except (OSError, ConnectionError) as error:
                run.fail("timeout" if isinstance(error, TimeoutError) else "connection")
                self.stop()
                return
            run.batch_done(self.crew.progress)
            if run.exchange is None:   # else a conversation's next step goes out now
                return

    def read(self):
        while (reply := self.reader.gets()) is NEED_MORE:
            self.reader.feed(self.connection.receive())
        return reply

    def judge(self, run: ClientRun, position: int, reply) -> None:
        """contend's judgement (ClientRun), then Locust's statistics for its web UI and
        reports, once the request is over (a conversation's middle steps are not)."""
        outcome = run.outcome
        ops, errors = outcome.ops, Counter(outcome.errors)
        now = time.perf_counter()
        run.on_reply(position, reply, now)
        if outcome.ops == ops and outcome.errors == errors:
            return
        kind = next((kind for kind in outcome.errors if outcome.errors[kind] != errors[kind]),
                    None)
        scenario = run.plan.scenario
        name = scenario.name if scenario.conversational else str(run.batch[position][0])
        self.environment.events.request.fire(
            request_type=scenario.name, name=name, response_time=(now - run.batch_sent_at) * 1e3,
            response_length=0, exception=ContendError(kind) if kind else None, context={})

    def on_stop(self) -> None:
        """Locust calls this once the user stops, by itself or killed: its outcome goes in."""
        if self.connection is not None:
            self.connection.close()
        if self.client_run is not None:
            run, self.client_run = self.client_run, None
            self.crew.done(run.finish())


class Crew:
    """One worker's clients: connected before the start line, numbered at it, and
    reported once all of them are done.

    Locust decides how many users this worker runs. The master decides their
    numbers, since only it sees every worker, and a scenario needs each
    client's index: incr's counter, bank's transfers, queue's producers.
    """

    def __init__(self, environment: Environment):
        self.runner = environment.runner
        # Registered before the first READY goes out, so a GO cannot arrive unheard.
        self.runner.register_message(GO, self.on_go)
        self.run: str | None = None
        self.plan: Plan | None = None

    @classmethod
    def of(cls, environment: Environment) -> Crew:
        crew = getattr(environment, "contend_crew", None)
        if crew is None:
            crew = environment.contend_crew = cls(environment)
        return crew

    def plan_in(self, environment: Environment) -> Plan | None:
        """This run's plan, from the options the master forwarded; a new run starts afresh."""
        data = getattr(environment.parsed_options, "contend_plan", None)
        if data is None:
            return None
        if data["run"] != self.run:
            self.run, self.plan = data["run"], plan_from_message(data)
            self.lined_up = 0           # users connected so far, each one's place in line
            self.first = self.count = 0   # the clients the master numbered ours as
            self.started = Event()
            self.start = self.cpu = 0.0
            self.waited: float | None = None
            self.outcomes: list[ClientOutcome] = []
            # ClientRun publishes its counts here (slot i, and clients + i for errors);
            # Locust's statistics carry the progress to the master instead.
            self.progress = [0] * (2 * self.plan.clients)
        return self.plan

    def line_up(self) -> ClientRun | None:
        """A connected user's place in line, and, once the master says go, its client;
        None for a user Locust added after the start line, which has no client to be."""
        place = self.lined_up
        self.lined_up += 1
        if self.lined_up == self.runner.target_user_count:
            self.runner.send_message(READY, {"connected": self.lined_up, "problem": None})
        self.started.wait()
        if place >= self.count:
            return None
        return ClientRun(self.plan, self.first + place, self.start)

    def cannot_connect(self, problem: str) -> None:
        self.runner.send_message(READY, {"connected": self.lined_up, "problem": problem})

    def on_go(self, environment: Environment, msg) -> None:
        self.first, self.count = msg.data["first"], msg.data["count"]
        self.start, self.cpu = time.perf_counter(), time.process_time()
        self.waited = runqueue_wait()
        log.info("clients %d-%d of %d (%s) start", self.first, self.first + self.count - 1,
                 self.plan.clients, self.plan.scenario.name)
        self.started.set()

    def done(self, outcome: ClientOutcome) -> None:
        self.outcomes.append(outcome)
        if len(self.outcomes) == self.count:
            self.report()

    def report(self) -> None:
        """Everything the master needs from this worker, in one message."""
        cpu_s, wait_s = time.process_time() - self.cpu, waited_since(self.waited)
        histogram = new_histogram()
        errors: Counter = Counter()
        for outcome in self.outcomes:
            histogram.add(HdrHistogram.decode(outcome.histogram.encode()))
            errors.update(outcome.errors)
        ops = sum(outcome.ops for outcome in self.outcomes)
        self.runner.send_message(OUTCOME, {
            "first": self.first, "count": self.count, "ops": ops, "errors": dict(errors),
            "histogram": histogram.encode().decode(),
            "latency_count": histogram.get_total_count(),
            "tallies": [outcome.tally for outcome in self.outcomes],
            "span_s": (max(outcome.ended for outcome in self.outcomes)
                       - min(outcome.started for outcome in self.outcomes)),
            "cpu_s": cpu_s, "wait_s": wait_s})
        log.info("clients %d-%d done: %d requests, %d errors, reported to the master",
                 self.first, self.first + self.count - 1, ops, sum(errors.values()))


# -- the master's side ----------------------------------------------------------

class Referee:
    """The master's side: the plan to every worker, the start once every client is
    connected, the workers' reports merged, and the verdict read back once."""

    def __init__(self, environment: Environment):
        self.environment = environment
        self.runner = environment.runner
        self.runner.register_message(READY, self.on_ready)
        self.runner.register_message(OUTCOME, self.on_outcome)
        self.plan: Plan | None = None
        self.finished = Event()

    def begin(self, plan: Plan) -> None:
        """Before Locust spawns a user: the server's state set up, the plan in the options
        Locust's spawn messages carry to every worker."""
        with open_admin(plan) as admin:
            plan.scenario.setup(admin)
        self.plan = plan
        self.connected: dict[str, int] = {}   # worker -> its users connected, as it last said
        self.given: dict[str, tuple[int, int]] = {}   # worker -> the clients it runs
        self.reports: dict[str, dict] = {}
        self.problem: str | None = None
        self.finished = Event()
        if self.environment.parsed_options is None:
            self.environment.parsed_options = locust_options()
        self.environment.parsed_options.contend_plan = plan_message(plan, uuid.uuid4().hex)

    def on_ready(self, environment: Environment, msg) -> None:
        if self.plan is None or self.given or self.finished.is_set():
            return   # a user Locust added after the start line: it stays idle
        if msg.data["problem"]:
            self.fail(msg.data["problem"])
            return
        self.connected[msg.node_id] = msg.data["connected"]
        if sum(self.connected.values()) < self.plan.clients:
            return
        first = 0
        for worker, count in self.connected.items():
            self.given[worker] = (first, count)
            first += count
        for worker, (first, count) in self.given.items():
            self.runner.send_message(GO, {"first": first, "count": count}, client_id=worker)

    def on_outcome(self, environment: Environment, msg) -> None:
        if msg.node_id in self.given:
            self.reports[msg.node_id] = msg.data
        if self.given and len(self.reports) == len(self.given):
            self.finished.set()

    def fail(self, problem: str) -> None:
        self.problem = problem
        self.finished.set()

    def lost_worker(self) -> str | None:
        """A worker Locust has lost (it quit, or stopped answering) before it reported."""
        if not isinstance(self.runner, MasterRunner):
            return None
        for worker in self.given:
            node = self.runner.clients.get(worker)
            if worker not in self.reports and (node is None or node.state == STATE_MISSING):
                return f"worker {worker} left before its clients were done"
        return None

    def deadline(self) -> float:
        """When to give up on the reports: the clients end themselves by then."""
        plan = self.plan
        limit = min(plan.duration if plan.duration is not None else HARD_LIMIT, HARD_LIMIT)
        return time.monotonic() + limit + plan.timeout + REPORT_GRACE

    def result(self) -> LocustResult:
        """Every worker's histogram added into one, and the verdict read back from the server."""
        plan = self.plan
        workers = list(self.given)
        reports = [self.reports[worker] for worker in workers]
        merged = new_histogram()
        errors: Counter = Counter()
        for report in reports:
            merged.add(HdrHistogram.decode(report["histogram"].encode()))
            errors.update(report["errors"])
        ops = sum(report["ops"] for report in reports)
        tallies = [tally for report in reports for tally in report["tallies"]]
        # Each worker times its clients on its own clock, from the GO it received.
        took = max(report["span_s"] for report in reports)
        with open_admin(plan) as admin:
            invariant = plan.scenario.verdict(admin, tallies, ops, sum(errors.values()))
        cpu = client_cpu(sum(report["cpu_s"] for report in reports), took, len(reports),
                         summed([report["wait_s"] for report in reports]))
        return LocustResult(
            plan.scenario.name, plan.clients, "locust", ops, sum(errors.values()), dict(errors),
            round(took, 4), round(ops / took, 1) if took else 0.0,
            merged_latency([merged.encode().decode()]), invariant.as_dict(),
            plan.scenario.figures(tallies, ops), cpu,
            latency_count=merged.get_total_count(),
            workers=[{"worker": worker, "first_client": report["first"],
                      "clients": report["count"], "ops": report["ops"],
                      "errors": sum(report["errors"].values()),
                      "latency_count": report["latency_count"],
                      "duration_s": round(report["span_s"], 4),
                      "cpu_s": round(report["cpu_s"], 3)}
                     for worker, report in zip(workers, reports, strict=True)])


def render_workers(result: LocustResult, console: Console) -> None:
    table = Table(title="each worker's share")
    for column in ("worker", "clients", "ops", "latencies", "seconds", "CPU s"):
        table.add_column(column, justify="left" if column == "worker" else "right")
    for worker in result.workers:
        last = worker["first_client"] + worker["clients"] - 1
        table.add_row(worker["worker"], f"{worker['first_client']}-{last}", f"{worker['ops']:,}",
                      f"{worker['latency_count']:,}", f"{worker['duration_s']:.2f}",
                      f"{worker['cpu_s']:.2f}")
    console.print(table)


def show(result: LocustResult, json_path: str | None, console: Console) -> int:
    render(result, console)
    render_workers(result, console)
    if json_path:
        with open(json_path, "w") as out:
            json.dump(result.as_dict(), out, indent=2)
    return 0 if result.invariant["holds"] else 1


# -- contend load --locust-master / --locust-worker -------------------------------

def main(options) -> int:
    # Locust's own log lines are for its command line; here contend says what happens.
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")
    if options.locust_worker:
        return run_worker(options)
    return run_master(options)


def run_worker(options) -> int:
    host, port = options.locust_address
    say = logging.StreamHandler(sys.stdout)
    say.setFormatter(logging.Formatter("contend load: worker: %(message)s"))
    log.addHandler(say)
    log.setLevel(logging.INFO)
    log.propagate = False
    environment = Environment(user_classes=[ContendUser], events=Events(),
                              parsed_options=locust_options())
    log.info("joining the master at %s:%d", host, port)
    try:
        runner = environment.create_worker_runner(host, port)
    except ConnectionError:   # Locust tried for five minutes
        print(f"contend load: no Locust master answered at {host}:{port}", file=sys.stderr)
        return 3
    runner.greenlet.join()   # until the master says quit
    log.info("the master is done")
    return 0


def run_master(options) -> int:
    console, err = Console(), Console(stderr=True)
    try:
        plan = checked_plan(options)
    except ValueError as problem:
        return fail(str(problem), 2)
    if options.expect_workers < 1:
        return fail("--expect-workers must be at least 1", 2)
    try:
        open_admin(plan).close()   # said now, not after the workers have come
    except (OSError, ConnectionError) as problem:
        return fail(f"cannot run against {plan.host}:{plan.port}: {problem}", 3)
    host, port = options.locust_address
    environment = Environment(user_classes=[ContendUser], events=Events(),
                              parsed_options=locust_options())
    try:
        runner = environment.create_master_runner(host, port)
    except (SystemExit, RPCError, OSError):   # Locust exits when the port is taken
        return fail(f"cannot listen for workers on {host}:{port}", 3)
    referee = Referee(environment)
    spawner = None
    try:
        if not await_workers(runner, options.expect_workers, f"{host}:{port}", err):
            return fail(f"{options.expect_workers} workers did not all come to {host}:{port} "
                        f"within {WORKERS_WAIT:.0f} s", 3)
        try:
            referee.begin(plan)
        except (OSError, ConnectionError) as problem:
            return fail(f"cannot run against {plan.host}:{plan.port}: {problem}", 3)
        # Every user at once: the start line waits for all of them to connect anyway.
        spawner = gevent.spawn(runner.start, plan.clients, plan.clients)
        problem = await_reports(referee, runner, plan, show_progress=True)
        if problem:
            return fail(problem, 3)
        try:
            result = referee.result()
        except (OSError, ConnectionError) as problem:
            return fail(f"cannot read the verdict from {plan.host}:{plan.port}: {problem}", 3)
        status = show(result, options.json, console)
        keep_status_on_sigterm(status)
        return status
    finally:
        if spawner is not None:
            spawner.kill()
        runner.quit()   # every worker told to quit, on every way out


def await_workers(runner: MasterRunner, expected: int, address: str, err: Console) -> bool:
    deadline, said = time.monotonic() + WORKERS_WAIT, -1
    while (connected := len(runner.clients.ready)) < expected:
        if connected != said:
            err.print(f"contend load: waiting for workers at {address}: {connected} of "
                      f"{expected}", highlight=False)
            said = connected
        if time.monotonic() > deadline:
            return False
        gevent.sleep(0.1)
    return True


def await_reports(referee: Referee, runner: MasterRunner, plan: Plan,
                  show_progress: bool) -> str | None:
    """Until every worker has reported; the problem, if one stopped the run."""
    deadline = referee.deadline()
    with _Progress(runner, plan, enabled=show_progress) as progress:
        while not referee.finished.wait(0.2):
            progress.update()
            lost = referee.lost_worker()
            if lost:
                return lost
            if time.monotonic() > deadline:
                return (f"{len(referee.reports)} of {len(referee.given) or 'the'} workers "
                        "reported before the run's time was up")
    return referee.problem


class _Progress:
    """A live line on a terminal, fed by Locust's statistics (the workers send theirs
    every few seconds); nothing otherwise."""

    def __init__(self, runner: MasterRunner, plan: Plan, enabled: bool):
        self.runner, self.plan = runner, plan
        self.enabled = enabled and Console().is_terminal

    def __enter__(self):
        if self.enabled:
            total = (self.plan.requests or 0) * self.plan.clients or None
            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                TextColumn("{task.fields[done]:>9,} requests  "
                                           "{task.fields[errors]:,} errors"),
                                TimeElapsedColumn(), transient=True, auto_refresh=False)
            self.bar.start()
            self.task = self.bar.add_task(
                f"{self.plan.scenario.name} x {self.plan.clients} on Locust",
                total=total or self.plan.duration, done=0, errors=0)
            self.total, self.began = total, time.perf_counter()
        return self

    def update(self) -> None:
        if not self.enabled:
            return
        stats = self.runner.stats.total
        done = stats.num_requests
        self.bar.update(self.task, completed=done if self.total else
                        time.perf_counter() - self.began, done=done, errors=stats.num_failures)
        self.bar.refresh()

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.stop()


def keep_status_on_sigterm(status: int) -> None:
    """After the verdict, a SIGTERM ends the master with the verdict's status.

    The workers leave as soon as the master tells them to quit, and
    `docker compose up --exit-code-from locust-master` stops every container
    once one has exited, which could reach the master before it has: its
    status must stay the verdict's, not a signal's.
    """
    def leave(signum, frame):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)

    signal.signal(signal.SIGTERM, leave)


# -- locust -f client/locust_load.py ------------------------------------------------

@events.init_command_line_parser.add_listener
def add_contend_options(parser) -> None:
    """contend's options on Locust's command line; --host is the server, as HOST:PORT."""
    parser.add_argument("--contend-scenario", choices=sorted(SCENARIOS), default="ping",
                        help="contend's scenario (default: ping)")
    parser.add_argument("--contend-requests", type=int,
                        help="requests per client (default: 100, unless a duration is given)")
    parser.add_argument("--contend-duration", type=float,
                        help="seconds the clients run (default: --run-time, if given)")
    parser.add_argument("--contend-rate", type=float,
                        help="total requests per second, timed from when each was due")
    parser.add_argument("--contend-pipeline", type=int, default=1,
                        help="commands in flight per client")
    parser.add_argument("--contend-password", is_secret=True, help="AUTH with this password")
    parser.add_argument("--contend-prefix", default="contend", help="key prefix")
    parser.add_argument("--contend-json", help="also write contend's result as JSON here")


@events.init.add_listener
def judge_locust_runs(environment: Environment, runner, **_kwargs) -> None:
    """Under `locust -f`, the master (or a lone local process) referees each run.
    A worker needs nothing here: its Crew forms when its first user starts."""
    options = environment.parsed_options
    if isinstance(runner, WorkerRunner) or not hasattr(options, "contend_scenario"):
        return
    if options.run_time:
        # Locust would kill the users mid-request at --run-time, leaving writes the server
        # counted and we did not: the clients stop themselves at that time instead, and
        # the master quits once every worker has reported.
        if options.contend_requests is None and options.contend_duration is None:
            options.contend_duration = float(options.run_time)
        log.info("--run-time: the clients stop themselves, and the master quits once every "
                 "worker has reported")
        options.run_time = None
    referee = Referee(environment)

    def begin(**_kwargs) -> None:
        try:
            plan = plan_from_options(argparse.Namespace(
                target=parse_target(environment.host or "127.0.0.1:7070"),
                scenario=options.contend_scenario, clients=runner.target_user_count,
                requests=options.contend_requests, duration=options.contend_duration,
                pipeline=options.contend_pipeline, rate=options.contend_rate,
                password=options.contend_password, prefix=options.contend_prefix,
                workers=None))
            problem = json_path_problem(options.contend_json)
            if problem:
                raise ValueError(problem)
            referee.begin(plan)
        except (ValueError, argparse.ArgumentTypeError, OSError, ConnectionError) as problem:
            log.error("contend: %s", problem)
            usage = isinstance(problem, ValueError | argparse.ArgumentTypeError)
            environment.process_exit_code = 2 if usage else 3
            gevent.spawn(runner.quit)
            return
        gevent.spawn(conclude, plan)

    def conclude(plan: Plan) -> None:
        if not referee.finished.wait(referee.deadline() - time.monotonic()):
            referee.fail("the workers did not all report before the run's time was up")
        try:
            if referee.problem:
                raise ConnectionError(referee.problem)
            environment.process_exit_code = show(referee.result(), options.contend_json,
                                                 Console())
        except (OSError, ConnectionError) as problem:
            log.error("contend: %s", problem)
            environment.process_exit_code = 3
        gevent.spawn(runner.quit if options.headless else runner.stop)

    environment.events.test_start.add_listener(begin)
