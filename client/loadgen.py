"""The load generator: one client's run (sans-io), and three drivers that run many.

`ClientRun` decides what to send when and what each reply means; it never
touches a socket. A request is usually one command and one reply; a
conversational scenario's request (`cas`: WATCH and GET, then MULTI, SET and
EXEC, again until EXEC succeeds) takes several round trips, and the drivers
need not know: they send whatever `next_batch` returns and hand back as many
replies. The drivers own the sockets and show the same comparison on the
client side that the servers show: threads (one per client), trio (one task
per client), processes (workers, each with threads, results merged).
Every driver connects all clients first, then starts them together at a
barrier, so the first requests collide as hard as they can.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from hdrh.histogram import HdrHistogram

from contend.client.connection import Connection
from contend.client.scenarios import Scenario
from contend.shared.resp import NEED_MORE, ReplyError, ReplyParser, encode_command

HARD_LIMIT = 600.0   # seconds: no run goes on longer, whatever it was asked
LOWEST_US, HIGHEST_US = 1, 120_000_000


def new_histogram() -> HdrHistogram:
    """Latencies in microseconds, 1 µs to 2 minutes, 3 significant digits."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, 3)


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


class ClientRun:
    """One client's requests: when each is due, and what its reply means.

    In closed loop the next request goes out when the last reply is in. With a
    rate, request k is *due* at start + k/rate, and its latency is measured from
    that moment, not from when it was sent: a server that stalls makes the
    requests behind it late, and that lateness is counted (coordinated omission).
    """

    def __init__(self, plan: Plan, index: int, start: float):
        self.plan, self.index, self.start = plan, index, start
        limit = plan.duration if plan.duration is not None else HARD_LIMIT
        self.deadline = start + min(limit, HARD_LIMIT)
        self.interval = plan.clients / plan.rate if plan.rate else None
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
        return None if self.interval is None else self.start + self.seq * self.interval

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

def _drive_with_socket(run: ClientRun, connection: Connection, progress: list, slot: int) -> None:
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
                reply = connection.read()
                run.on_reply(position, reply, time.perf_counter())
        except (OSError, ConnectionError) as error:
            run.fail("timeout" if isinstance(error, TimeoutError) else "connection")
            run.report(progress)
            return
        run.batch_done(progress)


def run_threads(plan: Plan, indices: list[int], progress, start_line=None) -> list[ClientOutcome]:
    """One thread per client; they all leave the start line together."""
    connections = [connect(plan) for _ in indices]
    start = threading.Barrier(len(indices) + 1)
    outcomes: list = [None] * len(indices)

    def client(slot: int, index: int) -> None:
        start.wait()
        run = ClientRun(plan, index, time.perf_counter())
        try:
            _drive_with_socket(run, connections[slot], progress, index)
        except Exception as error:   # a scenario bug must not lose the others' results
            run.fail(type(error).__name__)
        outcomes[slot] = run.finish()

    threads = [threading.Thread(target=client, args=(slot, index), daemon=True)
               for slot, index in enumerate(indices)]
    for thread in threads:
        thread.start()
    if start_line is not None:
        start_line.wait()   # the processes driver lines up every worker too
    start.wait()
    for thread in threads:
        thread.join()
    for connection in connections:
        connection.close()
    return outcomes


# -- trio -----------------------------------------------------------------------

def run_trio(plan: Plan, indices: list[int], progress) -> list[ClientOutcome]:
    """One task per client in one thread; the start line is a trio.Event."""
    import trio

    async def main() -> list[ClientOutcome]:
        streams = [await trio.open_tcp_stream(plan.host, plan.port) for _ in indices]
        outcomes: list = [None] * len(indices)
        go = trio.Event()

        async def client(slot: int, index: int) -> None:
            stream, parser = streams[slot], ReplyParser()

            async def read():
                while (reply := parser.next_reply()) is NEED_MORE:
                    with trio.fail_after(plan.timeout):
                        data = await stream.receive_some(65536)
                    if not data:
                        raise ConnectionError("server closed the connection")
                    parser.feed(data)
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
            go.set()
        return outcomes

    return trio.run(main)


# -- processes --------------------------------------------------------------------

def _worker(plan: Plan, indices: list[int], progress, start_line, results) -> None:
    try:
        outcomes = run_threads(plan, indices, progress, start_line)
        results.send(("ok", outcomes))
    except BaseException as error:   # reported by the parent, never lost in a child
        start_line.abort()
        results.send(("error", f"{type(error).__name__}: {error}"))


def run_processes(plan: Plan, indices: list[int], progress, workers: int | None = None
                  ) -> list[ClientOutcome]:
    """Worker processes, each running its share of the clients on threads.

    Each worker has its own interpreter and so its own GIL; a
    multiprocessing.Barrier lines all of them up, and each sends back its
    clients' outcomes (histograms encoded) to be merged here.
    """
    workers = max(1, min(workers or os.cpu_count() or 1, len(indices)))
    shares = [indices[w::workers] for w in range(workers)]
    start_line = multiprocessing.Barrier(workers)
    pipes, processes = [], []
    for share in shares:
        receiver, sender = multiprocessing.Pipe(duplex=False)
        process = multiprocessing.Process(target=_worker,
                                          args=(plan, share, progress, start_line, sender))
        process.start()
        pipes.append(receiver)
        processes.append(process)
    outcomes: list[ClientOutcome] = []
    problems = []
    for receiver in pipes:
        status, payload = receiver.recv()
        if status == "ok":
            outcomes += payload
        else:
            problems.append(payload)
    for process in processes:
        process.join()
    if problems:
        raise ConnectionError(problems[0])
    return outcomes


DRIVERS = {"threads": run_threads, "trio": run_trio, "processes": run_processes}


def shared_progress(driver: str, clients: int):
    """Per-client request and error counters (see ClientRun.report), each slot written by
    one client only, so no lock is needed; a worker process writes to shared memory."""
    if driver == "processes":
        return multiprocessing.Array("q", 2 * clients, lock=False)
    return [0] * (2 * clients)
