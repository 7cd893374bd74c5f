"""What the trio model builds for itself: three primitives trio does not ship.

- `Barrier`: `threading.Barrier`'s contract from a `trio.Event` per round and a counter.
- `ClearableEvent`: `threading.Event`'s set/clear/wait over `trio.Event`, which can only be set.
- `ReadersWriterLock`: many tasks share it, or one holds it alone; from a counter and `trio.Event`.

The primitives follow trio's conventions rather than threading's: no
timeout arguments (wrap the wait in `trio.move_on_after`, a cancel scope,
instead), and a cancelled wait leaves the primitive in a state that still
makes sense. None of this needs a lock: trio runs one task at a time and
switches only at an `await`, and nothing here awaits between reading its
state and changing it.
"""

from __future__ import annotations

import trio


class BrokenBarrierError(Exception):
    """The barrier broke (a party gave up, or it was reset) while or before this party waited."""


class _Round:
    """One generation of a barrier: the parties that arrive for it are released together."""

    __slots__ = ("released", "broken")

    def __init__(self) -> None:
        self.released = trio.Event()   # set once: when the last party arrives, or on breaking
        self.broken = False            # why `released` was set, for the parties that wake up


class Barrier:
    """Make `parties` tasks wait for each other, then let them all go at once.

    Like `threading.Barrier`: `wait()` returns this party's arrival index,
    0 for the first to arrive up to ``parties - 1`` for the last, distinct
    within each generation; the last arrival releases the round and the
    barrier is ready for the next generation straight away.

    If a waiting party leaves early (its wait is cancelled: a timeout from
    `trio.move_on_after`, its client hanging up), the barrier *breaks*: the
    others would otherwise wait forever for a party that will never come.
    Every waiter then gets `BrokenBarrierError`, and so does every later
    `wait()` until `reset()`.

    trio has no Barrier, but a `trio.Event` per round is enough: an Event is
    set exactly once, which is what releasing one generation needs. The
    counter says who arrives last; the round object says, to the parties it
    wakes, whether they were released or broken.
    """

    def __init__(self, parties: int):
        if parties < 1:
            raise ValueError("parties must be at least 1")
        self.parties = parties
        self.generation = 0     # rounds completed (BARRIER.STATUS)
        self.broken = False
        self._arrived = 0       # parties waiting in the current round
        self._round = _Round()

    @property
    def n_waiting(self) -> int:
        return self._arrived

    async def wait(self) -> int:
        """Wait for the other parties; returns this party's arrival index."""
        await trio.lowlevel.checkpoint()   # even for the last arrival, as trio's own waits do
        if self.broken:
            raise BrokenBarrierError
        index = self._arrived
        this_round = self._round
        if index == self.parties - 1:
            # The last to arrive: release this round and open the next one.
            self._round = _Round()
            self._arrived = 0
            self.generation += 1
            this_round.released.set()
            return index
        self._arrived += 1
        try:
            await this_round.released.wait()
        except BaseException:
            # Cancelled before the round completed: this party is leaving, so
            # the others can never all meet; break the barrier for them.
            if not this_round.released.is_set():
                self.abort()
            raise
        if this_round.broken:
            raise BrokenBarrierError
        return index

    def abort(self) -> None:
        """Break the barrier: every waiter and every later wait() gets BrokenBarrierError."""
        self.broken = True
        self._arrived = 0
        self._round.broken = True
        self._round.released.set()

    def reset(self) -> None:
        """Break the current waiters, then make the barrier whole for a fresh round."""
        if self._arrived:
            self.abort()
        self.broken = False
        self._arrived = 0
        self._round = _Round()


class ClearableEvent:
    """`threading.Event` semantics over trio: set, clear, wait, is_set.

    A `trio.Event` can only go from unset to set, on purpose: once a task is
    told "it happened", nobody can take that back before the task runs.
    CLEAR therefore does not unset the Event; it *replaces* it with a fresh,
    unset one. The waiters of the old one were all released when it was set;
    later waiters wait on the new one. (This is trio's own advice: "if you
    want to reset the event, make a new one".)
    """

    def __init__(self) -> None:
        self._event = trio.Event()

    def is_set(self) -> bool:
        return self._event.is_set()

    def waiting(self) -> int:
        """How many tasks wait for it now."""
        # The Event's parking lot knows who waits: a waiter that was cancelled
        # (timed out, hung up) has left it and is not counted.
        return self._event.statistics().tasks_waiting

    def set(self) -> int:
        """Set the event; returns how many waiters this released (0 if it was set already)."""
        released = self.waiting()
        self._event.set()
        return released

    def clear(self) -> None:
        if self._event.is_set():
            self._event = trio.Event()

    async def wait(self) -> None:
        """Wait until the event is set (returns at once, after a checkpoint, if it is)."""
        await self._event.wait()


class ReadersWriterLock:
    """Shared by many tasks at once, or held by one alone: the keyspace's lock in
    `striped` and `unordered` (shared/guards.py, the top of the lock order).

    A command over some keys takes it shared (`.shared`), so INCRs on different
    keys still run side by side; a command over the whole keyspace (FLUSHALL,
    KEYS, DBSIZE) takes it exclusive (`.exclusive`) and so waits until every
    per-key command in flight has finished: none can write back, after the
    flush, a value it read before it.

    Writer preference: once a writer waits, new readers queue behind it.
    Without that, a stream of INCRs that overlap one another would keep the
    lock shared for ever, and FLUSHALL would never run.

    Built from a counter and a `trio.Event`, not a `trio.Condition`: a release
    must not wait (it runs in `finally` blocks, and while BLPOP gives its
    guards up), and a Condition may only be notified by the holder of its
    lock. A release that may let someone in sets the Event the waiters wait
    on, so each looks again; whoever must wait after that gets a fresh one
    (a trio.Event cannot be cleared).
    """

    def __init__(self) -> None:
        self.readers = 0            # tasks holding it shared
        self.writing = False        # a task holds it exclusive
        self.writers_waiting = 0    # writers queued for it: new readers wait behind them
        self._released: trio.Event | None = None   # made when someone must wait, set on release
        # The two ways in, each used like a trio.Lock: acquire, acquire_nowait, release.
        self.shared = _Side("shared", self.acquire_shared, self.acquire_shared_nowait,
                            self.release_shared)
        self.exclusive = _Side("exclusive", self.acquire_exclusive, self.acquire_exclusive_nowait,
                               self.release_exclusive)

    def acquire_shared_nowait(self) -> None:
        if self.writing or self.writers_waiting:
            raise trio.WouldBlock
        self.readers += 1

    async def acquire_shared(self) -> None:
        await trio.lowlevel.checkpoint()   # like every trio acquire, even when it is free
        while self.writing or self.writers_waiting:
            await self._next_release()
        self.readers += 1

    def release_shared(self) -> None:
        if not self.readers:
            raise RuntimeError("release of a ReadersWriterLock not held shared")
        self.readers -= 1
        if not self.readers:
            self._wake()   # a writer may be waiting for the last reader

    def acquire_exclusive_nowait(self) -> None:
        if self.writing or self.readers:
            raise trio.WouldBlock
        self.writing = True

    async def acquire_exclusive(self) -> None:
        self.writers_waiting += 1   # from now on, new readers wait for this writer
        try:
            await trio.lowlevel.checkpoint()
            while self.writing or self.readers:
                await self._next_release()
        except BaseException:
            # Cancelled while queued: readers held back only by this writer may go now.
            self.writers_waiting -= 1
            self._wake()
            raise
        self.writers_waiting -= 1
        self.writing = True

    def release_exclusive(self) -> None:
        if not self.writing:
            raise RuntimeError("release of a ReadersWriterLock not held exclusive")
        self.writing = False
        self._wake()

    async def _next_release(self) -> None:
        if self._released is None:
            self._released = trio.Event()
        await self._released.wait()

    def _wake(self) -> None:
        """Every waiter looks again; later ones wait on a fresh Event."""
        if self._released is not None:
            self._released.set()
            self._released = None


class _Side:
    """One way into a ReadersWriterLock, shared or exclusive, with a trio.Lock's methods,
    so the model holds it and lets it go like any other lock."""

    __slots__ = ("name", "acquire", "acquire_nowait", "release")

    def __init__(self, name: str, acquire, acquire_nowait, release):
        self.name = name
        self.acquire = acquire
        self.acquire_nowait = acquire_nowait
        self.release = release

    def __repr__(self) -> str:
        return f"<ReadersWriterLock.{self.name}>"
