"""The primitives the selector loop builds by hand, because one thread needs no threading ones.

- `Timers`: the deadlines of parked tasks; the earliest says how long select() may sleep.
- `Owner`: a reentrant lock: the task that holds it, how deep, and a queue of parked tasks.
- `KeyLocks`: an Owner per key, kept only while someone holds or wants it.
- `ReadersWriterLock`: many tasks share it, or one holds it alone; writers first.
- `Semaphore`: the pool's permits, resizable, and a queue of parked tasks.
- `Gathering`: a barrier: the tasks that have arrived this round, and whether it is broken.
- `Signal`: an event: set or not, and the tasks parked on it.

They all wait the same way, trio's low-level way. The running task puts
itself in the primitive's queue and parks (`Loop.park`, server/selector_loop.py),
saying how to take it out again should the wait be cancelled (a timeout, a
hang-up). Whoever frees the primitive takes the longest waiter out of the
queue and wakes it with a value. None of them needs a lock of its own: one
thread runs one task at a time, and none parks between reading its state
and changing it.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from itertools import count
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:   # for the annotations only: selector_loop imports this module
    from contend.server.selector_loop import Loop, Task


class Outcome:
    """How a park ended when nobody woke it with a value."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


TIMED_OUT = Outcome("TIMED_OUT")   # its timeout passed first
CUT_SHORT = Outcome("CUT_SHORT")   # its client hung up, or the server is stopping


LONGEST_SLEEP = 86_400.0   # seconds: far below the 2**31 ms select() can be asked to wait


class Timers:
    """The deadlines of parked tasks (timeouts, SLEEP, the race window), earliest first.

    A cancelled deadline stays in the heap (removing from the middle of a
    heap costs a scan) but forgets its task; the heap is rebuilt when mostly
    cancelled, so BLPOPs served long before their timeout do not pile up.
    """

    def __init__(self) -> None:
        self._heap: list[list[Any]] = []   # [deadline, sequence, task or None once cancelled]
        self._sequence = count()           # equal deadlines fire in the order they were set
        self._cancelled = 0

    def __len__(self) -> int:
        return len(self._heap) - self._cancelled

    def after(self, seconds: float, task: Task) -> list[Any]:
        entry = [time.monotonic() + seconds, next(self._sequence), task]
        heapq.heappush(self._heap, entry)
        return entry

    def cancel(self, entry: list[Any]) -> None:
        if entry[2] is not None:
            entry[2] = None
            self._cancelled += 1
            if self._cancelled > 64 and self._cancelled * 2 > len(self._heap):
                self._heap = [e for e in self._heap if e[2] is not None]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def timeout(self, now: float) -> float | None:
        """How long select() may sleep before the next deadline; None: there is none."""
        heap = self._heap
        while heap and heap[0][2] is None:
            heapq.heappop(heap)
            self._cancelled -= 1
        # select() takes at most 2**31 ms; a later deadline is simply looked at again then.
        return min(max(0.0, heap[0][0] - now), LONGEST_SLEEP) if heap else None

    def due(self, now: float) -> list[Task]:
        """The tasks whose deadline has come, earliest first; their entries are spent."""
        heap, tasks = self._heap, []
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if entry[2] is None:
                self._cancelled -= 1
            else:
                tasks.append(entry[2])
                entry[2] = None   # fired: cancelling it now changes nothing
        return tasks


class Owner:
    """A hand-made RLock: which task holds it, how many times, and who waits.

    One thread needs no lock for a single step, but a command parked in its
    race window is half done; the keys it guards must stay its own until it
    ends. Taking it again (BANK.TRANSFER re-entering withdraw and deposit)
    just counts deeper, which is exactly what an RLock does and a plain
    Lock would refuse, by deadlocking.
    """

    __slots__ = ("loop", "owner", "depth", "queue")

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.owner: Task | None = None
        self.depth = 0
        self.queue: deque[Task] = deque()   # parked, longest waiting first

    def acquire(self, timeout: float | None = None):
        """Take it for the running task (once more, if it holds it already).
        Returns None once held, or TIMED_OUT if `timeout` seconds pass first."""
        task = self.loop.current
        if self.owner is None or self.owner is task:
            self.owner = task
            self.depth += 1
            return None
        self.queue.append(task)
        return (yield from self.loop.park(self.queue.remove, timeout))

    def release(self) -> None:
        self.depth -= 1
        if self.depth:
            return
        if self.queue:
            # Handed straight to the longest waiter, so a newcomer cannot barge in.
            self.owner, self.depth = self.queue.popleft(), 1
            self.loop.wake(self.owner)
        else:
            self.owner = None


class KeyLocks(dict):
    """key -> its Owner, only while someone holds or wants it; a lock for
    every key ever touched would grow without bound (INFO key_locks)."""

    def __init__(self, loop: Loop) -> None:
        super().__init__()
        self.loop = loop

    def __missing__(self, key: bytes) -> KeyLock:
        lock = self[key] = KeyLock(self, key)
        return lock


class KeyLock(Owner):
    __slots__ = ("locks", "key")

    def __init__(self, locks: KeyLocks, key: bytes) -> None:
        super().__init__(locks.loop)
        self.locks, self.key = locks, key

    def release(self) -> None:
        super().release()
        if self.owner is None:
            del self.locks[self.key]   # free and unwanted: made again when next needed


class ReadersWriterLock:
    """Many tasks share it, or one holds it alone: the keyspace lock of `striped`
    and `unordered`. Per-key commands hold it shared, side by side; a command
    over the whole keyspace (FLUSHALL, KEYS, DBSIZE) holds it exclusive.

    Writers first: once one waits, readers that come later queue behind it,
    or a steady stream of INCRs would keep FLUSHALL waiting forever. It is
    not reentrant (nested guards never take it twice, shared/guards.py).
    """

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.readers = 0                      # tasks holding it shared now
        self.writer: Task | None = None       # the task holding it exclusive
        self.queue: deque[tuple[Task, bool]] = deque()   # (task, exclusive), in arrival order

    def acquire_shared(self):
        if self.writer is None and not self.queue:
            self.readers += 1
            return
        yield from self._wait(exclusive=False)

    def acquire_exclusive(self):
        if self.writer is None and not self.readers and not self.queue:
            self.writer = self.loop.current
            return
        yield from self._wait(exclusive=True)

    def release_shared(self) -> None:
        self.readers -= 1
        self._grant()

    def release_exclusive(self) -> None:
        self.writer = None
        self._grant()

    def _wait(self, exclusive: bool):
        self.queue.append((self.loop.current, exclusive))
        yield from self.loop.park(self._leave)   # granted: _grant counted it in already

    def _grant(self) -> None:
        """Wake whoever may go now, in arrival order: one writer, or the readers up to the next."""
        queue = self.queue
        while queue and self.writer is None:
            task, exclusive = queue[0]
            if exclusive:
                if self.readers:
                    return
                self.writer = task
            else:
                self.readers += 1
            queue.popleft()
            self.loop.wake(task)

    def _leave(self, task: Task) -> None:
        self.queue = deque(entry for entry in self.queue if entry[0] is not task)
        self._grant()   # a writer that left may have been holding readers back


class Semaphore:
    """The pool: `size` permits and a queue of parked tasks (threading.Semaphore's rules).

    A freed permit goes straight to the longest waiter, never to a newcomer.
    CONFIG SET pool-size resizes it: growing lends at once; shrinking takes
    nothing back, it lends again once fewer than `size` are out.
    """

    def __init__(self, loop: Loop, size: int) -> None:
        self.loop = loop
        self.size = size
        self.taken = 0
        self.queue: deque[Task] = deque()

    def acquire(self, timeout: float | None = None):
        """True once a permit is this task's; TIMED_OUT or CUT_SHORT if the wait ends first."""
        if self.taken < self.size and not self.queue:
            self.taken += 1
            return True
        self.queue.append(self.loop.current)
        return (yield from self.loop.park(self.queue.remove, timeout))

    def release(self) -> None:
        self.taken -= 1
        self._lend()

    def resize(self, size: int) -> None:
        self.size = size
        self._lend()

    def _lend(self) -> None:
        while self.queue and self.taken < self.size:
            self.taken += 1
            self.loop.wake(self.queue.popleft(), True)


class BrokenBarrierError(Exception):
    """The barrier broke (a party gave up, or it was reset) while or before this party waited."""


class Gathering:
    """One named barrier, threading.Barrier's rules: `parties` arrive, all go on together,
    each with its arrival index. A party that gives up (its timeout, its client
    hanging up) breaks it, or the others would wait forever for it."""

    __slots__ = ("loop", "parties", "arrived", "broken", "rounds")

    def __init__(self, loop: Loop, parties: int) -> None:
        self.loop = loop
        self.parties = parties
        self.arrived: list[Task] = []   # parked here this round, in arrival order
        self.broken = False             # until BARRIER.RESET, every wait fails at once
        self.rounds = 0

    def wait(self, timeout: float | None = None):
        """This party's arrival index (or CUT_SHORT); BrokenBarrierError if it breaks."""
        if self.broken:
            raise BrokenBarrierError
        index = len(self.arrived)
        if index + 1 == self.parties:   # the last to arrive: everyone goes on
            self.rounds += 1
            arrived, self.arrived = self.arrived, []
            for position, task in enumerate(arrived):
                self.loop.wake(task, position)
            return index
        self.arrived.append(self.loop.current)
        outcome = yield from self.loop.park(self._leave, timeout)
        if outcome is TIMED_OUT:
            raise BrokenBarrierError   # its leaving broke the barrier for everyone
        return outcome

    def _leave(self, task: Task) -> None:
        self.arrived.remove(task)
        self.abort()

    def abort(self) -> None:
        """Break it: every waiter and every later wait gets BrokenBarrierError."""
        self.broken = True
        arrived, self.arrived = self.arrived, []
        for task in arrived:
            self.loop.wake(task, BrokenBarrierError())


class Signal:
    """One event, threading.Event's flag, plus the tasks parked waiting for it."""

    __slots__ = ("loop", "is_set", "waiting")

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.is_set = False
        self.waiting: list[Task] = []

    def set(self) -> int:
        """Set it; returns how many waiters this released."""
        self.is_set = True
        waiting, self.waiting = self.waiting, []
        for task in waiting:
            self.loop.wake(task, True)
        return len(waiting)

    def clear(self) -> None:
        self.is_set = False

    def wait(self, timeout: float | None = None):
        """True once set; TIMED_OUT or CUT_SHORT if the wait ends first."""
        if self.is_set:
            return True
        self.waiting.append(self.loop.current)
        return (yield from self.loop.park(self.waiting.remove, timeout))
