"""The primitives the selector loop builds by hand, because one thread needs no threading ones.

- `Timers`: a heap of deadlines; the earliest one is how long select() may sleep.
- `Owner`: a reentrant lock made of an owner, a depth and a queue of parked commands.
- `Gathering`: a barrier: who has arrived this round, and whether it is broken.
- `Signal`: a named event: set or not, and the connections waiting for it.

None of these block: "waiting" here means a connection sits in a queue with
its command's generator parked, and whoever frees the thing wakes it.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from itertools import count



class Timers:
    """Deadlines for timeouts, SLEEP and the race window, earliest first.

    A cancelled timer stays in the heap (removing from the middle of a heap
    costs a scan) but forgets its callback; the heap is rebuilt when mostly
    cancelled, so BLPOPs that are served long before their timeout do not
    pile up entries.
    """

    def __init__(self) -> None:
        self._heap: list[list] = []      # [deadline, sequence, callback, argument]
        self._sequence = count()         # equal deadlines fire in the order they were set
        self._cancelled = 0

    def __len__(self) -> int:
        return len(self._heap) - self._cancelled

    def after(self, seconds: float, callback, argument=None) -> list:
        entry = [time.monotonic() + seconds, next(self._sequence), callback, argument]
        heapq.heappush(self._heap, entry)
        return entry

    def cancel(self, entry: list) -> None:
        if entry[2] is not None:
            entry[2] = entry[3] = None
            self._cancelled += 1
            if self._cancelled > 64 and self._cancelled * 2 > len(self._heap):
                self._heap = [e for e in self._heap if e[2] is not None]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def timeout(self, now: float) -> float | None:
        """How long select() may sleep before the next deadline; None: no deadline at all."""
        heap = self._heap
        while heap and heap[0][2] is None:
            heapq.heappop(heap)
            self._cancelled -= 1
        return max(0.0, heap[0][0] - now) if heap else None

    def run_due(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            callback, argument = entry[2], entry[3]
            if callback is None:
                self._cancelled -= 1
            else:
                entry[2] = entry[3] = None   # fired: cancelling it now changes nothing
                callback(argument)


class Owner:
    """A hand-made RLock: which connection holds it, how many times, and who waits.

    One thread needs no lock for a single step, but a command parked in its
    race window is half done; the keys it guards must stay its own until it
    ends. Taking it again (BANK.TRANSFER re-entering withdraw and deposit)
    just counts deeper, which is exactly what an RLock does and a plain
    Lock would refuse, by deadlocking.
    """

    __slots__ = ("key", "owner", "depth", "queue")

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key        # None for the one lock over the whole keyspace
        self.owner = None
        self.depth = 0
        self.queue: deque = deque()   # (connection, what it does once granted), longest waiting first

    def take(self, conn) -> bool:
        if self.owner is None or self.owner is conn:
            self.owner = conn
            self.depth += 1
            return True
        return False

    def give_back(self):
        """One level less; returns the queued (connection, then) that now owns it, if any."""
        self.depth -= 1
        if self.depth:
            return None
        self.owner = None
        if not self.queue:
            return None
        # Handed straight to the longest waiter, so a newcomer cannot barge in.
        waiter = self.queue.popleft()
        self.owner, self.depth = waiter[0], 1
        return waiter


class Gathering:
    """One named barrier, threading.Barrier's rules: `parties` arrive, all go on together."""

    __slots__ = ("parties", "arrived", "broken", "rounds")

    def __init__(self, parties: int):
        self.parties = parties
        self.arrived: list = []   # connections parked here this round, in arrival order
        self.broken = False       # until BARRIER.RESET, every WAIT fails at once
        self.rounds = 0


class Signal:
    """One named event: threading.Event's flag, plus who is parked waiting for it."""

    __slots__ = ("is_set", "waiting")

    def __init__(self) -> None:
        self.is_set = False
        self.waiting: list = []
