"""The threaded model: one thread per connection, Python's threading primitives on guard.

    connections   a thread each, reading for its session (Server._converse); a Semaphore
                  of `maxclients` slots is taken before the thread starts (Server._accept)
    keyspace      the lock order of shared/guards.py, step by step (Server.guard): `lock`:
                  one RLock; `striped`/`unordered`: a readers-writer lock, then an RLock per
                  key; an ExitStack gives them all back when the command ends (Server.run)
    lists         a Condition on the keyspace RLock: BLPOP waits, a push notifies (Server.pop_wait)
    pool          a Semaphore of `pool-size` permits (Server.lease_acquire)
    barriers      threading.Barrier, one per name (Server.barrier_wait)
    events        threading.Event, one per name (Server.event_wait)
    hang-ups      one watcher thread wakes a wait whose client left (Server._blocked)
    slow readers  past the output soft limit, replies must go out within a socket timeout on
                  sendall, or the client is closed (Server._flush)
    shutdown      threading.Event `stopping`; every connection is told to finish (Server.stop)

A connection's protocol lives in shared/session.py and the commands in
shared/commands; this file only moves bytes and performs the effects they
yield, with threads.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field

from contend.server import open_listener
from contend.server.descriptors import OUT_OF_DESCRIPTORS, SpareDescriptor
from contend.server.threads_sync import (
    HangupWatcher,
    KeyLocks,
    ReadersWriterLock,
    ResizableSemaphore,
    client_left,
    wait_in_slices,
)
from contend.shared import effects as fx
from contend.shared.commands.events import broken, parties_mismatch
from contend.shared.effects import BarrierView
from contend.shared.guards import EXCLUSIVE, KEY, SHARED, Step, key_steps
from contend.shared.resp import ReplyError
from contend.shared.session import CLOSE, FLUSH, NEED_DATA, Call, Session
from contend.shared.state import ServerState
from contend.shared.stepping import CUT_SHORT as STEP_CUT_SHORT
from contend.shared.stepping import step_event
from contend.shared.waiters import ListWaiter

log = logging.getLogger("contend.threads")

RECV_SIZE = 64 * 1024
GRACE = 2.0   # seconds in-flight commands get to finish at shutdown


@dataclass(eq=False)
class Connection:
    sock: socket.socket
    session: Session
    # Set by the watcher thread when the client hangs up while its command waits.
    hung_up: threading.Event = field(default_factory=threading.Event)
    # The locks the running command holds, given back in reverse when it ends (Server.run).
    held: ExitStack = field(default_factory=ExitStack)


@dataclass
class NamedBarrier:
    barrier: threading.Barrier
    rounds: int = 0


@dataclass
class NamedEvent:
    event: threading.Event = field(default_factory=threading.Event)
    waiting: int = 0   # threading.Event does not say how many wait; we count


class Server:
    def __init__(self, config):
        self.config = config
        self.state = ServerState(config)
        # One reentrant lock over the keyspace: BANK.TRANSFER takes it, then its
        # withdraw and deposit steps take it again; a plain Lock would deadlock.
        self.keyspace_lock = threading.RLock()
        # BLPOP waits on this Condition; its lock is the keyspace lock, the last
        # step of every list command, so a pop that finds the list empty is
        # registered before any push can run.
        self.lists_changed = threading.Condition(self.keyspace_lock)
        # striped and unordered: per-key commands share it, FLUSHALL and friends take
        # it alone, so they wait for an INCR that is halfway through its window.
        self.keyspace_rw = ReadersWriterLock()
        self.key_locks = KeyLocks()   # striped and unordered: an RLock per key in use
        self.leases = ResizableSemaphore(config.pool_size)
        # The lease ledger and the server's counters; never held while waiting.
        self.books_lock = threading.Lock()
        self.client_slots = ResizableSemaphore(config.maxclients)
        self.barriers: dict[bytes, NamedBarrier] = {}
        self.events: dict[bytes, NamedEvent] = {}
        self.names_lock = threading.Lock()    # creating barriers and events by name
        self.stopping = threading.Event()
        self.watcher = HangupWatcher()
        self.connections: set[Connection] = set()
        self.threads: set[threading.Thread] = set()
        self.listener: socket.socket | None = None
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_writer.setblocking(False)   # a signal handler must never block on it
        self.perform = fx.performers(self)

    # -- accepting ----------------------------------------------------------

    def listen(self) -> None:
        self.listener = open_listener(self.config, self.stop)
        self.spare = SpareDescriptor()   # to refuse a client when out of descriptors

    def serve_forever(self) -> None:
        self.listener.setblocking(False)
        selector = selectors.DefaultSelector()
        selector.register(self.listener, selectors.EVENT_READ)
        selector.register(self._wake_reader, selectors.EVENT_READ)
        while not self.stopping.is_set():
            for key, _ in selector.select():
                if key.fileobj is self.listener:
                    self._accept()
        selector.close()
        self._finish()

    def _accept(self) -> None:
        try:
            sock, address = self.listener.accept()
        except BlockingIOError:
            return
        except OSError as error:
            if (error.errno in OUT_OF_DESCRIPTORS
                    and self.spare.refuse_one(self.listener, self.state.refuse)):
                log.warning("accept failed (%s); refused a client", error.strerror)
                return
            if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # Out of descriptors: say so and let connections close, don't die.
                log.warning("accept failed (%s); retrying shortly", error.strerror)
                time.sleep(0.1)
                return
            raise
        # The slot is taken before the connection's thread exists and given
        # back when it ends, so at most maxclients threads ever serve.
        if not self.client_slots.acquire(timeout=0):
            with suppress(OSError):
                sock.sendall(self.state.refuse())
            sock.close()
            return
        sock.setblocking(True)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        laddr = sock.getsockname()
        # Made here, in the one accepting thread, so the connection count has one writer
        # and _finish knows every connection whose thread has started.
        conn = Connection(sock, Session(self.state, f"{address[0]}:{address[1]}",
                                        f"{laddr[0]}:{laddr[1]}"))
        self.connections.add(conn)
        thread = threading.Thread(target=self._serve_connection, args=(conn,),
                                  name=f"client-{address[1]}", daemon=True)
        self.threads.add(thread)
        try:
            thread.start()
        except RuntimeError as error:   # "can't start new thread": out of memory or of pids
            self.threads.discard(thread)
            self._turn_away(conn, error)

    def _turn_away(self, conn: Connection, error: Exception) -> None:
        """A client the OS gave no thread: refused as one past maxclients, its slot and
        session given back at once. One client turned away, not the whole server."""
        log.warning("refused %s: %s", conn.session.client.addr, error)
        self.connections.discard(conn)
        with suppress(OSError):
            conn.sock.sendall(self.state.refuse())
        conn.sock.close()
        with self.books_lock:
            conn.session.close()
        # Never served: like Redis, count it as rejected only (one writer: this thread).
        self.state.stats.connections_received -= 1
        self.client_slots.release()

    # -- one connection -----------------------------------------------------

    def _serve_connection(self, conn: Connection) -> None:
        try:
            self._converse(conn)
        finally:
            self.connections.discard(conn)
            conn.sock.close()
            with self.books_lock:   # many threads leave at once; the totals must add up
                conn.session.close()
            self.client_slots.release()
            self.threads.discard(threading.current_thread())

    def _converse(self, conn: Connection) -> None:
        """The session's read loop (shared/session.py), with a blocking socket."""
        sock, session = conn.sock, conn.session
        idle_timeout = None
        while (event := session.next_event()) is not CLOSE:
            if isinstance(event, Call):
                self.run(conn, event)
                continue
            try:
                if event is NEED_DATA:
                    self._send(conn)   # the replies so far, before we wait
                    if (self.config.timeout or None) != idle_timeout:
                        idle_timeout = self.config.timeout or None
                        sock.settimeout(idle_timeout)
                    session.receive_data(sock.recv(RECV_SIZE))
                elif event is FLUSH:
                    self._flush(conn)
            except OSError:
                # A reset or broken pipe, or idle past `timeout` (Redis closes without
                # a word): the session only hands out what cleans up, then CLOSE.
                session.connection_lost()
        with suppress(OSError):   # the client vanished before its last reply: nothing to tell it
            self._flush(conn)

    def _send(self, conn: Connection) -> None:
        data = conn.session.data_to_send()
        if data:
            conn.sock.sendall(data)

    def _flush(self, conn: Connection) -> None:
        """Send the replies within the session's flush_timeout: a client that has not read
        them by then has stopped reading, and its thread must not wait in sendall forever."""
        data = conn.session.data_to_send()
        if not data:
            return
        sock = conn.sock
        idle_timeout = sock.gettimeout()   # recv's; sendall's timeout bounds the whole send
        sock.settimeout(conn.session.flush_timeout)
        try:
            sock.sendall(data)
        except TimeoutError:
            conn.session.flush_timed_out()
        finally:
            sock.settimeout(idle_timeout)

    def run(self, conn: Connection, call: Call) -> None:
        """Drive one command in this thread, performing each effect it yields."""
        # A `with lock:` block ends where it is written, but a command holds its guards
        # across its yields: each lock granted goes on this stack, and all come off, in
        # reverse, when the command ends (or earlier, all at once, in pop_wait).
        with ExitStack() as conn.held:
            value = None
            while (effect := call.send(value)) is not None:
                try:
                    value = self.perform[type(effect)](conn, effect)
                except Exception as error:   # thrown into the command: a ReplyError is its reply
                    value = error

    # -- guards: the one lock order, with threading locks ----------------------

    def guard(self, conn: Connection, effect: fx.Guard) -> None:
        plan = conn.session.call.guard_plan(effect)   # [] with sync off: steps may interleave
        for step in plan:
            if step.lock == KEY:
                self._lock_key(conn, step, plan)
            elif step.lock == SHARED:
                conn.held.enter_context(self.keyspace_rw.shared())
            elif step.lock == EXCLUSIVE:
                conn.held.enter_context(self.keyspace_rw.exclusive())
            else:   # KEYSPACE or LISTS: the one RLock, which the lists' Condition is built on
                conn.held.enter_context(self.keyspace_lock)

    def _lock_key(self, conn: Connection, step: Step, plan: Sequence[Step]) -> None:
        if step.window:   # unordered: holding the first lock a while
            self.race_window(conn, None, key_steps(plan[:plan.index(step)]))
        lock = self.key_locks.want(step.key)
        if not step.patience:
            lock.acquire()   # striped: every thread climbs the same sorted ladder, no cycle
        elif not lock.acquire(timeout=self.config.deadlock_timeout_ms / 1000):
            with self.books_lock:
                self.state.stats.deadlocks += 1
            raise fx.deadlock(step.key, key_steps(plan), self.config.deadlock_timeout_ms)
        conn.held.callback(lock.release)

    def race_window(self, conn, effect, holds=None) -> None:
        if self.config.stepping:
            self.wait_for_release(conn, effect, holds)
        elif self.config.race_window_us:
            time.sleep(self.config.race_window)   # another thread may run between read and write

    def wait_for_release(self, conn: Connection, window: fx.RaceWindow | None, holds=None) -> None:
        """Step mode: parked, holding the command's locks, until DEBUG.STEP RELEASE sets
        its event. It waits as EVENT.WAIT does, so a client that leaves ends it too."""
        stepper = self.state.stepper
        step_id = conn.session.call.park_step(window, holds)
        name = step_event(step_id)
        try:
            released = self.event_wait(conn, fx.EventWait(name, None))
        finally:
            stepper.leave(step_id)
            self.event_clear(conn, fx.EventClear(name))
        if not released:
            raise ReplyError(STEP_CUT_SHORT)

    # -- waiting, and being woken when the client hangs up ----------------------

    @contextmanager
    def _blocked(self, conn: Connection, interrupt=None):
        """While a command waits: INFO says blocked, and the watcher looks out for a hang-up."""
        client = conn.session.client
        client.blocked = True
        self.watcher.watch(conn.sock, conn.hung_up, interrupt)
        try:
            yield
        finally:
            self.watcher.unwatch(conn.sock)
            client.blocked = False
            # The watcher may not have looked yet: a push can wake the wait first.
            if conn.hung_up.is_set() or client_left(conn.sock):
                # Its reply would go nowhere; the session hands back what it was given.
                conn.session.connection_lost()

    def sleep(self, conn: Connection, effect: fx.Sleep) -> None:
        with self._blocked(conn):
            conn.hung_up.wait(effect.seconds)

    def pop_wait(self, conn: Connection, effect: fx.PopWait):
        # One more hold on the RLock (the command holds it already, but with sync off):
        # from registering the waiter to waiting, no push can slip in.
        with self.lists_changed:
            waiter = self.state.waiters.add(
                ListWaiter(conn.session.client.id, effect.keys, effect.left))
            # Every lock the command holds goes, key locks and the shared keyspace lock
            # too, or the push it waits for could never come; it takes nothing back.
            conn.held.close()
            try:
                with self._blocked(conn, interrupt=self._notify_lists):
                    # wait_for gives the RLock up while waiting and takes it back to check.
                    self.lists_changed.wait_for(
                        lambda: waiter.item is not None or conn.hung_up.is_set()
                        or self.stopping.is_set(), effect.timeout)
            finally:
                # Whatever ended the wait, no push may hand this waiter an item after it.
                self.state.waiters.remove(waiter)
        return waiter.item

    def _notify_lists(self) -> None:
        # With a timeout: whoever holds the keyspace lock (a long race window)
        # must not stall the watcher or a shutdown; the waiter's own wait_for
        # re-checks `hung_up` and `stopping` when it gets the lock back anyway.
        if self.keyspace_lock.acquire(timeout=1):
            try:
                self.lists_changed.notify_all()
            finally:
                self.keyspace_lock.release()

    def pushed(self, conn: Connection, effect: fx.Pushed) -> None:
        # The pusher served them already (shared/waiters.py); each finds its item waiting.
        with self.lists_changed:   # re-entered: the pusher holds it, but with sync off
            self.lists_changed.notify_all()

    # -- the pool: a Semaphore bounds it, the ledger names the holders -----------

    def lease_acquire(self, conn: Connection, effect: fx.LeaseAcquire):
        ledger = self.state.ledger
        with self.books_lock:
            ledger.waiting += 1
        try:
            with self._blocked(conn):
                got = wait_in_slices(self.leases.acquire, effect.timeout, conn.hung_up)
        finally:
            with self.books_lock:
                ledger.waiting -= 1
        # A lease is not a `with semaphore:` block: it outlives this command, until
        # POOL.RELEASE or the client leaves (the session then gives it back).
        with self.books_lock:
            if not got:
                ledger.timeouts += 1
                return None
            return ledger.grant(conn.session.client.id)

    def lease_release(self, conn: Connection, effect: fx.LeaseRelease) -> bool:
        return self._give_back(effect.lease, conn.session.client.id)

    def _give_back(self, lease: int, client_id: int) -> bool:
        with self.books_lock:
            if not self.state.ledger.revoke(lease, client_id):
                return False
        self.leases.release()   # after the ledger forgets it, so in-use never exceeds size
        return True

    # -- barriers and events ---------------------------------------------------

    def barrier_wait(self, conn: Connection, effect: fx.BarrierWait) -> int:
        with self.names_lock:
            named = self.barriers.get(effect.name)
            if named is None:
                named = self.barriers[effect.name] = NamedBarrier(None)
                # The action runs once per round, in the last thread to arrive.
                named.barrier = threading.Barrier(effect.parties,
                                                  action=lambda: _count_round(named))
            elif named.barrier.parties != effect.parties:
                raise parties_mismatch(effect.name, named.barrier.parties, effect.parties)
        # A party that hangs up aborts the barrier, so the others don't wait forever.
        with self._blocked(conn, interrupt=named.barrier.abort):
            try:
                return named.barrier.wait(effect.timeout)
            except threading.BrokenBarrierError:
                raise broken(effect.name) from None

    def barrier_reset(self, conn: Connection, effect: fx.BarrierReset) -> bool:
        with self.names_lock:
            named = self.barriers.pop(effect.name, None)
        if named is None:
            return False
        named.barrier.reset()   # waiters get BrokenBarrierError; the next WAIT starts afresh
        return True

    def barrier_status(self, conn: Connection, effect: fx.BarrierStatus):
        named = self.barriers.get(effect.name)
        if named is None:
            return None
        barrier = named.barrier
        return BarrierView(barrier.parties, barrier.n_waiting, barrier.broken, named.rounds)

    # An event exists only while it is set or waited for: a clear one nobody waits for is
    # forgotten, and a lookup (ISSET, CLEAR of a new name) makes nothing, or asking about
    # 100,000 names would keep 100,000 threading.Events. Finding or making one and
    # counting its waiter happen under one hold of names_lock, or a waiter leaving could
    # forget an event that another thread has just found.

    def event_set(self, conn: Connection, effect: fx.EventSet) -> int:
        with self.names_lock:
            named = self.events.setdefault(effect.name, NamedEvent())
            released = 0 if named.event.is_set() else named.waiting
            named.event.set()
        return released

    def event_clear(self, conn: Connection, effect: fx.EventClear) -> None:
        with self.names_lock:
            named = self.events.get(effect.name)
            if named is not None:
                named.event.clear()
                self._forget_if_idle(effect.name, named)

    def event_isset(self, conn: Connection, effect: fx.EventIsSet) -> bool:
        named = self.events.get(effect.name)
        return named is not None and named.event.is_set()

    def event_wait(self, conn: Connection, effect: fx.EventWait) -> bool:
        with self.names_lock:
            named = self.events.setdefault(effect.name, NamedEvent())
            named.waiting += 1
        try:
            with self._blocked(conn):
                return wait_in_slices(named.event.wait, effect.timeout, conn.hung_up)
        finally:
            with self.names_lock:
                named.waiting -= 1
                self._forget_if_idle(effect.name, named)

    def _forget_if_idle(self, name: bytes, named: NamedEvent) -> None:
        """Under names_lock: drop an event that is clear and has no waiters."""
        if not named.waiting and not named.event.is_set() and self.events.get(name) is named:
            del self.events[name]

    # -- server-wide ----------------------------------------------------------

    def reconfigure(self, conn: Connection, effect: fx.Reconfigure) -> None:
        if "pool_size" in effect.names:
            with self.books_lock:
                self.state.ledger.size = self.config.pool_size
            self.leases.resize(self.config.pool_size)
        if "maxclients" in effect.names:
            self.client_slots.resize(self.config.maxclients)

    def model_info(self, conn: Connection, effect: fx.ModelInfo) -> dict:
        return {"threads_alive": threading.active_count(), "key_locks": len(self.key_locks),
                "barriers": len(self.barriers), "events": len(self.events)}

    def shutdown(self, conn: Connection, effect: fx.Shutdown) -> None:
        self.stop()

    def stop(self) -> None:
        """Ask for a graceful stop; safe from any thread and from a signal handler."""
        self.stopping.set()
        with suppress(OSError):
            self._wake_writer.send(b"\0")

    def _finish(self) -> None:
        """Stop accepting, let in-flight commands answer, close every connection."""
        self.listener.close()
        self.spare.close()
        for conn in list(self.connections):
            # Reading ends: idle threads see end-of-file, and a blocked wait ends as if
            # its client had left; a command still running can send its reply.
            with suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RD)
        self._notify_lists()
        deadline = time.monotonic() + GRACE
        for thread in list(self.threads):
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self.watcher.close()


def _count_round(named: NamedBarrier) -> None:
    named.rounds += 1
