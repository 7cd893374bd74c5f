"""Clients blocked in BLPOP/BRPOP, served first come, first served.

A push does not just wake the waiters and let them race for the item (a
newcomer could then snatch it, and a waiter could starve). Instead the
pusher, still inside the lists' guard, hands each item straight to the
longest-waiting client: `serve` pops on the waiter's behalf and fills in
`waiter.item`. The model then only has to wake the served waiters.
"""

from __future__ import annotations

from collections import deque

from contend.shared.keyspace import Keyspace


class ListWaiter:
    """One blocked BLPOP/BRPOP: what it waits for and, once served, what it got."""

    __slots__ = ("client_id", "keys", "left", "item", "wake")

    def __init__(self, client_id: int, keys: tuple[bytes, ...], left: bool):
        self.client_id = client_id
        self.keys = keys
        self.left = left
        self.item: tuple[bytes, bytes] | None = None  # (key, value) once served
        self.wake = None  # the model's way to resume this waiter, if it needs one


class ListWaiters:
    """The waiters on the lists of one keyspace."""

    def __init__(self, keyspace: Keyspace) -> None:
        self.keyspace = keyspace
        self._queues: dict[bytes, deque[ListWaiter]] = {}
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def add(self, waiter: ListWaiter) -> ListWaiter:
        for key in dict.fromkeys(waiter.keys):
            self._queues.setdefault(key, deque()).append(waiter)
        self.count += 1
        return waiter

    def remove(self, waiter: ListWaiter) -> None:
        """Forget a waiter that timed out or hung up; harmless if it was served."""
        if waiter.item is not None:
            return
        self._discard(waiter)

    def _discard(self, waiter: ListWaiter) -> None:
        for key in dict.fromkeys(waiter.keys):
            queue = self._queues.get(key)
            if queue is None:
                continue
            try:
                queue.remove(waiter)
            except ValueError:
                continue
            if not queue:
                del self._queues[key]
        self.count -= 1

    def hand(self, key: bytes, value: bytes) -> list[ListWaiter]:
        """Give one item that is in no list to the longest waiter on `key`, if any."""
        queue = self._queues.get(key)
        if not queue:
            return []
        waiter = queue[0]
        waiter.item = (key, value)
        self._discard(waiter)
        return [waiter]

    def serve(self, key: bytes) -> list[ListWaiter]:
        """Hand items of `key` to its waiters in arrival order; returns those served."""
        keyspace = self.keyspace
        queue = self._queues.get(key)
        served = []
        while queue:
            waiter = queue[0]
            value = keyspace.pop(key, waiter.left)
            if value is None:
                break
            waiter.item = (key, value)
            self._discard(waiter)
            served.append(waiter)
            queue = self._queues.get(key)
        return served
