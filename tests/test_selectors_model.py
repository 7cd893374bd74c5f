"""The selectors model from the inside: one thread, its slow clients and its parked commands.

Its scheduler and hand-made primitives (the timer heap, the reentrant
Owner, the readers-writer lock) are tested on their own with no sockets:
the tests spawn tasks and run the ready queue by hand. The server tests
start a fresh selectors server on a loopback port and wait for states the
server reports in INFO (`paused_clients`, `parked_commands`,
`blocked_clients`), never for a fixed time.
"""

from __future__ import annotations

import resource
import select
import signal
import socket
import time

import pytest

from contend.server.selector_loop import Loop
from contend.server.selector_sync import TIMED_OUT, Owner, ReadersWriterLock, Signal, Timers
from contend.shared.resp import NEED_MORE, ReplyParser, encode_command
from tests.helpers import info_field, run_together, wait_until

MODEL = "selectors"


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def playground(server, name: str):
    with server.raw() as client:
        return info_field(client, name, "playground")


# -- the scheduler and its primitives, with no network: tasks driven by hand --------------

@pytest.fixture
def loop():
    loop = Loop()
    yield loop
    loop.selector.close()


def settle(loop: Loop) -> None:
    """Run tasks until none is ready: every one has parked or ended."""
    while loop.ready:
        loop.run_ready()


def test_timers_fire_in_deadline_order_and_cancelled_ones_never():
    timers = Timers()
    timers.after(0.02, "late")
    early = timers.after(0.01, "cancelled")
    timers.after(0.0, "first")
    timers.cancel(early)
    assert len(timers) == 2
    assert timers.due(time.monotonic() + 1) == ["first", "late"] and len(timers) == 0
    assert timers.timeout(time.monotonic()) is None   # nothing left: select() may sleep for ever


def test_a_parked_task_is_resumed_by_its_timer(loop):
    outcomes = []

    def sleeper():
        outcomes.append((yield from loop.park(timeout=0.05)))

    task = loop.spawn(sleeper())
    started = time.monotonic()
    loop.turn()   # runs it up to its park
    assert task.parked and not task.done and len(loop.timers) == 1
    while not task.done:
        loop.turn()   # select() sleeps until the deadline: no socket is watched
    assert outcomes == [TIMED_OUT] and time.monotonic() - started >= 0.05
    assert len(loop.timers) == 0 and loop.living == 0


def test_a_task_woken_before_its_timeout_gets_the_value_and_its_timer_goes(loop):
    outcomes = []

    def waiter():
        outcomes.append((yield from loop.park(timeout=600)))

    task = loop.spawn(waiter())
    settle(loop)
    loop.wake(task, "served")
    assert len(loop.timers) == 0
    settle(loop)
    assert outcomes == ["served"] and task.done


def hold(loop: Loop, acquire, release, name: str, log: list, until: Signal):
    """A task that takes a lock, says so, keeps it until `until` is set, then lets go."""
    def steps():
        yield from acquire()
        log.append(f"{name} in")
        yield from until.wait()
        release()
        log.append(f"{name} out")
    return loop.spawn(steps())


def test_owner_is_reentrant_for_its_holder_and_hands_over_first_come_first_served(loop):
    lock, log = Owner(loop), []
    go = {name: Signal(loop) for name in ("me", "first", "second")}

    def reentering():   # BANK.TRANSFER taking its own guard again
        yield from lock.acquire()
        yield from lock.acquire()
        log.append("me in twice")
        yield from go["me"].wait()
        lock.release()
        assert lock.owner is not None   # still held once
        lock.release()
    me = loop.spawn(reentering())
    settle(loop)
    for name in ("first", "second"):
        hold(loop, lock.acquire, lock.release, name, log, go[name])
    settle(loop)
    assert log == ["me in twice"] and lock.owner is me and len(lock.queue) == 2
    go["me"].set()
    settle(loop)   # handed to the longest waiter, not up for grabs
    assert log == ["me in twice", "first in"] and lock.depth == 1
    go["first"].set()
    go["second"].set()
    settle(loop)
    assert log[-2:] == ["second in", "second out"] and lock.owner is None


def test_a_waiter_out_of_patience_leaves_the_queue_and_takes_nothing(loop):
    """`unordered`'s deadlock-timeout-ms: the timer takes the task out of the lock's queue."""
    lock, log = Owner(loop), []
    holding = Signal(loop)
    hold(loop, lock.acquire, lock.release, "holder", log, holding)
    settle(loop)

    def impatient():
        log.append((yield from lock.acquire(timeout=0.01)))
    loop.spawn(impatient())
    while len(log) < 2:
        loop.turn()
    assert log == ["holder in", TIMED_OUT] and not lock.queue
    holding.set()
    settle(loop)
    assert lock.owner is None and loop.living == 0


def test_readers_share_the_readers_writer_lock(loop):
    rw, log = ReadersWriterLock(loop), []
    done = Signal(loop)
    for name in ("r1", "r2", "r3"):
        hold(loop, rw.acquire_shared, rw.release_shared, name, log, done)
    settle(loop)
    assert log == ["r1 in", "r2 in", "r3 in"] and rw.readers == 3
    done.set()
    settle(loop)
    assert rw.readers == 0 and rw.writer is None


def test_a_writer_waits_for_the_readers_and_later_readers_wait_for_the_writer(loop):
    rw, log = ReadersWriterLock(loop), []
    go = {name: Signal(loop) for name in ("r1", "w", "r2", "r3")}
    hold(loop, rw.acquire_shared, rw.release_shared, "r1", log, go["r1"])
    settle(loop)
    hold(loop, rw.acquire_exclusive, rw.release_exclusive, "w", log, go["w"])
    hold(loop, rw.acquire_shared, rw.release_shared, "r2", log, go["r2"])
    hold(loop, rw.acquire_shared, rw.release_shared, "r3", log, go["r3"])
    settle(loop)
    # Writers first: r2 and r3 could share with r1, but FLUSHALL would then wait for ever.
    assert log == ["r1 in"]
    go["r1"].set()
    settle(loop)
    assert log == ["r1 in", "r1 out", "w in"] and rw.readers == 0
    go["w"].set()
    settle(loop)   # the readers queued behind the writer go on together
    assert log == ["r1 in", "r1 out", "w in", "w out", "r2 in", "r3 in"] and rw.readers == 2


def test_a_writer_that_gives_up_waiting_lets_the_readers_behind_it_go(loop):
    rw, log = ReadersWriterLock(loop), []
    holding = Signal(loop)
    hold(loop, rw.acquire_shared, rw.release_shared, "r1", log, holding)
    settle(loop)
    writer = hold(loop, rw.acquire_exclusive, rw.release_exclusive, "w", log, holding)
    hold(loop, rw.acquire_shared, rw.release_shared, "r2", log, holding)
    settle(loop)
    assert log == ["r1 in"]
    loop.kill(writer)   # as when its client's connection is closed at shutdown
    settle(loop)
    assert log == ["r1 in", "r2 in"] and rw.readers == 2 and not rw.queue


# -- back-pressure: slow readers, partial writes -------------------------------------

VALUE_SIZE = 100 * 1024
PIPELINE = 2000   # 200 MB of replies: far more than the server may hold for one client


def test_a_slow_reader_of_a_big_pipeline_gets_every_reply_in_order_and_the_server_stays_small(
        serve):
    server = serve(MODEL)
    values = [bytes([65 + k]) * VALUE_SIZE for k in range(8)]
    with server.raw() as setup:
        for k, value in enumerate(values):
            setup.call("SET", f"v{k}", value)
        baseline = rss_bytes(server.process.pid)

    slow = socket.create_connection((server.host, server.port))
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    slow.sendall(b"".join(encode_command("GET", f"v{i % 8}") for i in range(PIPELINE)))
    # The reader has not read a byte: the server must stop running its commands, not buffer all.
    wait_until(lambda: playground(server, "paused_clients") == 1, message="the slow client paused")
    with server.raw() as other:
        started = time.monotonic()
        assert other.call("PING") == "PONG"
        assert time.monotonic() - started < 1   # served now, not after 200 MB
    assert rss_bytes(server.process.pid) - baseline < 32 * 1024 * 1024

    parser, received = ReplyParser(), 0
    while received < PIPELINE:
        data = slow.recv(64 * 1024)
        assert data, "the server closed the slow reader"
        parser.feed(data)
        while (reply := parser.next_reply()) is not NEED_MORE:
            assert reply == values[received % 8], f"reply {received} out of order"
            received += 1
    slow.close()
    assert rss_bytes(server.process.pid) - baseline < 32 * 1024 * 1024


def test_one_reply_bigger_than_the_socket_takes_is_sent_in_pieces(serve):
    server = serve(MODEL)
    value = bytes(range(256)) * (32 * 1024)   # 8 MiB: many partial sends
    with server.raw() as client:
        client.call("SET", "huge", value)
        client.send_command("GET", "huge")
        client.send_command("PING")
        assert client.read() == value and client.read() == "PONG"


# -- the race lab: one thread is atomic until a command parks --------------------------

CLIENTS = 16


def configure(server, **settings):
    with server.raw() as client:
        for name, value in settings.items():
            assert client.call("CONFIG", "SET", name.replace("_", "-"), value) == "OK"


def test_sync_off_with_no_window_loses_nothing_because_nothing_interleaves(serve):
    server = serve(MODEL, "--sync", "off")
    rounds = 200

    def work(_):
        with server.raw() as client:
            for _ in range(rounds):
                client.call("INCR", "hits")
    run_together(CLIENTS, work)
    with server.raw() as client:
        assert int(client.call("GET", "hits")) == CLIENTS * rounds


def test_sync_off_with_a_window_loses_updates_for_certain(serve):
    """Every round, 16 INCRs read the counter within the same 300 ms window, then all write."""
    server = serve(MODEL, "--sync", "off", "--race-window-us", "300000")
    clients = [server.raw() for _ in range(CLIENTS)]
    rounds = 2
    for _ in range(rounds):
        for client in clients:   # sent back to back from one thread: microseconds, not 300 ms
            client.send_command("INCR", "hits")
        replies = [client.read() for client in clients]
        assert len(set(replies)) < CLIENTS   # some read the same value: their writes collided
    with server.raw() as client:
        counted = int(client.call("GET", "hits"))
    for client in clients:
        client.close()
    assert 0 < counted < CLIENTS * rounds, f"{CLIENTS * rounds - counted} updates lost"


def test_lock_mode_queues_parked_commands_and_counts_exactly(serve):
    server = serve(MODEL, "--sync", "lock", "--race-window-us", "2000")
    clients = [server.raw() for _ in range(CLIENTS)]
    for client in clients:
        client.send_command("INCR", "hits")
    # One holds the lock through its window; the others wait in its queue, parked too,
    # and each reads only what the one before it wrote.
    assert sorted(client.read() for client in clients) == list(range(1, CLIENTS + 1))
    for client in clients:
        client.close()


def test_per_key_locks_exist_only_while_their_keys_are_in_use(serve):
    server = serve(MODEL, "--sync", "striped", "--race-window-us", "1000")
    with server.raw() as client:
        for n in range(200):
            client.send_command("INCR", f"key:{n}")
        assert [client.read() for _ in range(200)] == [1] * 200
        assert info_field(client, "key_locks") == 0   # 200 keys touched, none held now


def test_a_client_that_hangs_up_mid_transfer_leaves_nothing_half_done(serve):
    server = serve(MODEL, "--sync", "lock", "--race-window-us", "200000")
    with server.raw() as client:
        client.call("BANK.DEPOSIT", "alice", "100")
    leaver = server.raw()
    leaver.send_command("BANK.TRANSFER", "alice", "bob", "30")
    wait_until(lambda: playground(server, "parked_commands") == 1, message="the transfer to park")
    leaver.close()   # between its withdraw and its deposit, most likely: the loop finishes it
    with server.raw() as client:
        wait_until(lambda: client.call("GET", "bob") == b"30", message="the deposit")
        assert client.call("BANK.AUDIT", "alice", "bob") == 100


def test_a_client_that_hangs_up_while_queued_for_the_lock_is_not_left_blocked(serve):
    server = serve(MODEL, "--sync", "lock", "--race-window-us", "300000")
    holder, leaver = server.raw(), server.raw()
    holder.send_command("INCR", "hits")   # holds the keyspace lock through its window
    leaver.send_command("BLPOP", "jobs", "0")   # queues for that lock, then would block
    wait_until(lambda: playground(server, "parked_commands") == 2, message="both to park")
    leaver.close()
    assert holder.read() == 1
    with server.raw() as client:
        wait_until(lambda: info_field(client, "connected_clients") == 2, message="the leaver gone")
        assert info_field(client, "blocked_clients") == 0
        assert info_field(client, "list_waiters") == 0
    holder.close()


# -- parked commands: the rest of the pipeline waits, unread -----------------------------

def test_commands_sent_behind_a_parked_blpop_wait_their_turn(serve):
    server = serve(MODEL)
    with server.raw() as waiter, server.raw() as other:
        waiter.send(b"BLPOP jobs 0\r\nSET after 1\r\nGET after\r\n")
        wait_until(lambda: info_field(other, "blocked_clients") == 1, message="BLPOP to park")
        assert other.call("GET", "after") is None   # buffered, not run
        other.call("RPUSH", "jobs", "j1")
        assert waiter.read() == [b"jobs", b"j1"]
        assert waiter.read() == "OK" and waiter.read() == b"1"


def test_a_parked_client_that_hangs_up_is_noticed_while_it_waits(serve):
    server = serve(MODEL)
    with server.raw() as client:
        sleeper = server.raw()
        sleeper.send_command("SLEEP", "600000")
        wait_until(lambda: info_field(client, "blocked_clients") == 1, message="SLEEP to park")
        sleeper.close()
        wait_until(lambda: info_field(client, "connected_clients") == 1, message="the hang-up")
        assert info_field(client, "timers") <= 1   # its ten-minute timer went with it


# -- WORK holds the only thread ----------------------------------------------------------

def test_work_stalls_every_other_client_and_info_counts_it(serve):
    server = serve(MODEL)
    with server.raw() as worker, server.raw() as other:
        stalls = info_field(other, "loop_stalls")
        worker.send_command("WORK", "4000")
        longest_ping = 0.0
        # PING back to back until WORK answers: one of them lands while WORK holds the loop.
        while not select.select([worker.sock], [], [], 0)[0]:
            started = time.monotonic()
            assert other.call("PING") == "PONG"
            longest_ping = max(longest_ping, time.monotonic() - started)
        assert isinstance(worker.read(), int)
        assert info_field(other, "loop_stalls") >= stalls + 1
        work_took = float(info_field(other, "longest_stall_ms")) / 1000
        assert longest_ping > work_took / 2, \
            f"the slowest PING took {longest_ping:.3f}s, WORK held the loop {work_took:.3f}s"


# -- many idle clients are cheap --------------------------------------------------------

def test_a_thousand_idle_clients_cost_little_memory(serve):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if min(hard, 4096) < 2100:
        pytest.skip("needs 2100 open files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    server = serve(MODEL)
    baseline = rss_bytes(server.process.pid)
    idle = [socket.create_connection((server.host, server.port)) for _ in range(1000)]
    try:
        with server.raw() as client:
            wait_until(lambda: info_field(client, "connected_clients") == 1001,
                       message="all connected")
        assert rss_bytes(server.process.pid) - baseline < 16 * 1024 * 1024
    finally:
        for sock in idle:
            sock.close()


def test_item_served_as_its_waiter_leaves_goes_back_to_the_list(serve):
    """The push and the hang-up land in one turn of the loop: the server is paused
    (SIGSTOP) while they happen, so select() reports both at once, the push first.
    The push serves the waiter, then its hang-up is read; the item must survive."""
    server = serve("selectors")
    waiter = server.raw()
    waiter.send_command("BLPOP", "jobs", "0")
    with server.raw() as pusher, server.raw() as taker:
        wait_until(lambda: info_field(taker, "blocked_clients") == 1, message="the waiter")
        server.process.send_signal(signal.SIGSTOP)
        wait_until(lambda: _state(server.process.pid) == "T", message="the server to stop")
        try:
            pusher.send_command("RPUSH", "jobs", "only-one")
            waiter.close()
        finally:
            server.process.send_signal(signal.SIGCONT)
        assert pusher.read() == 1
        assert taker.call("LPOP", "jobs") == b"only-one"


def _state(pid: int) -> str:
    """The process state letter from /proc (T: stopped)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]
