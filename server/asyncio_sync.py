"""What the asyncio model adds to asyncio's primitives: one helper and two primitives.

- `acquire_nowait`: take an asyncio lock now if that needs no wait (trio's locks have it).
- `ReadersWriterLock`: many tasks share it, or one holds it alone; from counters and an Event.
- `ResizableSemaphore`: an `asyncio.Semaphore` that CONFIG SET pool-size can resize.

Everything else the model uses is asyncio's own: Lock, Condition, Semaphore,
Barrier, Event, and `asyncio.timeout()` as the cancel scope around a wait.
None of this needs a lock of its own: the loop runs one callback or task
step at a time, and nothing here awaits between reading its state and
changing it.
"""

from __future__ import annotations

import asyncio


def acquire_nowait(lock) -> bool:
    """Take an asyncio Lock or Semaphore (or a side of a ReadersWriterLock) at once if that
    needs no wait; False, holding nothing, when it would have to wait.

    asyncio's primitives have only the coroutine `acquire()`, and it finishes
    without ever suspending exactly when the lock is free and nobody queues for
    it (a released Lock stays reserved for the waiter it woke). Running its first
    step by hand asks the lock itself, its fairness included. If it suspended,
    it queued a future to wait on; closing the coroutine takes that out again.
    """
    if lock.locked():
        return False
    acquiring = lock.acquire()
    try:
        acquiring.send(None)
    except StopIteration:
        return True
    acquiring.close()
    return False


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

    Built from counters and an `asyncio.Event`, not an `asyncio.Condition`: a
    release must not wait (it runs in `finally` blocks, and while BLPOP gives
    its guards up), and a Condition may only be notified under its lock. A
    release that may let someone in wakes every waiter to look again:
    `set()` then `clear()` at once, so those waiting now wake and later ones
    wait. (trio_sync.py must make a fresh trio.Event each time: a trio.Event
    cannot be cleared.)
    """

    def __init__(self) -> None:
        self.readers = 0            # tasks holding it shared
        self.writing = False        # a task holds it exclusive
        self.writers_waiting = 0    # writers queued for it: new readers wait behind them
        self._released = asyncio.Event()   # set and cleared at once: "look again"
        # The two ways in, each used like an asyncio.Lock: locked, acquire, release.
        self.shared = _Side("shared", self._shared_busy, self.acquire_shared,
                            self.release_shared)
        self.exclusive = _Side("exclusive", self._exclusive_busy, self.acquire_exclusive,
                               self.release_exclusive)

    def _shared_busy(self) -> bool:
        return self.writing or self.writers_waiting > 0

    async def acquire_shared(self) -> None:
        while self._shared_busy():
            await self._released.wait()
        self.readers += 1

    def release_shared(self) -> None:
        if not self.readers:
            raise RuntimeError("release of a ReadersWriterLock not held shared")
        self.readers -= 1
        if not self.readers:
            self._wake()   # a writer may be waiting for the last reader

    def _exclusive_busy(self) -> bool:
        return self.writing or self.readers > 0

    async def acquire_exclusive(self) -> None:
        if self._exclusive_busy():
            self.writers_waiting += 1   # from now on, new readers wait for this writer
            try:
                while self._exclusive_busy():
                    await self._released.wait()
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

    def _wake(self) -> None:
        """Every waiter looks again; whoever must still wait waits anew."""
        self._released.set()
        self._released.clear()


class _Side:
    """One way into a ReadersWriterLock, shared or exclusive, with an asyncio.Lock's
    methods, so the model takes it and lets it go like any other lock."""

    __slots__ = ("name", "locked", "acquire", "release")

    def __init__(self, name: str, locked, acquire, release):
        self.name = name
        self.locked = locked     # True when acquire() would have to wait
        self.acquire = acquire
        self.release = release

    def __repr__(self) -> str:
        return f"<ReadersWriterLock.{self.name}>"


class ResizableSemaphore:
    """An `asyncio.Semaphore` of `size` permits, resizable while permits are out.

    An asyncio.Semaphore has no size to change: it only counts what is free.
    Growing releases the extra permits (a plain Semaphore, not a
    BoundedSemaphore, allows that); shrinking takes the free ones now and
    records the rest as a debt that returning permits pay off, so the number
    out never exceeds the new size once they come back.
    """

    def __init__(self, size: int):
        self._semaphore = asyncio.Semaphore(size)
        self._size = size
        self._debt = 0

    def locked(self) -> bool:
        return self._semaphore.locked()

    async def acquire(self) -> None:
        await self._semaphore.acquire()

    def release(self) -> None:
        if self._debt:
            self._debt -= 1   # kept: the pool is smaller now
            return
        self._semaphore.release()

    def resize(self, size: int) -> None:
        change, self._size = size - self._size, size
        while change > 0 and self._debt:
            self._debt -= 1
            change -= 1
        for _ in range(change):
            self._semaphore.release()
        while change < 0 and acquire_nowait(self._semaphore):
            change += 1
        self._debt += max(0, -change)
