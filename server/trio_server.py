"""The trio model: one task per connection, trio's primitives on guard, structured concurrency.

    connections   a task each, started by trio.serve_listeners in one nursery; a
                  CapacityLimiter of `maxclients` seats is taken first (Server.serve_connection)
    conversation  shared/session.py's read loop, with trio's waits (Server._converse); each
                  command's effects are performed in the connection's own task (Server.execute)
    keyspace      the one lock order of shared/guards.py, step by step (Server.guard):
                  `lock`: one trio.Lock, no RLock needed (Server._take);
                  `striped`/`unordered`: trio_sync.ReadersWriterLock, then a trio.Lock per key
    lists         a trio.Condition on the keyspace Lock: BLPOP waits (Server.pop_wait),
                  a push notifies (Server.pushed)
    pool          a trio.CapacityLimiter of `pool-size` tokens (Server.lease_acquire)
    barriers      trio_sync.Barrier, built from trio.Event and a counter (Server.barrier_wait)
    events        trio_sync.ClearableEvent, a trio.Event replaced on clear (Server.event_wait)
    shutdown      cancel the accept loop's scope, wake every waiting connection (Server._begin_stop)
    hang-ups      a watcher task beside each blocking wait cancels it (Server._blocked)
    slow readers  past the output soft limit, replies must go out within a cancel scope,
                  or the client is closed (Connection.flush)
    loop stalls   a trio Instrument times every task step (StallMeter)

Commands live in shared/commands and a connection's protocol in
shared/session.py; this file only moves the bytes and performs the effects
commands yield, with `await`. Everything runs in one thread, so tasks
switch only at an `await`: a read-modify-write with no await inside is
atomic here without any lock, and one with an await inside (the race
window) is not. That is the whole race lesson in async code.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import CoroutineType

import trio

from contend.server import open_listener
from contend.server.descriptors import OUT_OF_DESCRIPTORS, SpareDescriptor
from contend.server.trio_sync import Barrier, BrokenBarrierError, ClearableEvent, ReadersWriterLock
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

log = logging.getLogger("contend.trio")

RECV_SIZE = 64 * 1024
GRACE = 2.0            # seconds in-flight commands get to finish at shutdown
WATCH_LIMIT = 1 << 20  # bytes a blocked client may pipeline before we stop reading it
CUT_SHORT = object()   # a blocking wait ended by a hang-up or by shutdown, not by its event


@dataclass(eq=False)
class Connection:
    """One client's socket and session, and what its task is waiting for.

    Bytes move with a plain non-blocking socket and trio's own readiness
    waits (trio.lowlevel.wait_readable / wait_writable) rather than through
    a trio.SocketStream. The stream checkpoints before and after every call,
    and each checkpoint is one more trip through the scheduler: for a
    request/response protocol that cost more than the command itself.
    The waits are still trio waits, so cancel scopes still cut them short.
    """
    sock: socket.socket
    session: Session
    idle: bool = False   # waiting for its next request: stop() wakes it (Server._begin_stop)
    # The cancel scope of the blocking command this connection waits in, so
    # stop() can cut it short. None while it runs anything else.
    interruptible: trio.CancelScope | None = None

    async def receive(self, timeout: float = 0) -> bytes:
        """The client's next bytes; b"" at end of file, after `timeout` idle seconds
        (0: no limit) or once stop() has said this socket is closing."""
        if timeout:
            # The idle timeout: a cancel scope around the wait, not a timeout
            # argument. Only when one is set: entering a cancel scope costs
            # more than running an INCR.
            with trio.move_on_after(timeout):
                return await self.receive()
            return b""
        try:
            while True:
                await trio.lowlevel.wait_readable(self.sock)
                try:
                    return self.sock.recv(RECV_SIZE)
                except BlockingIOError:
                    continue   # a spurious wake-up: nothing to read after all
        except (ConnectionError, trio.ClosedResourceError):
            return b""

    async def send(self, data: bytes) -> None:
        """Send all of `data`, waiting only when the socket's send buffer is full.
        A send that fails means the client is gone: the session is told so."""
        unsent = memoryview(data)
        try:
            while unsent:
                try:
                    unsent = unsent[self.sock.send(unsent):]
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(self.sock)   # the send buffer is full
        except (OSError, trio.ClosedResourceError):
            self.session.connection_lost()

    async def flush(self, data: bytes) -> None:
        """Send a FLUSH (replies past the output soft limit) within the session's
        flush_timeout: a cancel scope around the send. A client that has not read it all
        by then has stopped reading, and the session closes it."""
        if not data:
            return
        with trio.move_on_after(self.session.flush_timeout or math.inf) as waiting:
            await self.send(data)
        if waiting.cancelled_caught:
            self.session.flush_timed_out()


class StallMeter(trio.abc.Instrument):
    """Times every task step: how long one task ran before it let the loop go (INFO loop_stalls).

    A task runs from one checkpoint to the next with nothing else running;
    WORK, with no await inside, is one long step. trio tells an Instrument
    when each step begins and ends, so the meter needs no timing in the
    commands themselves.
    """

    def __init__(self, stalls: LoopStalls):
        self.stalls = stalls
        self.step_began = 0.0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.step_began = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.stalls.note(time.perf_counter() - self.step_began)


class SparingListener(trio.abc.Listener):
    """A trio.SocketListener that turns a client away when out of descriptors.

    On EMFILE trio.serve_listeners logs, sleeps and retries, and the client
    that waits meanwhile is never answered. This wrapper first spends its
    spare descriptor on it (server/descriptors.py) and goes on accepting; only
    when that fails does the error reach serve_listeners and its pause.
    """

    def __init__(self, listener: trio.SocketListener, refusal):
        self.listener = listener
        self.refusal = refusal   # ServerState.refuse: counts it, returns Redis's line
        self.spare = SpareDescriptor()

    async def accept(self) -> trio.SocketStream:
        while True:
            try:
                return await self.listener.accept()
            except OSError as error:
                if error.errno not in OUT_OF_DESCRIPTORS or not self._refuse_one():
                    raise
                log.warning("accept failed (%s); refused a client", error.strerror)

    def _refuse_one(self) -> bool:
        # A trio socket has no synchronous accept; a stdlib view of the same
        # descriptor does, and detach() leaves the descriptor to trio.
        view = socket.socket(fileno=self.listener.socket.fileno())
        try:
            return self.spare.refuse_one(view, self.refusal)
        finally:
            view.detach()

    async def aclose(self) -> None:
        self.spare.close()
        await self.listener.aclose()


class Server:
    def __init__(self, config):
        self.config = config
        self.state = ServerState(config)
        # `lock` mode: one plain Lock over the keyspace. BANK.TRANSFER holds it
        # and then runs its guarded withdraw and deposit steps, which ask for it
        # again: with threading that needs an RLock. trio has none, and needs
        # none here: each command remembers the locks it holds (`held` in
        # execute) and a guard over something already held is granted without
        # taking the lock again (Server._take). The reentrancy lives in the
        # command, not in the lock, which also makes it impossible to release too early.
        self.keyspace_lock = trio.Lock()
        # BLPOP waits on this Condition; its lock is the keyspace lock (the last
        # step of every lists guard), so a pop that finds the list empty is
        # registered before any push can run.
        self.lists_changed = trio.Condition(self.keyspace_lock)
        # `striped`/`unordered`: per-key commands share the keyspace, whole-keyspace
        # ones (FLUSHALL) hold it alone; then a plain Lock per key.
        self.keyspace_rw = ReadersWriterLock()
        self.key_locks: dict[bytes, trio.Lock] = {}
        # What each step of the lock order (shared/guards.py) takes here; KEY is looked up per key.
        self.step_locks = {KEYSPACE: self.keyspace_lock, SHARED: self.keyspace_rw.shared,
                           EXCLUSIVE: self.keyspace_rw.exclusive, LISTS: self.keyspace_lock}
        # A CapacityLimiter, not a Semaphore: CONFIG SET pool-size just assigns
        # total_tokens (a trio.Semaphore cannot be resized), and it refuses a
        # release from a borrower that holds no token, so a stray release
        # cannot grow the pool as Semaphore.release would. It remembers who
        # borrowed (the current task, by default) and lends one borrower one
        # token only; a connection may hold several leases, so each lease
        # borrows on behalf of a token object of its own.
        self.leases = trio.CapacityLimiter(config.pool_size)
        self.borrowers: dict[int, object] = {}     # lease id -> the token object it borrowed for
        # maxclients: a sofa with `maxclients` seats; a connection that finds none is refused.
        self.client_slots = trio.CapacityLimiter(config.maxclients)
        # No lock around these dicts: nothing awaits between a lookup and an insert.
        self.barriers: dict[bytes, Barrier] = {}
        self.events: dict[bytes, ClearableEvent] = {}
        self.stopping = trio.Event()
        self.stalls = LoopStalls()
        self.connections: set[Connection] = set()
        self.listener = None
        self._accepting: trio.CancelScope | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop_requested = False
        self.perform = fx.performers(self)   # {effect type: the method below that performs it}

    # -- accepting ----------------------------------------------------------

    def listen(self) -> None:
        self.listener = open_listener(self.config, self.stop)

    def serve_forever(self) -> None:
        trio.run(self._main, instruments=[StallMeter(self.stalls)])

    async def _main(self) -> None:
        async with trio.open_nursery() as nursery:
            if threading.current_thread() is threading.main_thread():
                await nursery.start(self._stop_on_signals)
            # trio.serve_tcp is open_tcp_listeners + serve_listeners; we opened the
            # socket ourselves (server.open_listener) so the banner could print
            # the real port before trio.run, as in every model.
            listener = trio.SocketListener(trio.socket.from_stdlib_socket(self.listener))
            await self.serve([listener])
            nursery.cancel_scope.cancel()   # the signal receiver

    async def _stop_on_signals(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for _ in signals:
                self._begin_stop()   # a second signal changes nothing; GRACE bounds the wait

    async def serve(self, listeners: list) -> None:
        """Accept and serve until stop(), then finish: every connection task lives in here.

        The connections' nursery is the parent of every connection task, so
        leaving it means every connection has ended: nothing outlives the server.
        """
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as connections:
            with trio.CancelScope() as self._accepting:
                if self._stop_requested:
                    self._begin_stop()
                # Out of descriptors, a client is turned away (SparingListener); other
                # accept errors serve_listeners logs and retries after a pause itself.
                listeners = [SparingListener(listener, self.state.refuse)
                             for listener in listeners]
                await trio.serve_listeners(self.serve_connection, listeners,
                                           handler_nursery=connections)
            # stop() cancelled the accept loop and cut every wait short;
            # connections still running a command get GRACE seconds to answer.
            connections.cancel_scope.deadline = trio.current_time() + GRACE

    async def serve_connection(self, stream: trio.SocketStream) -> None:
        """One connection's task: a seat, then its conversation (the serve_tcp handler)."""
        # The plain socket leaves the stream here (see Connection for why).
        sock = socket.socket(fileno=stream.socket.detach())
        sock.setblocking(False)
        try:
            if self.stopping.is_set():
                return
            try:
                # The seat is taken before a Client exists and given back when
                # this task ends, so at most maxclients connections are served.
                self.client_slots.acquire_nowait()
            except trio.WouldBlock:
                self._refuse(sock)
                return
            try:
                await self._serve_client(sock)
            finally:
                self.client_slots.release()
        except OSError:
            pass   # the client vanished (even before we asked its address); nothing to tell it
        except Exception:
            # A bug in one connection must not take the server down with it:
            # an exception escaping this task would cancel the whole nursery.
            log.exception("a connection failed")
        finally:
            trio.lowlevel.notify_closing(sock)   # trio forgets the descriptor before it is reused
            sock.close()

    def _refuse(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.send(self.state.refuse())   # one short line: fits any send buffer

    # -- one connection: the session's read loop ------------------------------------

    async def _serve_client(self, sock: socket.socket) -> None:
        peer, local = sock.getpeername(), sock.getsockname()
        session = Session(self.state, f"{peer[0]}:{peer[1]}", f"{local[0]}:{local[1]}")
        conn = Connection(sock, session)
        self.connections.add(conn)
        try:
            await self._converse(conn)
        except BaseException:
            # A bug, or stop()'s GRACE ran out. Told that the client is gone, the session
            # only has it give back what it holds; shielded, or a cancelled task could
            # not even wait for the lock that takes.
            with trio.CancelScope(shield=True):
                session.connection_lost()
                await self._converse(conn)
            raise
        finally:
            self.connections.discard(conn)
            session.close()

    async def _converse(self, conn: Connection) -> None:
        """shared/session.py's loop: the session says what to do next, this task waits for it."""
        session = conn.session
        while (event := session.next_event()) is not CLOSE:
            if event is NEED_DATA:
                await conn.send(session.data_to_send())   # the replies so far, before we wait
                session.receive_data(await self._next_bytes(conn))
            elif event is FLUSH:
                await conn.flush(session.data_to_send())
            else:
                await self.execute(conn, event)
        await conn.flush(session.data_to_send())

    async def _next_bytes(self, conn: Connection) -> bytes:
        """The client's next bytes; b"" ends the conversation: end of file, idle too long
        (Redis closes without a word), a send that failed, or the server stopping."""
        if self.stopping.is_set() or conn.session.peer_gone:
            return b""
        conn.idle = True   # from here until bytes arrive, stop() may close this connection
        data = await conn.receive(self.config.timeout)
        conn.idle = False
        return data

    async def execute(self, conn: Connection, call: Call) -> None:
        """Run one command: its effects are performed here, in this task.

        A performer returns its result at once, or, when it has to wait, a
        coroutine that does the waiting, and only that is awaited: a command
        that never waits (an uncontended guard, no race window) never goes
        through the scheduler, so nothing else runs in the middle of it.
        """
        held: list = []   # the locks granted to this command, all released when it ends
        perform = self.perform
        value = None
        try:
            while (effect := call.send(value)) is not None:
                try:
                    value = perform[type(effect)](conn, effect, held)
                    if type(value) is CoroutineType:
                        value = await value   # the effect has to wait: other tasks run meanwhile
                except Exception as error:   # a ReplyError fails the command with that reply;
                    value = error            # anything else is a bug: `-ERR internal error`
        except BaseException:
            call.cancel()   # cancelled mid-effect: the command ends here, with no reply
            raise
        finally:
            self._release(held)

    def _release(self, held: list) -> None:
        """Give back every lock in `held`, the last taken first."""
        for lock in reversed(held):
            lock.release()
        if self.key_locks and held:
            self._forget_free(held)
        held.clear()

    def _forget_free(self, released: list) -> None:
        """Drop the per-key locks just released that nobody holds or waits for, so the
        dict holds only locks in use, not one for every key ever guarded. (A released
        trio.Lock with waiters is handed straight to the next one, so it stays locked.)"""
        for key in [key for key, lock in self.key_locks.items()
                    if not lock.locked() and lock in released]:
            del self.key_locks[key]

    # -- guards: the lock order's steps, with trio locks --------------------------

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
                await _waited(self.race_window(conn, None, held, key_steps(plan[:index])))
            lock = self._lock_for(step)
            if self._take(lock, held):
                continue
            # A cancel scope is how trio says "give up after": no timeout argument.
            patience = self.config.deadlock_timeout_ms / 1000 if step.patience else math.inf
            with trio.move_on_after(patience) as waiting:
                await lock.acquire()
                held.append(lock)
            if waiting.cancelled_caught:
                self.state.stats.deadlocks += 1   # one thread: a plain += is safe
                raise fx.deadlock(step.key, key_steps(plan), self.config.deadlock_timeout_ms)

    def _lock_for(self, step: Step):
        """The trio lock a step stands for: a trio.Lock, or one side of the readers-writer lock."""
        if step.lock != KEY:
            return self.step_locks[step.lock]
        # Looked up only now, with no await before taking it: a lock nobody holds or
        # wants is forgotten when released (Server._forget_free), so it must be current.
        lock = self.key_locks.get(step.key)
        if lock is None:
            lock = self.key_locks[step.key] = trio.Lock()
        return lock

    @staticmethod
    def _take(lock, held: list) -> bool:
        """Take `lock` for the running command now, unless the command holds it already;
        False when another command has it.

        The "already" is what an RLock's counter does for a thread; here
        the command's `held` list does it. (trio.Lock itself raises
        RuntimeError on a second acquire by the same task, where
        threading.Lock would deadlock.) Nested guards only re-enter the
        keyspace Lock and key locks (shared/guards.py), never the shared side
        of the readers-writer lock.
        """
        if lock in held:
            return True   # a nested guard (BANK.TRANSFER's withdraw step): granted at once
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            return False
        held.append(lock)
        return True

    def race_window(self, conn, effect, held, holds=None):
        if self.config.stepping:
            return self.wait_for_release(conn, effect, held, holds)
        if self.config.race_window_us:
            # Returned, not awaited here: the command's driver awaits it, and others run
            # meanwhile, between this command's read and its write.
            return trio.sleep(self.config.race_window)  # noqa: ASYNC105
        # With window 0 there is no await between read and write, so no other
        # task can run in between: even `sync off` counts exactly.
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

    async def _blocked(self, conn: Connection, wait, *args):
        """Await wait(*args) while a second task watches the client's socket.

        While its command waits, the connection's task is not reading, so on
        its own it would not see the client leave. The watcher reads instead:
        end of file cancels the wait and tells the session; bytes that arrive
        meanwhile (the next pipelined command) are kept for it. Returns wait's
        result, or CUT_SHORT when the client hung up or stop() cut in.
        """
        result = CUT_SHORT
        session = conn.session
        if self.stopping.is_set() or session.peer_gone:
            return result   # no new waits once the server is stopping or the client has gone
        session.client.blocked = True
        try:
            async with trio.open_nursery() as nursery:
                conn.interruptible = nursery.cancel_scope
                nursery.start_soon(self._watch_for_hangup, conn, nursery.cancel_scope)
                try:
                    result = await wait(*args)
                except ReplyError as error:   # raised below, not wrapped in an ExceptionGroup
                    result = error
                nursery.cancel_scope.cancel()   # answered: stop watching
        finally:
            conn.interruptible = None
            session.client.blocked = False
        if isinstance(result, ReplyError):
            raise result
        return result

    @staticmethod
    async def _watch_for_hangup(conn: Connection, wait_scope: trio.CancelScope) -> None:
        session = conn.session
        while session.buffered < WATCH_LIMIT:
            data = await conn.receive()
            if not data:
                # The session now hands back an item a push gave this client meanwhile.
                session.connection_lost()
                wait_scope.cancel()
                return
            session.receive_data(data)   # answered after the blocked command, in order
        # Past the limit we stop reading; TCP's flow control holds back the rest.

    async def sleep(self, conn: Connection, effect: fx.Sleep, held) -> None:
        await self._blocked(conn, trio.sleep, effect.seconds)

    async def pop_wait(self, conn: Connection, effect: fx.PopWait, held: list):
        """BLPOP found every list empty: wait on the Condition until a push serves it.

        The waiter is registered while the guard is still held, so no push can
        slip in unseen. Then every lock goes but the Condition's (a push to
        this key needs the shared keyspace lock and the key's lock: held
        through the wait, the push it waits for could never come), and
        Condition.wait lets go of that one while it waits.
        """
        waiter = self.state.waiters.add(
            ListWaiter(conn.session.client.id, effect.keys, effect.left))
        condition_lock = self.keyspace_lock
        kept = condition_lock in held
        if kept:
            held.remove(condition_lock)
        self._release(held)
        try:
            if not kept:   # `sync off` took no guard, but a Condition waits under its lock
                await condition_lock.acquire()
            try:
                await self._blocked(conn, self._until_served, waiter, effect.timeout)
            finally:
                # Condition.wait takes the lock back even when cancelled: the command
                # gives it up now and holds nothing more.
                condition_lock.release()
        finally:
            self.state.waiters.remove(waiter)   # timed out or cut short: nobody may serve it now
        return waiter.item   # served by a push, or None

    async def _until_served(self, waiter: ListWaiter, timeout: float | None) -> None:
        with trio.move_on_after(_seconds(timeout)):
            while waiter.item is None:
                await self.lists_changed.wait()   # lets go of the lock while waiting

    def pushed(self, conn, effect: fx.Pushed, held: list):
        """A push handed items to these waiters (shared/waiters.py): wake them to find them."""
        # `sync off` took no guard, but a trio.Condition is notified only under its lock.
        if self._take(self.keyspace_lock, held):
            self.lists_changed.notify_all()
            return None
        return self._notify_when_taken(held)

    async def _notify_when_taken(self, held: list) -> None:
        await self.keyspace_lock.acquire()
        held.append(self.keyspace_lock)
        self.lists_changed.notify_all()

    # -- the pool: a CapacityLimiter bounds it, the ledger names the holders --------

    async def lease_acquire(self, conn: Connection, effect: fx.LeaseAcquire, held):
        ledger = self.state.ledger
        borrower = object()   # this lease's identity for the CapacityLimiter
        ledger.waiting += 1
        try:
            got = await self._blocked(conn, self._borrow, borrower, effect.timeout)
        finally:
            ledger.waiting -= 1
        if got is CUT_SHORT:
            return None   # the client left (or the server stops): a cancelled acquire took nothing
        if not got:
            ledger.timeouts += 1
            return None
        lease = ledger.grant(conn.session.client.id)
        self.borrowers[lease] = borrower
        return lease

    async def _borrow(self, borrower: object, timeout: float | None) -> bool:
        with trio.move_on_after(_seconds(timeout)):
            await self.leases.acquire_on_behalf_of(borrower)
            return True
        return False

    def lease_release(self, conn: Connection, effect: fx.LeaseRelease, held) -> bool:
        """POOL.RELEASE, and the session's lease return when a client leaves."""
        if not self.state.ledger.revoke(effect.lease, conn.session.client.id):
            return False
        self.leases.release_on_behalf_of(self.borrowers.pop(effect.lease))
        return True

    # -- barriers and events ---------------------------------------------------------

    async def barrier_wait(self, conn: Connection, effect: fx.BarrierWait, held) -> int:
        barrier = self.barriers.get(effect.name)
        if barrier is None:
            barrier = self.barriers[effect.name] = Barrier(effect.parties)
        elif barrier.parties != effect.parties:
            raise parties_mismatch(effect.name, barrier.parties, effect.parties)
        # A party whose client hangs up is cancelled out of the wait, which
        # breaks the barrier, so the others don't wait forever.
        index = await self._blocked(conn, self._meet, barrier, effect.name, effect.timeout)
        if index is CUT_SHORT:
            raise broken(effect.name)
        return index

    @staticmethod
    async def _meet(barrier: Barrier, name: bytes, timeout: float | None) -> int:
        try:
            with trio.move_on_after(_seconds(timeout)):
                return await barrier.wait()
        except BrokenBarrierError:
            pass
        raise broken(name)   # broken, or we timed out (which broke it for everyone)

    def barrier_reset(self, conn, effect: fx.BarrierReset, held) -> bool:
        barrier = self.barriers.pop(effect.name, None)
        if barrier is None:
            return False
        barrier.reset()   # waiters get BROKEN; the next WAIT starts afresh
        return True

    def barrier_status(self, conn, effect: fx.BarrierStatus, held):
        barrier = self.barriers.get(effect.name)
        if barrier is None:
            return None
        return BarrierView(barrier.parties, barrier.n_waiting, barrier.broken, barrier.generation)

    def _event(self, name: bytes) -> ClearableEvent:
        event = self.events.get(name)
        if event is None:
            event = self.events[name] = ClearableEvent()
        return event

    def event_set(self, conn, effect: fx.EventSet, held) -> int:
        return self._event(effect.name).set()

    # An event exists only while it is set or waited for: a clear one nobody waits for is
    # forgotten, and a lookup (ISSET, CLEAR of a new name) makes nothing, or asking about
    # 100,000 names would keep 100,000 trio.Events.

    def event_clear(self, conn, effect: fx.EventClear, held) -> None:
        event = self.events.get(effect.name)
        if event is not None:
            event.clear()   # a fresh trio.Event replaces the set one
            self._forget_if_idle(effect.name, event)

    def event_isset(self, conn, effect: fx.EventIsSet, held) -> bool:
        event = self.events.get(effect.name)
        return event is not None and event.is_set()

    async def event_wait(self, conn: Connection, effect: fx.EventWait, held) -> bool:
        event = self._event(effect.name)
        try:
            return await self._blocked(conn, self._until_set, event, effect.timeout) is True
        finally:
            self._forget_if_idle(effect.name, event)

    def _forget_if_idle(self, name: bytes, event: ClearableEvent) -> None:
        if not event.waiting() and not event.is_set() and self.events.get(name) is event:
            del self.events[name]

    @staticmethod
    async def _until_set(event: ClearableEvent, timeout: float | None) -> bool:
        with trio.move_on_after(_seconds(timeout)):
            await event.wait()
            return True
        return False

    # -- server-wide -------------------------------------------------------------

    def reconfigure(self, conn, effect: fx.Reconfigure, held) -> None:
        # Growing wakes waiters at once; shrinking lets holders keep their
        # tokens and admits no one until the number out falls below the new size.
        if "pool_size" in effect.names:
            self.state.ledger.size = self.config.pool_size
            self.leases.total_tokens = self.config.pool_size
        if "maxclients" in effect.names:
            self.client_slots.total_tokens = self.config.maxclients

    def model_info(self, conn, effect, held) -> dict:
        return {"tasks_living": trio.lowlevel.current_statistics().tasks_living,
                "key_locks": len(self.key_locks),
                **self.stalls.info(),
                "barriers": len(self.barriers), "events": len(self.events)}

    def shutdown(self, conn, effect, held) -> None:
        self._begin_stop()

    def stop(self) -> None:
        """Ask for a graceful stop; safe from any thread and from a signal handler."""
        self._stop_requested = True
        if self._token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._begin_stop)

    def _begin_stop(self) -> None:
        """Stop accepting, and cut short every wait: for a next request or in a blocking command.

        A connection in the middle of a command is not interrupted: it
        answers, then sees `stopping` and ends. serve() gives it GRACE seconds.
        """
        self.stopping.set()
        if self._accepting is not None:
            self._accepting.cancel()
        for conn in self.connections:
            if conn.idle:
                # Its wait for a next request ends with ClosedResourceError;
                # the socket is closed when its task ends, a moment later.
                trio.lowlevel.notify_closing(conn.sock)
            elif conn.interruptible is not None:
                conn.interruptible.cancel()


async def _waited(value):
    """Await a performer's coroutine, if it handed one back."""
    if value is not None:
        await value


def _seconds(timeout: float | None) -> float:
    """A command's timeout (None: wait forever) as move_on_after's seconds."""
    return math.inf if timeout is None else timeout
