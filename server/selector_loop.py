"""The selectors model: one thread, non-blocking sockets, and a small trio written by hand.

    the loop      a ready queue, a timer heap and a selector (Loop): each turn sleeps until a
                  socket or a deadline is ready, then runs every task that is (Loop.turn)
    tasks         generators that park and are resumed with a value: one per connection
                  (Server.converse), the accept loop (Server.accept), the stop (Server.main)
    keyspace      `lock`: one hand-made reentrant Owner; `striped`/`unordered`: a hand-made
                  ReadersWriterLock and an Owner per key, taken in the one order (Server.guard)
    lists         BLPOP parks its task in shared ListWaiters; a push hands it the item and
                  wakes it (Server.pop_wait, Server.pushed)
    pool          a Semaphore: the permits and a FIFO of parked tasks (Server.lease_acquire)
    barriers      a Gathering: arrivals stay parked until the last one comes (Server.barrier_wait)
    events        a Signal: a flag and the tasks parked on it (Server.event_wait)
    hang-ups      a watcher task reads the socket of a blocked command; end of file cuts the
                  wait short (Server.blocked)
    slow readers  a task that cannot send its replies parks until the socket drains; meanwhile
                  that client gets no more commands run; past the output soft limit, a timer
                  ends the park and the client is closed (Server.send_all)
    WORK          runs inside one turn and stalls everyone; INFO counts it (shared/stalls.py)
    shutdown      a wake-up socket the main task waits on; then no new waits, GRACE for the
                  rest (Server.main)

Why generators: a command that must wait (for a lock, a push, a timer)
cannot block the one thread every client shares. So every wait *parks*
the task: it puts itself in the queue of what it waits for and yields to
the loop, which runs others meanwhile. Whoever frees that thing puts the
task back on the ready queue with a value, and the task goes on from the
`yield` as if it had called a blocking function. The code of a connection
reads straight down (server/trio_server.py is the same story with `await`,
and trio scheduling it); only who resumes it differs. Nothing else runs
between two parks, so a read-modify-write with no wait inside is atomic
here with no lock at all.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import socket
import time
from collections import deque
from collections.abc import Generator
from inspect import isgeneratorfunction
from typing import Any

from contend.server import open_listener
from contend.server.descriptors import OUT_OF_DESCRIPTORS, SpareDescriptor
from contend.server.selector_sync import (
    CUT_SHORT,
    TIMED_OUT,
    BrokenBarrierError,
    Gathering,
    KeyLocks,
    Owner,
    ReadersWriterLock,
    Semaphore,
    Signal,
    Timers,
)
from contend.shared import effects as fx
from contend.shared.commands.events import broken, parties_mismatch
from contend.shared.effects import BarrierView
from contend.shared.guards import EXCLUSIVE, KEY, KEYSPACE, SHARED, key_steps
from contend.shared.session import CLOSE, FLUSH, NEED_DATA, Call, Session
from contend.shared.stalls import LoopStalls
from contend.shared.state import ServerState
from contend.shared.stepping import step_event
from contend.shared.waiters import ListWaiter

log = logging.getLogger("contend.selectors")

RECV_SIZE = 16 * 1024     # as Redis reads: a bigger buffer costs small reads more than it saves
GRACE = 2.0               # seconds in-flight commands get to finish at shutdown
WATCH_LIMIT = 1 << 20     # bytes a blocked client may pipeline before we stop reading it
ACCEPT_BATCH = 64         # accepts per wake-up, so a connection storm cannot starve the rest
ACCEPT_PAUSE = 0.1        # seconds to look away from the listener when out of descriptors
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


# -- the scheduler -----------------------------------------------------------------

class Task:
    """One generator the loop runs, and where it is parked."""

    __slots__ = ("steps", "parked", "leave", "deadline", "done")

    def __init__(self, steps: Generator[None, Any, Any]):
        self.steps = steps
        self.parked = False   # waiting for wake() or cancel(); not on the ready queue
        self.leave = None     # takes it out of the queue it waits in, if cancelled instead
        self.deadline = None  # its Timers entry while a park has a timeout
        self.done = False


class Watched:
    """A socket the selector watches: the task waiting to read it, and the one waiting to write.

    The selector keeps watching for what a task waited for after the wait is
    over: the next wait, usually a moment later, then costs no system call.
    Only when it fires with nobody waiting is it dropped (the selector is
    level-triggered: it would fire again every turn)."""

    __slots__ = ("sock", "events", "reader", "writer")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.events = 0                    # what the selector watches it for now
        self.reader: Task | None = None
        self.writer: Task | None = None

    def forget(self, task: Task) -> None:
        if self.reader is task:
            self.reader = None
        if self.writer is task:
            self.writer = None


class Loop:
    """The scheduler: a ready queue, a timer heap and a selector, and nothing else.

    A task yields to the loop only by parking (`park`); the loop resumes it
    with whatever value its waker sends. Waiting for a socket, for a time or
    for a primitive are all parks, written as generators the task enters with
    `yield from`. This is trio's low level in miniature (wait_task_rescheduled,
    reschedule, wait_readable) without the cancel scopes and the nurseries.
    """

    def __init__(self) -> None:
        self.ready: deque[tuple[Task, Any]] = deque()   # (task, value to resume it with)
        self.timers = Timers()
        self.selector = selectors.DefaultSelector()
        self.watched: dict[socket.socket, Watched] = {}
        self.current: Task | None = None   # the task running now
        self.living = 0                    # tasks started and not yet ended
        self.stalls = LoopStalls()

    def spawn(self, steps: Generator[None, Any, Any]) -> Task:
        """Start a task: it first runs in the next batch of the ready queue."""
        task = Task(steps)
        self.living += 1
        self.ready.append((task, None))
        return task

    def run(self, main: Generator[None, Any, Any]) -> None:
        """Turn until `main` ends."""
        task = self.spawn(main)
        while not task.done:
            self.turn()

    def turn(self) -> None:
        """One iteration: sleep until a socket or a deadline is ready, then run all that is."""
        timeout = 0 if self.ready else self.timers.timeout(time.monotonic())
        events = self.selector.select(timeout)
        started = time.monotonic()
        for key, mask in events:
            self._io_ready(key.data, mask)
        for task in self.timers.due(started):
            self.cancel(task, TIMED_OUT)
        self.run_ready()
        # A WORK command ran inside this turn, start to end: nobody else was served
        # meanwhile, and this is the one place that can see how long that was.
        self.stalls.note(time.monotonic() - started)

    def run_ready(self) -> None:
        """Run the tasks ready now; those they wake run next turn, after a look at the sockets."""
        ready = self.ready
        for _ in range(len(ready)):
            task, value = ready.popleft()
            if task.done:
                continue   # killed while it waited on this queue
            self.current = task
            try:
                if isinstance(value, BaseException):
                    task.steps.throw(value)
                else:
                    task.steps.send(value)
            except StopIteration:
                self._ended(task)
            except Exception:
                self._ended(task)
                log.exception("a task failed; the loop goes on")
        self.current = None

    def _ended(self, task: Task) -> None:
        task.done = True
        self.living -= 1

    # -- parking and waking: what every wait is made of

    def park(self, leave=None, timeout: float | None = None):
        """Suspend the running task until wake() or cancel() resumes it; returns the value sent.

        The caller has put the task where its waker will find it (a lock's
        queue, a socket's reader). `leave(task)` takes it out again should it
        be cancelled instead; after `timeout` seconds (None: no limit) it is,
        with TIMED_OUT."""
        task = self.current
        task.parked, task.leave = True, leave
        if timeout is not None:
            task.deadline = self.timers.after(timeout, task)
        return (yield)

    def wake(self, task: Task, value: Any = None) -> None:
        """Put a parked task back on the ready queue; its park returns `value` (raises it, if an
        exception). Whoever wakes it has already taken it out of the queue it waited in."""
        task.parked, task.leave = False, None
        if task.deadline is not None:
            self.timers.cancel(task.deadline)
            task.deadline = None
        self.ready.append((task, value))

    def cancel(self, task: Task, value: Any) -> bool:
        """End a park early (its timeout, its client hanging up, shutdown): out of its queue,
        then resumed with `value`. False when it is not parked: its wait has just ended."""
        if not task.parked:
            return False
        if task.leave is not None:
            task.leave(task)
        self.wake(task, value)
        return True

    def kill(self, task: Task | None) -> None:
        """End a task where it stands (out of any queue); its `finally` blocks run now."""
        if task is None or task.done:
            return
        if task.parked:
            self.cancel(task, None)   # the ready queue skips it: it is done
        self._ended(task)
        task.steps.close()

    def sleep(self, seconds: float):
        """Park for `seconds`; returns None, or CUT_SHORT if cancelled first."""
        outcome = yield from self.park(timeout=seconds)
        return None if outcome is TIMED_OUT else outcome

    # -- sockets

    def wait_readable(self, sock: socket.socket, timeout: float | None = None):
        """Park until `sock` has bytes (or end of file) to read: None, or TIMED_OUT/CUT_SHORT."""
        watched = self._watch(sock, READ)
        watched.reader = self.current
        return (yield from self.park(watched.forget, timeout))

    def wait_writable(self, sock: socket.socket, timeout: float | None = None):
        """Park until `sock` has room to send: None, or TIMED_OUT/CUT_SHORT."""
        watched = self._watch(sock, WRITE)
        watched.writer = self.current
        return (yield from self.park(watched.forget, timeout))

    def forget(self, sock: socket.socket) -> None:
        """Stop watching a socket; before it is closed."""
        watched = self.watched.pop(sock, None)
        if watched is not None and watched.events:
            self.selector.unregister(sock)

    def _watch(self, sock: socket.socket, event: int) -> Watched:
        watched = self.watched.get(sock)
        if watched is None:
            watched = self.watched[sock] = Watched(sock)
        if not watched.events & event:
            self._interest(watched, watched.events | event)
        return watched

    def _io_ready(self, watched: Watched, mask: int) -> None:
        unwanted = 0
        if mask & READ:
            if watched.reader is None:
                unwanted |= READ
            else:
                self.wake(watched.reader)
                watched.reader = None
        if mask & WRITE:
            if watched.writer is None:
                unwanted |= WRITE
            else:
                self.wake(watched.writer)
                watched.writer = None
        if watched.events & unwanted:
            self._interest(watched, watched.events & ~unwanted)

    def _interest(self, watched: Watched, events: int) -> None:
        if not watched.events:
            self.selector.register(watched.sock, events, watched)
        elif not events:
            self.selector.unregister(watched.sock)
        else:
            self.selector.modify(watched.sock, events, watched)
        watched.events = events


# -- the server ------------------------------------------------------------------------

class Connection:
    """One client: its socket, its session, and the task that converses with it."""

    __slots__ = ("sock", "session", "client", "task", "held", "watcher", "interruptible",
                 "paused")

    def __init__(self, sock: socket.socket, session: Session):
        self.sock = sock
        self.session = session
        self.client = session.client
        self.task: Task | None = None
        # How to give back each lock the running command holds, in the order taken.
        self.held: list = []
        self.watcher: Task | None = None   # reads the socket while a blocking command waits
        self.interruptible = False   # parked where stop() may cut it short: between
                                     # requests, or in a blocking command
        self.paused = False          # parked until the client reads what it was sent


def at_once(perform):
    """A performer that never waits, as a generator that returns at once (for `yield from`)."""
    def performer(conn: Connection, effect: fx.Effect[Any]):
        return perform(conn, effect)
        yield   # never reached: it only makes this function a generator
    return performer


class Server:
    def __init__(self, config):
        self.config = config
        self.state = ServerState(config)
        self.loop = loop = Loop()
        # The lock order (shared/guards.py), one primitive per rung. `lock` mode's one
        # lock must be reentrant: BANK.TRANSFER takes it again inside its own guard.
        self.keyspace_lock = Owner(loop)
        # `striped`/`unordered`: per-key commands share it, whole-keyspace ones hold it
        # alone, so FLUSHALL cannot land between an INCR's read and its write.
        self.keyspace_rw = ReadersWriterLock(loop)
        self.key_locks = KeyLocks(loop)
        # The lists' lock, last on the ladder. Between a pop finding nothing and its
        # waiter registering nothing else runs here; the rung stays for the order's sake.
        self.lists_lock = Owner(loop)
        self.leases = Semaphore(loop, config.pool_size)
        self.barriers: dict[bytes, Gathering] = {}
        self.events: dict[bytes, Signal] = {}
        self.connections: set[Connection] = set()
        self.all_closed = Signal(loop)   # set once stopping and the last connection is gone
        self.listener: socket.socket | None = None
        self.stop_requested = False   # set from anywhere, a signal handler too; main() acts on it
        self.stopping = False         # main() is stopping: no new requests, no new waits
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_writer.setblocking(False)   # a signal handler must never block on it
        self._wake_reader.setblocking(False)
        self.perform = {effect: method if isgeneratorfunction(method) else at_once(method)
                        for effect, method in fx.performers(self).items()}

    # -- accepting, and stopping ------------------------------------------------------

    def listen(self) -> None:
        self.listener = open_listener(self.config, self.stop)
        self.spare = SpareDescriptor()   # to refuse a client when out of descriptors

    def serve_forever(self) -> None:
        self.listener.setblocking(False)
        try:
            self.loop.run(self.main())
        finally:
            self.loop.selector.close()

    def main(self):
        """The first task and the last: accept until asked to stop, then stop gracefully."""
        loop = self.loop
        accepting = loop.spawn(self.accept())
        while not self.stop_requested:
            yield from loop.wait_readable(self._wake_reader)
            self._drain_wakeups()
        # Accept no more, cut short every wait for a request or in a blocking command,
        # and give the commands in flight GRACE seconds to answer.
        self.stopping = True
        loop.kill(accepting)
        loop.forget(self.listener)
        self.listener.close()
        self.spare.close()
        for conn in list(self.connections):
            if conn.interruptible:
                loop.cancel(conn.task, CUT_SHORT)
        if self.connections and (yield from self.all_closed.wait(GRACE)) is TIMED_OUT:
            for conn in list(self.connections):
                loop.kill(conn.task)   # closed where they stand

    def accept(self):
        """The accept loop, a task like any other."""
        listener = self.listener
        while True:
            yield from self.loop.wait_readable(listener)
            for _ in range(ACCEPT_BATCH):
                try:
                    sock, address = listener.accept()
                except BlockingIOError:
                    break
                except OSError as error:
                    if error.errno == errno.ECONNABORTED:
                        continue   # gone before we took it
                    if (error.errno in OUT_OF_DESCRIPTORS
                            and self.spare.refuse_one(listener, self.state.refuse)):
                        log.warning("accept failed (%s); refused a client", error.strerror)
                        continue   # told on the spare descriptor (server/descriptors.py)
                    # Out of descriptors (EMFILE), most likely: a pause lets connections
                    # close, and the loop serves everyone meanwhile (time.sleep would not).
                    log.warning("accept failed (%s); retrying shortly", error.strerror)
                    yield from self.loop.sleep(ACCEPT_PAUSE)
                    break
                self.admit(sock, address)

    def admit(self, sock: socket.socket, address) -> None:
        # With no threads to cap, the number of open connections is the measure of maxclients.
        if len(self.connections) >= self.config.maxclients:
            with contextlib.suppress(OSError):
                sock.send(self.state.refuse())   # the one line Redis sends before closing
            sock.close()
            return
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            local = sock.getsockname()
        except OSError:   # gone already
            sock.close()
            return
        conn = Connection(sock, Session(self.state, f"{address[0]}:{address[1]}",
                                        f"{local[0]}:{local[1]}"))
        self.connections.add(conn)
        conn.task = self.loop.spawn(self.serve_connection(conn))

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_reader.recv(4096):
                pass
        except BlockingIOError:
            pass

    def stop(self) -> None:
        """Ask for a graceful stop; safe from any thread and from a signal handler."""
        self.stop_requested = True
        with contextlib.suppress(OSError):   # full: the loop is awake anyway
            self._wake_writer.send(b"\0")      # select() may be asleep with no deadline

    # -- one connection: the session's read loop, in one task ------------------------------

    def serve_connection(self, conn: Connection):
        """One connection's task. A bug here closes this connection only; the loop goes on."""
        try:
            yield from self.converse(conn)
        except Exception:
            log.exception("a connection failed; closing it")
        finally:
            self._close(conn)

    def converse(self, conn: Connection):
        """Requests in, commands run, replies out, until the session says CLOSE.

        The read loop of shared/session.py; every wait in it parks this task."""
        session = conn.session
        while (event := session.next_event()) is not CLOSE:
            if event is NEED_DATA:
                yield from self.send_all(conn, session.data_to_send())   # answered, then wait
                session.receive_data((yield from self.next_request(conn)))
            elif event is FLUSH:
                yield from self.send_all(conn, session.data_to_send(), session.flush_timeout)
            else:
                yield from self.drive(conn, event)
        yield from self.send_all(conn, session.data_to_send(), session.flush_timeout)

    def drive(self, conn: Connection, call: Call):
        """Run one command: perform each effect it yields here, and send back its result."""
        perform, value = self.perform, None
        try:
            while (effect := call.send(value)) is not None:
                if effect.blocking and self.stopping:
                    value = CUT_SHORT   # no new waits once the server is stopping
                else:
                    try:
                        value = yield from perform[type(effect)](conn, effect)
                    except Exception as error:   # a ReplyError fails the command with its
                        value = error            # reply; anything else is a bug, answered so
                if value is CUT_SHORT:   # its client left, or the server stops, while it waited
                    call.cancel()
                    return
        finally:
            self.release_guards(conn)

    def next_request(self, conn: Connection):
        """The client's next bytes; b"" when it has left, stayed idle past `timeout`
        (Redis closes an idle client without a word) or the server is stopping."""
        if self.stopping:
            return b""
        conn.interruptible = True
        try:
            return (yield from self.receive(conn, self.config.timeout))
        finally:
            conn.interruptible = False

    def receive(self, conn: Connection, timeout: float = 0):
        """Bytes from the socket, once there are some; b"" at end of file or if the wait ends."""
        while True:
            if (yield from self.loop.wait_readable(conn.sock, timeout or None)) is not None:
                return b""   # TIMED_OUT or CUT_SHORT
            try:
                return conn.sock.recv(RECV_SIZE)
            except BlockingIOError:
                continue   # a spurious wake-up: nothing to read after all
            except OSError:
                return b""

    def send_all(self, conn: Connection, data: bytes, patience: float | None = None):
        """Send it all, parking while the socket's buffer is full. A client that reads
        slower than it asks gets nothing more run meanwhile: that is the back-pressure.
        A FLUSH has `patience` seconds (None: no limit), a timer on the park: a client
        that has not read it all by then has stopped reading, and the session closes it."""
        deadline = None if patience is None else time.monotonic() + patience
        while data:
            try:
                sent = conn.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                conn.session.connection_lost()   # it vanished mid-reply; nothing to tell it
                return
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
            conn.paused = True
            waited = yield from self.loop.wait_writable(
                conn.sock, None if deadline is None else max(0.0, deadline - time.monotonic()))
            conn.paused = False
            if waited is TIMED_OUT:
                conn.session.flush_timed_out()
                return

    def _close(self, conn: Connection) -> None:
        if conn.session.call is not None:   # the task failed or was killed mid-command
            conn.session.call.cancel()
        self.release_guards(conn)
        self.loop.forget(conn.sock)
        conn.sock.close()
        conn.session.close()
        self.connections.discard(conn)
        if self.stopping and not self.connections:
            self.all_closed.set()

    # -- blocking commands: waits a hang-up or shutdown may cut short ----------------------

    def blocked(self, conn: Connection, waiting):
        """Run the wait `waiting` (a generator) while a watcher task reads the client's socket.

        While its command waits, the connection's task is not reading, so on
        its own it would not see the client leave. The watcher reads instead:
        end of file cuts the wait short; bytes that arrive meanwhile (the next
        pipelined command) are kept by the session. Returns what `waiting`
        returns, or CUT_SHORT when the client hung up or the server stops.
        """
        conn.client.blocked = conn.interruptible = True
        watcher = conn.watcher = self.loop.spawn(self.watch_for_hangup(conn, self.loop.current))
        try:
            return (yield from waiting)
        finally:
            conn.client.blocked = conn.interruptible = False
            conn.watcher = None
            if not watcher.done:   # (done: the client left, or sent WATCH_LIMIT bytes)
                self.loop.kill(watcher)
                self.last_look(conn)

    def watch_for_hangup(self, conn: Connection, waiting: Task):
        session = conn.session
        while session.buffered < WATCH_LIMIT:
            data = yield from self.receive(conn)
            session.receive_data(data)   # b"": the client has left, and the session knows it
            if not data:
                self.loop.cancel(waiting, CUT_SHORT)   # a no-op if its wait has just ended
                return
        # Past the limit we stop reading; TCP's flow control holds back the rest.

    def last_look(self, conn: Connection) -> None:
        """Read what the client sent as its wait ended. A client that left as it was
        served, in the same turn, gets its item handed back (shared/session.py), not
        sent into the void."""
        if conn.session.buffered >= WATCH_LIMIT:
            return
        try:
            data = conn.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        conn.session.receive_data(data)

    def sleep(self, conn: Connection, effect: fx.Sleep):
        return (yield from self.blocked(conn, self.loop.sleep(effect.seconds)))

    def pop_wait(self, conn: Connection, effect: fx.PopWait):
        waiters = self.state.waiters
        waiter = waiters.add(ListWaiter(conn.client.id, effect.keys, effect.left))
        waiter.wake = self.loop.current   # the task Server.pushed wakes
        # Like Condition.wait, give every lock up while waiting, or the push it waits for
        # could never come. None is taken back: the command only has its reply left to give.
        self.release_guards(conn)
        served = yield from self.blocked(
            conn, self.loop.park(lambda _: waiters.remove(waiter), effect.timeout))
        return None if served is TIMED_OUT else served

    def pushed(self, conn: Connection, effect: fx.Pushed) -> None:
        # The push has handed each waiter its item already (shared/waiters.py): only waking is left.
        for waiter in effect.served:
            self.loop.wake(waiter.wake, waiter.item)

    # -- guards: the lock order, one hand-made primitive per rung ----------------------------

    def guard(self, conn: Connection, effect: fx.Guard):
        plan = conn.session.call.guard_plan(effect)
        for position, step in enumerate(plan):
            # Hold the first key a while, so a crossing transfer takes its own meanwhile.
            if step.window and (yield from self.race_window(
                    conn, None, key_steps(plan[:position]))) is CUT_SHORT:
                return CUT_SHORT
            if step.lock == SHARED:
                yield from self.keyspace_rw.acquire_shared()
                conn.held.append(self.keyspace_rw.release_shared)
                continue
            if step.lock == EXCLUSIVE:
                yield from self.keyspace_rw.acquire_exclusive()
                conn.held.append(self.keyspace_rw.release_exclusive)
                continue
            if step.lock == KEY:
                lock = self.key_locks[step.key]   # made now if nobody holds or wants it
            else:
                lock = self.keyspace_lock if step.lock == KEYSPACE else self.lists_lock
            patience = self.config.deadlock_timeout_ms / 1000 if step.patience else None
            if (yield from lock.acquire(patience)) is TIMED_OUT:
                # Waited deadlock-timeout-ms: give back what it holds (drive does), change nothing.
                self.state.stats.deadlocks += 1
                raise fx.deadlock(step.key, key_steps(plan), self.config.deadlock_timeout_ms)
            conn.held.append(lock.release)

    def release_guards(self, conn: Connection) -> None:
        held = conn.held
        while held:
            release = held.pop()
            release()

    def race_window(self, conn: Connection, effect, holds=None):
        if self.config.stepping:
            return (yield from self.wait_for_release(conn, effect, holds))
        if self.config.race_window_us:
            # A timer, not time.sleep: the loop serves others meanwhile, and one of
            # them may write the key this command has read (the lost update).
            yield from self.loop.sleep(self.config.race_window)
        return None

    def wait_for_release(self, conn: Connection, window, holds=None):
        """Step mode: parked, holding the command's locks, until DEBUG.STEP RELEASE sets
        its event. It waits as EVENT.WAIT does, so a client that leaves ends it too."""
        step_id = conn.session.call.park_step(window, holds)
        name = step_event(step_id)
        try:
            released = yield from self.event_wait(conn, fx.EventWait(name, None))
        finally:
            self.state.stepper.leave(step_id)
            self.event_clear(conn, fx.EventClear(name))
        return CUT_SHORT if released is not True else None

    # -- the pool: a Semaphore bounds it, the ledger names the holders ------------------------

    def lease_acquire(self, conn: Connection, effect: fx.LeaseAcquire):
        ledger = self.state.ledger
        ledger.waiting += 1
        try:
            got = yield from self.blocked(conn, self.leases.acquire(effect.timeout))
        finally:
            ledger.waiting -= 1
        if got is TIMED_OUT:
            ledger.timeouts += 1
            return None
        return CUT_SHORT if got is CUT_SHORT else ledger.grant(conn.client.id)

    def lease_release(self, conn: Connection, effect: fx.LeaseRelease) -> bool:
        if not self.state.ledger.revoke(effect.lease, conn.client.id):
            return False   # only the holder may give a lease back
        self.leases.release()
        return True

    # -- barriers and events ---------------------------------------------------------------

    def barrier_wait(self, conn: Connection, effect: fx.BarrierWait):
        gathering = self.barriers.get(effect.name)
        if gathering is None:
            gathering = self.barriers[effect.name] = Gathering(self.loop, effect.parties)
        elif gathering.parties != effect.parties:
            raise parties_mismatch(effect.name, gathering.parties, effect.parties)
        try:
            return (yield from self.blocked(conn, gathering.wait(effect.timeout)))
        except BrokenBarrierError:
            raise broken(effect.name) from None

    def barrier_reset(self, conn: Connection, effect: fx.BarrierReset) -> bool:
        gathering = self.barriers.pop(effect.name, None)
        if gathering is None:
            return False
        gathering.abort()   # its waiters get BROKEN; the next WAIT starts afresh
        return True

    def barrier_status(self, conn: Connection, effect: fx.BarrierStatus) -> BarrierView | None:
        gathering = self.barriers.get(effect.name)
        if gathering is None:
            return None
        return BarrierView(gathering.parties, len(gathering.arrived), gathering.broken,
                           gathering.rounds)

    # An event exists only while it is set or waited for: a clear one nobody waits for is
    # forgotten, and a lookup (ISSET, CLEAR of a new name) makes nothing, or asking about
    # 100,000 names would keep 100,000 Signals.

    def _event(self, name: bytes) -> Signal:
        event = self.events.get(name)
        if event is None:
            event = self.events[name] = Signal(self.loop)
        return event

    def event_set(self, conn: Connection, effect: fx.EventSet) -> int:
        return self._event(effect.name).set()

    def event_clear(self, conn: Connection, effect: fx.EventClear) -> None:
        event = self.events.get(effect.name)
        if event is not None:
            event.clear()
            self._forget_if_idle(effect.name, event)

    def event_isset(self, conn: Connection, effect: fx.EventIsSet) -> bool:
        event = self.events.get(effect.name)
        return event is not None and event.is_set

    def event_wait(self, conn: Connection, effect: fx.EventWait):
        event = self._event(effect.name)
        try:
            outcome = yield from self.blocked(conn, event.wait(effect.timeout))
        finally:
            self._forget_if_idle(effect.name, event)
        return False if outcome is TIMED_OUT else outcome

    def _forget_if_idle(self, name: bytes, event: Signal) -> None:
        if not event.waiting and not event.is_set and self.events.get(name) is event:
            del self.events[name]

    # -- server-wide -----------------------------------------------------------------------

    def reconfigure(self, conn: Connection, effect: fx.Reconfigure) -> None:
        if "pool_size" in effect.names:
            self.state.ledger.size = self.config.pool_size
            self.leases.resize(self.config.pool_size)
        # maxclients needs nothing: admit() reads it for every new connection.

    def model_info(self, conn: Connection, effect: fx.ModelInfo) -> dict[str, Any]:
        loop = self.loop
        return {"loop_iterations": loop.stalls.noted, **loop.stalls.info(),
                "tasks_living": loop.living, "timers": len(loop.timers),
                "parked_commands": sum(1 for c in self.connections
                                       if c.session.call is not None and c is not conn),
                "paused_clients": sum(1 for c in self.connections if c.paused),
                "key_locks": len(self.key_locks),
                "barriers": len(self.barriers), "events": len(self.events)}

    def shutdown(self, conn: Connection, effect: fx.Shutdown) -> None:
        self.stop()
