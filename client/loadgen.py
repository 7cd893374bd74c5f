"""The load generator: one client's run (sans-io), and four drivers that run many.

`ClientRun` decides what to send when and what each reply means; it never
touches a socket. A request is usually one command and one reply; a
conversational scenario's request (`cas`: WATCH and GET, then MULTI, SET and
EXEC, again until EXEC succeeds) takes several round trips, and the drivers
need not know: they send whatever `next_batch` returns and hand back as many
replies. The drivers own the sockets and show the same comparison on the
client side that the servers show: threads (one per client), trio (one task
per client), processes (workers, each with a thread per client), selectors
(workers, each one selector loop over its share of the sockets, as
redis-benchmark runs; the default, the only one fast enough not to be what
is measured: docs/benchmarks.md, "Which driver").
Every driver connects all clients first, then starts them together at a
barrier, so the first requests collide as hard as they can, and reports the
CPU time it spent from that start line on (`DriverRun`), so a result can say
when the client, not the server, was the bottleneck.
"""

from __future__ import annotations

import heapq
import multiprocessing
import os
import select
import selectors
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import hiredis
from hdrh.histogram import HdrHistogram

from contend.client.connection import Connection
from contend.client.scenarios import Scenario
from contend.shared.resp import NEED_MORE, ReplyError, encode_command

HARD_LIMIT = 600.0   # seconds: no run goes on longer, whatever it was asked
# Seconds a worker process waits at the start line for the others. A sibling killed
# before it got there never comes, and a worker left waiting would outlive its run.
START_LINE_WAIT = 120.0
LOWEST_US, HIGHEST_US = 1, 120_000_000
# Measured against redis-server with 50 clients on 2 CPUs, the only driver that keeps
# up with redis-benchmark (about 0.9x; a thread per client, about 0.25x).
DEFAULT_DRIVER = "selectors"


def new_histogram() -> HdrHistogram:
    """Latencies in microseconds, 1 µs to 2 minutes, 3 significant digits."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, 3)


def new_reply_reader() -> hiredis.Reader:
    """hiredis's reply parser (C), which every driver reads with.

    An error reply comes back as a `shared.resp.ReplyError` value, as from
    `shared.resp.ReplyParser`, so a scenario judges the same objects whichever
    parser read them. Two shapes differ from ReplyParser's, and no scenario
    depends on them: a status (+OK) is bytes, not str, and a null array (*-1)
    is None, not NULL_ARRAY.
    """
    return hiredis.Reader(replyError=ReplyError, notEnoughData=NEED_MORE)


def usable_cpus() -> int:
    """The CPUs this process may run on: fewer than the machine has when it is pinned."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # macOS has no affinity
        return os.cpu_count() or 1


def runqueue_wait() -> float | None:
    """Seconds the calling thread has spent ready to run but waiting for a CPU (Linux's
    schedstat), or None where the system does not say. A client starved of CPU by other
    work looks idle to its CPU time alone."""
    try:
        with open("/proc/thread-self/schedstat") as stats:
            return int(stats.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def waited_since(before: float | None) -> float | None:
    after = runqueue_wait()
    return None if before is None or after is None else after - before


def one_interpreter_ceiling() -> int:
    """How many CPUs one process's threads can keep busy: one while the GIL is on."""
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    return 1 if gil else usable_cpus()


@dataclass
class Plan:
    host: str
    port: int
    scenario: Scenario
    clients: int
    requests: int | None = None      # per client; None: run for `duration`
    duration: float | None = None
    pipeline: int = 1
    rate: float | None = None        # total requests per second; None: closed loop
    password: str | None = None
    timeout: float = 30.0            # seconds to wait for one reply
    workers: int | None = None       # processes and selectors drivers; None: one per usable CPU


@dataclass
class ClientOutcome:
    ops: int = 0
    errors: Counter = field(default_factory=Counter)
    histogram: str = ""               # HdrHistogram, encoded, so a process can send it
    tally: dict = field(default_factory=dict)
    # When this client started and got its last reply, on the machine-wide
    # monotonic clock (time.perf_counter), so outcomes from other threads and
    # processes compare: a thousand clients leave the start line over seconds.
    started: float = 0.0
    ended: float = 0.0


@dataclass
class DriverRun:
    """What a driver hands back: every client's outcome, and what running them cost."""
    outcomes: list[ClientOutcome]
    # CPU seconds (user and system) its processes spent from the start line to the
    # last reply: the client's own work, which a fast server must not be waiting on.
    cpu_s: float
    # How many CPUs it could have kept busy at once: one per interpreter with a GIL,
    # never more than it may run on.
    ceiling: int
    # Seconds its threads were ready to run but waited for a CPU that other work had
    # (summed, like cpu_s); None where the system does not say.
    wait_s: float | None = None


class ClientRun:
    """One client's requests: when each is due, and what its reply means.

    In closed loop the next request goes out when the last reply is in. With a
    rate, each client sends every clients/rate seconds, client i starting i/rate
    after the start line, so together they send one request every 1/rate seconds
    rather than a burst of one per client at once. A request's latency is
    measured from the moment it was *due*, not from when it was sent: a server
    that stalls makes the requests behind it late, and that lateness is counted
    (coordinated omission).
    """

    def __init__(self, plan: Plan, index: int, start: float):
        self.plan, self.index, self.start = plan, index, start
        limit = plan.duration if plan.duration is not None else HARD_LIMIT
        self.deadline = start + min(limit, HARD_LIMIT)
        self.interval = plan.clients / plan.rate if plan.rate else None
        self.first_due = start + index / plan.rate if plan.rate else start
        self.seq = 0
        self.outcome = ClientOutcome(started=time.perf_counter())
        self.histogram = new_histogram()
        self.batch_sent_at = 0.0
        self.batch: list[tuple] = []     # the commands on the wire, replies awaited
        self.requests = 0                # how many requests the batch finishes
        self.exchange = None             # a conversational request under way
        self.replies: list = []          # its current step's replies so far

    def due(self) -> float | None:
        """When the next batch should go out (rate mode), or None for 'now'."""
        return None if self.interval is None else self.first_due + self.seq * self.interval

    def next_batch(self, now: float) -> bytes | None:
        """The bytes of the next pipeline of commands, or None when this client is done."""
        if self.exchange is not None:   # the next step of a request under way (set by on_reply)
            return b"".join(encode_command(*command) for command in self.batch)
        plan, scenario = self.plan, self.plan.scenario
        left = (plan.pipeline if plan.requests is None
                else min(plan.pipeline, plan.requests - self.seq))
        if left <= 0 or now >= self.deadline:
            return None
        if scenario.conversational:
            # Its steps wait for each other's replies, so a client has one in flight.
            self.exchange = scenario.exchange(self.index, self.seq)
            self.batch, self.requests = next(self.exchange), 1
        else:
            self.batch = [scenario.command(self.index, self.seq + i) for i in range(left)]
            self.requests = left
        due = self.due()
        self.batch_sent_at = now if due is None else due
        return b"".join(encode_command(*command) for command in self.batch)

    def on_reply(self, position: int, reply, now: float) -> None:
        if self.exchange is not None:
            self.replies.append(reply)
            if len(self.replies) < len(self.batch):
                return
            replies, self.replies = self.replies, []
            try:
                self.batch = self.exchange.send(replies)   # the next step's commands
                return
            except StopIteration as finished:   # the request is over: judge what it returned
                self.exchange, reply, position = None, finished.value, 0
        latency_us = max(LOWEST_US, min(HIGHEST_US, int((now - self.batch_sent_at) * 1e6)))
        self.histogram.record_value(latency_us)
        kind = self.plan.scenario.check(reply, self.index, self.seq + position, self.outcome.tally)
        if kind is None:
            self.outcome.ops += 1
        else:
            self.outcome.errors[kind] += 1

    def batch_done(self, progress) -> None:
        if self.exchange is None:   # a conversation's middle steps finish no request
            self.seq += self.requests
        self.report(progress)

    def report(self, progress) -> None:
        """Publish this client's counts: slot i its requests, slot clients+i its errors."""
        progress[self.index] = self.seq
        progress[self.plan.clients + self.index] = sum(self.outcome.errors.values())

    def fail(self, kind: str) -> None:
        """The connection broke: count the batch in flight as errors and stop."""
        self.outcome.errors[kind] += max(1, self.requests)
        self.deadline = 0

    def finish(self) -> ClientOutcome:
        self.outcome.histogram = self.histogram.encode().decode()
        self.outcome.ended = time.perf_counter()
        return self.outcome


def connect(plan: Plan) -> Connection:
    connection = Connection(plan.host, plan.port, timeout=plan.timeout)
    if plan.password:
        reply = connection.call("AUTH", plan.password)
        if isinstance(reply, ReplyError):
            raise ConnectionError(f"AUTH failed: {reply.text}")
    return connection


# -- threads ------------------------------------------------------------------

def _drive_with_socket(run: ClientRun, connection: Connection, progress) -> None:
    reader = new_reply_reader()

    def read():
        while (reply := reader.gets()) is NEED_MORE:
            reader.feed(connection.receive())
        return reply

    while True:
        due = run.due()
        if due is not None and due > time.perf_counter():
            time.sleep(due - time.perf_counter())
        data = run.next_batch(time.perf_counter())
        if data is None:
            return
        try:
            connection.send(data)
            for position in range(len(run.batch)):
                reply = read()
                run.on_reply(position, reply, time.perf_counter())
        except (OSError, ConnectionError) as error:
            run.fail("timeout" if isinstance(error, TimeoutError) else "connection")
            run.report(progress)
            return
        run.batch_done(progress)


def run_threads(plan: Plan, indices: list[int], progress, start_line=None) -> DriverRun:
    """One thread per client; they all leave the start line together."""
    connections = [connect(plan) for _ in indices]
    start = threading.Barrier(len(indices) + 1)
    outcomes: list = [None] * len(indices)
    waits: list = [None] * len(indices)

    def client(slot: int, index: int) -> None:
        try:
            start.wait()
        except threading.BrokenBarrierError:
            return   # the worker gave up at the start line: no run, nothing to report
        waited = runqueue_wait()
        run = ClientRun(plan, index, time.perf_counter())
        try:
            _drive_with_socket(run, connections[slot], progress)
        except Exception as error:   # a scenario bug must not lose the others' results
            run.fail(type(error).__name__)
        outcomes[slot] = run.finish()
        waits[slot] = waited_since(waited)

    threads = [threading.Thread(target=client, args=(slot, index), daemon=True)
               for slot, index in enumerate(indices)]
    for thread in threads:
        thread.start()
    if start_line is not None:
        try:   # a worker of the processes driver lines up with the others too
            start_line.wait(START_LINE_WAIT)
        except threading.BrokenBarrierError:
            start.abort()   # its client threads give up too (daemons: they do not hold exit)
            raise
    start.wait()
    cpu = time.process_time()   # every thread of this process, the ones that have ended too
    for thread in threads:
        thread.join()
    cpu = time.process_time() - cpu
    for connection in connections:
        connection.close()
    return DriverRun(outcomes, cpu, one_interpreter_ceiling(), summed(waits))


def summed(waits: list[float | None]) -> float | None:
    return None if None in waits else sum(waits)


# -- trio -----------------------------------------------------------------------

def run_trio(plan: Plan, indices: list[int], progress) -> DriverRun:
    """One task per client in one thread; the start line is a trio.Event."""
    import trio

    async def main() -> tuple[list[ClientOutcome], float, float | None]:
        streams = [await trio.open_tcp_stream(plan.host, plan.port) for _ in indices]
        outcomes: list = [None] * len(indices)
        go = trio.Event()

        async def client(slot: int, index: int) -> None:
            stream, reader = streams[slot], new_reply_reader()

            async def read():
                while (reply := reader.gets()) is NEED_MORE:
                    with trio.fail_after(plan.timeout):
                        data = await stream.receive_some(65536)
                    if not data:
                        raise ConnectionError("server closed the connection")
                    reader.feed(data)
                return reply

            if plan.password:
                await stream.send_all(encode_command("AUTH", plan.password))
                if isinstance(await read(), ReplyError):
                    raise ConnectionError("AUTH failed")
            await go.wait()
            run = ClientRun(plan, index, trio.current_time())
            while True:
                due = run.due()
                if due is not None:
                    await trio.sleep_until(due)
                data = run.next_batch(trio.current_time())
                if data is None:
                    break
                try:
                    await stream.send_all(data)
                    for position in range(len(run.batch)):
                        run.on_reply(position, await read(), trio.current_time())
                except trio.TooSlowError:
                    run.fail("timeout")
                    break
                except (OSError, ConnectionError, trio.BrokenResourceError):
                    run.fail("connection")
                    break
                run.batch_done(progress)
            outcomes[slot] = run.finish()
            await stream.aclose()

        async with trio.open_nursery() as nursery:
            for slot, index in enumerate(indices):
                nursery.start_soon(client, slot, index)
            await trio.lowlevel.checkpoint()
            cpu, waited = time.process_time(), runqueue_wait()
            go.set()
        return outcomes, time.process_time() - cpu, waited_since(waited)

    outcomes, cpu, waited = trio.run(main)
    return DriverRun(outcomes, cpu, 1, waited)


# -- selectors ----------------------------------------------------------------------

class _LoopClient:
    """One client in the selector loop: its run, its socket, and where its batch stands."""
    __slots__ = ("run", "sock", "reader", "slot", "unsent", "awaited", "position", "heard")

    def __init__(self, run: ClientRun, sock, slot: int):
        self.run, self.sock, self.slot = run, sock, slot
        self.reader = new_reply_reader()
        self.unsent = b""     # what the socket's buffer had no room for yet
        self.awaited = 0      # replies the batch on the wire still owes
        self.position = 0     # the next reply's place in its batch
        self.heard = 0.0      # when it last sent or received: a reply's timeout counts from here


class _Loop:
    """Many clients, one thread: a selector says whose replies are in, a heap says
    whose next batch is due (with --rate), and nothing waits but the selector.

    A thread per client pays for the GIL handing over and a thread waking on
    every reply; here one wake-up serves every socket with something to read,
    and hiredis splits the replies in C.
    """

    TIMEOUT_CHECK = 1.0   # seconds between looks for a reply overdue by plan.timeout

    def __init__(self, plan: Plan, progress):
        self.plan, self.progress = plan, progress
        self.selector = selectors.DefaultSelector()
        self.timers: list[tuple[float, int, _LoopClient]] = []   # (due, slot, client)
        self.clients: list[_LoopClient] = []
        self.outcomes: list = []
        self.live = 0

    def run(self, sockets: list, indices: list[int], start: float) -> list[ClientOutcome]:
        for slot, (sock, index) in enumerate(zip(sockets, indices, strict=True)):
            sock.setblocking(False)
            client = _LoopClient(ClientRun(self.plan, index, start), sock, slot)
            self.selector.register(sock, selectors.EVENT_READ, client)
            self.clients.append(client)
        self.outcomes = [None] * len(self.clients)
        self.live = len(self.clients)
        now = time.perf_counter()
        for client in self.clients:
            self._attempt(client, self._go, client, now)
        next_check = now + self.TIMEOUT_CHECK
        while self.live:
            now = time.perf_counter()   # serving the last turn took time
            timeout = next_check - now
            if self.timers:
                timeout = min(timeout, self.timers[0][0] - now)
                if timeout > 0:
                    # epoll sleeps whole milliseconds, rounding up, and a batch sent late
                    # counts its lateness as latency; select() sleeps to the microsecond,
                    # on the epoll's own descriptor, which is readable once events wait.
                    select.select([self.selector], [], [], timeout)
                    timeout = 0
            events = self.selector.select(max(0.0, timeout))
            now = time.perf_counter()
            for key, mask in events:
                self._attempt(key.data, self._ready, key.data, mask, now)
            while self.timers and self.timers[0][0] <= now:
                _, _, client = heapq.heappop(self.timers)
                self._attempt(client, self._go, client, now)
            if now >= next_check:
                self._time_out(now)
                next_check = now + self.TIMEOUT_CHECK
        self.selector.close()
        return self.outcomes

    def _go(self, client: _LoopClient, now: float) -> None:
        """Send the client's next batch, or wait until it is due, or finish the client."""
        run = client.run
        due = run.due()
        if due is not None and due > now:
            heapq.heappush(self.timers, (due, client.slot, client))
            return
        data = run.next_batch(now)
        if data is None:
            self._finish(client)
            return
        client.awaited, client.position, client.heard = len(run.batch), 0, now
        self._send(client, data)

    def _send(self, client: _LoopClient, data: bytes) -> None:
        try:
            sent = client.sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):   # the rest goes when the socket says it has room
            client.unsent = data[sent:]
            self.selector.modify(client.sock, selectors.EVENT_READ | selectors.EVENT_WRITE,
                                 client)

    def _ready(self, client: _LoopClient, mask: int, now: float) -> None:
        if mask & selectors.EVENT_WRITE:
            unsent, client.unsent = client.unsent, b""
            self.selector.modify(client.sock, selectors.EVENT_READ, client)
            self._send(client, unsent)
        if mask & selectors.EVENT_READ:
            self._receive(client, now)

    def _receive(self, client: _LoopClient, now: float) -> None:
        try:
            data = client.sock.recv(65536)
        except BlockingIOError:   # readiness can be spurious: nothing is lost, wait again
            return
        if not data:
            raise ConnectionError("server closed the connection")
        client.heard = now
        reader, run = client.reader, client.run
        reader.feed(data)
        while client.awaited and (reply := reader.gets()) is not NEED_MORE:
            run.on_reply(client.position, reply, now)
            client.position += 1
            client.awaited -= 1
        if client.awaited == 0:
            run.batch_done(self.progress)
            self._go(client, now)

    def _time_out(self, now: float) -> None:
        for client in self.clients:
            overdue = client.awaited and now - client.heard > self.plan.timeout
            if overdue and self.outcomes[client.slot] is None:
                self._fail(client, "timeout")

    def _attempt(self, client: _LoopClient, action, *args) -> None:
        """Run one client's step; what goes wrong ends that client only."""
        if self.outcomes[client.slot] is not None:   # finished earlier in this turn
            return
        try:
            action(*args)
        except (OSError, ConnectionError):
            self._fail(client, "connection")
        except Exception as error:   # a scenario bug must not lose the others' results
            self._fail(client, type(error).__name__)

    def _fail(self, client: _LoopClient, kind: str) -> None:
        client.run.fail(kind)
        client.run.report(self.progress)
        self._finish(client)

    def _finish(self, client: _LoopClient) -> None:
        self.selector.unregister(client.sock)
        self.outcomes[client.slot] = client.run.finish()
        self.live -= 1


def run_loop(plan: Plan, indices: list[int], progress, start_line=None) -> DriverRun:
    """Every client in one selector loop in this thread."""
    connections = [connect(plan) for _ in indices]
    try:
        if start_line is not None:
            start_line.wait(START_LINE_WAIT)   # a worker lines up with the others
        cpu, waited = time.process_time(), runqueue_wait()
        outcomes = _Loop(plan, progress).run([c.sock for c in connections], indices,
                                             time.perf_counter())
        cpu, waited = time.process_time() - cpu, waited_since(waited)
    finally:
        for connection in connections:
            connection.close()
    return DriverRun(outcomes, cpu, 1, waited)


# -- worker processes --------------------------------------------------------------

def worker_count(plan: Plan, indices: list[int]) -> int:
    # One per CPU even with the server on the same machine: against redis-server on 2
    # CPUs, one selector loop kept up but was itself saturated and swung with the
    # machine's load; two were steadier and left headroom.
    return max(1, min(plan.workers or usable_cpus(), len(indices)))


def _worker(drive, plan: Plan, indices: list[int], progress, start_line, results) -> None:
    try:
        results.send(("ok", drive(plan, indices, progress, start_line)))
    except BaseException as error:   # reported by the parent, never lost in a child
        start_line.abort()
        results.send(("error", f"{type(error).__name__}: {error}"))


def in_processes(drive, plan: Plan, indices: list[int], progress) -> DriverRun:
    """Worker processes, each running its share of the clients with `drive`.

    Each worker has its own interpreter and so its own GIL; a
    multiprocessing.Barrier lines all of them up, and each sends back its
    clients' outcomes (histograms encoded) and its CPU time to be merged here.
    """
    workers = worker_count(plan, indices)
    shares = [indices[w::workers] for w in range(workers)]
    start_line = multiprocessing.Barrier(workers)
    pipes, processes = [], []
    for share in shares:
        receiver, sender = multiprocessing.Pipe(duplex=False)
        process = multiprocessing.Process(
            target=_worker, args=(drive, plan, share, progress, start_line, sender))
        process.start()
        pipes.append(receiver)
        processes.append(process)
    runs: list[DriverRun] = []
    problems = []
    for receiver in pipes:
        status, payload = receiver.recv()
        if status == "ok":
            runs.append(payload)
        else:
            problems.append(payload)
    for process in processes:
        process.join()
    if problems:
        raise ConnectionError(problems[0])
    return DriverRun([outcome for run in runs for outcome in run.outcomes],
                     sum(run.cpu_s for run in runs),
                     min(sum(run.ceiling for run in runs), usable_cpus()),
                     summed([run.wait_s for run in runs]))


def run_processes(plan: Plan, indices: list[int], progress) -> DriverRun:
    """Worker processes (one per usable CPU), each with a thread per client."""
    return in_processes(run_threads, plan, indices, progress)


def run_selectors(plan: Plan, indices: list[int], progress) -> DriverRun:
    """Worker processes (one per usable CPU), each one selector loop over its clients;
    with one worker, the loop runs here."""
    if worker_count(plan, indices) == 1:
        return run_loop(plan, indices, progress)
    return in_processes(run_loop, plan, indices, progress)


DRIVERS = {"threads": run_threads, "trio": run_trio, "processes": run_processes,
           "selectors": run_selectors}


def shared_progress(driver: str, clients: int):
    """Per-client request and error counters (see ClientRun.report), each slot written by
    one client only, so no lock is needed; a worker process writes to shared memory."""
    if driver in ("processes", "selectors"):
        return multiprocessing.Array("q", 2 * clients, lock=False)
    return [0] * (2 * clients)
