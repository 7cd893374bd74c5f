"""The resource pool's ledger: which client holds which lease, and the figures.

The model owns the primitive that bounds the pool (a Semaphore, a
CapacityLimiter, a queue of parked continuations); this ledger only records
what that primitive allowed, so every model reports POOL.STATUS the same way
and a disconnecting client's leases can be found and returned.
"""

from __future__ import annotations

from itertools import count


class LeaseLedger:
    def __init__(self, size: int):
        self.size = size
        self.holders: dict[int, int] = {}   # lease id -> client id
        self.waiting = 0
        self.peak_in_use = 0
        self.acquired_total = 0
        self.timeouts = 0
        self._ids = count(1)                 # ids are never reused, so a stale id is refused

    @property
    def in_use(self) -> int:
        return len(self.holders)

    def grant(self, client_id: int) -> int:
        lease = next(self._ids)
        self.holders[lease] = client_id
        self.acquired_total += 1
        self.peak_in_use = max(self.peak_in_use, len(self.holders))
        return lease

    def revoke(self, lease: int, client_id: int) -> bool:
        """Take a lease back from its holder; anyone else is refused."""
        if self.holders.get(lease) != client_id:
            return False
        del self.holders[lease]
        return True

    def reset_figures(self) -> None:
        """CONFIG RESETSTAT: start counting afresh; the peak restarts at what is held now."""
        self.peak_in_use = len(self.holders)
        self.acquired_total = self.timeouts = 0

    def held_by(self, client_id: int) -> list[int]:
        return [lease for lease, holder in list(self.holders.items()) if holder == client_id]

    def status(self) -> dict[bytes, int]:
        """POOL.STATUS: a map, like CONFIG GET (RESP2 flattens it: name, value, ...)."""
        return {b"size": self.size, b"in-use": self.in_use, b"waiting": self.waiting,
                b"peak-in-use": self.peak_in_use, b"acquired-total": self.acquired_total,
                b"timeouts": self.timeouts}
