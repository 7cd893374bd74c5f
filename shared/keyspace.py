"""The data: a dict of keys to strings (bytes) and lists (deques).

Every method is a single step with no waiting and no locking; whoever calls it
decides what guards it (docs/design.md: the models differ in exactly that). Counters
are stored as their decimal text, as in Redis, so GET sees what INCR wrote.
"""

from __future__ import annotations

from collections import deque
from itertools import islice

from contend.shared.args import NOT_AN_INTEGER, WRONGTYPE, glob_match, parse_int
from contend.shared.resp import ReplyError


class Keyspace:
    __slots__ = ("data", "watchers")

    def __init__(self) -> None:
        self.data: dict[bytes, bytes | deque] = {}
        # WATCH: each watched key and the clients watching it; a write to it makes
        # their EXEC fail (WATCH and EXEC). Empty, it costs a write nothing.
        self.watchers: dict[bytes, set] = {}

    def touch(self, key: bytes) -> None:
        """`key` was written: every client watching it will have its EXEC refused."""
        if self.watchers:
            for client in self.watchers.get(key, ()):
                client.dirty = True

    # -- strings ------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        value = self.data.get(key)
        if value is None or type(value) is bytes:
            return value
        raise ReplyError(WRONGTYPE)

    def set(self, key: bytes, value: bytes) -> None:
        self.data[key] = value
        self.touch(key)

    def read_int(self, key: bytes) -> int:
        """The counter at key, 0 when missing: the 'read' of read-modify-write."""
        value = self.get(key)
        return 0 if value is None else parse_int(value, NOT_AN_INTEGER)

    def write_int(self, key: bytes, value: int) -> None:
        """The 'write' of read-modify-write."""
        self.data[key] = b"%d" % value
        self.touch(key)

    # -- any type -----------------------------------------------------------

    def exists(self, key: bytes) -> bool:
        return key in self.data

    def delete(self, key: bytes) -> bool:
        if self.data.pop(key, None) is None:
            return False
        self.touch(key)
        return True

    def type_of(self, key: bytes) -> str:
        value = self.data.get(key)
        if value is None:
            return "none"
        return "string" if type(value) is bytes else "list"

    def keys(self, pattern: bytes) -> list[bytes]:
        # list() first: another thread may add a key while we filter.
        names = list(self.data)
        if pattern == b"*":
            return names
        return [name for name in names if glob_match(pattern, name)]

    def size(self) -> int:
        return len(self.data)

    def flush(self) -> None:
        for key in [key for key in self.watchers if key in self.data]:
            self.touch(key)
        self.data.clear()

    # -- lists --------------------------------------------------------------

    def _list(self, key: bytes) -> deque | None:
        value = self.data.get(key)
        if value is None or type(value) is deque:
            return value
        raise ReplyError(WRONGTYPE)

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
            del self.data[key]  # Redis never keeps an empty list
        self.touch(key)
        return value

    def pop_many(self, key: bytes, left: bool, count: int) -> list[bytes] | None:
        items = self._list(key)
        if items is None:
            return None
        popped = [items.popleft() if left else items.pop() for _ in range(min(count, len(items)))]
        if not items:
            del self.data[key]
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
