"""The threaded model: one thread per connection, Python's threading primitives on guard.

    connections   a thread each; a Semaphore of `maxclients` slots is taken before it starts
    keyspace      `lock`: one RLock; `striped`/`unordered`: an RLock per key (Server.guard)
    lists         a Condition on that same RLock: BLPOP waits, a push notifies (Server.pop_wait)
    pool          a Semaphore of `pool-size` permits (Server.lease_acquire)
    barriers      threading.Barrier, one per name (Server.barrier_wait)
    events        threading.Event, one per name (Server.event_wait)
    shutdown      threading.Event `stopping`; every connection is told to finish (Server.stop)

Commands themselves live in shared/commands; this file only performs the
effects they yield, with threads.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from types import GeneratorType

from contend.server import open_listener
from contend.server.threads_sync import HangupWatcher, KeyLocks, ResizableSemaphore, wait_in_slices
from contend.shared import effects as fx
from contend.shared.commands import BLOCKING, dispatch
from contend.shared.commands.events import BarrierView, broken, parties_mismatch
from contend.shared.resp import ProtocolError, ReplyError, RequestParser, encode
from contend.shared.state import Client, ServerState
from contend.shared.waiters import ListWaiter

log = logging.getLogger("contend.threads")

RECV_SIZE = 64 * 1024
GRACE = 2.0   # seconds in-flight commands get to finish at shutdown


@dataclass(eq=False)
class Connection:
    sock: socket.socket
    client: Client
    pending: list = field(default_factory=list)           # replies not yet sent
    hung_up: threading.Event = field(default_factory=threading.Event)


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
        # BLPOP waits on this Condition; its lock is the keyspace lock, so a pop
        # that finds the list empty is registered before any push can run.
        self.lists_changed = threading.Condition(self.keyspace_lock)
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
            if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # Out of descriptors: say so and let connections close, don't die.
                log.warning("accept failed (%s); retrying shortly", error.strerror)
                time.sleep(0.1)
                return
            raise
        # The slot is taken before the connection's thread exists and given
        # back when it ends, so at most maxclients threads ever serve.
        if not self.client_slots.acquire(timeout=0):
            self.state.stats.rejected_connections += 1
            try:
                sock.sendall(b"-ERR max number of clients reached\r\n")
            except OSError:
                pass
            sock.close()
            return
        sock.setblocking(True)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        laddr = sock.getsockname()
        # Registered here, in the one accepting thread, so the connection count has one writer.
        client = self.state.connect(f"{address[0]}:{address[1]}", f"{laddr[0]}:{laddr[1]}")
        thread = threading.Thread(target=self._serve_connection, args=(sock, client),
                                  name=f"client-{address[1]}", daemon=True)
        self.threads.add(thread)
        thread.start()

    # -- one connection -----------------------------------------------------

    def _serve_connection(self, sock: socket.socket, client: Client) -> None:
        conn = Connection(sock, client)
        self.connections.add(conn)
        try:
            self._read_commands(conn)
        except OSError:
            pass   # the client vanished mid-reply; nothing to tell it
        finally:
            self.connections.discard(conn)
            with self.books_lock:   # many threads leave at once; the totals must add up
                leases = self.state.disconnect(client)
            for lease in leases:
                self._give_back(lease, client.id)
            sock.close()
            self.client_slots.release()
            self.threads.discard(threading.current_thread())

    def _read_commands(self, conn: Connection) -> None:
        sock, config = conn.sock, self.config
        parser = RequestParser()
        idle_timeout = None
        while not self.stopping.is_set():
            if (config.timeout or None) != idle_timeout:
                idle_timeout = config.timeout or None
                sock.settimeout(idle_timeout)
            try:
                data = sock.recv(RECV_SIZE)
            except (TimeoutError, socket.timeout):
                return   # idle longer than `timeout`: Redis closes without a word
            if not data:
                return
            parser.max_bulk = config.proto_max_bulk_len
            parser.feed(data)
            while True:
                try:
                    argv = parser.next_command()
                except ProtocolError as error:
                    conn.pending.append(error.reply)
                    self.flush(conn)
                    return
                if argv is None:
                    break
                conn.pending.append(encode(self.execute(conn, argv)))
                if conn.client.closing:
                    self.flush(conn)
                    return
            self.flush(conn)

    def flush(self, conn: Connection) -> None:
        if conn.pending:
            data = b"".join(conn.pending)
            conn.pending.clear()
            conn.sock.sendall(data)

    def execute(self, conn: Connection, argv: list[bytes]):
        """Run one command; a generator's effects are performed here, in this thread."""
        if argv[0].lower() in BLOCKING:
            self.flush(conn)   # earlier replies go out before we may block for long
        outcome = dispatch(conn.client, argv)
        if type(outcome) is not GeneratorType:
            return outcome
        held: list = []   # locks granted to this command, all released when it ends
        perform = self.perform
        try:
            value = None
            while True:
                effect = outcome.send(value)
                value = perform[type(effect)](conn, effect, held)
        except StopIteration as done:
            return done.value
        except ReplyError as error:
            return error
        finally:
            for lock in reversed(held):
                lock.release()

    # -- guards: what each sync mode means with threading locks ---------------

    def guard(self, conn, effect: fx.Guard, held: list) -> None:
        mode = conn.client.sync   # the mode this command started in, for all its guards
        if mode == "off":
            return   # no guard: read-modify-write steps may interleave
        if mode == "lock" or effect.keys is fx.ALL_KEYS:
            self.keyspace_lock.acquire()
            held.append(self.keyspace_lock)
            return
        keys = fx.lock_order(mode, effect.keys)
        for position, key in enumerate(keys):
            if mode == "striped":
                lock = self.key_locks.want(key)
                lock.acquire()   # sorted order: every thread climbs the same ladder, no cycle
            else:
                if position:
                    self.race_window(conn, effect, held)   # holding the first lock a while
                lock = self.key_locks.want(key)
                if not lock.acquire(timeout=self.config.deadlock_timeout_ms / 1000):
                    self._count_deadlock()
                    raise fx.deadlock(key, keys, self.config.deadlock_timeout_ms)
            held.append(lock)

    def _count_deadlock(self) -> None:
        with self.books_lock:
            self.state.stats.deadlocks += 1

    def lists_guard(self, conn, effect, held: list) -> None:
        self.keyspace_lock.acquire()
        held.append(self.keyspace_lock)

    def race_window(self, conn, effect, held) -> None:
        if self.config.race_window_us:
            time.sleep(self.config.race_window)   # any other thread may run now, between read and write

    # -- waiting, and being woken when the client hangs up ----------------------

    def _blocked(self, conn: Connection, interrupt=None):
        return _Blocked(self, conn, interrupt)

    def sleep(self, conn: Connection, effect: fx.Sleep, held) -> None:
        with self._blocked(conn):
            conn.hung_up.wait(effect.seconds)

    def pop_wait(self, conn: Connection, effect: fx.PopWait, held):
        waiter = self.state.waiters.add(ListWaiter(conn.client.id, effect.keys, effect.left))
        with self._blocked(conn, interrupt=self._notify_lists):
            # wait_for releases the keyspace lock while waiting and retakes it to check.
            self.lists_changed.wait_for(lambda: waiter.item is not None or conn.hung_up.is_set()
                                        or self.stopping.is_set(), effect.timeout)
        self.state.waiters.remove(waiter)
        if waiter.item is not None and conn.hung_up.is_set():
            # Served just as its client left: put the item back where it was taken
            # from, for the next waiter, rather than send it to nobody.
            key, value = waiter.item
            self.state.keyspace.push(key, [value], left=waiter.left)
            self.pushed(conn, fx.Pushed(key), held)
            return None
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

    def pushed(self, conn, effect: fx.Pushed, held) -> None:
        if self.state.waiters.serve(effect.key, self.state.keyspace):
            self.lists_changed.notify_all()   # each served waiter finds its item waiting

    # -- the pool: a Semaphore bounds it, the ledger names the holders -----------

    def lease_acquire(self, conn: Connection, effect: fx.LeaseAcquire, held):
        ledger = self.state.ledger
        with self.books_lock:
            ledger.waiting += 1
        try:
            with self._blocked(conn):
                got = wait_in_slices(lambda seconds: self.leases.acquire(seconds),
                                     effect.timeout, conn.hung_up)
        finally:
            with self.books_lock:
                ledger.waiting -= 1
        if got and conn.hung_up.is_set():
            self.leases.release()   # nobody to hand it to
            return None
        with self.books_lock:
            if not got:
                ledger.timeouts += 1
                return None
            return ledger.grant(conn.client.id)

    def lease_release(self, conn: Connection, effect: fx.LeaseRelease, held) -> bool:
        return self._give_back(effect.lease, conn.client.id)

    def _give_back(self, lease: int, client_id: int) -> bool:
        with self.books_lock:
            if not self.state.ledger.revoke(lease, client_id):
                return False
        self.leases.release()   # after the ledger forgets it, so in-use never exceeds size
        return True

    # -- barriers and events ---------------------------------------------------

    def barrier_wait(self, conn: Connection, effect: fx.BarrierWait, held) -> int:
        with self.names_lock:
            named = self.barriers.get(effect.name)
            if named is None:
                named = self.barriers[effect.name] = NamedBarrier(None)
                # The action runs once per round, in the last thread to arrive.
                named.barrier = threading.Barrier(effect.parties, action=lambda: _count_round(named))
            elif named.barrier.parties != effect.parties:
                raise parties_mismatch(effect.name, named.barrier.parties, effect.parties)
        # A party that hangs up aborts the barrier, so the others don't wait forever.
        with self._blocked(conn, interrupt=named.barrier.abort):
            try:
                return named.barrier.wait(effect.timeout)
            except threading.BrokenBarrierError:
                raise broken(effect.name) from None

    def barrier_reset(self, conn, effect: fx.BarrierReset, held) -> bool:
        with self.names_lock:
            named = self.barriers.pop(effect.name, None)
        if named is None:
            return False
        named.barrier.reset()   # waiters get BrokenBarrierError; the next WAIT starts afresh
        return True

    def barrier_status(self, conn, effect: fx.BarrierStatus, held):
        named = self.barriers.get(effect.name)
        if named is None:
            return None
        barrier = named.barrier
        return BarrierView(barrier.parties, barrier.n_waiting, barrier.broken, named.rounds)

    def _event(self, name: bytes) -> NamedEvent:
        with self.names_lock:
            return self.events.setdefault(name, NamedEvent())

    def event_set(self, conn, effect: fx.EventSet, held) -> int:
        named = self._event(effect.name)
        with self.names_lock:
            released = 0 if named.event.is_set() else named.waiting
            named.event.set()
        return released

    def event_clear(self, conn, effect: fx.EventClear, held) -> None:
        self._event(effect.name).event.clear()

    def event_isset(self, conn, effect: fx.EventIsSet, held) -> bool:
        return self._event(effect.name).event.is_set()

    def event_wait(self, conn: Connection, effect: fx.EventWait, held) -> bool:
        named = self._event(effect.name)
        with self.names_lock:
            named.waiting += 1
        try:
            with self._blocked(conn):
                return wait_in_slices(named.event.wait, effect.timeout, conn.hung_up)
        finally:
            with self.names_lock:
                named.waiting -= 1

    # -- server-wide ----------------------------------------------------------

    def reconfigure(self, conn, effect: fx.Reconfigure, held) -> None:
        if "pool_size" in effect.names:
            with self.books_lock:
                self.state.ledger.size = self.config.pool_size
            self.leases.resize(self.config.pool_size)
        if "maxclients" in effect.names:
            self.client_slots.resize(self.config.maxclients)

    def model_info(self, conn, effect, held) -> dict:
        return {"threads_alive": threading.active_count(), "key_locks": len(self.key_locks),
                "barriers": len(self.barriers), "events": len(self.events)}

    def shutdown(self, conn, effect, held) -> None:
        self.stop()

    def stop(self) -> None:
        """Ask for a graceful stop; safe from any thread and from a signal handler."""
        self.stopping.set()
        try:
            self._wake_writer.send(b"\0")
        except OSError:
            pass

    def _finish(self) -> None:
        """Stop accepting, let in-flight commands answer, close every connection."""
        self.listener.close()
        for conn in list(self.connections):
            try:
                # Reading ends (idle threads see end-of-file, blocked waits are
                # interrupted by the watcher); writing still works for replies.
                conn.sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        self._notify_lists()
        deadline = time.monotonic() + GRACE
        for thread in list(self.threads):
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self.watcher.close()


class _Blocked:
    """While a command waits: earlier replies sent, INFO says blocked, hang-ups watched."""

    def __init__(self, server: Server, conn: Connection, interrupt):
        self.server, self.conn, self.interrupt = server, conn, interrupt

    def __enter__(self):
        self.conn.client.blocked = True
        self.server.watcher.watch(self.conn.sock, self.conn.hung_up, self.interrupt)

    def __exit__(self, *exc):
        self.server.watcher.unwatch(self.conn.sock)
        self.conn.client.blocked = False


def _count_round(named: NamedBarrier) -> None:
    named.rounds += 1

