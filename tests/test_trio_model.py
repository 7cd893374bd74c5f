"""The trio model from the inside: its hand-built primitives, and a server in the test's own loop.

The Barrier, the clearable Event and the readers-writer lock are tested on
their own, with trio's `autojump_clock`: time only moves when every task is
blocked, so timeouts take no real time and always fire at the same point. The server tests start
`Server.serve_connection` under `trio.serve_tcp` in the test's nursery and
talk to it over real loopback sockets with trio streams; they wait for
states (`wait_all_tasks_blocked`), never for a fixed time.
"""

from __future__ import annotations

import socket
import struct
from functools import partial

import pytest
import trio
import trio.testing

from contend.server.trio_server import GRACE, Server, StallMeter
from contend.server.trio_sync import Barrier, BrokenBarrierError, ClearableEvent, ReadersWriterLock
from contend.shared.config import Config
from contend.shared.resp import NEED_MORE, NULL_ARRAY, ReplyError, ReplyParser, encode_command

pytestmark = pytest.mark.trio


# -- the Barrier, built from trio.Event and a counter ------------------------------

async def meet(barrier: Barrier, parties: int) -> list:
    """`parties` tasks wait at the barrier together; returns what each wait gave."""
    results: list = [None] * parties

    async def party(i):
        try:
            results[i] = await barrier.wait()
        except BrokenBarrierError as error:
            results[i] = error

    async with trio.open_nursery() as nursery:
        for i in range(parties):
            nursery.start_soon(party, i)
    return results


async def test_barrier_gives_distinct_indices_and_counts_generations():
    barrier = Barrier(3)
    assert sorted(await meet(barrier, 3)) == [0, 1, 2]
    assert sorted(await meet(barrier, 3)) == [0, 1, 2]   # reusable, like threading.Barrier
    assert barrier.generation == 2 and barrier.n_waiting == 0 and not barrier.broken


async def test_barrier_of_one_party_never_waits():
    barrier = Barrier(1)
    assert await barrier.wait() == 0
    assert await barrier.wait() == 0
    assert barrier.generation == 2


async def test_barrier_waits_until_the_last_party_arrives():
    barrier = Barrier(2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(barrier.wait)
        await trio.testing.wait_all_tasks_blocked()
        assert barrier.n_waiting == 1 and barrier.generation == 0
        assert await barrier.wait() == 1   # the last to arrive gets parties - 1
    assert barrier.generation == 1


async def test_barrier_timeout_breaks_it_for_everyone_until_reset(autojump_clock):
    barrier = Barrier(3)
    outcome = []

    async def patient():
        try:
            await barrier.wait()
        except BrokenBarrierError:
            outcome.append(("broken", trio.current_time()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(patient)
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(5) as impatient:   # a cancel scope, not a timeout argument
            await barrier.wait()
        assert impatient.cancelled_caught
    assert outcome == [("broken", 5.0)]   # released when the impatient one gave up
    assert barrier.broken
    with pytest.raises(BrokenBarrierError):
        await barrier.wait()              # stays broken...
    barrier.reset()
    assert not barrier.broken             # ...until reset
    assert sorted(await meet(barrier, 3)) == [0, 1, 2]


async def test_barrier_reset_breaks_the_waiters_and_starts_afresh():
    barrier = Barrier(3)
    async with trio.open_nursery() as nursery:
        results = []

        async def waiter():
            try:
                await barrier.wait()
            except BrokenBarrierError as error:
                results.append(error)

        nursery.start_soon(waiter)
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        barrier.reset()
    assert len(results) == 2 and all(isinstance(r, BrokenBarrierError) for r in results)
    assert not barrier.broken and barrier.n_waiting == 0
    assert sorted(await meet(barrier, 3)) == [0, 1, 2]


async def test_barrier_party_cancelled_while_waiting_breaks_it():
    """What a client hanging up does: its wait is cancelled; the others must not wait forever."""
    barrier = Barrier(3)
    async with trio.open_nursery() as nursery:
        stayed = []
        nursery.start_soon(_wait_then_note_outcome, barrier, stayed)
        with trio.CancelScope() as leaver:
            nursery.start_soon(_cancel_when_blocked, leaver)
            await barrier.wait()
    assert leaver.cancelled_caught and barrier.broken
    assert len(stayed) == 1 and isinstance(stayed[0], BrokenBarrierError)


async def _wait_then_note_outcome(barrier, outcomes):
    try:
        outcomes.append(await barrier.wait())
    except BrokenBarrierError as error:
        outcomes.append(error)


async def _cancel_when_blocked(scope: trio.CancelScope) -> None:
    await trio.testing.wait_all_tasks_blocked()
    scope.cancel()


async def test_barrier_party_that_arrives_last_after_a_break_is_refused():
    barrier = Barrier(2)
    barrier.abort()
    with pytest.raises(BrokenBarrierError):
        await barrier.wait()
    assert barrier.n_waiting == 0


# -- the clearable Event: trio.Event replaced on clear ------------------------------

async def test_event_set_releases_every_waiter_and_counts_them():
    event = ClearableEvent()
    released = []
    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(lambda i=i: _wait_then_note(event, released, i))
        await trio.testing.wait_all_tasks_blocked()
        assert event.set() == 3
    assert sorted(released) == [0, 1, 2]
    assert event.set() == 0   # already set: nobody left to release


async def _wait_then_note(event, released, i):
    await event.wait()
    released.append(i)


async def test_event_clear_replaces_the_event_so_new_waiters_wait(autojump_clock):
    event = ClearableEvent()
    event.set()
    await event.wait()                    # set: returns at once
    event.clear()
    assert not event.is_set()
    with trio.move_on_after(10) as timeout:
        await event.wait()                # the fresh Event is unset: this waits
    assert timeout.cancelled_caught and trio.current_time() == 10


async def test_event_clear_after_set_does_not_strand_the_released_waiters():
    """The reason trio.Event cannot be cleared: a set, then clear, must still wake everyone."""
    event = ClearableEvent()
    woke = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_wait_then_note, event, woke, "early")
        await trio.testing.wait_all_tasks_blocked()
        event.set()
        event.clear()                     # before the waiter has even run again
    assert woke == ["early"]


async def test_event_waiter_that_gave_up_is_not_counted(autojump_clock):
    event = ClearableEvent()
    with trio.move_on_after(1):
        await event.wait()
    assert event.set() == 0


# -- the readers-writer lock: shared per-key guards, an exclusive FLUSHALL ----------

async def hold(side, seconds: float, log: list, name: str) -> None:
    """Take one side of the lock, note when, keep it `seconds`, give it back."""
    await side.acquire()
    log.append((name, trio.current_time()))
    try:
        await trio.sleep(seconds)
    finally:
        side.release()


async def test_rw_lock_lets_two_readers_in_at_once(autojump_clock):
    rw, entered = ReadersWriterLock(), []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, rw.shared, 1, entered, "a")
        nursery.start_soon(hold, rw.shared, 1, entered, "b")
        await trio.testing.wait_all_tasks_blocked()
        assert rw.readers == 2
    assert sorted(entered) == [("a", 0), ("b", 0)]   # neither waited for the other
    assert rw.readers == 0


async def test_rw_lock_writer_excludes_readers(autojump_clock):
    rw, entered = ReadersWriterLock(), []
    rw.exclusive.acquire_nowait()
    with pytest.raises(trio.WouldBlock):
        rw.shared.acquire_nowait()
    with pytest.raises(trio.WouldBlock):
        rw.exclusive.acquire_nowait()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, rw.shared, 0, entered, "reader")
        await trio.sleep(3)
        assert entered == []
        rw.exclusive.release()
    assert entered == [("reader", 3)]
    rw.exclusive.acquire_nowait()   # free again
    rw.exclusive.release()


async def test_rw_lock_waiting_writer_goes_before_new_readers(autojump_clock):
    """Writer preference: otherwise overlapping INCRs could keep FLUSHALL out for ever."""
    rw, entered = ReadersWriterLock(), []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold, rw.shared, 5, entered, "first reader")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(hold, rw.exclusive, 1, entered, "writer")
        await trio.testing.wait_all_tasks_blocked()
        assert rw.writers_waiting == 1
        with pytest.raises(trio.WouldBlock):
            rw.shared.acquire_nowait()          # the lock is shared, but a writer queues
        nursery.start_soon(hold, rw.shared, 0, entered, "later reader")
    assert entered == [("first reader", 0), ("writer", 5), ("later reader", 6)]


async def test_rw_lock_cancelled_waits_leave_it_consistent(autojump_clock):
    rw, entered = ReadersWriterLock(), []
    rw.shared.acquire_nowait()
    async with trio.open_nursery() as nursery:
        with trio.move_on_after(2) as impatient_writer:
            nursery.start_soon(hold, rw.shared, 0, entered, "reader behind the writer")
            await rw.exclusive.acquire()
        assert impatient_writer.cancelled_caught
    # The reader queued only behind the writer went in as soon as the writer gave up.
    assert entered == [("reader behind the writer", 2)]
    assert (rw.readers, rw.writing, rw.writers_waiting) == (1, False, 0)
    with pytest.raises(trio.WouldBlock):
        rw.exclusive.acquire_nowait()            # the first reader still holds it
    rw.shared.release()
    rw.exclusive.acquire_nowait()
    with trio.move_on_after(1) as impatient_reader:
        await rw.shared.acquire()
    assert impatient_reader.cancelled_caught and rw.readers == 0
    rw.exclusive.release()
    rw.shared.acquire_nowait()
    rw.shared.release()
    with pytest.raises(RuntimeError):
        rw.shared.release()                      # released more often than taken


# -- a server in the test's own loop, spoken to with trio streams -----------------

class TrioClient:
    """A RESP2 client over a trio stream: enough for these tests."""

    def __init__(self, stream: trio.SocketStream):
        self.stream = stream
        self.parser = ReplyParser()

    async def send(self, *args) -> None:
        await self.stream.send_all(encode_command(*args))

    async def read(self):
        while (reply := self.parser.next_reply()) is NEED_MORE:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError("the server closed the connection")
            self.parser.feed(data)
        return reply

    async def call(self, *args):
        await self.send(*args)
        return await self.read()

    async def closed_by_server(self) -> bool:
        try:
            return await self.stream.receive_some(65536) == b""
        except trio.BrokenResourceError:
            return True


class InProcess:
    def __init__(self, server: Server, port: int):
        self.server, self.port = server, port

    async def connect(self) -> TrioClient:
        return TrioClient(await trio.open_tcp_stream("127.0.0.1", self.port))


@pytest.fixture
async def trio_server(nursery):
    """The trio model's connection handler, served by trio.serve_tcp in the test's nursery."""
    server = Server(Config(model="trio", port=0))
    trio.lowlevel.add_instrument(StallMeter(server.stalls))   # as serve_forever's trio.run does
    listeners = await nursery.start(partial(trio.serve_tcp, server.serve_connection, 0,
                                            host="127.0.0.1"))
    return InProcess(server, listeners[0].socket.getsockname()[1])


async def incr_together(trio_server: InProcess, clients: int, rounds: int) -> int:
    """`clients` connections INCR one counter `rounds` times each, all at once; the final count."""
    connections = [await trio_server.connect() for _ in range(clients)]

    async def run(client):
        for _ in range(rounds):
            assert isinstance(await client.call("INCR", "hits"), int)

    async with trio.open_nursery() as nursery:
        for client in connections:
            nursery.start_soon(run, client)
    return int(await connections[0].call("GET", "hits"))


async def test_sync_off_without_a_race_window_is_exact(trio_server):
    """No await between read and write: no other task can run in between, no lock needed."""
    trio_server.server.config.sync = "off"
    assert await incr_together(trio_server, clients=8, rounds=20) == 160


async def test_sync_off_with_a_race_window_loses_updates(trio_server, autojump_clock):
    """`await trio.sleep` between read and write: every client reads the same value each round.

    With the autojump clock the window only closes once every task is blocked,
    that is once all eight have read, so each round counts exactly one.
    """
    trio_server.server.config.sync = "off"
    trio_server.server.config.race_window_us = 1000
    assert await incr_together(trio_server, clients=8, rounds=5) == 5


@pytest.mark.parametrize("mode", ["lock", "striped", "unordered"])
async def test_guarded_modes_are_exact_with_the_window_open(trio_server, autojump_clock, mode):
    trio_server.server.config.sync = mode
    trio_server.server.config.race_window_us = 1000
    assert await incr_together(trio_server, clients=8, rounds=5) == 40


async def test_transfer_reenters_its_guard_without_a_reentrant_lock(trio_server):
    server = trio_server.server
    assert type(server.keyspace_lock) is trio.Lock   # trio has no RLock
    client = await trio_server.connect()
    assert await client.call("BANK.DEPOSIT", "alice", "100") == 100
    assert await client.call("BANK.TRANSFER", "alice", "bob", "30") == [70, 30]
    assert not server.keyspace_lock.locked()         # released once, at the end


async def test_unordered_crossing_transfers_give_up_with_deadlock(trio_server, autojump_clock):
    config = trio_server.server.config
    config.sync, config.race_window_us, config.deadlock_timeout_ms = "unordered", 100_000, 1000
    a, b = await trio_server.connect(), await trio_server.connect()
    await a.call("BANK.DEPOSIT", "alice", "100")
    await a.call("BANK.DEPOSIT", "bob", "100")
    replies = {}

    async def transfer(client, source, target):
        replies[source] = await client.call("BANK.TRANSFER", source, target, "10")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(transfer, a, "alice", "bob")
        nursery.start_soon(transfer, b, "bob", "alice")
    assert any(str(r).startswith("DEADLOCK") for r in replies.values()), replies
    assert await a.call("BANK.AUDIT", "alice", "bob") == 200
    assert trio_server.server.state.stats.deadlocks >= 1



def info_fields(text: bytes) -> dict:
    return dict(line.split(":", 1) for line in text.decode().splitlines() if ":" in line)


async def test_striped_flushall_waits_for_an_incr_in_its_race_window(trio_server, autojump_clock):
    """FLUSHALL takes the readers-writer lock exclusive; the INCR holds it shared until it
    has written, so it cannot write back, after the flush, the value it read before."""
    config = trio_server.server.config
    config.sync, config.race_window_us = "striped", 300_000
    writer, flusher = await trio_server.connect(), await trio_server.connect()
    assert await writer.call("SET", "k", "5") == "OK"
    await writer.send("INCR", "k")
    await trio.testing.wait_all_tasks_blocked()   # the INCR has read 5 and sleeps in its window
    assert info_fields(await flusher.call("INFO", "clients"))["commands_in_flight"] == "1"
    assert await flusher.call("FLUSHALL") == "OK"
    assert trio.current_time() >= 0.3   # it waited for the window to close
    assert (await writer.read(), await flusher.call("GET", "k")) == (6, None)


@pytest.mark.parametrize("mode", ["off", "lock", "striped", "unordered"])
async def test_blpop_holds_no_lock_while_it_waits(trio_server, mode):
    """PopWait gives every guard up: held through the wait, the push it waits for could
    never come (the key's lock), nor a FLUSHALL (the readers-writer lock)."""
    server = trio_server.server
    server.config.sync = mode
    waiter, pusher = await trio_server.connect(), await trio_server.connect()
    await waiter.send("BLPOP", "q", "0")
    await trio.testing.wait_all_tasks_blocked()
    assert server.state.blocked_clients() == 1
    assert not server.keyspace_lock.locked()   # the Condition let go of it to wait
    assert server.keyspace_rw.readers == 0 and not server.key_locks
    assert await pusher.call("FLUSHALL") == "OK"
    assert await pusher.call("RPUSH", "q", "job") == 1   # as Redis: the length before serving
    assert await waiter.read() == [b"q", b"job"]


async def test_item_handed_to_a_waiter_that_hung_up_goes_back(trio_server):
    """A push serves the waiter, and its client hangs up before the task wakes: the hang-up
    watcher tells the session, which hands the item back instead of losing it."""
    server = trio_server.server
    waiter = await trio_server.connect()
    await waiter.send("BLPOP", "q", "0")
    await trio.testing.wait_all_tasks_blocked()
    # What a push does under the guard, minus the wake-up: the item is the waiter's now.
    server.state.keyspace.push(b"q", [b"job"], False)
    assert server.state.waiters.serve(b"q")
    await waiter.stream.aclose()
    await trio.testing.wait_all_tasks_blocked()
    client = await trio_server.connect()
    assert await client.call("LPOP", "q") == b"job"


async def test_a_failing_connection_task_gives_its_leases_back(trio_server, caplog):
    """A bug in the model's own loop ends that connection, not the server; what the
    client held goes back to the pool all the same."""
    server = trio_server.server
    holder = await trio_server.connect()
    assert isinstance(await holder.call("POOL.ACQUIRE"), int)

    async def broken(conn):
        raise RuntimeError("a bug in the read loop")

    server._next_bytes = broken       # the holder's next wait for bytes fails
    await holder.send("PING")
    assert await holder.read() == "PONG"
    assert await holder.closed_by_server()
    del server._next_bytes
    assert server.state.ledger.in_use == 0 and server.leases.borrowed_tokens == 0
    assert "a connection failed" in caplog.text
    client = await trio_server.connect()
    assert await client.call("PING") == "PONG"


async def test_timeouts_are_cancel_scopes_and_take_no_real_time(trio_server, autojump_clock):
    client = await trio_server.connect()
    start = trio.current_time()
    assert await client.call("BLPOP", "nothing", "30") is NULL_ARRAY
    assert await client.call("EVENT.WAIT", "never", "30") == 0
    for _ in range(4):
        await client.call("POOL.ACQUIRE")
    assert await client.call("POOL.ACQUIRE", "30") is None
    assert trio.current_time() - start == pytest.approx(90)


async def test_blpop_waiter_that_hangs_up_is_removed_and_loses_nothing(trio_server):
    server = trio_server.server
    waiter = await trio_server.connect()
    await waiter.send("BLPOP", "queue", "0")
    await trio.testing.wait_all_tasks_blocked()
    assert server.state.waiters.count == 1 and server.state.blocked_clients() == 1
    await waiter.stream.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert server.state.waiters.count == 0 and server.state.blocked_clients() == 0
    client = await trio_server.connect()
    await client.call("RPUSH", "queue", "job")
    assert await client.call("LPOP", "queue") == b"job"


async def test_bytes_pipelined_behind_a_blocked_command_are_answered_after_it(trio_server):
    waiter = await trio_server.connect()
    await waiter.stream.send_all(encode_command("BLPOP", "q", "0") + encode_command("PING"))
    await trio.testing.wait_all_tasks_blocked()   # the watcher has read PING and keeps it
    pusher = await trio_server.connect()
    await pusher.call("RPUSH", "q", "v")
    assert await waiter.read() == [b"q", b"v"]
    assert await waiter.read() == "PONG"


async def test_barrier_breaks_when_a_waiting_client_hangs_up(trio_server):
    leaver, stayer = await trio_server.connect(), await trio_server.connect()
    await leaver.send("BARRIER.WAIT", "d", "3")
    await stayer.send("BARRIER.WAIT", "d", "3")
    await trio.testing.wait_all_tasks_blocked()
    await leaver.stream.aclose()
    assert str(await stayer.read()) == "BROKEN barrier 'd' is broken"


async def test_pool_lease_of_a_client_that_hangs_up_goes_to_the_next_waiter(trio_server):
    holder, waiter = await trio_server.connect(), await trio_server.connect()
    for _ in range(4):
        assert isinstance(await holder.call("POOL.ACQUIRE"), int)
    await waiter.send("POOL.ACQUIRE", "0")
    await trio.testing.wait_all_tasks_blocked()
    await holder.stream.aclose()
    assert isinstance(await waiter.read(), int)
    assert trio_server.server.state.ledger.in_use == 1
    assert trio_server.server.leases.borrowed_tokens == 1


async def test_idle_client_is_closed_after_timeout(trio_server, autojump_clock):
    trio_server.server.config.timeout = 60
    client = await trio_server.connect()
    assert await client.call("PING") == "PONG"
    start = trio.current_time()
    assert await client.closed_by_server()
    assert trio.current_time() - start == pytest.approx(60)


async def test_work_stalls_the_loop_and_info_says_so(trio_server):
    client = await trio_server.connect()
    await client.call("WORK", "1000")   # tens of milliseconds of CPU with no await inside
    info = (await client.call("INFO", "playground")).decode()
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    assert int(fields["loop_stalls"]) >= 1 and float(fields["longest_stall_ms"]) >= 10


async def test_maxclients_refuses_with_an_error_and_closes(trio_server):
    trio_server.server.client_slots.total_tokens = 1
    first = await trio_server.connect()
    assert await first.call("PING") == "PONG"
    second = await trio_server.connect()
    assert str(await second.read()) == "ERR max number of clients reached"
    assert await second.closed_by_server()
    assert trio_server.server.state.stats.rejected_connections == 1


async def test_a_client_that_resets_before_it_is_served_does_not_stop_the_server(trio_server):
    """The handler finds the connection already reset (its address is gone) and just ends."""
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", trio_server.port)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # closed with a reset before this task yields, so before the server accepts it
    await trio.testing.wait_all_tasks_blocked()
    client = await trio_server.connect()
    assert await client.call("PING") == "PONG"


async def test_stop_ends_idle_and_blocked_clients_and_returns(autojump_clock):
    server = Server(Config(model="trio", port=0))
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve, listeners)
        await trio.testing.wait_all_tasks_blocked()
        idle = TrioClient(await trio.open_tcp_stream("127.0.0.1", port))
        blocked = TrioClient(await trio.open_tcp_stream("127.0.0.1", port))
        assert await idle.call("PING") == "PONG"
        await blocked.send("BLPOP", "never", "0")
        await trio.testing.wait_all_tasks_blocked()
        server.stop()
        assert await idle.closed_by_server()
        assert await blocked.read() is NULL_ARRAY   # its wait was cut short, then answered
        assert await blocked.closed_by_server()
    assert not server.connections   # serve() returned: every connection task has ended


async def test_stop_cancels_a_command_past_its_grace_and_still_returns_leases(autojump_clock):
    """A command still running GRACE seconds after stop() is cancelled, its locks released;
    the session's clean-up still runs (shielded), so the client's lease goes back."""
    server = Server(Config(model="trio", port=0, race_window_us=60_000_000))   # a minute
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve, listeners)
        await trio.testing.wait_all_tasks_blocked()
        client = TrioClient(await trio.open_tcp_stream("127.0.0.1", port))
        assert isinstance(await client.call("POOL.ACQUIRE"), int)
        await client.send("INCR", "n")               # holds the keyspace lock in its window
        await trio.testing.wait_all_tasks_blocked()
        server.stop()
        assert await client.closed_by_server()       # no reply: it was cut off, not finished
        assert trio.current_time() == pytest.approx(GRACE)
    assert server.state.ledger.in_use == 0 and server.leases.borrowed_tokens == 0
    assert not server.keyspace_lock.locked() and server.state.keyspace.get(b"n") is None


async def test_reply_error_from_a_wait_is_not_wrapped_in_an_exception_group(trio_server):
    client = await trio_server.connect()
    assert isinstance(await client.call("BARRIER.WAIT", "t", "2", "0.01"), ReplyError)
    assert await client.call("PING") == "PONG"

