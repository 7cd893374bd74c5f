"""The asyncio model: one protocol object per connection, asyncio's primitives on guard.

    connections   an asyncio.Protocol each (Connection), made by the accept loop, which
                  counts them against `maxclients` before a transport exists (Server._accept)
    conversation  shared/session.py's read loop, run in the callback that delivered the
                  bytes (Connection.data_received -> Server._step); a conversation that has
                  to wait becomes a task until the wait is over (Server._resume)
    replies       written once a loop turn, every connection's together (Server._write_soon)
    keyspace      the one lock order of shared/guards.py, step by step (Server.guard):
                  `lock`: one asyncio.Lock, no RLock needed (Server._take);
                  `striped`/`unordered`: asyncio_sync.ReadersWriterLock, then an
                  asyncio.Lock per key
    lists         an asyncio.Condition on the keyspace Lock: BLPOP waits (Server.pop_wait),
                  a push notifies (Server.pushed)
    pool          an asyncio.Semaphore of `pool-size` permits, resizable (Server.lease_acquire)
    barriers      asyncio.Barrier, broken by a party that leaves (Server.barrier_wait)
    events        asyncio.Event, one per name (Server.event_wait)
    timeouts      asyncio.timeout(), a cancel scope around each wait; moving its deadline to
                  now cuts a wait short when the client hangs up or the server stops
                  (Server._blocked)
    hang-ups      asyncio calls connection_lost; a blocking wait is cut short
                  (Connection.connection_lost)
    slow readers  the transport's flow control: past its high-water mark we stop reading
                  the client (Connection.pause_writing); past the output soft limit, replies
                  must drain within flush_timeout or the client is closed (Connection.drain)
    loop stalls   every stretch of a conversation is timed (Server._step)
    shutdown      stop accepting, cut every wait short, GRACE for the rest (Server.serve)
    event loop    asyncio's own, or uvloop's with `--loop uvloop`: the same code on both

Commands live in shared/commands and a connection's protocol in
shared/session.py; this file only moves the bytes and performs the effects
commands yield. Everything runs in one thread, so another connection's code
runs only where this one's gives the loop back: at an `await` that really
waits. A read-modify-write with no such await inside is atomic here without
any lock, and one with an await inside (the race window) is not. That is the
whole race lesson in async code.

Protocols, not streams. With streams (asyncio.start_server) every connection
is a task that awaits `reader.read()`: each request is a callback that wakes
the task, then another trip through the loop to run it. With a Protocol the
callback that delivers the bytes runs the command, and a task exists only
while a conversation waits (for a lock, a push, a timer, a slow reader): an
idle client is a few objects and no task (10,000 of them took 65 MB on
asyncio's loop, 30 MB on uvloop's). Each written and measured with
redis-benchmark -c 50 -n 100000 -t incr,ping, the server on one CPU and
redis-benchmark on the other, each server fresh, five rounds; the median of
each round's requests/s over redis-server's in the same round:

                                     PING_INLINE  PING_MBULK  INCR
    asyncio's loop  streams                  0.90        0.91     0.58
                    protocols, reply at once 0.73        0.69     0.58
                    protocols (this file)    1.01        1.00     0.73
    uvloop          streams                  1.01        1.02     0.64
                    protocols, reply at once 1.10        1.14     0.72
                    protocols (this file)    1.13        1.14     0.82

PING is bounded by redis-benchmark itself (redis-server leaves a third of its
CPU idle); INCR measures the server. The price of protocols is a
conversation that runs in two places, a callback and a task
(Server._resume); the code that drives it is written once and both call it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from functools import partial
from types import CoroutineType

from contend.server import open_listener
from contend.server.asyncio_sync import ReadersWriterLock, ResizableSemaphore, acquire_nowait
from contend.server.descriptors import OUT_OF_DESCRIPTORS, SpareDescriptor
from contend.shared import effects as fx
from contend.shared.commands.events import broken, parties_mismatch
from contend.shared.effects import BarrierView
from contend.shared.guards import EXCLUSIVE, KEY, KEYSPACE, LISTS, SHARED, Step, key_steps
from contend.shared.resp import ReplyError
from contend.shared.session import CLOSE, FLUSH, NEED_DATA, Call, Session
from contend.shared.stalls import LoopStalls
from contend.shared.state import ServerState
from contend.shared.stepping import CUT_SHORT as STEP_CUT_SHORT
from contend.shared.stepping import step_event
from contend.shared.waiters import ListWaiter

log = logging.getLogger("contend.asyncio")

GRACE = 2.0            # seconds in-flight commands get to finish at shutdown
WATCH_LIMIT = 1 << 20  # bytes a waiting client may pipeline before we stop reading it
ACCEPT_PAUSE = 0.1     # seconds to wait before accepting again after accept() failed
CUT_SHORT = object()   # a blocking wait ended by a hang-up or by shutdown, not by its event
TIMED_OUT = object()   # a blocking wait that ran out of the command's own timeout


class Connection(asyncio.Protocol):
    """One client: asyncio's transport, the session, and where the conversation stands.

    asyncio calls these methods from its loop when something happens to the
    socket. Each tells the session, and then the conversation goes on right
    there, in the callback, until it needs more bytes (Server._resume).
    """

    def __init__(self, server: Server, address: tuple):
        self.server = server
        self.address = address   # the client's, from accept()
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        # The task the conversation waits in; None while it waits for bytes, since a
        # conversation that is not waiting runs in whichever callback resumed it.
        self.task: asyncio.Task | None = None
        self.held: list = []   # the locks the running command holds, released when it ends
        # The cancel scope of the blocking command this connection waits in, so a
        # hang-up or stop() can cut it short. None while it does anything else.
        self.interruptible: asyncio.Timeout | None = None
        self.idle_timer: asyncio.TimerHandle | None = None   # the idle timeout, while idle
        self.drained: asyncio.Future | None = None   # resolved by resume_writing
        self.writing_paused = False   # the transport holds more than its high-water mark
        self.reading = True           # asyncio reads the socket for us
        self.queued = False           # in the server's list of replies to write this turn
        self.lost = False             # asyncio has closed the transport

    # -- what asyncio calls -------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.server._welcome(self)

    def data_received(self, data: bytes) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        session = self.session
        session.receive_data(data)
        if self.task is None:
            self.server._resume(self)
        elif session.buffered >= WATCH_LIMIT:
            # Kept for after the wait, up to a limit; past it TCP's flow control holds the rest.
            self.read(False)

    def connection_lost(self, exc: Exception | None) -> None:
        """End of file, a reset, or the close we asked for has happened."""
        self.lost = True
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        session = self.session
        if session.closed:
            self.server._forget(self)
            return
        # The client left: the session now hands out only what cleans up, and a
        # served item goes back to its list.
        session.connection_lost()
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        if self.interruptible is not None:
            _cut_short(self.interruptible)
        if self.task is None:
            self.server._resume(self)

    def pause_writing(self) -> None:
        """The transport holds more than its high-water mark of unsent replies: the client
        reads slower than it sends, so we stop reading it until it catches up."""
        self.writing_paused = True
        self.read(False)

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        if self.task is None or self.session.buffered < WATCH_LIMIT:
            self.read(True)

    # -- what the server asks of it ------------------------------------------------

    def read(self, on: bool) -> None:
        """Have asyncio read the socket, or stop: TCP's flow control then holds the client."""
        if on != self.reading and not self.transport.is_closing():
            self.reading = on
            if on:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def write(self, data: bytes) -> None:
        """Hand replies to the transport, which sends what the socket takes and keeps the
        rest (past its high-water mark, pause_writing stops our reading the client)."""
        if data:
            self.transport.write(data)

    def flush(self, data: bytes):
        """A FLUSH (replies past the output soft limit): written, and then, if the
        transport keeps more than its high-water mark, the wait for the client to read
        them (None if there is nothing to wait for)."""
        self.write(data)
        return self.drain() if self.writing_paused else None

    async def drain(self) -> None:
        """Wait until asyncio says the transport's buffer has drained, within the
        session's flush_timeout. A client that has not read by then has stopped
        reading: the session closes it."""
        if not self.writing_paused or self.lost:
            return
        self.drained = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self.session.flush_timeout):
                await self.drained
        except TimeoutError:
            self.session.flush_timed_out()
        finally:
            self.drained = None

    def await_bytes(self, timeout: float) -> None:
        """The conversation waits for the next request: data_received goes on with it."""
        if not (self.reading or self.writing_paused):
            self.read(True)
        if timeout:   # a timer only when an idle timeout is set: arming one costs
            self.idle_timer = asyncio.get_running_loop().call_later(timeout, self.no_more_bytes)

    def no_more_bytes(self) -> None:
        """Idle too long, or the server stops: as if the client had closed its end
        (Redis closes an idle client without a word)."""
        self.idle_timer = None
        if self.task is None and not self.session.closed:
            self.session.receive_data(b"")
            self.server._resume(self)

    def client_left(self) -> bool:
        """Has the client closed its end? Asked of the socket without reading from it:
        asyncio owns the reads, so a stdlib view of the descriptor peeks, then lets go."""
        if self.lost or self.transport.is_closing():
            return True
        try:
            view = socket.socket(fileno=self.transport.get_extra_info("socket").fileno())
        except OSError:
            return True
        try:
            return view.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False   # nothing to read: still there
        except OSError:
            return True    # reset
        finally:
            view.detach()   # the descriptor stays the transport's

    def end(self, data: bytes) -> None:
        """CLOSE: the last replies, then the socket closes once the transport has sent them."""
        transport, session = self.transport, self.session
        if data:
            transport.write(data)
        if transport.get_write_buffer_size() and session.peer_gone:
            transport.abort()   # replies nobody will read (closed for its output): dropped
        else:
            transport.close()
            if transport.get_write_buffer_size() and session.flush_timeout:
                # close() waits for the client to read them; not for ever.
                asyncio.get_running_loop().call_later(session.flush_timeout, transport.abort)
        session.close()
        if self.lost:
            self.server._forget(self)


@dataclass
class NamedBarrier:
    barrier: asyncio.Barrier
    rounds: int = 0   # asyncio.Barrier does not count its generations; we do


@dataclass
class NamedEvent:
    event: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: int = 0   # asyncio.Event does not say how many wait; we count


class Server:
    def __init__(self, config):
        self.config = config
        self.loop_factory = event_loop_factory(config.loop)
        self.state = ServerState(config)
        # `lock` mode: one plain Lock over the keyspace. BANK.TRANSFER holds it
        # and then runs its guarded withdraw and deposit steps, which ask for it
        # again: with threading that needs an RLock. asyncio has none, and needs
        # none here: each command keeps the locks it holds in its connection's
        # `held` list, and a guard over something already held is granted
        # without taking the lock again (Server._take). The reentrancy lives in
        # the command, not in the lock, which also makes it impossible to release too early.
        self.keyspace_lock = asyncio.Lock()
        # BLPOP waits on this Condition; its lock is the keyspace lock (the last
        # step of every lists guard), so a pop that finds the list empty is
        # registered before any push can run.
        self.lists_changed = asyncio.Condition(self.keyspace_lock)
        # `striped`/`unordered`: per-key commands share the keyspace, whole-keyspace
        # ones (FLUSHALL) hold it alone; then a plain Lock per key.
        self.keyspace_rw = ReadersWriterLock()
        self.key_locks: dict[bytes, asyncio.Lock] = {}
        # What each step of the lock order (shared/guards.py) takes here; KEY is looked up per key.
        self.step_locks = {KEYSPACE: self.keyspace_lock, SHARED: self.keyspace_rw.shared,
                           EXCLUSIVE: self.keyspace_rw.exclusive, LISTS: self.keyspace_lock}
        # The pool's permits. A permit has no owner: anyone's release() adds one, so the
        # ledger, which names each lease's holder, refuses a stray POOL.RELEASE first.
        self.leases = ResizableSemaphore(config.pool_size)
        # No lock around these dicts: nothing awaits between a lookup and an insert.
        self.barriers: dict[bytes, NamedBarrier] = {}
        self.events: dict[bytes, NamedEvent] = {}
        self.stopping = asyncio.Event()
        self.stalls = LoopStalls()
        # Every connection from connection_made until its transport is closed; its
        # size is what maxclients bounds.
        self.connections: set[Connection] = set()
        self.no_connections = asyncio.Event()   # set when the last one has gone
        self.listener: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested = False
        self.unsent: list[Connection] = []   # connections with replies to write this turn
        self.perform = fx.performers(self)   # {effect type: the method below that performs it}

    # -- accepting ----------------------------------------------------------

    def listen(self) -> None:
        self.listener = open_listener(self.config, self.stop)

    def serve_forever(self) -> None:
        with asyncio.Runner(loop_factory=self.loop_factory) as runner:
            runner.run(self._main())

    async def _main(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        if threading.current_thread() is threading.main_thread():
            # From here on a signal is handled in the loop, between two callbacks.
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, self._begin_stop)
        await self.serve(self.listener)

    async def serve(self, listener: socket.socket) -> None:
        """Accept and serve until stop(), then finish: every connection has closed
        (or been cut off after GRACE) when this returns."""
        self._loop = asyncio.get_running_loop()
        listener.setblocking(False)
        accepting = self._loop.create_task(self._accept(listener))
        if self._stop_requested:
            self._begin_stop()
        await self.stopping.wait()
        accepting.cancel()
        for conn in list(self.connections):
            if conn.task is None:
                conn.no_more_bytes()   # it was waiting for a next request: it ends now
        # Connections still running a command get GRACE seconds to answer; then what
        # they wait for is cancelled, and what they hold given back.
        if not await self._all_closed():
            cancelled = [conn.task for conn in self.connections if conn.task is not None]
            for task in cancelled:
                task.cancel()
            if not cancelled or not await self._all_closed():
                for conn in list(self.connections):
                    conn.transport.abort()   # unread replies of a client that stopped reading
                await asyncio.sleep(0)       # their connection_lost
        with contextlib.suppress(asyncio.CancelledError):
            await accepting
        listener.close()

    async def _all_closed(self) -> bool:
        """Wait up to GRACE seconds for every connection to close; False if some are left."""
        if self.connections:
            try:
                async with asyncio.timeout(GRACE):
                    await self.no_connections.wait()
            except TimeoutError:
                return False
        return True

    async def _accept(self, listener: socket.socket) -> None:
        """The accept loop: each client gets a transport and a Connection, unless the
        server is full, or out of descriptors (a spare one answers it then)."""
        loop = asyncio.get_running_loop()
        spare = SpareDescriptor()
        try:
            while True:
                try:
                    sock, address = await loop.sock_accept(listener)
                except ConnectionAbortedError:
                    continue   # the client left while it waited to be accepted
                except OSError as error:
                    if (error.errno in OUT_OF_DESCRIPTORS
                            and spare.refuse_one(listener, self.state.refuse)):
                        log.warning("accept failed (%s); refused a client", error.strerror)
                        continue
                    log.warning("accept failed (%s); retrying shortly", error.strerror)
                    await asyncio.sleep(ACCEPT_PAUSE)
                    continue
                # Counted before a transport or a Client exists: at most maxclients are served.
                if len(self.connections) >= self.config.maxclients:
                    self._refuse(sock)
                    continue
                try:
                    await loop.connect_accepted_socket(partial(Connection, self, address), sock)
                except OSError:
                    sock.close()   # the client vanished before its transport was made
        finally:
            spare.close()

    def _refuse(self, sock: socket.socket) -> None:
        with sock, contextlib.suppress(OSError):
            sock.setblocking(False)
            sock.send(self.state.refuse())   # one short line: fits any send buffer

    def _welcome(self, conn: Connection) -> None:
        """connection_made: the client's session, then its conversation begins (protected
        mode may end it at once)."""
        local = conn.transport.get_extra_info("sockname") or ("", 0)
        peer = conn.address
        conn.session = Session(self.state, f"{peer[0]}:{peer[1]}", f"{local[0]}:{local[1]}")
        self.connections.add(conn)
        self.no_connections.clear()
        self._resume(conn)

    def _write_soon(self, conn: Connection) -> None:
        """Have the connection's replies written at the start of the loop's next turn,
        with every other connection's: once a turn, as Redis writes them before it
        sleeps, not in the callback that ran the command.

        A client sends its next request only once it has read the reply, so
        replies that go out in one burst bring the next requests back in one
        burst, and one turn of the loop (one select) serves many clients. Written
        at once, each reply tends to bring its request back alone, and the loop
        turns for few (the module docstring has the cost: "reply at once").
        """
        if not conn.queued:
            conn.queued = True
            if not self.unsent:
                self._loop.call_soon(self._write_unsent)
            self.unsent.append(conn)

    def _write_unsent(self) -> None:
        unsent, self.unsent = self.unsent, []
        for conn in unsent:
            conn.queued = False
            conn.write(conn.session.data_to_send())   # b"" if its client left, or a FLUSH took them

    def _forget(self, conn: Connection) -> None:
        """Its socket is closed and its session too: the seat is free."""
        self.connections.discard(conn)
        if not self.connections:
            self.no_connections.set()

    # -- one connection: the session's read loop -------------------------------------

    def _resume(self, conn: Connection) -> None:
        """Go on with a conversation from a callback; if it has to wait, a task waits for it.

        This is what an eager task would do (asyncio has one from 3.12): run
        in the caller until the first real wait. Most requests never wait, so
        most never cost a task.
        """
        waiting = self._step(conn)
        if waiting is not None:
            conn.task = self._loop.create_task(self._wait_and_go_on(conn, waiting))

    async def _wait_and_go_on(self, conn: Connection, waiting) -> None:
        """A conversation that has to wait: its task awaits, then goes on as a callback
        would, until the conversation needs bytes again or ends."""
        while waiting is not None:
            try:
                value = await waiting   # other connections run meanwhile
            except asyncio.CancelledError:
                # stop()'s GRACE ran out. The command ends here, with no reply;
                # told that the client is gone, the session only has it give back what it holds.
                asyncio.current_task().uncancel()
                waiting = self._abandon(conn)
                continue
            except Exception as error:   # a ReplyError fails the command with that reply;
                value = error            # anything else is a bug: `-ERR internal error`
            waiting = self._step(conn, value)
        conn.task = None

    def _step(self, conn: Connection, value=None):
        """The conversation from where it stands until it needs bytes (None) or must
        wait (returns the wait): one stretch in which no other connection runs."""
        began = time.perf_counter()
        try:
            call = conn.session.call
            waiting = None if call is None else self.run(conn, call, value)
            if waiting is None:
                waiting = self.converse(conn)
        except Exception:
            # A bug in this file must cost one connection, not the loop everyone shares.
            log.exception("a connection failed")
            waiting = self._abandon(conn)
        self.stalls.note(time.perf_counter() - began)
        return waiting

    def _abandon(self, conn: Connection):
        """End the command in flight with no reply, give its locks back, and let the
        session wind down as for a client that left."""
        session = conn.session
        if session.call is not None:
            session.call.cancel()
        self._release(conn.held)
        conn.write(session.data_to_send())   # replies it was owed go first
        session.connection_lost()
        return self.converse(conn)

    def converse(self, conn: Connection):
        """shared/session.py's loop, as far as it goes without waiting: None once it needs
        the client's next bytes (or has closed), or the wait that stops it."""
        session = conn.session
        while (event := session.next_event()) is not CLOSE:
            if event is NEED_DATA:
                # The replies so far, before we wait: written in the next turn with everyone
                # else's; at once after a wait, though, while the check that the client
                # is still there (Server._blocked) holds.
                if conn.task is not None:
                    conn.write(session.data_to_send())
                elif session.out_size:
                    self._write_soon(conn)
                if self.stopping.is_set():
                    session.receive_data(b"")   # a stopping server reads no more requests
                    continue
                conn.await_bytes(self.config.timeout)
                return None
            if event is FLUSH:
                waiting = conn.flush(session.data_to_send())
            else:
                waiting = self.run(conn, event)
            if waiting is not None:
                return waiting
        conn.end(session.data_to_send())
        return None

    def run(self, conn: Connection, call: Call, value=None):
        """Drive one command from `value`, performing the effects it yields, until it
        ends (None) or an effect has to wait: then that wait, a coroutine.

        A performer returns its result at once, or, when it has to wait, a
        coroutine that does the waiting. A command that never waits (an
        uncontended guard, no race window) runs start to end right here, and
        nothing else runs in the middle of it.
        """
        held, perform = conn.held, self.perform
        while (effect := call.send(value)) is not None:
            try:
                value = perform[type(effect)](conn, effect, held)
            except Exception as error:   # thrown into the command: a ReplyError is its reply
                value = error
                continue
            if type(value) is CoroutineType:
                return value   # awaited by the connection's task; the command goes on after
        if held:
            self._release(held)
        return None

    def _release(self, held: list) -> None:
        """Give back every lock in `held`, the last taken first."""
        for lock in reversed(held):
            lock.release()
        if self.key_locks and held:
            self._forget_free(held)
        held.clear()

    def _forget_free(self, released: list) -> None:
        """Drop the per-key locks just released that nobody holds or waits for, so the
        dict holds only locks in use, not one for every key ever guarded.

        A released asyncio.Lock with a waiter is unlocked until that waiter runs,
        so locked() cannot tell; acquire_nowait can, as it fails while anyone
        queues. A lock it takes is forgotten, and released for form's sake."""
        for key in [key for key, lock in self.key_locks.items()
                    if lock in released and acquire_nowait(lock)]:
            self.key_locks.pop(key).release()

    # -- guards: the lock order's steps, with asyncio locks --------------------------

    def guard(self, conn: Connection, effect: fx.Guard, held: list):
        """Take the steps of the guard's plan, top of the ladder first (shared/guards.py).

        Each step is granted at once when its lock is free; from the first one
        that must wait (or that wants the race window before it), the rest is
        a coroutine. `sync off` has an empty plan: a read-modify-write with an
        await inside may interleave.
        """
        plan = conn.session.call.guard_plan(effect)
        for position, step in enumerate(plan):
            if step.window or not self._take(self._lock_for(step), held):
                return self._climb(conn, plan, position, held)
        return None

    async def _climb(self, conn: Connection, plan: Sequence[Step], position: int,
                     held: list) -> None:
        """The rest of the plan, from `position`: each step waits its turn if it must."""
        for index, step in enumerate(plan[position:], position):
            if step.window:   # holding the first key a while
                window = self.race_window(conn, None, held, key_steps(plan[:index]))
                if window is not None:
                    await window
            lock = self._lock_for(step)
            if self._take(lock, held):
                continue
            # A cancel scope, as in trio: the timeout is around the wait, not an argument of it.
            patience = self.config.deadlock_timeout_ms / 1000 if step.patience else None
            try:
                async with asyncio.timeout(patience):
                    await lock.acquire()
            except TimeoutError:
                self.state.stats.deadlocks += 1   # one thread: a plain += is safe
                raise fx.deadlock(step.key, key_steps(plan),
                                  self.config.deadlock_timeout_ms) from None
            held.append(lock)

    def _lock_for(self, step: Step):
        """The lock a step stands for: an asyncio.Lock, or a side of the readers-writer lock."""
        if step.lock != KEY:
            return self.step_locks[step.lock]
        # Looked up only now, with no await before taking or queueing for it: a lock
        # nobody holds or wants is forgotten when released (Server._forget_free).
        lock = self.key_locks.get(step.key)
        if lock is None:
            lock = self.key_locks[step.key] = asyncio.Lock()
        return lock

    @staticmethod
    def _take(lock, held: list) -> bool:
        """Take `lock` for the running command now, unless the command holds it already;
        False when that would mean waiting.

        The "already" is what an RLock's counter does for a thread; here the
        command's `held` list does it. (A second acquire of an asyncio.Lock
        would wait for ever: asyncio locks have no owner to recognise.)
        Nested guards only re-enter the keyspace Lock and key locks
        (shared/guards.py), never the shared side of the readers-writer lock.
        """
        if lock in held:
            return True   # a nested guard (BANK.TRANSFER's withdraw step): granted at once
        if not acquire_nowait(lock):
            return False
        held.append(lock)
        return True

    def race_window(self, conn, effect, held, holds=None):
        if self.config.stepping:
            return self.wait_for_release(conn, effect, held, holds)
        if self.config.race_window_us:
            # Returned, not awaited here: the connection's task awaits it, and others
            # run meanwhile, between this command's read and its write.
            return asyncio.sleep(self.config.race_window)
        # With window 0 there is no await between read and write, so no other
        # connection can run in between: even `sync off` counts exactly.
        return None

    async def wait_for_release(self, conn: Connection, window, held, holds=None) -> None:
        """Step mode: parked, holding the command's locks, until DEBUG.STEP RELEASE sets
        its event. It waits as EVENT.WAIT does, so a client that leaves ends it too."""
        step_id = conn.session.call.park_step(window, holds)
        name = step_event(step_id)
        try:
            released = await self.event_wait(conn, fx.EventWait(name, None), held)
        finally:
            self.state.stepper.leave(step_id)
            self.event_clear(conn, fx.EventClear(name), held)
        if not released:
            raise ReplyError(STEP_CUT_SHORT)

    # -- waiting, and noticing when the client hangs up ----------------------------

    async def _blocked(self, conn: Connection, waiting: Coroutine,
                       timeout: float | None):  # noqa: ASYNC109 (it makes the scope)
        """Await `waiting` (a blocking command's wait) within the command's timeout,
        inside a scope that a hang-up or stop() can cut short.

        A command's timeout arrives from the protocol as seconds (None: no
        limit) and becomes a cancel scope here, asyncio.timeout(), the one
        place for every blocking command. Around it a second scope with no
        deadline is the connection's `interruptible`: moving its deadline to
        now (_cut_short) cancels the wait. Meanwhile asyncio goes on reading
        the socket: bytes that arrive (the next pipelined command) are kept
        for after the wait, and end of file is connection_lost. Returns the
        wait's result, TIMED_OUT, or CUT_SHORT when the client hung up or the
        server stops.
        """
        session = conn.session
        if self.stopping.is_set() or session.peer_gone:
            waiting.close()   # never started
            return CUT_SHORT   # no new waits once the server is stopping or the client has gone
        session.client.blocked = True
        scope = conn.interruptible = asyncio.timeout(None)
        try:
            async with scope, asyncio.timeout(timeout):
                return await waiting
        except TimeoutError:
            return CUT_SHORT if scope.expired() else TIMED_OUT
        finally:
            conn.interruptible = None
            session.client.blocked = False
            # The loop may not have read the end of file yet: a push's wake-up can run
            # first. Asked now, so a reply the client can never read is handed back.
            if not session.peer_gone and conn.client_left():
                session.connection_lost()

    async def sleep(self, conn: Connection, effect: fx.Sleep, held) -> None:
        await self._blocked(conn, asyncio.sleep(effect.seconds), None)

    def pop_wait(self, conn: Connection, effect: fx.PopWait, held: list):
        """BLPOP found every list empty: wait on the Condition until a push serves it.

        The waiter is registered here, in the same stretch as the pop that
        found nothing, so no push can slip in unseen. Then every lock goes but
        the Condition's (a push to this key needs the shared keyspace lock and
        the key's lock: held through the wait, the push it waits for could
        never come), and Condition.wait lets go of that one while it waits.
        """
        waiter = self.state.waiters.add(
            ListWaiter(conn.session.client.id, effect.keys, effect.left))
        condition_lock = self.keyspace_lock
        kept = condition_lock in held
        if kept:
            held.remove(condition_lock)
        self._release(held)
        return self._wait_to_be_served(conn, waiter, effect, kept)

    async def _wait_to_be_served(self, conn: Connection, waiter: ListWaiter,
                                 effect: fx.PopWait, kept: bool):
        condition_lock = self.keyspace_lock
        try:
            if not kept:   # `sync off` took no guard, but a Condition waits under its lock
                await condition_lock.acquire()
            try:
                # wait_for lets go of the lock while waiting, and checks again on each wake-up.
                await self._blocked(conn, self.lists_changed.wait_for(
                    lambda: waiter.item is not None), effect.timeout)
            finally:
                # Condition.wait takes the lock back even when cancelled: the command
                # gives it up now and holds nothing more.
                condition_lock.release()
        finally:
            self.state.waiters.remove(waiter)   # timed out or cut short: nobody may serve it now
        return waiter.item   # served by a push, or None

    def pushed(self, conn, effect: fx.Pushed, held: list):
        """A push handed items to these waiters (shared/waiters.py): wake them to find them."""
        # `sync off` took no guard, but an asyncio.Condition is notified only under its lock.
        if self._take(self.keyspace_lock, held):
            self.lists_changed.notify_all()
            return None
        return self._notify_when_taken(held)

    async def _notify_when_taken(self, held: list) -> None:
        await self.keyspace_lock.acquire()
        held.append(self.keyspace_lock)
        self.lists_changed.notify_all()

    # -- the pool: a Semaphore bounds it, the ledger names the holders --------------

    async def lease_acquire(self, conn: Connection, effect: fx.LeaseAcquire, held):
        ledger = self.state.ledger
        ledger.waiting += 1
        try:
            got = await self._blocked(conn, self.leases.acquire(), effect.timeout)
        finally:
            ledger.waiting -= 1
        if got is CUT_SHORT:
            return None   # the client left (or the server stops): a cancelled acquire took nothing
        if got is TIMED_OUT:
            ledger.timeouts += 1
            return None
        # A lease is not an `async with semaphore:` block: it outlives this command,
        # until POOL.RELEASE or the client leaves (the session then gives it back).
        return ledger.grant(conn.session.client.id)

    def lease_release(self, conn: Connection, effect: fx.LeaseRelease, held) -> bool:
        """POOL.RELEASE, and the session's lease return when a client leaves."""
        if not self.state.ledger.revoke(effect.lease, conn.session.client.id):
            return False
        self.leases.release()   # after the ledger forgets it, so in-use never exceeds size
        return True

    # -- barriers and events ---------------------------------------------------------

    async def barrier_wait(self, conn: Connection, effect: fx.BarrierWait, held) -> int:
        named = self.barriers.get(effect.name)
        if named is None:
            named = self.barriers[effect.name] = NamedBarrier(asyncio.Barrier(effect.parties))
        elif named.barrier.parties != effect.parties:
            raise parties_mismatch(effect.name, named.barrier.parties, effect.parties)
        barrier = named.barrier
        try:
            index = await self._blocked(conn, barrier.wait(), effect.timeout)
        except asyncio.BrokenBarrierError:
            raise broken(effect.name) from None
        if index is TIMED_OUT or index is CUT_SHORT:
            # This party leaves (timed out, hung up, the server stops) before the others
            # came, so they can never all meet: it breaks the barrier for them, as
            # threading.Barrier does. asyncio.Barrier would let it leave and the rest wait on.
            await barrier.abort()
            raise broken(effect.name)
        if index == barrier.parties - 1:
            named.rounds += 1   # the last to arrive released this generation
        return index

    def barrier_reset(self, conn, effect: fx.BarrierReset, held):
        named = self.barriers.pop(effect.name, None)
        if named is None:
            return False
        return self._reset(named.barrier)   # waiters get BROKEN; the next WAIT starts afresh

    @staticmethod
    async def _reset(barrier: asyncio.Barrier) -> bool:
        await barrier.reset()   # a coroutine in asyncio: it takes the barrier's Condition
        return True

    def barrier_status(self, conn, effect: fx.BarrierStatus, held):
        named = self.barriers.get(effect.name)
        if named is None:
            return None
        barrier = named.barrier
        return BarrierView(barrier.parties, barrier.n_waiting, barrier.broken, named.rounds)

    # An event exists only while it is set or waited for: a clear one nobody waits for is
    # forgotten, and a lookup (ISSET, CLEAR of a new name) makes nothing, or asking about
    # 100,000 names would keep 100,000 asyncio.Events.

    def _event(self, name: bytes) -> NamedEvent:
        named = self.events.get(name)
        if named is None:
            named = self.events[name] = NamedEvent()
        return named

    def event_set(self, conn, effect: fx.EventSet, held) -> int:
        named = self._event(effect.name)
        released = 0 if named.event.is_set() else named.waiting
        named.event.set()
        return released

    def event_clear(self, conn, effect: fx.EventClear, held) -> None:
        named = self.events.get(effect.name)
        if named is not None:
            named.event.clear()
            self._forget_if_idle(effect.name, named)

    def event_isset(self, conn, effect: fx.EventIsSet, held) -> bool:
        named = self.events.get(effect.name)
        return named is not None and named.event.is_set()

    async def event_wait(self, conn: Connection, effect: fx.EventWait, held) -> bool:
        named = self._event(effect.name)
        named.waiting += 1
        try:
            return await self._blocked(conn, named.event.wait(), effect.timeout) is True
        finally:
            named.waiting -= 1
            self._forget_if_idle(effect.name, named)

    def _forget_if_idle(self, name: bytes, named: NamedEvent) -> None:
        if not named.waiting and not named.event.is_set() and self.events.get(name) is named:
            del self.events[name]

    # -- server-wide -------------------------------------------------------------

    def reconfigure(self, conn, effect: fx.Reconfigure, held) -> None:
        # Growing wakes waiters at once; shrinking lets holders keep their permits
        # and admits no one until the number out falls below the new size.
        # (maxclients needs nothing: the accept loop compares with it each time.)
        if "pool_size" in effect.names:
            self.state.ledger.size = self.config.pool_size
            self.leases.resize(self.config.pool_size)

    def model_info(self, conn, effect, held) -> dict:
        return {"event_loop": self.config.loop, "tasks_living": len(asyncio.all_tasks()),
                "key_locks": len(self.key_locks), **self.stalls.info(),
                "barriers": len(self.barriers), "events": len(self.events)}

    def shutdown(self, conn, effect, held) -> None:
        self._begin_stop()

    def stop(self) -> None:
        """Ask for a graceful stop; safe from any thread and from a signal handler."""
        self._stop_requested = True
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):   # the loop has already closed
                self._loop.call_soon_threadsafe(self._begin_stop)

    def _begin_stop(self) -> None:
        """Stop accepting, and cut every blocking wait short (serve() does the rest).

        A connection in the middle of a command is not interrupted: it
        answers, then sees `stopping` and ends. serve() gives it GRACE seconds.
        """
        self.stopping.set()
        for conn in self.connections:
            if conn.interruptible is not None:
                _cut_short(conn.interruptible)


def _cut_short(scope: asyncio.Timeout) -> None:
    """Move a wait's deadline to now: asyncio's way to say trio's CancelScope.cancel()."""
    if not scope.expired():
        scope.reschedule(0)   # any time already past: it fires on the loop's next turn


def event_loop_factory(name: str):
    """asyncio.Runner's loop_factory for `--loop`: None for asyncio's own loop."""
    if name != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:
        print("contend: --loop uvloop needs uvloop, which is not installed "
              "(pip install uvloop, or '.[uvloop]' in the repository)",
              file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    return uvloop.new_event_loop
