"""The asyncio model from the inside: its helpers, and a server in the test's own event loop.

The helpers of asyncio_sync.py are tested on their own. The server tests run
`Server.serve` in the test's loop, once on asyncio's own loop and once on
uvloop's (the `serving` fixture), and talk to it over real loopback sockets
with asyncio streams. They wait for states (`until`), never for a fixed time;
where a race window must be open while others arrive, it is made wide enough
that the outcome is certain.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from contend.server import asyncio_server
from contend.server.asyncio_server import Connection, Server
from contend.server.asyncio_sync import ReadersWriterLock, ResizableSemaphore, acquire_nowait
from contend.shared.config import Config
from contend.shared.resp import NEED_MORE, NULL_ARRAY, ReplyError, ReplyParser, encode_command

ROOT = Path(__file__).resolve().parent.parent
LOOPS = ["asyncio", "uvloop"]


def run(coroutine_function, loop: str = "asyncio"):
    with asyncio.Runner(loop_factory=asyncio_server.event_loop_factory(loop)) as runner:
        return runner.run(coroutine_function())


async def until(condition, message: str = "condition"):
    """Wait for a state of the server, giving the loop a turn between looks."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"timed out waiting for {message}")


# -- acquire_nowait: a try-acquire for asyncio's locks ------------------------------

def test_acquire_nowait_takes_a_free_lock_and_refuses_a_held_one():
    async def scenario():
        lock = asyncio.Lock()
        assert acquire_nowait(lock) and lock.locked()
        assert not acquire_nowait(lock)   # an asyncio.Lock has no owner: no re-entry either
        lock.release()
        assert not lock.locked()
    run(scenario)


def test_acquire_nowait_does_not_jump_the_queue_and_leaves_none_behind():
    """A released Lock is unlocked until the waiter it woke runs: it is that waiter's."""
    async def scenario():
        lock = asyncio.Lock()
        await lock.acquire()
        waiter = asyncio.create_task(lock.acquire())
        await asyncio.sleep(0)   # the waiter queues
        lock.release()
        assert not lock.locked() and not acquire_nowait(lock)
        await waiter   # the woken waiter got it, and no abandoned attempt stood in its way
        assert lock.locked()
        lock.release()
        assert acquire_nowait(lock)
    run(scenario)


def test_resizable_semaphore_shrinks_by_a_debt_that_releases_pay():
    async def scenario():
        permits = ResizableSemaphore(2)
        await permits.acquire()
        await permits.acquire()
        permits.resize(1)            # both are out: one permit is owed
        permits.release()            # pays the debt: still none free
        assert permits.locked()
        permits.release()
        assert not permits.locked()
        permits.resize(3)            # two more, free at once
        for _ in range(3):
            assert acquire_nowait(permits)
        assert permits.locked()
    run(scenario)


# -- the readers-writer lock ------------------------------------------------------

def test_readers_share_and_a_writer_excludes_them():
    async def scenario():
        rw = ReadersWriterLock()
        assert acquire_nowait(rw.shared) and acquire_nowait(rw.shared) and rw.readers == 2
        assert not acquire_nowait(rw.exclusive)
        rw.release_shared()
        rw.release_shared()
        assert acquire_nowait(rw.exclusive)
        assert not acquire_nowait(rw.shared) and not acquire_nowait(rw.exclusive)
        rw.release_exclusive()
        assert rw.readers == 0 and not rw.writing
    run(scenario)


def test_a_waiting_writer_keeps_new_readers_out_until_it_has_been():
    async def scenario():
        rw = ReadersWriterLock()
        await rw.acquire_shared()
        writer = asyncio.create_task(rw.acquire_exclusive())
        await asyncio.sleep(0)
        assert rw.writers_waiting == 1 and not acquire_nowait(rw.shared)
        rw.release_shared()
        await writer
        assert rw.writing
        reader = asyncio.create_task(rw.acquire_shared())
        await asyncio.sleep(0)
        assert not reader.done()
        rw.release_exclusive()
        await reader
        assert rw.readers == 1
    run(scenario)


def test_a_writer_that_gives_up_lets_the_readers_it_held_back_in():
    async def scenario():
        rw = ReadersWriterLock()
        await rw.acquire_shared()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await rw.acquire_exclusive()
        assert rw.writers_waiting == 0 and acquire_nowait(rw.shared)
    run(scenario)


# -- a server in the test's loop ---------------------------------------------------

class Client:
    """One RESP connection on asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.parser = ReplyParser()

    def send(self, *args) -> None:
        self.writer.write(encode_command(*args))

    async def read(self):
        while (reply := self.parser.next_reply()) is NEED_MORE:
            data = await self.reader.read(65536)
            if not data:
                raise EOFError("the server closed the connection")
            self.parser.feed(data)
        return reply

    async def call(self, *args):
        self.send(*args)
        return await self.read()

    async def closed_by_server(self) -> bool:
        try:
            return await self.reader.read(65536) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.writer.close()


class InProcess:
    def __init__(self, server: Server, port: int):
        self.server, self.port = server, port

    async def connect(self) -> Client:
        return Client(*await asyncio.open_connection("127.0.0.1", self.port))


@pytest.fixture(params=LOOPS)
def serving(request):
    """serving(scenario, **config): run `async scenario(server)` against a Server
    serving in the same loop (asyncio's or uvloop's), then stop it."""
    def start(scenario, **settings):
        server = Server(Config(model="asyncio", port=0, loop=request.param, **settings))

        async def main():
            listener = socket.create_server(("127.0.0.1", 0))
            serve = asyncio.create_task(server.serve(listener))
            try:
                return await scenario(InProcess(server, listener.getsockname()[1]))
            finally:
                server.stop()
                await serve
        run(main, request.param)
        return server
    return start


async def incr_together(server: InProcess, clients: int, rounds: int) -> int:
    """`clients` connections INCR one counter, `rounds` times: each round every client
    sends before any reads its reply. Returns the final count."""
    connections = [await server.connect() for _ in range(clients)]
    for _ in range(rounds):
        for client in connections:
            client.send("INCR", "hits")
        for client in connections:
            assert isinstance(await client.read(), int)
    return int(await connections[0].call("GET", "hits"))


# -- the lesson: where an await is, another task runs -------------------------------

def test_sync_off_without_a_race_window_is_exact(serving):
    """No await between read and write: no other connection runs in between, no lock needed."""
    async def scenario(server):
        assert await incr_together(server, clients=50, rounds=20) == 1000
    serving(scenario, sync="off")


def test_sync_off_with_a_race_window_loses_updates(serving):
    """`await asyncio.sleep` between read and write: every client of a round reads before
    any writes back (the window is far longer than reading eight requests), so each
    round of eight INCRs counts one."""
    async def scenario(server):
        assert await incr_together(server, clients=8, rounds=5) == 5
    serving(scenario, sync="off", race_window_us=200_000)


@pytest.mark.parametrize("mode", ["lock", "striped", "unordered"])
def test_guarded_modes_are_exact_with_the_window_open(serving, mode):
    async def scenario(server):
        assert await incr_together(server, clients=8, rounds=3) == 24
    serving(scenario, sync=mode, race_window_us=20_000)


def test_commands_that_never_wait_run_in_the_callback_and_idle_clients_are_no_tasks(serving):
    async def scenario(server):
        clients = [await server.connect() for _ in range(20)]
        before = len(asyncio.all_tasks())
        for client in clients:
            assert await client.call("INCR", "n") > 0
        assert len(asyncio.all_tasks()) == before   # no connection needed a task
        assert not any(conn.task for conn in server.server.connections)
    serving(scenario)


def test_transfer_reenters_its_guard_without_a_reentrant_lock(serving):
    async def scenario(server):
        lock = server.server.keyspace_lock
        assert type(lock) is asyncio.Lock   # asyncio has no RLock
        client = await server.connect()
        assert await client.call("BANK.DEPOSIT", "alice", "100") == 100
        assert await client.call("BANK.TRANSFER", "alice", "bob", "30") == [70, 30]
        assert not lock.locked()   # released once, at the end
    serving(scenario)


def test_unordered_crossing_transfers_give_up_with_deadlock(serving):
    async def scenario(server):
        a, b = await server.connect(), await server.connect()
        await a.call("BANK.DEPOSIT", "alice", "100")
        await a.call("BANK.DEPOSIT", "bob", "100")
        a.send("BANK.TRANSFER", "alice", "bob", "10")
        b.send("BANK.TRANSFER", "bob", "alice", "10")
        replies = [await a.read(), await b.read()]
        assert any(str(reply).startswith("DEADLOCK") for reply in replies), replies
        assert await a.call("BANK.AUDIT", "alice", "bob") == 200
        assert server.server.state.stats.deadlocks >= 1
    serving(scenario, sync="unordered", race_window_us=100_000, deadlock_timeout_ms=300)


def test_striped_flushall_waits_for_an_incr_in_its_race_window(serving):
    """FLUSHALL takes the readers-writer lock exclusive; the INCR holds it shared until it
    has written, so it cannot write back, after the flush, the value it read before."""
    async def scenario(server):
        writer, flusher = await server.connect(), await server.connect()
        assert await writer.call("SET", "k", "5") == "OK"
        writer.send("INCR", "k")
        await until(lambda: server.server.keyspace_rw.readers == 1, "the INCR in its window")
        assert await flusher.call("FLUSHALL") == "OK"
        assert (await writer.read(), await flusher.call("GET", "k")) == (6, None)
    serving(scenario, sync="striped", race_window_us=200_000)


@pytest.mark.parametrize("mode", ["off", "lock", "striped", "unordered"])
def test_blpop_holds_no_lock_while_it_waits(serving, mode):
    """PopWait gives every guard up: held through the wait, the push it waits for could
    never come (the key's lock), nor a FLUSHALL (the readers-writer lock)."""
    async def scenario(server):
        model = server.server
        waiter, pusher = await server.connect(), await server.connect()
        waiter.send("BLPOP", "q", "0")
        await until(lambda: model.state.blocked_clients() == 1, "the BLPOP to wait")
        assert not model.keyspace_lock.locked()   # the Condition let go of it to wait
        assert model.keyspace_rw.readers == 0 and not model.key_locks
        assert await pusher.call("FLUSHALL") == "OK"
        assert await pusher.call("RPUSH", "q", "job") == 1
        assert await waiter.read() == [b"q", b"job"]
    serving(scenario, sync=mode)


# -- waits, hang-ups and the things a client leaves behind ------------------------------

def test_item_handed_to_a_waiter_that_hung_up_goes_back(serving):
    """A push serves the waiter and its client hangs up before the waiter wakes:
    connection_lost tells the session, which hands the item back instead of losing it."""
    async def scenario(server):
        state = server.server.state
        waiter = await server.connect()
        waiter.send("BLPOP", "q", "0")
        await until(lambda: state.blocked_clients() == 1, "the BLPOP to wait")
        # What a push does under the guard, minus the wake-up: the item is the waiter's now.
        state.keyspace.push(b"q", [b"job"], False)
        assert state.waiters.serve(b"q")
        waiter.close()
        await until(lambda: state.blocked_clients() == 0, "the waiter to leave")
        client = await server.connect()
        assert await client.call("LPOP", "q") == b"job"
    serving(scenario)


def test_blpop_waiter_that_hangs_up_is_removed_and_loses_nothing(serving):
    async def scenario(server):
        state = server.server.state
        waiter = await server.connect()
        waiter.send("BLPOP", "queue", "0")
        await until(lambda: state.blocked_clients() == 1, "the BLPOP to wait")
        waiter.close()
        await until(lambda: state.blocked_clients() == 0 and not len(state.waiters),
                    "the waiter to be removed")
        client = await server.connect()
        await client.call("RPUSH", "queue", "job")
        assert await client.call("LPOP", "queue") == b"job"
    serving(scenario)


def test_bytes_pipelined_behind_a_blocked_command_are_answered_after_it(serving):
    async def scenario(server):
        waiter, pusher = await server.connect(), await server.connect()
        waiter.writer.write(encode_command("BLPOP", "q", "0") + encode_command("PING"))
        await until(lambda: server.server.state.blocked_clients() == 1, "the BLPOP to wait")
        await pusher.call("RPUSH", "q", "v")
        assert await waiter.read() == [b"q", b"v"]
        assert await waiter.read() == "PONG"
    serving(scenario)


def test_timeouts_end_each_kind_of_wait(serving):
    async def scenario(server):
        client = await server.connect()
        assert await client.call("BLPOP", "nothing", "0.05") is NULL_ARRAY
        assert await client.call("EVENT.WAIT", "never", "0.05") == 0
        for _ in range(4):
            await client.call("POOL.ACQUIRE")
        assert await client.call("POOL.ACQUIRE", "0.05") is None
        assert server.server.state.ledger.timeouts == 1
        # A timed-out barrier party breaks it; the reply is a plain error, not a group of them.
        reply = await client.call("BARRIER.WAIT", "t", "2", "0.05")
        assert isinstance(reply, ReplyError) and str(reply) == "BROKEN barrier 't' is broken"
        assert await client.call("PING") == "PONG"
    serving(scenario)


def test_barrier_breaks_when_a_waiting_client_hangs_up(serving):
    """asyncio.Barrier lets a cancelled party leave quietly; BARRIER.WAIT breaks it, as
    threading.Barrier would, or the others would wait for ever."""
    async def scenario(server):
        leaver, stayer = await server.connect(), await server.connect()
        leaver.send("BARRIER.WAIT", "d", "3")
        stayer.send("BARRIER.WAIT", "d", "3")
        await until(lambda: server.server.state.blocked_clients() == 2, "both to arrive")
        leaver.close()
        assert str(await stayer.read()) == "BROKEN barrier 'd' is broken"
        assert await stayer.call("BARRIER.STATUS", "d") == [
            b"parties", 3, b"waiting", 0, b"broken", 1, b"generation", 0]
    serving(scenario)


def test_barrier_gives_distinct_indices_and_counts_generations(serving):
    async def scenario(server):
        parties = [await server.connect() for _ in range(3)]
        for _ in range(2):
            for client in parties:
                client.send("BARRIER.WAIT", "b", "3")
            assert sorted([await client.read() for client in parties]) == [0, 1, 2]
        assert await parties[0].call("BARRIER.STATUS", "b") == [
            b"parties", 3, b"waiting", 0, b"broken", 0, b"generation", 2]
    serving(scenario)


def test_event_set_counts_the_waiters_it_releases(serving):
    async def scenario(server):
        waiters = [await server.connect() for _ in range(3)]
        for client in waiters:
            client.send("EVENT.WAIT", "go", "0")
        await until(lambda: server.server.state.blocked_clients() == 3, "three waiters")
        setter = await server.connect()
        assert await setter.call("EVENT.SET", "go") == 3
        assert [await client.read() for client in waiters] == [1, 1, 1]
        assert await setter.call("EVENT.SET", "go") == 0   # set already: releases nobody
    serving(scenario)


def test_pool_lease_of_a_client_that_hangs_up_goes_to_the_next_waiter(serving):
    async def scenario(server):
        holder, waiter = await server.connect(), await server.connect()
        for _ in range(4):
            assert isinstance(await holder.call("POOL.ACQUIRE"), int)
        waiter.send("POOL.ACQUIRE", "0")
        await until(lambda: server.server.state.ledger.waiting == 1, "the waiter")
        holder.close()
        assert isinstance(await waiter.read(), int)
        assert server.server.state.ledger.in_use == 1
    serving(scenario)


def test_pool_size_shrinks_and_grows_while_leases_are_out(serving):
    async def scenario(server):
        client, other = await server.connect(), await server.connect()
        leases = [await client.call("POOL.ACQUIRE") for _ in range(4)]
        assert await client.call("CONFIG", "SET", "pool-size", "2") == "OK"
        for lease in leases[:2]:
            assert await client.call("POOL.RELEASE", lease) == 1
        assert await other.call("POOL.ACQUIRE", "0.05") is None   # 2 out of 2
        assert await client.call("CONFIG", "SET", "pool-size", "3") == "OK"
        assert isinstance(await other.call("POOL.ACQUIRE", "0.05"), int)
        assert await other.call("POOL.RELEASE", leases[2]) == 0   # not the holder: refused
    serving(scenario)


def test_a_client_that_reads_slower_than_it_sends_is_not_read_until_it_catches_up(serving):
    """Past the transport's high-water mark of unsent replies the server stops reading
    the client (TCP holds back the rest), and reads again once the client has read."""
    async def scenario(server):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # the kernel keeps little
        sock.connect(("127.0.0.1", server.port))
        client = Client(*await asyncio.open_connection(sock=sock))
        # 12 MB of replies, none read yet: more than the kernel buffers for a socket (4 MB)
        for n in range(1500):
            client.send("ECHO", b"%04d" % n * 2000)
        connections = server.server.connections
        await until(lambda: connections and not next(iter(connections)).reading,
                    "the server to stop reading the client")
        conn = next(iter(connections))
        for n in range(1500):
            assert await client.read() == b"%04d" % n * 2000
        assert conn.reading and await client.call("PING") == "PONG"
    serving(scenario)


def test_a_failing_conversation_gives_its_leases_back(serving, monkeypatch, caplog):
    """A bug in the model's own code ends that connection, not the server; what the
    client held goes back to the pool all the same."""
    def broken(self, timeout):
        raise RuntimeError("a bug in the read loop")

    async def scenario(server):
        holder = await server.connect()
        assert isinstance(await holder.call("POOL.ACQUIRE"), int)
        monkeypatch.setattr(Connection, "await_bytes", broken)
        assert await holder.call("PING") == "PONG"   # answered, then the wait for more fails
        assert await holder.closed_by_server()
        monkeypatch.undo()
        assert server.server.state.ledger.in_use == 0
        assert not server.server.leases.locked()
        client = await server.connect()
        assert await client.call("PING") == "PONG"
    serving(scenario)
    assert "a connection failed" in caplog.text


# -- limits, stalls, and stopping -------------------------------------------------------

def test_idle_client_is_closed_after_timeout(serving):
    async def scenario(server):
        client = await server.connect()
        assert await client.call("PING") == "PONG"
        assert await client.closed_by_server()   # after a second of silence
    serving(scenario, timeout=1)


def test_work_stalls_the_loop_and_info_says_so(serving):
    async def scenario(server):
        client = await server.connect()
        await client.call("WORK", "1000")   # tens of milliseconds of CPU with no await inside
        info = (await client.call("INFO", "playground")).decode()
        fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        assert int(fields["loop_stalls"]) >= 1 and float(fields["longest_stall_ms"]) >= 10
        assert fields["event_loop"] in LOOPS
    serving(scenario)


def test_maxclients_refuses_with_an_error_and_closes(serving):
    async def scenario(server):
        server.server.config.maxclients = 1
        first = await server.connect()
        assert await first.call("PING") == "PONG"
        second = await server.connect()
        assert str(await second.read()) == "ERR max number of clients reached"
        assert await second.closed_by_server()
        assert server.server.state.stats.rejected_connections == 1
    serving(scenario)


def test_a_client_that_resets_before_it_is_served_does_not_stop_the_server(serving):
    async def scenario(server):
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client = await server.connect()
        assert await client.call("PING") == "PONG"
    serving(scenario)


def test_stop_ends_idle_and_blocked_clients_and_returns(serving):
    async def scenario(server):
        idle, blocked = await server.connect(), await server.connect()
        assert await idle.call("PING") == "PONG"
        blocked.send("BLPOP", "never", "0")
        await until(lambda: server.server.state.blocked_clients() == 1, "the BLPOP to wait")
        server.server.stop()
        assert await idle.closed_by_server()
        assert await blocked.read() is NULL_ARRAY   # its wait was cut short, then answered
        assert await blocked.closed_by_server()
    server = serving(scenario)
    assert not server.connections   # serve() returned: every connection has closed


def test_stop_cancels_a_command_past_its_grace_and_still_returns_leases(serving, monkeypatch):
    """A command still running GRACE seconds after stop() is cancelled, its locks
    released; the session's clean-up still runs, so the client's lease goes back."""
    monkeypatch.setattr(asyncio_server, "GRACE", 0.2)

    async def scenario(server):
        client = await server.connect()
        assert isinstance(await client.call("POOL.ACQUIRE"), int)
        client.send("INCR", "n")   # holds the keyspace lock in a window of a minute
        await until(lambda: server.server.keyspace_lock.locked(), "the INCR in its window")
        server.server.stop()
        assert await client.closed_by_server()   # no reply: it was cut off, not finished
    server = serving(scenario, race_window_us=60_000_000)
    assert server.state.ledger.in_use == 0 and not server.leases.locked()
    assert not server.keyspace_lock.locked() and server.state.keyspace.get(b"n") is None


def test_loop_uvloop_without_uvloop_is_one_line_and_exit_code_2(tmp_path):
    """An importable `uvloop` that fails, first on the path, stands in for a missing one."""
    (tmp_path / "uvloop.py").write_text("raise ImportError('no uvloop here')\n")
    done = subprocess.run(
        [sys.executable, "-m", "contend.server", "--model", "asyncio", "--loop", "uvloop",
         "--port", "0"], cwd=ROOT, capture_output=True, text=True, timeout=30,
        env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == 2
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1
    assert "uvloop" in done.stderr and "Traceback" not in done.stderr
