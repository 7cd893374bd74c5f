"""The data: a dict of keys to strings (bytes) and lists (deques), and their expiry times.

Every method is a single step with no waiting and no locking; whoever calls it
decides what guards it (docs/design.md: the models differ in exactly that). Counters
are stored as their decimal text, as in Redis, so GET sees what INCR wrote.

Expiry is Redis's: a key with a time to live stays in `data` until somebody
looks at it after its time (lazy expiry: every method here looks through
`value`, which deletes it first) or until the server's upkeep samples it
(active expiry, `expire_some`). Time is read from `clock`, Unix time in
milliseconds, so a test can hand the keyspace its own fake clock.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from itertools import islice

from contend.shared.args import NOT_AN_INTEGER, WRONGTYPE, glob_match, parse_int
from contend.shared.resp import ReplyError


def wall_clock_ms() -> int:
    """Unix time in milliseconds, as Redis's mstime()."""
    return time.time_ns() // 1_000_000


class Keyspace:
    __slots__ = ("data", "expires", "watchers", "dirty", "clock")

    def __init__(self, clock: Callable[[], int] = wall_clock_ms) -> None:
        self.data: dict[bytes, bytes | deque] = {}
        # Each key with a time to live, and the Unix time in ms past which it is gone.
        # Empty (no key has one), expiry costs each lookup one truthiness check.
        self.expires: dict[bytes, int] = {}
        # WATCH: each watched key and the ids of the clients watching it; a write to it
        # puts them in `dirty`, and their EXEC fails. Ids, not Client objects: the
        # processes model keeps the keyspace in another process than the clients.
        # Empty, it costs a write nothing.
        self.watchers: dict[bytes, frozenset[int]] = {}
        self.dirty: set[int] = set()
        self.clock = clock

    def touch(self, key: bytes) -> None:
        """`key` was written: every client watching it will have its EXEC refused."""
        if self.watchers:
            watching = self.watchers.get(key)
            if watching:
                self.dirty.update(watching)

    # -- WATCH ----------------------------------------------------------------
    # Each key's set of watchers is replaced, never changed in place: with `sync off`
    # a write in another thread may be walking it.

    def watch(self, key: bytes, client_id: int) -> None:
        self.watchers[key] = self.watchers.get(key, frozenset()) | {client_id}

    def unwatch(self, keys, client_id: int) -> None:
        """Stop `client_id` watching `keys`; its next EXEC is no longer doomed."""
        for key in keys:
            others = self.watchers.get(key, frozenset()) - {client_id}
            if others:
                self.watchers[key] = others
            else:
                self.watchers.pop(key, None)
        self.dirty.discard(client_id)

    def is_dirty(self, client_id: int) -> bool:
        """A key the client watches was written since: its EXEC will be refused."""
        return client_id in self.dirty

    # -- lookup, through lazy expiry ------------------------------------------

    def value(self, key: bytes) -> bytes | deque | None:
        """What `key` holds, or None when it is missing or past its time (then it is
        deleted here and now, as Redis's expireIfNeeded does)."""
        if self.expires:
            self.expire_if_due(key)
        return self.data.get(key)

    def expire_if_due(self, key: bytes) -> bool:
        """Delete `key` if its time has passed; True if it did. Watchers see a write:
        a key that expires under a WATCH makes the EXEC fail, as in Redis."""
        when = self.expires.get(key)
        if when is None or self.clock() <= when:
            return False
        self._forget(key)
        return True

    def _forget(self, key: bytes) -> None:
        # pop with a default: in `off` mode another thread may have got there first
        self.data.pop(key, None)
        self.expires.pop(key, None)
        self.touch(key)

    # -- strings ------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        if self.expires:   # `value`'s step, written out: GET is the hottest path there is
            self.expire_if_due(key)
        value = self.data.get(key)
        if value is None or type(value) is bytes:
            return value
        raise ReplyError(WRONGTYPE)

    def set(self, key: bytes, value: bytes, keep_ttl: bool = False) -> None:
        """A new value; its time to live goes with the old one unless `keep_ttl`
        (SET KEEPTTL, whose caller has looked the key up, so a time already past
        is not kept)."""
        self.data[key] = value
        if self.expires and not keep_ttl:
            self.expires.pop(key, None)
        self.touch(key)

    def read_int(self, key: bytes) -> int:
        """The counter at key, 0 when missing: the 'read' of read-modify-write."""
        value = self.get(key)
        return 0 if value is None else parse_int(value, NOT_AN_INTEGER)

    def write_int(self, key: bytes, value: int) -> None:
        """The 'write' of read-modify-write. A time to live stays (INCR keeps it, as Redis)."""
        self.data[key] = b"%d" % value
        self.touch(key)

    # -- any type -----------------------------------------------------------

    def exists(self, key: bytes) -> bool:
        return self.value(key) is not None

    def delete(self, key: bytes) -> bool:
        if self.value(key) is None:
            return False
        self._forget(key)
        return True

    def type_of(self, key: bytes) -> str:
        value = self.value(key)
        if value is None:
            return "none"
        return "string" if type(value) is bytes else "list"

    def keys(self, pattern: bytes) -> list[bytes]:
        # list() first: another thread may add a key while we filter.
        names = list(self.data)
        if self.expires:
            # Past their time, not listed; left for the others to delete (as Redis's KEYS).
            now, expires = self.clock(), self.expires
            names = [name for name in names if expires.get(name, now) >= now]
        if pattern == b"*":
            return names
        return [name for name in names if glob_match(pattern, name)]

    def size(self) -> int:
        """Keys held, as Redis's DBSIZE: one past its time counts until it is deleted."""
        return len(self.data)

    def expiring(self) -> int:
        """Keys with a time to live (INFO keyspace's `expires`)."""
        return len(self.expires)

    def flush(self) -> None:
        for key in [key for key in self.watchers if key in self.data]:
            self.touch(key)
        self.data.clear()
        self.expires.clear()

    # -- time to live -------------------------------------------------------

    def expire_at(self, key: bytes, when: int) -> bool:
        """Give `key` a Unix time in ms to go; a time already past deletes it at once.
        False when there is no such key."""
        if self.value(key) is None:
            return False
        if when <= self.clock():
            self._forget(key)
        else:
            self.expires[key] = when
            self.touch(key)
        return True

    def expiry(self, key: bytes) -> int | None:
        """When the (looked-up) key goes, in Unix ms; None when it has no time to live."""
        return self.expires.get(key) if self.expires else None

    def ttl_ms(self, key: bytes) -> int:
        """PTTL: ms left (never below 0), -1 without a time to live, -2 when missing."""
        if self.value(key) is None:
            return -2
        when = self.expiry(key)
        return -1 if when is None else max(when - self.clock(), 0)

    def persist(self, key: bytes) -> bool:
        """Take the time to live away; True if there was one."""
        if self.value(key) is None or self.expires.pop(key, None) is None:
            return False
        self.touch(key)
        return True

    def expire_some(self, count: int) -> tuple[int, int]:
        """Active expiry's one loop: look at `count` keys that have a time to live and
        delete those past it. Returns (looked at, deleted).

        Like Redis's cursor over its expires table, the look goes round: the oldest
        entries first, and each survivor goes to the back of the line, so the next
        loop sees other keys and every key is seen in turn."""
        expires = self.expires
        now = self.clock()
        try:
            sample = list(islice(expires, count))   # one C call: no thread runs in between
        except RuntimeError:   # `off` on a free-threaded build: changed while we looked
            return 0, 0
        expired = 0
        for key in sample:
            when = expires.pop(key, None)
            if when is None:
                continue   # `off` mode: another thread deleted it meanwhile
            if now > when:
                self.data.pop(key, None)
                self.touch(key)
                expired += 1
            else:
                expires[key] = when
        return len(sample), expired

    # -- lists --------------------------------------------------------------

    def _list(self, key: bytes) -> deque | None:
        if self.expires:
            self.expire_if_due(key)
        value = self.data.get(key)
        if value is None or type(value) is deque:
            return value
        raise ReplyError(WRONGTYPE)

    def _emptied(self, key: bytes) -> None:
        # Redis never keeps an empty list, nor the time to live of a key that is gone.
        del self.data[key]
        if self.expires:
            self.expires.pop(key, None)

    def push(self, key: bytes, values: list[bytes], left: bool) -> int:
        items = self._list(key)
        if items is None:
            items = self.data[key] = deque()
        if left:
            items.extendleft(values)
        else:
            items.extend(values)
        self.touch(key)
        return len(items)

    def pop(self, key: bytes, left: bool) -> bytes | None:
        items = self._list(key)
        if not items:
            return None
        value = items.popleft() if left else items.pop()
        if not items:
            self._emptied(key)
        self.touch(key)
        return value

    def pop_many(self, key: bytes, left: bool, count: int) -> list[bytes] | None:
        items = self._list(key)
        if items is None:
            return None
        popped = [items.popleft() if left else items.pop() for _ in range(min(count, len(items)))]
        if not items:
            self._emptied(key)
        if popped:
            self.touch(key)
        return popped

    def length(self, key: bytes) -> int:
        items = self._list(key)
        return 0 if items is None else len(items)

    def range(self, key: bytes, start: int, stop: int) -> list[bytes]:
        items = self._list(key)
        if items is None:
            return []
        size = len(items)
        if start < 0:
            start = max(size + start, 0)
        if stop < 0:
            stop += size
        stop = min(stop, size - 1)
        if start > stop:
            return []
        return list(islice(items, start, stop + 1))
