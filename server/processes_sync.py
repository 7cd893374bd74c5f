"""What the processes model's workers share, and where each piece lives.

Threads share everything unless told otherwise; processes share nothing unless
told. Whatever every worker must see lives in one of two places:

- Shared memory, made before the workers fork: multiprocessing's Lock, RLock,
  Semaphore and Condition (semaphores on a page every worker maps, so taking
  one costs about what a threading lock costs), and small counters in RawArrays.
- The host: one more process (a multiprocessing manager) holding the objects
  that are too rich for shared memory: the keyspace, the BLPOP waiters, the
  pool's ledger, the named barriers and events, and the settings. A worker
  calls their methods through proxies; every call is a round trip over a
  socket, and with `sync off` another worker's calls land between a read and
  its write: the lost update, with no race window at all.

Here: `Host` (the manager) and the hosted objects, `Figures` (each worker's row
of counts for INFO), `StripedLocks`, and the cross-process versions of the
threaded model's `ReadersWriterLock` and `ResizableSemaphore`, which keep the
same logic and move only their counters into shared memory.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
import zlib
from collections import defaultdict
from itertools import count
from multiprocessing.managers import BaseManager, BaseProxy

from contend.server.threads_sync import ReadersWriterLock, ResizableSemaphore
from contend.shared.commands.events import broken, parties_mismatch
from contend.shared.effects import BarrierView
from contend.shared.keyspace import Keyspace
from contend.shared.pool import LeaseLedger
from contend.shared.stepping import Stepper
from contend.shared.waiters import ListWaiter, ListWaiters

# fork: each worker inherits the listening socket, the locks and the proxies as they
# are; spawn would start a fresh interpreter per worker and pickle them all across.
CONTEXT = multiprocessing.get_context("fork")


# -- shared memory --------------------------------------------------------------------

class SharedCount:
    """next() gives a number no other worker gets (client ids): one counter for all."""

    def __init__(self) -> None:
        self._value = CONTEXT.Value("q", 0)   # with a lock: `+= 1` across processes is a race

    def __next__(self) -> int:
        with self._value.get_lock():
            self._value.value += 1
            return self._value.value


class StripedLocks:
    """Lock striping: a fixed array of RLocks, each key hashed to one of them.

    Per-key locks made on demand (the threaded model's KeyLocks) cannot be shared:
    a lock made after the workers fork exists in one process only. So the locks
    are made up front and a key's lock is `crc32(key) % stripes` (Python's hash()
    would do too, since forked workers share its seed, but crc32 says so plainly).
    Two keys may share a stripe: the locks are reentrant, so a command holding
    both keys' stripe takes it twice, and more keys wait on one lock than must.
    """

    def __init__(self, stripes: int = 64):
        self.locks = [CONTEXT.RLock() for _ in range(stripes)]

    def __len__(self) -> int:
        return len(self.locks)

    def index(self, key: bytes) -> int:
        return zlib.crc32(key) % len(self.locks)

    def want(self, key: bytes):
        return self.locks[self.index(key)]


class _SharedFields:
    """Attributes of a threads_sync class moved into a RawArray every worker maps.

    Each listed attribute reads and writes its slot; the class's own lock (a
    multiprocessing one) still orders every change, exactly as before."""

    def __init_subclass__(cls, fields: tuple[str, ...] = (), **kwargs):
        super().__init_subclass__(**kwargs)
        for index, name in enumerate(fields):
            setattr(cls, name, property(
                lambda self, i=index: self._fields[i],
                lambda self, value, i=index: self._fields.__setitem__(i, int(value))))


class SharedReadersWriterLock(_SharedFields, ReadersWriterLock,
                              fields=("_readers", "_writer", "_writers_waiting")):
    """The threaded model's readers-writer lock, its counts in shared memory and its
    Condition a multiprocessing one: the same exercise, across processes."""

    def __init__(self) -> None:
        self._fields = CONTEXT.RawArray("q", 3)
        self._changed = CONTEXT.Condition(CONTEXT.Lock())


class SharedResizableSemaphore(_SharedFields, ResizableSemaphore, fields=("_size", "_debt")):
    """The threaded model's resizable Semaphore with a multiprocessing Semaphore inside:
    the pool's leases and the maxclients slots, counted once for every worker."""

    def __init__(self, size: int):
        self._fields = CONTEXT.RawArray("q", 2)
        self._semaphore = CONTEXT.Semaphore(size)
        self._size = size
        self._lock = CONTEXT.Lock()


class Figures:
    """Each worker's row of counts, in one RawArray: what INFO adds up for the server.

    One worker writes its own row (under its `lock`, since its threads write it
    too); anyone reads any row. The rest of a worker's state (its clients, their
    names) stays in the worker: CLIENT LIST shows the answering worker's clients.
    """

    ROW = ("connected", "blocked", "running", "lists_sleepers", "turn",
           # ServerState.stats, one set per worker:
           "connections_received", "rejected_connections", "commands_of_closed_clients",
           "deadlocks", "internal_errors", "output_disconnects", "preauth_refusals",
           "work_refusals", "denied_connections",
           # counts of live clients, published by each worker now and then (Worker._publish):
           "live_commands", "live_internal_errors", "live_preauth_refusals",
           "live_work_refusals")
    FIELD = {name: index for index, name in enumerate(ROW)}

    def __init__(self, workers: int):
        self.workers = workers
        self._cells = CONTEXT.RawArray("q", workers * len(self.ROW))

    def get(self, slot: int, name: str) -> int:
        return self._cells[slot * len(self.ROW) + self.FIELD[name]]

    def set(self, slot: int, name: str, value: int) -> None:
        self._cells[slot * len(self.ROW) + self.FIELD[name]] = value

    def add(self, slot: int, name: str, change: int) -> None:
        self._cells[slot * len(self.ROW) + self.FIELD[name]] += change

    def total(self, name: str) -> int:
        return sum(self.get(slot, name) for slot in range(self.workers))


class RowStats:
    """A worker's `ServerState.stats`: the same attributes, kept in its row of Figures."""

    def __init__(self, figures: Figures, slot: int):
        object.__setattr__(self, "_where", (figures, slot))
        object.__setattr__(self, "internal_errors_logged", set())

    def __getattr__(self, name: str) -> int:
        figures, slot = self._where
        return figures.get(slot, name)

    def __setattr__(self, name: str, value: int) -> None:
        figures, slot = self._where
        figures.set(slot, name, value)


# -- the host: objects every worker reaches through proxies ------------------------------

class HostedWaiters(ListWaiters):
    """The BLPOP waiters, each known to its worker by a number (the ListWaiter itself
    stays here: a worker holds a copy, which a push could not fill in)."""

    def __init__(self, keyspace: Keyspace):
        super().__init__(keyspace)
        self._entries: dict[int, tuple[ListWaiter, int]] = {}   # token -> (waiter, slot)
        self._tokens = count(1)

    def enlist(self, client_id: int, keys: tuple[bytes, ...], left: bool, slot: int) -> int:
        token = next(self._tokens)
        self._entries[token] = (self.add(ListWaiter(client_id, keys, left)), slot)
        return token

    def served(self, token: int) -> bool:
        entry = self._entries.get(token)
        return entry is not None and entry[0].item is not None

    def withdraw(self, token: int) -> tuple[bytes, bytes] | None:
        """The waiter's wait is over: forget it; returns its item if a push served it."""
        waiter, _slot = self._entries.pop(token)
        self.remove(waiter)   # harmless if it was served
        return waiter.item

    def left_with(self, slot: int) -> list[tuple[bytes, bytes, bool]]:
        """A worker died: forget its waiters, and return (key, value, left) of each item
        a push handed one of them that no reply carried, for the supervisor to hand back."""
        unclaimed = []
        for token, (waiter, owner) in list(self._entries.items()):
            if owner == slot:
                del self._entries[token]
                if waiter.item is None:
                    self.remove(waiter)
                else:
                    unclaimed.append((*waiter.item, waiter.left))
        return unclaimed


class HostedLedger(LeaseLedger):
    """The pool's ledger, which also knows the worker of each lease's holder."""

    def __init__(self, size: int):
        super().__init__(size)
        self._slots: dict[int, int] = {}   # lease -> worker slot

    def grant_to(self, client_id: int, slot: int) -> int:
        lease = self.grant(client_id)
        self._slots[lease] = slot
        return lease

    def revoke(self, lease: int, client_id: int) -> bool:
        if not super().revoke(lease, client_id):
            return False
        self._slots.pop(lease, None)
        return True

    def wait_changed(self, change: int) -> None:
        self.waiting += change

    def timed_out(self) -> None:
        self.timeouts += 1

    def resize(self, size: int) -> None:
        self.size = size

    def left_with(self, slot: int) -> int:
        """A worker died: take back every lease its clients held; returns how many."""
        leases = [lease for lease, owner in list(self._slots.items()) if owner == slot]
        for lease in leases:
            del self.holders[lease], self._slots[lease]
        return len(leases)


class NamedBarrier:
    def __init__(self, parties: int):
        self.rounds = 0
        self.barrier = threading.Barrier(parties, action=self._round_done)
        self.waiting_from: defaultdict[int, int] = defaultdict(int)   # worker slot -> parties

    def _round_done(self) -> None:
        self.rounds += 1


class HostedNames:
    """Named barriers and events, as threading.Barrier and threading.Event in the host.

    multiprocessing.Barrier and Event must exist before the workers fork, and
    these are made by name at run time; so they live here, and a worker waits
    through the host, which is what multiprocessing.Manager().Barrier() does.
    The host serves each worker thread in a thread of its own, so a wait here
    holds up no other caller. `_lock` orders finding, making and forgetting.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.barriers: dict[bytes, NamedBarrier] = {}
        self.events: dict[bytes, threading.Event] = {}
        self.event_waiting: defaultdict[bytes, defaultdict[int, int]] = defaultdict(
            lambda: defaultdict(int))   # name -> worker slot -> waiters

    def counts(self) -> tuple[int, int]:
        return len(self.barriers), len(self.events)

    # -- barriers ----------------------------------------------------------------

    def barrier_wait(self, name: bytes, parties: int, timeout: float | None, slot: int) -> int:
        with self._lock:
            named = self.barriers.get(name)
            if named is None:
                named = self.barriers[name] = NamedBarrier(parties)
            elif named.barrier.parties != parties:
                raise parties_mismatch(name, named.barrier.parties, parties)
            named.waiting_from[slot] += 1
        try:
            return named.barrier.wait(timeout)
        except threading.BrokenBarrierError:
            raise broken(name) from None
        finally:
            with self._lock:
                named.waiting_from[slot] -= 1

    def barrier_abort(self, name: bytes) -> None:
        named = self.barriers.get(name)
        if named is not None:
            named.barrier.abort()

    def barrier_reset(self, name: bytes) -> bool:
        with self._lock:
            named = self.barriers.pop(name, None)
        if named is None:
            return False
        named.barrier.reset()
        return True

    def barrier_status(self, name: bytes) -> BarrierView | None:
        named = self.barriers.get(name)
        if named is None:
            return None
        barrier = named.barrier
        return BarrierView(barrier.parties, barrier.n_waiting, barrier.broken, named.rounds)

    # -- events (one exists only while it is set or waited for, as in the threads model) --

    def event_set(self, name: bytes) -> int:
        with self._lock:
            event = self.events.setdefault(name, threading.Event())
            released = 0 if event.is_set() else sum(self.event_waiting[name].values())
            event.set()
        return released

    def event_clear(self, name: bytes) -> None:
        with self._lock:
            event = self.events.get(name)
            if event is not None:
                event.clear()
                self._forget_if_idle(name)

    def event_isset(self, name: bytes) -> bool:
        event = self.events.get(name)
        return event is not None and event.is_set()

    def event_enter(self, name: bytes, slot: int) -> None:
        with self._lock:
            self.events.setdefault(name, threading.Event())
            self.event_waiting[name][slot] += 1

    def event_wait(self, name: bytes, seconds: float) -> bool:
        """One slice of a wait (the worker checks for a hang-up between slices)."""
        return self.events[name].wait(seconds)

    def event_leave(self, name: bytes, slot: int) -> None:
        with self._lock:
            self.event_waiting[name][slot] -= 1
            self._forget_if_idle(name)

    def _forget_if_idle(self, name: bytes) -> None:
        waiting = self.event_waiting.get(name)
        if waiting is not None and not any(waiting.values()):
            del self.event_waiting[name]
            waiting = None
        event = self.events.get(name)
        if waiting is None and event is not None and not event.is_set():
            del self.events[name]

    def left_with(self, slot: int) -> None:
        """A worker died: a barrier it had parties at breaks (as when a party's client
        leaves), and its event waiters are no longer counted."""
        with self._lock:
            stranded = [named for named in self.barriers.values() if named.waiting_from[slot]]
            for name, waiting in list(self.event_waiting.items()):
                waiting.pop(slot, None)
                self._forget_if_idle(name)
        for named in stranded:
            named.barrier.abort()


class HostedSettings:
    """CONFIG SET's changes, for every worker to follow (ProcessState.due_chore)."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}

    def publish(self, changes: dict[str, object]) -> None:
        self.values.update(changes)

    def read(self) -> dict[str, object]:
        return dict(self.values)


class HostedClients:
    """CLIENT LIST's lines of every worker's clients, as each worker last told."""

    def __init__(self) -> None:
        self._lines: dict[int, dict[int, bytes]] = {}   # slot -> client id -> line

    def put(self, slot: int, client_id: int, line: bytes) -> None:
        self._lines.setdefault(slot, {})[client_id] = line

    def drop(self, slot: int, client_id: int) -> None:
        self._lines.get(slot, {}).pop(client_id, None)

    def refresh(self, slot: int, lines: dict[int, bytes]) -> None:
        self._lines[slot] = lines

    def others(self, slot: int) -> list[tuple[int, bytes]]:
        return [line for other, lines in self._lines.items() if other != slot
                for line in lines.items()]

    def left_with(self, slot: int) -> None:
        self._lines.pop(slot, None)


class Hosted:
    """The host's objects, made once in the host process (Host's initializer)."""
    keyspace: Keyspace
    waiters: HostedWaiters
    ledger: HostedLedger
    names: HostedNames
    settings: HostedSettings
    clients: HostedClients
    stepper: Stepper

    @classmethod
    def make(cls, pool_size: int) -> None:
        # The host must outlive a Ctrl-C to the process group: the supervisor stops it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        cls.keyspace = Keyspace()
        cls.waiters = HostedWaiters(cls.keyspace)
        cls.ledger = HostedLedger(pool_size)
        cls.names = HostedNames()
        cls.settings = HostedSettings()
        cls.clients = HostedClients()
        cls.stepper = Stepper()   # step mode's parked commands, whichever worker runs them


def _proxy_type(name: str, cls: type, extra: tuple[str, ...] = ()) -> type[BaseProxy]:
    """A proxy class whose every public method (and `extra`) is a call into the host."""
    methods = tuple(sorted({attr for attr in dir(cls)
                            if not attr.startswith("_") and callable(getattr(cls, attr))}
                           | set(extra)))

    def call(method):
        return lambda self, *args, **kwds: self._callmethod(method, args, kwds)

    return type(name, (BaseProxy,), {"_exposed_": methods,
                                     **{method: call(method) for method in methods}})


class Host(BaseManager):
    """The manager process that holds the Hosted objects; a worker reaches them by proxy."""


for _name, _cls, _extra in (("keyspace", Keyspace, ("clock",)),
                            ("waiters", HostedWaiters, ("__len__",)),
                            ("ledger", HostedLedger, ()),
                            ("names", HostedNames, ()),
                            ("settings", HostedSettings, ()),
                            ("clients", HostedClients, ()),
                            ("stepper", Stepper, ())):
    Host.register(_name, callable=lambda name=_name: getattr(Hosted, name),
                  proxytype=_proxy_type(f"{_cls.__name__}Proxy", _cls, _extra))
