"""How long a single-threaded loop was kept from everyone else: INFO's loop_stalls.

In the selectors and trio models one thread serves every client, and a
command runs until it yields or awaits. WORK is pure-Python CPU work with no
such point inside, so while it runs no byte is read, no reply sent, no timer
fired, for anyone. Handing it to another thread would not make it faster
either: the GIL lets one thread run Python at a time. So the models measure
the stall instead of hiding it.
"""

from __future__ import annotations

STALL = 0.010   # seconds on one stretch without handing over: a stall


class LoopStalls:
    __slots__ = ("noted", "count", "longest")

    def __init__(self) -> None:
        self.noted = 0        # stretches measured (loop iterations, or command steps)
        self.count = 0        # of those, how many lasted STALL or more
        self.longest = 0.0    # seconds

    def note(self, took: float) -> None:
        self.noted += 1
        if took >= STALL:
            self.count += 1
            if took > self.longest:
                self.longest = took

    def info(self) -> dict:
        return {"loop_stalls": self.count, "longest_stall_ms": round(self.longest * 1000, 1)}
