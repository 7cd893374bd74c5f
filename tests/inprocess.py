"""An in-process model: every performer, no sockets, no threads, and a fake clock.

The fourth model, for tests that must be fast and exact. It drives real
`shared.session.Session`s the way threads.py, selector_loop.py and
trio_server.py do, but a connection waiting means its task (a generator
running the session loop) is parked until something wakes it, and time moves
only when the test says so:

    model = InProcess(sync="striped", race_window_us=1000)
    a, b = model.connect("a"), model.connect("b")
    a.send("INCR", "k")
    b.send("INCR", "k")
    model.run()              # run what is ready, first come first served, until all wait
    model.advance(0.002)     # a's race window closes, then b's (b waited for k's lock)
    assert a.replies() == [1] and b.replies() == [2] and model.now == 0.002

The keyspace reads the same clock (`clock_ms`), so a time to live ends exactly
when `advance` says, and the server's active expiry runs on its schedule.

It is also the performer contract written small. Each method named in
`shared.effects.PERFORMED_BY` performs one effect; one that may wait is a
generator that parks its connection (`yield from self._park(...)`) and is
resumed, first come first served, by whoever frees what it waits for. The
locks are a table of holders and FIFO queues, and every acquisition is
checked against the one lock order (shared/guards.py): a command that
reaches up the ladder, takes key locks out of sorted order in `striped`, or
whose nested guard takes a lock it does not hold fails the test with
AssertionError. So does a command that ends in `-ERR internal error`, unless
the model was made with `bugs_allowed=True`. What happens is recorded in
`model.trace` as (client name, event) pairs, for tests that assert an order.
"""

from __future__ import annotations

import contextlib
import heapq
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from itertools import count
from types import GeneratorType

from contend.shared import effects as fx
from contend.shared.commands.events import broken, parties_mismatch
from contend.shared.config import Config
from contend.shared.effects import BarrierView
from contend.shared.guards import EXCLUSIVE, KEY, KEYSPACE, LISTS, SHARED, Step, key_steps
from contend.shared.info import render_info
from contend.shared.resp import NEED_MORE, ReplyError, ReplyParser, encode_command
from contend.shared.session import CLOSE, FLUSH, NEED_DATA, Call, Session
from contend.shared.state import ServerState
from contend.shared.stepping import step_event
from contend.shared.waiters import ListWaiter

# The fake clock's start, as Unix time in ms (2023-11-14), so that EXPIREAT and SET PXAT
# take realistic timestamps and a small one is in the past, as it would be on a real server.
EPOCH_MS = 1_700_000_000_000

# The ladder's rungs, top first: a command never takes a lock ranked above one it holds.
RANK = {KEYSPACE: 0, SHARED: 0, EXCLUSIVE: 0, KEY: 1, LISTS: 2}


class Wakeup:
    """Why a parked task was resumed, when it is not with a value."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


TIMED_OUT = Wakeup("TIMED_OUT")   # its deadline passed first
HUNG_UP = Wakeup("HUNG_UP")       # its client left during a blocking wait
GRANTED = Wakeup("GRANTED")       # the lock it queued for is its own now
BROKEN = Wakeup("BROKEN")         # the barrier it waits at broke


class HungUp(Exception):
    """Raised in a task whose blocking wait its client gave up by hanging up."""


class Lock:
    """One lock of the ladder: who holds it (how deep), and who queues for it, FIFO.

    `shared` holders may be many (the readers-writer lock taken shared); any
    other holder is alone. A queued waiter is granted the lock by whoever
    releases it, so a newcomer never barges in ahead of it."""

    def __init__(self, name: str, rank: int, key: bytes | None = None, reentrant: bool = False):
        self.name, self.rank, self.key, self.reentrant = name, rank, key, reentrant
        self.holders: dict[Connection, int] = {}              # holder -> depth
        self.shared = False                                   # the holders hold it shared
        self.queue: deque[tuple[Connection, bool]] = deque()  # (waiter, wants it shared)

    def take(self, conn: Connection, shared: bool) -> bool:
        if conn in self.holders:   # a re-entry (the order check allowed it)
            self.holders[conn] += 1
            return True
        if not self.queue and (not self.holders or (shared and self.shared)):
            self.holders[conn], self.shared = 1, shared
            return True
        return False

    def release(self, conn: Connection) -> None:
        self.holders[conn] -= 1
        if not self.holders[conn]:
            del self.holders[conn]

    def admit(self) -> list[Connection]:
        """Grant the lock to the queue's head (and the shared waiters right behind it)."""
        granted = []
        while self.queue:
            conn, shared = self.queue[0]
            if self.holders and not (shared and self.shared):
                break
            self.queue.popleft()
            self.holders[conn], self.shared = 1, shared
            granted.append(conn)
        return granted


@dataclass
class Barrier:
    parties: int
    arrived: list = field(default_factory=list)   # parked this round, in arrival order
    broken: bool = False
    generation: int = 0


@dataclass
class NamedEvent:
    is_set: bool = False
    waiting: list = field(default_factory=list)


class Connection:
    """One client: what it sends and has received; and, server side, its task and waits."""

    def __init__(self, model: InProcess, name: str, session: Session):
        self.model, self.name, self.session = model, name, session
        self.inbox: deque[bytes] = deque()   # sent, not yet read by the server
        self.received: list = []             # every reply, decoded, in order
        self.hung_up = False                 # the client closed its end
        self.closed = False                  # the server closed the connection
        self._read = 0                       # replies already returned by replies()
        self._parser = ReplyParser()
        # The server's side of it.
        self.task = model._serve(self)
        self.running: Call | None = None     # the command in flight
        self.held: list[Lock] = []           # its locks, one entry per acquisition
        self.parked: str | None = None       # what it waits for, if it waits
        self.blocking = False                # a blocking effect's wait: a hang-up ends it
        self.leave = None                    # takes it out of the queue it waits in
        self.timer: list | None = None       # its deadline, an entry in model._timers

    def __repr__(self) -> str:
        return f"<{self.name}>"

    def send(self, *args) -> None:
        """Send one command as a multibulk array."""
        self.model._note(self, "sends " + " ".join(map(str, args)))
        self._arrive(encode_command(*args))

    def send_raw(self, data: bytes) -> None:
        self.model._note(self, f"sends {data!r}")
        self._arrive(data)

    def _arrive(self, data: bytes) -> None:
        assert not self.hung_up, f"{self.name} has hung up and cannot send"
        self.inbox.append(data)
        if self.parked == "recv":
            self.model._wake(self, self.inbox.popleft())

    def call(self, *args):
        """Send a command, run the model, and return the one reply it got."""
        self.send(*args)
        self.model.run()
        replies = self.replies()
        assert len(replies) == 1, f"{self.name} {args}: expected one reply, got {replies}"
        return replies[0]

    def replies(self) -> list:
        """The replies received since the last look (errors are ReplyError values)."""
        new, self._read = self.received[self._read:], len(self.received)
        return new

    def hang_up(self) -> None:
        self.model._hang_up(self)

    def _deliver(self, data: bytes) -> None:
        if not data:
            return
        assert not self.hung_up, f"{self.name}: bytes sent after connection_lost: {data!r}"
        self._parser.feed(data)
        while (reply := self._parser.next_reply()) is not NEED_MORE:
            self.received.append(reply)
            shown = "-" + reply.text if isinstance(reply, ReplyError) else repr(reply)
            self.model._note(self, "gets " + shown)


class InProcess:
    def __init__(self, *, bugs_allowed: bool = False, **settings):
        self.config = Config(model="inprocess", **settings)
        self.state = ServerState(self.config)
        self.state.keyspace.clock = self.clock_ms   # expiry runs on the fake clock too
        self.perform = fx.performers(self)   # a performer missing here fails at once
        self.bugs_allowed = bugs_allowed
        self.trace: list[tuple[str, str]] = []
        self.connections: list[Connection] = []
        self.ready: deque[tuple[Connection, object]] = deque()
        self._timers: list[list] = []        # [deadline in microseconds, sequence, connection]
        self._sequence = count()             # equal deadlines fire in the order they were set
        self._now_us = 0
        self.keyspace_lock = Lock("keyspace", RANK[KEYSPACE], reentrant=True)   # `lock`
        self.rw_lock = Lock("keyspace-rw", RANK[SHARED])   # `striped`, `unordered`
        self.lists_lock = Lock("lists", RANK[LISTS])
        self.key_locks: dict[bytes, Lock] = {}   # only while held or wanted
        self.lease_queue: deque[Connection] = deque()
        self.barriers: dict[bytes, Barrier] = {}
        self.events: dict[bytes, NamedEvent] = {}
        self.stopping = False

    # -- the test's side -------------------------------------------------------------

    def connect(self, name: str | None = None) -> Connection:
        assert not self.stopping, "the server has shut down"
        session = Session(self.state, addr=f"inprocess:{len(self.connections) + 1}")
        conn = Connection(self, name or f"client{session.client.id}", session)
        self.connections.append(conn)
        self.ready.append((conn, None))   # its task starts, and soon waits for bytes
        return conn

    @property
    def now(self) -> float:
        """The fake clock, in seconds since the model was made."""
        return self._now_us / 1_000_000

    def clock_ms(self) -> int:
        """The keyspace's clock: Unix time in ms, `EPOCH_MS` when the model was made.

        Moved only by advance(), so expiry is exact: a key set with PX 50 is still
        there 50 ms later (PTTL 0, as in Redis) and gone 1 ms after that."""
        return EPOCH_MS + self._now_us // 1000

    @property
    def data(self) -> dict:
        """The keyspace itself: key -> bytes or a deque of bytes."""
        return self.state.keyspace.data

    def run(self) -> None:
        """Run every ready task, and every timer already due, until all of them wait."""
        while self.step():
            pass

    def step(self) -> bool:
        """Resume the task that has been ready longest, until it waits again; False if none is."""
        if not self.ready and not self._fire_one_due_timer():
            return False
        conn, value = self.ready.popleft()
        with contextlib.suppress(StopIteration):   # its task ended: the connection is closed
            conn.task.send(value)
        if self.state.tally("internal_errors") and not self.bugs_allowed:
            raise AssertionError("a command answered -ERR internal error (the log has why)")
        return True

    def advance(self, seconds: float, run: bool = True) -> None:
        """Move the fake clock on; each deadline on the way fires at its time, in order.

        run=False only moves the clock: what falls due then waits for step() or run()."""
        target = self._now_us + round(seconds * 1_000_000)
        if not run:
            self._now_us = target
            return
        self.run()
        while self._timers and self._timers[0][0] <= target:
            self._now_us = max(self._now_us, self._timers[0][0])
            self.run()
        self._now_us = target
        self.run()

    def settle(self) -> None:
        """Let time pass until no deadline is left (waits with none stay parked)."""
        self.run()
        while live := [entry[0] for entry in self._timers if entry[2].timer is entry]:
            self.advance((min(live) - self._now_us) / 1_000_000)

    def info(self, name: str):
        """One INFO field, as INFO would show it now."""
        text = render_info(self.state, self.model_info(None, None), ["everything"]).decode()
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key == name:
                return int(value) if value.lstrip("-").isdigit() else value
        raise KeyError(name)

    def trace_of(self, name: str) -> list[str]:
        return [event for who, event in self.trace if who == name]

    def _note(self, conn: Connection, event: str) -> None:
        self.trace.append((conn.name, event))

    # -- a connection's task: the loop every model writes (shared/session.py) ----------

    def _serve(self, conn: Connection):
        session = conn.session
        while (event := session.next_event()) is not CLOSE:
            if event is NEED_DATA:
                conn._deliver(session.data_to_send())   # replies go out before we wait for more
                data = conn.inbox.popleft() if conn.inbox else (yield from self._park(conn, "recv"))
                if data is not None:   # None: no bytes, look again (a hang-up, a shutdown)
                    session.receive_data(data)
            elif event is FLUSH:
                conn._deliver(session.data_to_send())
            else:
                yield from self._drive(conn, event)
        conn._deliver(session.data_to_send())
        session.close()
        conn.closed = True
        self._note(conn, "closed")

    def _drive(self, conn: Connection, call: Call):
        """Run one command: perform each effect it yields, then give back every lock it holds."""
        conn.running = call
        self._note(conn, "runs " + call.name.decode())
        value = None
        try:
            while (effect := call.send(value)) is not None:
                try:
                    outcome = self.perform[type(effect)](conn, effect)
                    value = (yield from outcome) if type(outcome) is GeneratorType else outcome
                except (HungUp, AssertionError):
                    raise
                except Exception as error:   # ReplyError: that reply; anything else: a bug
                    value = error
        except HungUp:
            call.cancel()   # its client left mid-wait: no reply (_hang_up took it out of the queue)
            self._note(conn, "cancelled")
        finally:
            conn.running = None
            self._release_all(conn)

    # -- parking and waking ------------------------------------------------------------

    def _park(self, conn: Connection, why: str, timeout: float | None = None,
              leave=None, blocking: bool = False):
        """Suspend conn's task until `_wake(conn, value)`; returns that value.

        At `timeout` seconds `leave()` takes it out of its queue and it wakes with
        TIMED_OUT. A blocking wait is given up when its client hangs up (HungUp)."""
        conn.parked, conn.leave, conn.blocking = why, leave, blocking
        conn.session.client.blocked = blocking
        if timeout is not None:
            conn.timer = [self._now_us + round(timeout * 1_000_000), next(self._sequence), conn]
            heapq.heappush(self._timers, conn.timer)
        if why != "recv":
            self._note(conn, "waits for " + why)
        value = yield
        if value is HUNG_UP:
            raise HungUp
        return value

    def _wake(self, conn: Connection, value=None) -> None:
        """Make a parked task ready; it runs when its turn in the ready queue comes."""
        assert conn.parked, f"{conn.name} is not waiting"
        conn.parked = conn.leave = conn.timer = None
        conn.blocking = conn.session.client.blocked = False
        self.ready.append((conn, value))

    def _give_up(self, conn: Connection, value) -> None:
        """End a wait early (a timeout, a hang-up): out of its queue, then woken."""
        leave = conn.leave
        if leave is not None:
            leave()
        self._wake(conn, value)

    def _fire_one_due_timer(self) -> bool:
        while self._timers and self._timers[0][0] <= self._now_us:
            entry = heapq.heappop(self._timers)
            conn = entry[2]
            if conn.timer is entry:   # not cancelled by an earlier wake-up
                self._give_up(conn, TIMED_OUT)
                return True
        return False

    def _hang_up(self, conn: Connection) -> None:
        if conn.hung_up:
            return
        conn.hung_up = True
        self._note(conn, "hangs up")
        conn.session.connection_lost()
        if conn.parked == "recv":
            self._wake(conn, None)
        elif conn.parked and conn.blocking:
            self._give_up(conn, HUNG_UP)
        # Anything else (running, ready, queued for a lock, in a race window) runs to its
        # end, so nothing is left half done; its reply goes nowhere.

    # -- guards: the lock table, and the one order -------------------------------------

    def guard(self, conn: Connection, effect: fx.Guard):
        nested = bool(conn.held)
        plan = conn.running.guard_plan(effect)
        for position, step in enumerate(plan):
            if step.window:   # `unordered`: hold the first lock a while, so crossings deadlock
                yield from self.race_window(conn, None, key_steps(plan[:position]))
            lock = self._lock_for(step)
            shared = step.lock == SHARED
            reentry = conn in lock.holders
            self._check_order(conn, lock, nested)
            if not lock.take(conn, shared):
                lock.queue.append((conn, shared))
                patience = self.config.deadlock_timeout_ms / 1000 if step.patience else None
                got = yield from self._park(conn, "lock " + lock.name, patience,
                                            leave=partial(self._leave_lock, lock, conn, shared))
                if got is TIMED_OUT:
                    self._note(conn, "gives up on " + lock.name)
                    self.state.stats.deadlocks += 1
                    raise fx.deadlock(step.key, key_steps(plan), self.config.deadlock_timeout_ms)
            conn.held.append(lock)
            self._note(conn, ("re-enters " if reentry else "takes ") + lock.name
                       + (" shared" if shared else ""))

    def _lock_for(self, step: Step) -> Lock:
        if step.lock == KEYSPACE:
            return self.keyspace_lock
        if step.lock in (SHARED, EXCLUSIVE):
            return self.rw_lock
        if step.lock == LISTS:
            return self.lists_lock
        lock = self.key_locks.get(step.key)
        if lock is None:
            name = "key " + step.key.decode("utf-8", "replace")
            lock = self.key_locks[step.key] = Lock(name, RANK[KEY], step.key, reentrant=True)
        return lock

    def _check_order(self, conn: Connection, lock: Lock, nested: bool) -> None:
        """The ladder (shared/guards.py): re-enter only what is held, never reach up."""
        if lock in conn.held:
            assert lock.reentrant, f"{conn.name} takes {lock.name} again; it is not reentrant"
            return
        assert not nested, f"{conn.name}: a nested guard takes {lock.name}, which it did not hold"
        sync = conn.session.client.sync
        for held in conn.held:
            below = held.rank < lock.rank or (
                held.rank == lock.rank == RANK[KEY] and (sync != "striped" or held.key < lock.key))
            assert below, f"lock order: {conn.name} takes {lock.name} while holding {held.name}"

    def _leave_lock(self, lock: Lock, conn: Connection, shared: bool) -> None:
        lock.queue.remove((conn, shared))
        self._admit(lock)   # whoever queued behind it may go now

    def _release_all(self, conn: Connection) -> None:
        while conn.held:
            lock = conn.held.pop()
            lock.release(conn)
            self._note(conn, "releases " + lock.name)
            self._admit(lock)

    def _admit(self, lock: Lock) -> None:
        for waiter in lock.admit():
            self._wake(waiter, GRANTED)
        if lock.key is not None and not lock.holders and not lock.queue:
            del self.key_locks[lock.key]   # a key lock lives only while held or wanted

    def race_window(self, conn: Connection, effect: fx.RaceWindow | None, holds=None):
        if self.config.stepping:
            yield from self.wait_for_release(conn, effect, holds)
        elif self.config.race_window_us:
            yield from self._park(conn, "race window", self.config.race_window)

    def wait_for_release(self, conn: Connection, window: fx.RaceWindow | None, holds=None):
        """As every model parks a step: on its named event, holding its locks."""
        step_id = conn.running.park_step(window, holds)
        name = step_event(step_id)
        try:
            yield from self.event_wait(conn, fx.EventWait(name, None))
        finally:
            self.state.stepper.leave(step_id)
            self.event_clear(conn, fx.EventClear(name))

    # -- waiting ------------------------------------------------------------------------

    def sleep(self, conn: Connection, effect: fx.Sleep):
        yield from self._park(conn, "sleep", effect.seconds, blocking=True)

    def pop_wait(self, conn: Connection, effect: fx.PopWait):
        waiter = ListWaiter(conn.session.client.id, effect.keys, effect.left)
        waiter.wake = conn
        self.state.waiters.add(waiter)   # still under the lists' guard: no push slips in
        self._release_all(conn)          # as Condition.wait gives up its lock
        item = yield from self._park(conn, "a push", effect.timeout, blocking=True,
                                     leave=partial(self.state.waiters.remove, waiter))
        return None if item is TIMED_OUT else item

    def pushed(self, conn: Connection, effect: fx.Pushed) -> None:
        for waiter in effect.served:
            self._wake(waiter.wake, waiter.item)

    def lease_acquire(self, conn: Connection, effect: fx.LeaseAcquire):
        ledger = self.state.ledger
        if ledger.in_use < ledger.size and not self.lease_queue:
            return ledger.grant(conn.session.client.id)
        ledger.waiting += 1
        self.lease_queue.append(conn)
        lease = yield from self._park(conn, "a lease", effect.timeout, blocking=True,
                                      leave=partial(self._leave_lease_queue, conn))
        if lease is TIMED_OUT:
            ledger.timeouts += 1
            return None
        return lease

    def _leave_lease_queue(self, conn: Connection) -> None:
        self.lease_queue.remove(conn)
        self.state.ledger.waiting -= 1

    def lease_release(self, conn: Connection, effect: fx.LeaseRelease) -> bool:
        released = self.state.ledger.revoke(effect.lease, conn.session.client.id)
        if released:
            self._hand_out_leases()
        return released

    def _hand_out_leases(self) -> None:
        ledger = self.state.ledger
        while self.lease_queue and ledger.in_use < ledger.size:
            conn = self.lease_queue.popleft()
            ledger.waiting -= 1
            self._wake(conn, ledger.grant(conn.session.client.id))

    def barrier_wait(self, conn: Connection, effect: fx.BarrierWait):
        barrier = self.barriers.setdefault(effect.name, Barrier(effect.parties))
        if barrier.parties != effect.parties:
            raise parties_mismatch(effect.name, barrier.parties, effect.parties)
        if barrier.broken:
            raise broken(effect.name)
        index = len(barrier.arrived)
        if index + 1 == barrier.parties:   # the last one: everyone goes on
            for waiter in barrier.arrived:
                self._wake(waiter, None)
            barrier.arrived, barrier.generation = [], barrier.generation + 1
            return index
        barrier.arrived.append(conn)
        # A timeout, or a party that hangs up, breaks it for everyone (threading.Barrier's rule).
        outcome = yield from self._park(conn, "a barrier", effect.timeout, blocking=True,
                                        leave=partial(self._break, barrier, conn))
        if outcome is TIMED_OUT or outcome is BROKEN:
            raise broken(effect.name)
        return index

    def _break(self, barrier: Barrier, leaving: Connection | None) -> None:
        barrier.broken = True
        for waiter in barrier.arrived:
            if waiter is not leaving:
                self._wake(waiter, BROKEN)
        barrier.arrived = []

    def barrier_reset(self, conn: Connection, effect: fx.BarrierReset) -> bool:
        barrier = self.barriers.pop(effect.name, None)   # the next WAIT starts afresh
        if barrier is not None:
            self._break(barrier, None)
        return barrier is not None

    def barrier_status(self, conn: Connection, effect: fx.BarrierStatus) -> BarrierView | None:
        barrier = self.barriers.get(effect.name)
        if barrier is None:
            return None
        return BarrierView(barrier.parties, len(barrier.arrived), barrier.broken,
                           barrier.generation)

    def event_set(self, conn: Connection, effect: fx.EventSet) -> int:
        event = self.events.setdefault(effect.name, NamedEvent())
        released = 0 if event.is_set else len(event.waiting)
        event.is_set = True
        for waiter in event.waiting:
            self._wake(waiter, True)
        event.waiting = []
        return released

    # An event exists only while it is set or waited for (every model keeps this contract):
    # a lookup makes nothing, and a clear event nobody waits for is forgotten.

    def event_clear(self, conn: Connection, effect: fx.EventClear) -> None:
        event = self.events.get(effect.name)
        if event is not None:
            event.is_set = False
            self._forget_if_idle(effect.name, event)

    def event_isset(self, conn: Connection, effect: fx.EventIsSet) -> bool:
        event = self.events.get(effect.name)
        return event is not None and event.is_set

    def event_wait(self, conn: Connection, effect: fx.EventWait):
        event = self.events.setdefault(effect.name, NamedEvent())
        if event.is_set:
            return True
        event.waiting.append(conn)
        try:
            was_set = yield from self._park(conn, "an event", effect.timeout, blocking=True,
                                            leave=partial(event.waiting.remove, conn))
        finally:
            self._forget_if_idle(effect.name, event)
        return was_set is True

    def _forget_if_idle(self, name: bytes, event: NamedEvent) -> None:
        if not event.waiting and not event.is_set and self.events.get(name) is event:
            del self.events[name]

    # -- server-wide ------------------------------------------------------------------

    def reconfigure(self, conn: Connection, effect: fx.Reconfigure) -> None:
        if "pool_size" in effect.names:
            self.state.ledger.size = self.config.pool_size
            self._hand_out_leases()

    def model_info(self, conn: Connection | None, effect: fx.ModelInfo | None) -> dict:
        return {"key_locks": len(self.key_locks), "barriers": len(self.barriers),
                "events": len(self.events)}

    def shutdown(self, conn: Connection, effect: fx.Shutdown) -> None:
        """Stop: idle clients are closed, blocked ones answered as on a timeout, then closed."""
        self.stopping = True
        for other in self.connections:
            if other is conn or other.closed:
                continue
            other.session.client.closing = True
            if other.parked == "recv":
                self._wake(other, None)
            elif other.parked and other.blocking:
                self._give_up(other, TIMED_OUT)
