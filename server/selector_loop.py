"""The selectors model: one thread, non-blocking sockets, waiting commands parked as continuations.

    connections   one selectors.DefaultSelector watches them all; past `maxclients` a
                  connection is refused right after accept (Server._accept)
    keyspace      `off`: nothing; `lock`: one hand-made reentrant Owner; `striped`/`unordered`:
                  an Owner per key, a parked command queues for it (Server.guard)
    lists         BLPOP parks in shared ListWaiters; a push hands it the item and wakes it (Server.pop_wait)
    pool          the lease ledger's count and a FIFO of parked acquirers (Server.lease_acquire)
    barriers      a Gathering: arrivals stay parked until the last one comes (Server.barrier_wait)
    events        a Signal: a flag and the connections parked on it (Server.event_wait)
    timeouts      a heap of deadlines decides how long select() may sleep (selector_sync.Timers)
    slow readers  past OUTPUT_LIMIT unsent bytes a client's commands wait for it to read (Server._serve)
    WORK          runs on the loop and stalls everyone; INFO counts it (shared/stalls.py)
    shutdown      a `stopping` flag plus a wake-up socket that interrupts select() (Server.stop)

Commands themselves live in shared/commands. When one yields an effect that
cannot complete now, this loop does not block: it keeps the command's
generator and sends it the result once it has one. The generator *is* the
parked continuation. Nothing else ever runs between two of its yields, so a
read-modify-write with no wait inside is atomic here with no lock at all.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import time
from collections import deque
from functools import partial
from types import GeneratorType

from contend.server import open_listener
from contend.server.selector_sync import Gathering, Owner, Signal, Timers
from contend.shared import effects as fx
from contend.shared.commands import dispatch
from contend.shared.commands.events import BarrierView, broken, parties_mismatch
from contend.shared.stalls import LoopStalls
from contend.shared.resp import ProtocolError, ReplyError, RequestParser, encode
from contend.shared.state import ServerState
from contend.shared.waiters import ListWaiter

log = logging.getLogger("contend.selectors")

RECV_SIZE = 16 * 1024     # as Redis reads: a bigger buffer costs every small read more than it saves
GRACE = 2.0               # seconds in-flight commands get to finish at shutdown
OUTPUT_LIMIT = 1 << 20    # unsent reply bytes past which a client's commands wait for it to read
WATCH_LIMIT = 1 << 20     # bytes a parked client may pipeline before we stop reading it
ACCEPT_BATCH = 64         # accepts per iteration, so a connection storm cannot starve the rest
IDLE_SWEEP = 0.25         # seconds between looks for clients idle past `timeout`
PARKED = object()         # what performing an effect returns when the command must wait
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class Connection:
    __slots__ = ("sock", "client", "parser", "out", "unsent", "out_size", "interest", "steps",
                 "held", "timer", "on_time", "leave", "blocking", "hung_up", "paused", "closed",
                 "last_active")

    def __init__(self, sock: socket.socket, client, now: float):
        self.sock = sock
        self.client = client
        self.parser = RequestParser()
        self.out: list[bytes] = []   # replies not yet offered to the socket
        self.unsent = None           # what the last send() left over; we wait for EVENT_WRITE
        self.out_size = 0            # bytes in both: the back-pressure gauge
        self.interest = READ         # what the selector watches this socket for now
        self.steps = None            # the generator of the command in flight, running or parked
        self.held: list[Owner] = []  # guards granted to that command, given back when it ends
        self.timer = None            # its one deadline while parked (a Timers entry)
        self.on_time = None          # what happens at that deadline
        self.leave = None            # takes it out of the queue it waits in, if it must go early
        self.blocking = False        # parked in a blocking effect: a hang-up ends the wait
        self.hung_up = False         # gone mid-command: close once that command has ended
        self.paused = False          # too many unsent replies: run no more until it reads
        self.closed = False
        self.last_active = now


class Server:
    def __init__(self, config):
        self.config = config
        self.state = ServerState(config)
        # `lock` mode's one guard over the keyspace; the lists are guarded by it too, as in threads.py.
        self.keyspace_lock = Owner()
        self.key_locks: dict[bytes, Owner] = {}
        self.lease_queue: deque[Connection] = deque()   # parked POOL.ACQUIREs, oldest first
        self.barriers: dict[bytes, Gathering] = {}
        self.events: dict[bytes, Signal] = {}
        self.timers = Timers()
        # A woken continuation runs from here, after the command that woke it has ended:
        # that one may still hold guards, and resuming a command inside another would
        # nest them without bound.
        self.ready: deque = deque()
        self.connections: set[Connection] = set()
        self.stalls = LoopStalls()
        self.selector = selectors.DefaultSelector()
        self.listener: socket.socket | None = None
        self.stopping = False   # the shutdown event: set from anywhere, read once per iteration
        self.draining = False
        self.now = time.monotonic()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_writer.setblocking(False)   # a signal handler must never block on it
        self.perform = fx.performers(self)

    # -- the loop -------------------------------------------------------------

    def listen(self) -> None:
        self.listener = open_listener(self.config, self.stop)

    def serve_forever(self) -> None:
        self.listener.setblocking(False)
        self._wake_reader.setblocking(False)
        self.selector.register(self.listener, READ)
        self.selector.register(self._wake_reader, READ)
        self.timers.after(IDLE_SWEEP, self._close_idle)
        while not self.stopping:
            self._turn()
        self._finish()

    def _turn(self, limit: float | None = None) -> None:
        """One iteration: sleep until a socket or a deadline is ready, then serve all that is."""
        timeout = 0 if self.ready else self.timers.timeout(time.monotonic())
        if limit is not None:
            timeout = limit if timeout is None else min(timeout, limit)
        events = self.selector.select(timeout)
        self.now = started = time.monotonic()
        for key, mask in events:
            conn = key.data
            if conn is None:
                self._accept() if key.fileobj is self.listener else self._drain_wakeups()
                continue
            if mask & WRITE:
                self._flush(conn)
            if mask & READ and not conn.closed:
                self._on_readable(conn)
        self.timers.run_due(started)
        ready = self.ready
        for _ in range(len(ready)):   # what these wake waits for the next iteration
            resume, conn, steps, value = ready.popleft()
            if conn.steps is steps and not conn.closed:
                resume(conn, value)
        # A WORK command ran inside this iteration, start to end: nobody else was
        # served meanwhile, and this is the one place that can see how long that was.
        self.stalls.note(time.monotonic() - started)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: look away from the listener a while (sleeping
                    # would stall every client) and let connections close meanwhile.
                    log.warning("accept failed (%s); retrying shortly", error.strerror)
                    self.selector.unregister(self.listener)
                    self.timers.after(0.1, self._accept_again)
                    return
                if error.errno == errno.ECONNABORTED:
                    continue
                raise
            # Counted before any state exists for it; with no threads to cap, the
            # number of open connections is the only measure of maxclients.
            if len(self.connections) >= self.config.maxclients:
                self.state.stats.rejected_connections += 1
                try:
                    sock.send(b"-ERR max number of clients reached\r\n")
                except OSError:
                    pass
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            laddr = sock.getsockname()
            client = self.state.connect(f"{address[0]}:{address[1]}", f"{laddr[0]}:{laddr[1]}")
            conn = Connection(sock, client, self.now)
            self.connections.add(conn)
            self.selector.register(sock, READ, conn)

    def _accept_again(self, _) -> None:
        if not self.draining:
            self.selector.register(self.listener, READ)

    def _drain_wakeups(self) -> None:
        try:
            while self._wake_reader.recv(4096):
                pass
        except BlockingIOError:
            pass

    # -- one connection: bytes in, commands run, replies out ---------------------

    def _on_readable(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._hung_up(conn)
            return
        conn.last_active = self.now
        conn.parser.feed(data)
        if conn.steps is None:
            self._serve(conn)
        elif conn.parser.buffered > WATCH_LIMIT:
            self._watch(conn)   # buffered, not run, while its command waits; enough is enough

    def _serve(self, conn: Connection, _=None) -> None:
        """Run what this client sent, in order, until a command parks or its replies pile up."""
        parser, client = conn.parser, conn.client
        parser.max_bulk = self.config.proto_max_bulk_len
        conn.paused = False
        while conn.out_size < OUTPUT_LIMIT:
            try:
                argv = parser.next_command()
            except ProtocolError as error:
                self._reply(conn, error.reply)
                client.closing = True
                break
            if argv is None:
                break
            reply = self._execute(conn, argv)
            if reply is PARKED:
                break
            self._reply(conn, encode(reply))
            if client.closing:
                break
        else:
            # Back-pressure: a client that pipelines faster than it reads gets no more
            # commands run (and no more bytes read) until its replies drain.
            conn.paused = True
        # One send for all the replies of this batch; and before a command parks,
        # the replies of those before it go out.
        self._flush(conn)

    def _execute(self, conn: Connection, argv: list[bytes]):
        try:
            outcome = dispatch(conn.client, argv)
        except Exception:   # a bug in one command must not stop the loop every client shares
            log.exception("command %r failed", argv[:1])
            return ReplyError("ERR internal error")
        if type(outcome) is not GeneratorType:
            return outcome
        conn.steps = outcome
        return self._advance(conn, None)

    def _advance(self, conn: Connection, value, error: ReplyError | None = None):
        """Run a command's steps until one must wait (PARKED) or the command ends (its reply)."""
        steps, perform = conn.steps, self.perform
        try:
            if error is not None:
                raise error
            while True:
                effect = steps.send(value)
                value = perform[type(effect)](conn, effect)
                if value is PARKED:
                    return PARKED
        except StopIteration as done:
            reply = done.value
        except ReplyError as failed:
            reply = failed
            steps.close()
        except Exception:
            log.exception("command failed")
            reply = ReplyError("ERR internal error")
            steps.close()
        conn.steps = None
        if conn.held:
            self._give_back_guards(conn)
        return reply

    def _resume(self, conn: Connection, value) -> None:
        reply = self._advance(conn, value)
        if reply is not PARKED:
            self._answer(conn, reply)

    def _throw(self, conn: Connection, error: ReplyError) -> None:
        self._answer(conn, self._advance(conn, None, error))

    def _answer(self, conn: Connection, reply) -> None:
        """A parked command has ended: reply, then go on with what the client sent meanwhile."""
        if conn.hung_up:
            self._close(conn)
            return
        self._reply(conn, encode(reply))
        if self.draining:
            conn.client.closing = True
            self._flush(conn)
        else:
            self._serve(conn)

    def _reply(self, conn: Connection, data: bytes) -> None:
        conn.out.append(data)
        conn.out_size += len(data)

    def _flush(self, conn: Connection) -> None:
        """Send what the socket takes now; the rest waits for EVENT_WRITE."""
        sent = 0
        while True:
            data = conn.unsent
            if data is None:
                if not conn.out:
                    break
                data = conn.out[0] if len(conn.out) == 1 else b"".join(conn.out)
                conn.out = []
            try:
                sent = conn.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._close(conn)   # the client vanished mid-reply; nothing to tell it
                return
            conn.out_size -= sent
            if sent < len(data):
                conn.unsent = memoryview(data)[sent:]
                break
            conn.unsent = None
        if conn.out_size == 0 and conn.client.closing:
            self._close(conn)
            return
        if sent:
            conn.last_active = self.now
        if conn.paused and conn.out_size == 0 and not self.draining:
            # Only once all is sent, so a client that reads slowly stays paused rather
            # than flapping; and next iteration, not now, so everyone gets a turn between batches.
            conn.paused = False
            self.ready.append((self._serve, conn, None, None))
        if conn.interest != READ or conn.unsent is not None or conn.paused or self.draining:
            self._watch(conn)   # (the usual case, reading and all sent, needs no change)

    def _watch(self, conn: Connection) -> None:
        """Tell the selector what this connection waits for now: requests, room to send, or neither."""
        want = 0 if conn.unsent is None else WRITE
        if not (conn.paused or conn.hung_up or conn.client.closing or self.draining
                or (conn.steps is not None and conn.parser.buffered > WATCH_LIMIT)):
            want |= READ
        if want != conn.interest:
            if not want:
                self.selector.unregister(conn.sock)
            elif not conn.interest:
                self.selector.register(conn.sock, want, conn)
            else:
                self.selector.modify(conn.sock, want, conn)
            conn.interest = want

    def _hung_up(self, conn: Connection) -> None:
        if conn.steps is not None and not conn.blocking:
            # Mid-command (a race window, a lock queue): it runs to its end, so
            # nothing is left half-applied, and then the connection closes.
            conn.hung_up = True
            self._watch(conn)
        else:
            self._close(conn)

    def _close(self, conn: Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        if conn.steps is not None:
            self._drop(conn)
        if conn.interest:
            self.selector.unregister(conn.sock)
            conn.interest = 0
        conn.sock.close()
        self.connections.discard(conn)
        for lease in self.state.disconnect(conn.client):
            self._give_back(lease, conn.client.id)

    def _close_idle(self, _) -> None:
        self.timers.after(IDLE_SWEEP, self._close_idle)
        limit = self.config.timeout   # read every time: CONFIG SET timeout applies at once
        if limit:
            cutoff = time.monotonic() - limit
            # A client in a command (blocked in BLPOP, say) is waiting on us, not idle.
            for conn in [c for c in self.connections if c.steps is None and c.last_active < cutoff]:
                self._close(conn)   # Redis closes an idle client without a word

    # -- parking a command, and waking it ---------------------------------------

    def _at(self, conn: Connection, seconds: float, on_time) -> None:
        """At `seconds` from now, call on_time(conn): a timeout, a SLEEP's end, a window's close."""
        conn.on_time = on_time
        conn.timer = self.timers.after(seconds, self._time_up, conn)

    def _time_up(self, conn: Connection) -> None:
        on_time, conn.timer, conn.on_time = conn.on_time, None, None
        on_time(conn)

    def _wait(self, conn: Connection, timeout: float | None, leave, on_time):
        """Park in a blocking effect: `leave(conn)` takes it out of its queue, `on_time` ends it."""
        conn.blocking = conn.client.blocked = True
        conn.leave = leave
        if timeout is not None:
            self._at(conn, timeout, on_time)
        if conn.hung_up:   # left while queued for a guard: nobody is left to wait for
            self.ready.append((self._close_now, conn, conn.steps, None))
        return PARKED

    def _close_now(self, conn: Connection, _) -> None:
        self._close(conn)

    def _unpark(self, conn: Connection) -> None:
        if conn.timer is not None:
            self.timers.cancel(conn.timer)
            conn.timer = conn.on_time = None
        conn.leave = None
        conn.blocking = conn.client.blocked = False

    def _wake(self, conn: Connection, value) -> None:
        self._unpark(conn)
        self.ready.append((self._resume, conn, conn.steps, value))

    def _wake_failing(self, conn: Connection, error: ReplyError) -> None:
        self._unpark(conn)
        self.ready.append((self._throw, conn, conn.steps, error))

    def _give_up(self, conn: Connection, value) -> None:
        """The wait timed out: out of its queue, and on with `value` (a null, a 0)."""
        if conn.leave is not None:
            conn.leave(conn)
        self._unpark(conn)
        self._resume(conn, value)

    def _drop(self, conn: Connection) -> None:
        """The client is gone (or the server stopping): forget its parked command."""
        if conn.leave is not None:
            conn.leave(conn)
        self._unpark(conn)
        conn.steps.close()
        conn.steps = None
        if conn.held:
            self._give_back_guards(conn)

    # -- guards: what each sync mode means with no threads -------------------------

    def guard(self, conn: Connection, effect: fx.Guard):
        mode = conn.client.sync   # the mode this command started in, for all its guards
        if mode == "off":
            return None   # no guard: commands parked in their race windows interleave
        if mode == "lock" or effect.keys is fx.ALL_KEYS:
            return self.lists_guard(conn, effect)
        return self._take(conn, mode, fx.lock_order(mode, effect.keys), 0, False)

    def lists_guard(self, conn: Connection, effect):
        lock = self.keyspace_lock
        if lock.take(conn):
            conn.held.append(lock)
            return None
        return self._take(conn, "lock", None, 0, False)

    def _take(self, conn: Connection, mode: str, keys, position: int, windowed: bool):
        """Take the locks of `keys` (None: the keyspace's) in order from `position`;
        PARKED while one belongs to another command."""
        while position < (1 if keys is None else len(keys)):
            if mode == "unordered" and position and not windowed and self.config.race_window_us:
                # Hold the first lock a while, so a crossing transfer takes its own meanwhile.
                self._at(conn, self.config.race_window,
                         partial(self._granted, then=partial(self._take, mode=mode, keys=keys,
                                                             position=position, windowed=True)))
                return PARKED
            # Looked up only now: a key's lock exists only while someone holds or wants it.
            if keys is None:
                lock = self.keyspace_lock
            else:
                key = keys[position]
                lock = self.key_locks.get(key) or self.key_locks.setdefault(key, Owner(key))
            windowed = False
            position += 1
            if lock.take(conn):
                conn.held.append(lock)
                continue
            then = partial(self._take, mode=mode, keys=keys, position=position, windowed=False)
            entry = (conn, then)
            lock.queue.append(entry)
            conn.leave = lambda _, lock=lock, entry=entry: lock.queue.remove(entry)
            if mode == "unordered":
                self._at(conn, self.config.deadlock_timeout_ms / 1000,
                         partial(self._deadlocked, key=keys[position - 1], order=keys))
            return PARKED
        return None

    def _granted(self, conn: Connection, then=None) -> None:
        if then is None or then(conn) is not PARKED:
            self._resume(conn, None)

    def _deadlocked(self, conn: Connection, key: bytes, order: list) -> None:
        """Waited deadlock-timeout-ms for a lock: give back what it holds, change nothing."""
        conn.leave(conn)
        conn.leave = None
        self.state.stats.deadlocks += 1
        self._throw(conn, fx.deadlock(key, order, self.config.deadlock_timeout_ms))

    def _give_back_guards(self, conn: Connection) -> None:
        held = conn.held
        while held:
            lock = held.pop()
            waiter = lock.give_back()
            if waiter is not None:
                other, then = waiter
                other.held.append(lock)
                self._unpark(other)   # stops its deadlock clock
                self.ready.append((self._granted, other, other.steps, then))
            elif lock.owner is None and lock.key is not None:
                del self.key_locks[lock.key]   # free and unwanted: locks for keys in use only

    def race_window(self, conn: Connection, effect):
        if not self.config.race_window_us:
            return None   # nothing can run between this read and its write
        # A timer, not time.sleep: the loop serves others meanwhile, and one of
        # them may write the key this command has read (the lost update).
        self._at(conn, self.config.race_window, self._granted)
        return PARKED

    # -- blocking commands ---------------------------------------------------------

    def sleep(self, conn: Connection, effect: fx.Sleep):
        if effect.seconds <= 0:
            return None
        return self._wait(conn, effect.seconds, None, partial(self._give_up, value=None))

    def pop_wait(self, conn: Connection, effect: fx.PopWait):
        waiters = self.state.waiters
        waiter = waiters.add(ListWaiter(conn.client.id, effect.keys, effect.left))
        waiter.wake = conn
        # Like Condition.wait, give the lists' guard up while waiting, or no push could come.
        # (It is not taken back on waking: the command only has its reply left to give.)
        self._give_back_guards(conn)
        return self._wait(conn, effect.timeout, lambda _: waiters.remove(waiter),
                          partial(self._give_up, value=None))

    def pushed(self, conn: Connection, effect: fx.Pushed) -> None:
        # serve() has already handed each waiter its item, oldest first; only waking is left.
        for waiter in self.state.waiters.serve(effect.key, self.state.keyspace):
            self._unpark(waiter.wake)
            self.ready.append((self._deliver, waiter.wake, waiter.wake.steps, waiter))

    def _deliver(self, conn: Connection, waiter: ListWaiter) -> None:
        if conn.hung_up:
            # Served in the same turn its client left: the item goes back where it was
            # taken from, for the next waiter, rather than out to nobody.
            key, value = waiter.item
            self.state.keyspace.push(key, [value], waiter.left)
            self.pushed(conn, fx.Pushed(key))
            self._resume(conn, None)
            return
        self._resume(conn, waiter.item)

    # The pool: the ledger counts leases out; a FIFO of parked connections is the Semaphore.

    def lease_acquire(self, conn: Connection, effect: fx.LeaseAcquire):
        ledger = self.state.ledger
        if not self.lease_queue and ledger.in_use < ledger.size:
            return ledger.grant(conn.client.id)
        ledger.waiting += 1
        self.lease_queue.append(conn)
        return self._wait(conn, effect.timeout, self._leave_lease_queue, self._lease_timed_out)

    def _leave_lease_queue(self, conn: Connection) -> None:
        self.lease_queue.remove(conn)
        self.state.ledger.waiting -= 1

    def _lease_timed_out(self, conn: Connection) -> None:
        self.state.ledger.timeouts += 1
        self._give_up(conn, None)

    def lease_release(self, conn: Connection, effect: fx.LeaseRelease) -> bool:
        return self._give_back(effect.lease, conn.client.id)

    def _give_back(self, lease: int, client_id: int) -> bool:
        if not self.state.ledger.revoke(lease, client_id):
            return False
        self._lend()
        return True

    def _lend(self) -> None:
        """Hand free leases to the longest waiters: the lease goes to them, not to a newcomer."""
        ledger = self.state.ledger
        while self.lease_queue and ledger.in_use < ledger.size:
            conn = self.lease_queue.popleft()
            ledger.waiting -= 1
            self._wake(conn, ledger.grant(conn.client.id))

    # Barriers and events.

    def barrier_wait(self, conn: Connection, effect: fx.BarrierWait):
        gathering = self.barriers.get(effect.name)
        if gathering is None:
            gathering = self.barriers[effect.name] = Gathering(effect.parties)
        elif gathering.parties != effect.parties:
            raise parties_mismatch(effect.name, gathering.parties, effect.parties)
        if gathering.broken:
            raise broken(effect.name)
        index = len(gathering.arrived)
        if index + 1 < gathering.parties:
            gathering.arrived.append(conn)
            # A party that times out or hangs up breaks it, so the others don't wait forever.
            return self._wait(conn, effect.timeout,
                              partial(self._leave_barrier, gathering=gathering, name=effect.name),
                              lambda _: self._break(gathering, effect.name))
        gathering.rounds += 1   # the last to arrive: everyone goes on, each with its index
        arrived, gathering.arrived = gathering.arrived, []
        for position, waiter in enumerate(arrived):
            self._wake(waiter, position)
        return index

    def _leave_barrier(self, conn: Connection, gathering: Gathering, name: bytes) -> None:
        gathering.arrived.remove(conn)
        self._break(gathering, name)

    def _break(self, gathering: Gathering, name: bytes) -> None:
        gathering.broken = True
        arrived, gathering.arrived = gathering.arrived, []
        for conn in arrived:
            self._wake_failing(conn, broken(name))

    def barrier_reset(self, conn, effect: fx.BarrierReset) -> bool:
        gathering = self.barriers.pop(effect.name, None)
        if gathering is None:
            return False
        self._break(gathering, effect.name)   # the next WAIT starts afresh
        return True

    def barrier_status(self, conn, effect: fx.BarrierStatus):
        gathering = self.barriers.get(effect.name)
        if gathering is None:
            return None
        return BarrierView(gathering.parties, len(gathering.arrived), gathering.broken,
                           gathering.rounds)

    def _event(self, name: bytes) -> Signal:
        event = self.events.get(name)
        if event is None:
            event = self.events[name] = Signal()
        return event

    def event_set(self, conn, effect: fx.EventSet) -> int:
        event = self._event(effect.name)
        event.is_set = True
        waiting, event.waiting = event.waiting, []
        for waiter in waiting:
            self._wake(waiter, True)
        return len(waiting)

    def event_clear(self, conn, effect: fx.EventClear) -> None:
        self._event(effect.name).is_set = False

    def event_isset(self, conn, effect: fx.EventIsSet) -> bool:
        return self._event(effect.name).is_set

    def event_wait(self, conn: Connection, effect: fx.EventWait):
        event = self._event(effect.name)
        if event.is_set:
            return True
        event.waiting.append(conn)
        return self._wait(conn, effect.timeout, event.waiting.remove,
                          partial(self._give_up, value=False))

    # -- server-wide ------------------------------------------------------------

    def reconfigure(self, conn, effect: fx.Reconfigure) -> None:
        if "pool_size" in effect.names:
            # Shrinking takes nothing back: the pool lends again once in-use falls below size.
            self.state.ledger.size = self.config.pool_size
            self._lend()
        # maxclients needs nothing: _accept reads it for every new connection.

    def model_info(self, conn, effect) -> dict:
        return {"loop_iterations": self.stalls.noted, **self.stalls.info(),
                "parked_commands": sum(1 for c in self.connections if c.steps is not None and c is not conn),
                "key_locks": len(self.key_locks), "timers": len(self.timers),
                "paused_clients": sum(1 for c in self.connections if c.paused),
                "barriers": len(self.barriers), "events": len(self.events)}

    def shutdown(self, conn, effect) -> None:
        self.stop()

    def stop(self) -> None:
        """Ask for a graceful stop; safe from any thread and from a signal handler."""
        self.stopping = True
        try:
            self._wake_writer.send(b"\0")   # select() may be asleep with no deadline
        except OSError:
            pass

    def _finish(self) -> None:
        """Stop accepting, let in-flight commands answer, close every connection."""
        self.draining = True
        try:
            self.selector.unregister(self.listener)
        except KeyError:
            pass   # out of descriptors, _accept had already looked away
        self.listener.close()
        for conn in list(self.connections):
            if conn.blocking:
                self._drop(conn)   # a BLPOP may wait forever; shutdown cannot
            if conn.steps is None:
                conn.client.closing = True   # closes once what it has been answered is sent
                self._flush(conn)
            else:
                self._watch(conn)
        deadline = time.monotonic() + GRACE
        while self.connections and time.monotonic() < deadline:
            self._turn(max(0.0, deadline - time.monotonic()))
        for conn in list(self.connections):
            self._close(conn)
        self.selector.close()
