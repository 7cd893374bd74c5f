"""What the threaded model needs that `threading` lacks, mostly because a blocked
thread can do nothing else.

- `ReadersWriterLock`: many at once or one alone, built from a threading.Condition.
- `ResizableSemaphore`: a threading.Semaphore whose size CONFIG SET can change.
- `HangupWatcher`: one thread that notices when a blocked client hangs up;
  `client_left` asks the socket itself, once a wait is over.
- `wait_in_slices`: for primitives nobody can interrupt, wait a little at a time.
- `KeyLocks`: a reentrant lock per key, forgotten when nobody uses it.
"""

from __future__ import annotations

import select
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import contextmanager, suppress

SLICE = 0.05   # how often an uninterruptible wait looks up to check for a hang-up


class ReadersWriterLock:
    """Many holders at once (shared), or one alone (exclusive): the keyspace lock of
    `striped` and `unordered`. Per-key commands hold it shared, side by side; a
    command over the whole keyspace (FLUSHALL, KEYS, DBSIZE) holds it exclusive.

    Python has no such lock, so this is the classic exercise: a count of holders
    and one threading.Condition that whoever changes the count notifies. Writers
    come first: once one waits, new readers wait behind it, or a steady stream of
    INCRs would keep FLUSHALL waiting forever.

    It is not reentrant: a reader asking again behind a waiting writer would wait
    for a writer that waits for it (so nested guards never take it twice).
    """

    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._readers = 0           # holding it shared now
        self._writer = False        # someone holds it exclusive
        self._writers_waiting = 0   # while any wait, new readers wait too

    def acquire_shared(self, timeout: float | None = None) -> bool:
        with self._changed:
            if not self._changed.wait_for(lambda: not self._writer and not self._writers_waiting,
                                          timeout):
                return False
            self._readers += 1
            return True

    def release_shared(self) -> None:
        with self._changed:
            self._readers -= 1
            if not self._readers:
                self._changed.notify_all()   # a waiting writer may go now

    def acquire_exclusive(self, timeout: float | None = None) -> bool:
        with self._changed:
            self._writers_waiting += 1
            got = self._changed.wait_for(lambda: not self._writer and not self._readers, timeout)
            self._writers_waiting -= 1
            if got:
                self._writer = True
            else:
                self._changed.notify_all()   # readers held back for this writer may go
            return got

    def release_exclusive(self) -> None:
        with self._changed:
            self._writer = False
            self._changed.notify_all()   # the next writer, or else every waiting reader

    @contextmanager
    def shared(self):
        self.acquire_shared()
        try:
            yield
        finally:
            self.release_shared()

    @contextmanager
    def exclusive(self):
        self.acquire_exclusive()
        try:
            yield
        finally:
            self.release_exclusive()


class ResizableSemaphore:
    """A threading.Semaphore of `size` permits, resizable while permits are out.

    Growing releases the extra permits; shrinking takes the free ones now and
    records the rest as a debt that returning permits pay off, so the number
    out never exceeds the new size once they come back.
    """

    def __init__(self, size: int):
        self._semaphore = threading.Semaphore(size)
        self._size = size
        self._debt = 0
        self._lock = threading.Lock()   # guards _size and _debt, never held while waiting

    def acquire(self, timeout: float | None = None) -> bool:
        return self._semaphore.acquire(timeout=timeout)

    def release(self) -> None:
        with self._lock:
            if self._debt:
                self._debt -= 1
                return
        self._semaphore.release()

    def resize(self, size: int) -> None:
        with self._lock:
            change, self._size = size - self._size, size
            while change > 0 and self._debt:
                self._debt -= 1
                change -= 1
            for _ in range(max(change, 0)):   # one by one: multiprocessing's release takes no n
                self._semaphore.release()
            while change < 0 and self._semaphore.acquire(False):   # threading: blocking; mp: block
                change += 1
            self._debt += -change if change < 0 else 0


def wait_in_slices(attempt: Callable[[float], bool], timeout: float | None,
                   hung_up: threading.Event) -> bool:
    """Call attempt(seconds) until it succeeds, the timeout passes or the client hangs up.

    A thread in Semaphore.acquire or Event.wait cannot be woken for one
    particular waiter (a release or a set would serve someone else), so these
    waits look up every SLICE seconds to see whether their client is gone.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        remaining = SLICE if deadline is None else deadline - time.monotonic()
        if attempt(max(0.0, min(SLICE, remaining))):
            return True
        if hung_up.is_set() or (deadline is not None and remaining <= SLICE):
            return False


class HangupWatcher:
    """Watches the sockets of blocked clients and interrupts a wait when one hangs up.

    A thread blocked in Condition.wait or Barrier.wait is not reading its
    socket, so it cannot see its client leave. This one thread does it for
    all of them with a selector, then wakes the wait the way its primitive
    allows: notify a Condition, abort a Barrier, set the connection's
    `hung_up` Event.
    """

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        # A poke comes from a thread that may hold the keyspace lock (pop_wait): it must
        # never wait for the watcher, so a full buffer drops it (see _poke).
        self._wake_writer.setblocking(False)
        self._selector.register(self._wake_reader, selectors.EVENT_READ)
        # Only the watcher thread touches the selector; others queue requests.
        self._requests: deque = deque()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="hangup-watcher", daemon=True)
        self._thread.start()

    def watch(self, sock: socket.socket, hung_up: threading.Event,
              interrupt: Callable[[], None] | None) -> None:
        self._requests.append((True, sock, (hung_up, interrupt)))
        self._poke()

    def unwatch(self, sock: socket.socket) -> None:
        self._requests.append((False, sock, None))
        self._poke()

    def close(self) -> None:
        self._closed = True
        self._poke()
        self._thread.join(timeout=1)

    def _poke(self) -> None:
        with suppress(OSError):   # the wake-up buffer is full: the watcher is awake anyway
            self._wake_writer.send(b"\0")

    def _run(self) -> None:
        while not self._closed:
            for key, _ in self._selector.select():
                if key.fileobj is self._wake_reader:
                    self._apply_requests()
                elif self._selector.get_map().get(key.fd) is key:
                    # (skipped when a request earlier in this batch unwatched it)
                    self._check(key.fileobj, *key.data)
        self._selector.close()

    def _apply_requests(self) -> None:
        try:
            while self._wake_reader.recv(4096):
                pass
        except BlockingIOError:
            pass
        while self._requests:
            add, sock, data = self._requests.popleft()
            try:
                if add:
                    self._selector.register(sock, selectors.EVENT_READ, data)
                else:
                    self._selector.unregister(sock)
            except (KeyError, ValueError, OSError):
                pass   # already gone: the client was quicker than the watcher

    def _check(self, sock: socket.socket, hung_up: threading.Event,
               interrupt: Callable[[], None] | None) -> None:
        self._selector.unregister(sock)
        try:
            left = client_left(sock)
            if left is None:   # a spurious wake-up: keep watching
                self._selector.register(sock, selectors.EVENT_READ, (hung_up, interrupt))
        except ValueError:
            # Closed since select() saw it: its wait ended and its thread closed the
            # socket (the unwatch is still queued). Nothing to wake; and an exception
            # here would end this thread, after which no hang-up would be noticed.
            return
        if left:
            hung_up.set()
            if interrupt is not None:
                interrupt()
        # Else it sent more bytes: it is still there. We stop watching (it would
        # keep the selector busy) and it is served once its wait is over.


def client_left(sock: socket.socket) -> bool | None:
    """Has the client closed its end? Asked without waiting and without reading:
    True (end of file, or a reset), False (it sent more bytes), None (nothing yet)."""
    # Polled first: on a socket with an idle timeout, recv waits out the timeout
    # even when told MSG_DONTWAIT.
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    if not poller.poll(0):
        return None
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class KeyLocks:
    """A reentrant lock per key, kept only while some thread holds or wants it.

    Without the forgetting every key ever guarded would keep its lock for the
    server's life, long after DEL or FLUSHALL. An entry is dropped only when
    nobody holds or waits for it, so two threads can never hold two different
    locks for one key. The registry's own mutex is held only to find or drop
    an entry, never while waiting for a key.
    """

    def __init__(self) -> None:
        self._entries: dict[bytes, KeyLock] = {}
        self._mutex = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def want(self, key: bytes) -> KeyLock:
        with self._mutex:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = KeyLock(self, key)
            entry.users += 1
            return entry

    def _done_with(self, entry: KeyLock) -> None:
        with self._mutex:
            entry.users -= 1
            if entry.users == 0:
                del self._entries[entry.key]


class KeyLock:
    __slots__ = ("registry", "key", "lock", "users")

    def __init__(self, registry: KeyLocks, key: bytes):
        self.registry, self.key = registry, key
        self.lock = threading.RLock()
        self.users = 0   # holders and waiters, each acquire counted once

    def acquire(self, timeout: float = -1) -> bool:
        if self.lock.acquire(timeout=timeout):
            return True
        self.registry._done_with(self)   # gave up waiting: no longer a user
        return False

    def release(self) -> None:
        self.lock.release()
        self.registry._done_with(self)
