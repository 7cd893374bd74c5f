"""The processes model: N worker processes serve one listening socket and share one keyspace.

    supervisor   opens the listening socket, starts the host and the workers, frees what a
                 dead worker's clients held and starts another in its place (Server._bury),
                 stops them all on SIGTERM, SIGINT or SHUTDOWN (Server.serve_forever)
    workers      each is the threaded server of server/threads.py with multiprocessing's
                 primitives in place of threading's (Worker); they take turns at the door,
                 one accept each, so two clients run in two processes (Worker.serve_forever)
    keyspace     in the host process, every read and every write a round trip through a
                 proxy (processes_sync.Host); guarded by a multiprocessing.RLock (`lock`), or a
                 readers-writer lock in shared memory, then a fixed array of RLocks with each
                 key hashed to one (`striped`, `unordered`: Worker._lock_key)
    lists        a multiprocessing.Condition on the keyspace RLock (Worker.pop_wait)
    pool         a multiprocessing.Semaphore of `pool-size` permits (Worker.lease_acquire)
    barriers     threading.Barrier in the host, waited on through it (Worker.barrier_wait)
    events       threading.Event in the host (Worker.event_wait)
    settings     CONFIG SET publishes to the host; each worker follows before its next
                 command (ProcessState.due_chore)

Each worker has its own interpreter and its own GIL, so two workers really run at
once: WORK on two clients takes the time of one, where the threads model takes
twice as long. And with `sync off` updates are lost with no race window at all:
between an INCR's read and its write (two calls into the host) another worker's
calls land.

Where the keyspace lives, and what it costs per INCR (`python3 labs/sharing_costs.py`,
this machine, one process incrementing, no contention; a dict in one process: 0.05 us):
a manager's dict proxy (get, then set) ~80 us; the keyspace in a manager, as here
(read_int, then write_int) ~75 us; a counter in shared memory under a
multiprocessing.Lock ~0.2 us, but only for integers at places fixed before the fork;
an owner process per key, asked through a pipe, ~40 us, and no race left to show,
since the owner does the read and the write together. The host keeps every command's
meaning in shared/ and the race visible, at the price of the round trips.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import threading
import time
from contextlib import contextmanager, suppress
from multiprocessing.connection import wait as wait_for_any

from contend.server import open_listener
from contend.server import threads as threaded
from contend.server.descriptors import SpareDescriptor
from contend.server.processes_sync import (
    CONTEXT,
    Figures,
    Host,
    Hosted,
    RowStats,
    SharedCount,
    SharedReadersWriterLock,
    SharedResizableSemaphore,
    StripedLocks,
)
from contend.server.threads_sync import HangupWatcher, wait_in_slices
from contend.shared import effects as fx
from contend.shared.commands.expiry import ACTIVE_EXPIRY_PERIOD_MS, active_expiry_steps
from contend.shared.commands.lists import Handed, hand_back_steps
from contend.shared.guards import KEY
from contend.shared.state import Client, ServerState

log = logging.getLogger("contend.processes")

TURN_LOOK = 0.5      # seconds a worker waits for its turn at the door before looking up
PUBLISH_EVERY = 0.1  # seconds between a worker's updates of its live clients' counts
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
GRACE = threaded.GRACE + 1.0   # seconds workers get to stop before they are killed


class Commons:
    """Everything the workers share, made by the supervisor before they fork."""

    def __init__(self, config, workers: int):
        self.workers = workers
        self.started = time.time()
        self.supervisor_pid = os.getpid()
        self.host = Host(ctx=CONTEXT)
        self.host.start(Hosted.make, (config.pool_size,))
        self.keyspace, self.waiters = self.host.keyspace(), self.host.waiters()
        self.ledger, self.names = self.host.ledger(), self.host.names()
        self.settings, self.clients = self.host.settings(), self.host.clients()
        self.stepper = self.host.stepper()
        # One reentrant lock over the keyspace, as in the threads model: BANK.TRANSFER
        # takes it, then its withdraw and deposit steps take it again.
        self.keyspace_lock = CONTEXT.RLock()
        # BLPOP waits on it; its lock is the keyspace lock, the last step of every list command.
        self.lists_changed = CONTEXT.Condition(self.keyspace_lock)
        self.keyspace_rw = SharedReadersWriterLock()
        self.stripes = StripedLocks()
        self.leases = SharedResizableSemaphore(config.pool_size)
        self.client_slots = SharedResizableSemaphore(config.maxclients)
        # The ledger's changes, across workers (the threads model's books_lock).
        self.books_lock = CONTEXT.Lock()
        # The door: one turn passes from worker to worker (Worker.serve_forever).
        self.turns = [CONTEXT.Semaphore(0) for _ in range(workers)]
        self.turns[0].release()
        self.figures = Figures(workers)
        self.client_ids = SharedCount()
        # Bumped by each CONFIG SET; a worker that sees it move reads the settings again.
        self.generation = CONTEXT.Value("q", 0)

    def close(self) -> None:
        with suppress(Exception):
            self.host.shutdown()


class ProcessState(ServerState):
    """One worker's ServerState: the keyspace, waiters and ledger are the host's (proxies),
    the counts are this worker's row of Figures, and INFO adds up every row."""

    def __init__(self, config, commons: Commons, slot: int):   # no super(): nothing local
        self.config = config
        self.keyspace, self.waiters, self.ledger = commons.keyspace, commons.waiters, commons.ledger
        self.stepper = commons.stepper
        self.clients: dict[int, Client] = {}
        self.figures, self.slot = commons.figures, slot
        self.stats = RowStats(commons.figures, slot)
        self.started = commons.started
        self._client_ids = commons.client_ids
        self.row_lock = threading.Lock()   # this worker's threads all write its row
        self._settings, self._generation = commons.settings, commons.generation
        self._seen = self._generation.value
        self._following = threading.Lock()
        self._next_expiry_look = 0.0
        self._listed = commons.clients
        # Held over each telling of the host, so a refresh from a snapshot cannot land
        # after (and undo) a newer client's put or drop.
        self._telling = threading.Lock()

    def row_add(self, name: str, change: int) -> None:
        with self.row_lock:
            self.figures.add(self.slot, name, change)

    def connect(self, addr: str = "", laddr: str = "") -> Client:
        self.follow()   # a new client meets today's requirepass, not the one at the last command
        client = super().connect(addr, laddr)
        self.row_add("connected", 1)
        self.client_changed(client)
        return client

    def disconnect(self, client: Client) -> None:
        super().disconnect(client)
        self.row_add("connected", -1)
        with self._telling:
            self._listed.drop(self.slot, client.id)

    def client_changed(self, client: Client) -> None:
        with self._telling:
            self._listed.put(self.slot, client.id, client.describe())

    def client_lines(self) -> list[tuple[int, bytes]]:
        """This worker's clients as they are now, the others' as last told."""
        return super().client_lines() + self._listed.others(self.slot)

    def tell_clients(self) -> None:
        """Every client of this worker afresh (their idle time and last command move)."""
        with self._telling:
            self._listed.refresh(self.slot, dict(super().client_lines()))

    def due_chore(self):
        """Before each command: follow another worker's CONFIG SET, then active expiry."""
        self.follow()
        now = time.monotonic()
        if now < self._next_expiry_look:
            return None
        self._next_expiry_look = now + ACTIVE_EXPIRY_PERIOD_MS / 1000
        return active_expiry_steps(self.keyspace) if self.keyspace.expiring() else None

    def follow(self) -> None:
        """Take the settings another worker's CONFIG SET published, if any are new."""
        if self._generation.value != self._seen:
            # One thread follows while the others of this worker wait: a command must not
            # start in the old mode because another thread has begun (not finished) following.
            with self._following:
                generation = self._generation.value
                if generation != self._seen:
                    for name, value in self._settings.read().items():
                        setattr(self.config, name, value)
                    self._seen = generation

    # The figures INFO reports, over every worker.

    def total(self, name: str) -> int:
        return self.figures.total(name)

    def _live(self, name: str) -> int:
        """A count over the live clients: this worker's now, the others' as last published."""
        here = sum(getattr(client, name) for client in list(self.clients.values()))
        return here + sum(self.figures.get(slot, "live_" + name)
                          for slot in range(self.figures.workers) if slot != self.slot)

    def tally(self, name: str) -> int:
        return self.figures.total(name) + self._live(name)

    def commands_processed(self) -> int:
        return self.figures.total("commands_of_closed_clients") + self._live("commands")

    def connected_clients(self) -> int:
        return self.figures.total("connected")

    def blocked_clients(self) -> int:
        return self.figures.total("blocked")

    def commands_in_flight(self, asking: Client | None = None) -> int:
        return self.figures.total("running") - int(asking is not None and asking.running)

    def reset_stats(self) -> None:
        for slot in range(self.figures.workers):
            self.figures.set(slot, "rejected_connections", 0)
            self.figures.set(slot, "deadlocks", 0)
        self.ledger.reset_figures()


class Worker(threaded.Server):
    """The threaded server, sharing its keyspace, locks and pool with its sibling workers.

    Everything threads.Server makes for itself in its __init__ is made once, before
    the fork, by the supervisor (Commons); multiprocessing's Lock, RLock, Condition
    and Semaphore have threading's API, so most of threads.Server runs unchanged.
    What differs is below: the door, striping, and the waits whose state must be
    found by another process (BLPOP's waiter, a lease, a barrier, an event)."""

    def __init__(self, config, commons: Commons, slot: int, listener: socket.socket):
        self.config = config
        self.commons, self.slot = commons, slot
        self.state = ProcessState(config, commons, slot)
        self.keyspace_lock = commons.keyspace_lock
        self.lists_changed = commons.lists_changed
        self.keyspace_rw = commons.keyspace_rw
        self.key_locks = commons.stripes
        self.leases = commons.leases
        self.books_lock = commons.books_lock
        self.client_slots = commons.client_slots
        self.names = commons.names
        self.stopping = threading.Event()
        self.watcher = HangupWatcher()
        self.connections: set[threaded.Connection] = set()
        self.threads: set[threading.Thread] = set()
        self.listener = listener
        self.spare = SpareDescriptor()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_writer.setblocking(False)
        self.perform = fx.performers(self)

    # -- the door: one turn, passed from worker to worker ---------------------------

    def serve_forever(self) -> None:
        """Accept one client when it is this worker's turn, then pass the turn on.

        Every worker waiting on the listening socket would wake for each client and
        the kernel would pick any of them: two clients could well land on one worker
        and share its GIL. Passing one turn round gives client k to worker k mod N."""
        threading.Thread(target=self._publish, name="figures", daemon=True).start()
        self.listener.setblocking(False)
        my_turn = self.commons.turns[self.slot]
        next_turn = self.commons.turns[(self.slot + 1) % self.commons.workers]
        while not self.stopping.is_set():
            if not my_turn.acquire(timeout=TURN_LOOK):
                continue
            self.state.figures.set(self.slot, "turn", 1)
            try:
                if self._client_waiting():
                    self._accept()
            finally:
                self.state.figures.set(self.slot, "turn", 0)
                next_turn.release()
        self._finish()

    def _client_waiting(self) -> bool:
        """Wait until a client is at the door (True) or the worker is told to stop."""
        readable = wait_for_any([self.listener, self._wake_reader])
        return self.listener in readable and not self.stopping.is_set()

    def _publish(self) -> None:
        """Now and then, this worker's live clients' counts into its row (for INFO)."""
        while not self.stopping.wait(PUBLISH_EVERY):
            clients = list(self.state.clients.values())
            for name in ("commands", "internal_errors", "preauth_refusals", "work_refusals"):
                self.state.figures.set(self.slot, "live_" + name,
                                       sum(getattr(client, name) for client in clients))
            self.state.tell_clients()

    def run(self, conn, call) -> None:
        self.state.row_add("running", 1)
        try:
            super().run(conn, call)
        finally:
            self.state.row_add("running", -1)

    @contextmanager
    def _blocked(self, conn, interrupt=None):
        self.state.row_add("blocked", 1)
        try:
            with super()._blocked(conn, interrupt):
                yield
        finally:
            self.state.row_add("blocked", -1)

    # -- striping ---------------------------------------------------------------------

    def _lock_key(self, conn, step, plan) -> None:
        if conn.session.client.sync != "striped":
            super()._lock_key(conn, step, plan)   # unordered: argument order, with patience
            return
        # The plan sorts keys, but stripes do not follow key order (b may hash below a):
        # two transfers could then take two stripes in opposite orders. So the first key
        # step takes every stripe the command needs, lowest first: one order for all.
        key_steps = [s for s in plan if s.lock == KEY]
        if step is not key_steps[0]:
            return
        for index in sorted({self.key_locks.index(s.key) for s in key_steps}):
            lock = self.key_locks.locks[index]
            lock.acquire()
            conn.held.callback(lock.release)

    # -- waits whose state another process must find ----------------------------------

    def pop_wait(self, conn, effect: fx.PopWait):
        waiters = self.state.waiters
        with self.lists_changed:
            # The waiter is registered in the host, where a push in any worker serves it;
            # this worker keeps only its number.
            token = waiters.enlist(conn.session.client.id, effect.keys, effect.left, self.slot)
            conn.held.close()
            try:
                with self._blocked(conn, interrupt=self._notify_lists):
                    # Counted, so that if this process dies asleep the supervisor can tell
                    # the Condition (a notify waits for every sleeper it wakes to answer).
                    self.state.row_add("lists_sleepers", 1)
                    try:
                        self.lists_changed.wait_for(
                            lambda: waiters.served(token) or conn.hung_up.is_set()
                            or self.stopping.is_set(), effect.timeout)
                    finally:
                        self.state.row_add("lists_sleepers", -1)
            finally:
                item = waiters.withdraw(token)   # after this no push can serve it
        return item

    def lease_acquire(self, conn, effect: fx.LeaseAcquire):
        ledger = self.state.ledger
        with self.books_lock:
            ledger.wait_changed(1)
        try:
            with self._blocked(conn):
                got = wait_in_slices(self.leases.acquire, effect.timeout, conn.hung_up)
        finally:
            with self.books_lock:
                ledger.wait_changed(-1)
        # The ledger names the worker too: if this process dies, the supervisor
        # returns the lease's permit for it.
        with self.books_lock:
            if not got:
                ledger.timed_out()
                return None
            return ledger.grant_to(conn.session.client.id, self.slot)

    def barrier_wait(self, conn, effect: fx.BarrierWait) -> int:
        # A party that hangs up aborts the barrier, so the others don't wait forever.
        with self._blocked(conn, interrupt=lambda: self.names.barrier_abort(effect.name)):
            return self.names.barrier_wait(effect.name, effect.parties, effect.timeout, self.slot)

    def barrier_reset(self, conn, effect: fx.BarrierReset) -> bool:
        return self.names.barrier_reset(effect.name)

    def barrier_status(self, conn, effect: fx.BarrierStatus):
        return self.names.barrier_status(effect.name)

    def event_set(self, conn, effect: fx.EventSet) -> int:
        return self.names.event_set(effect.name)

    def event_clear(self, conn, effect: fx.EventClear) -> None:
        self.names.event_clear(effect.name)

    def event_isset(self, conn, effect: fx.EventIsSet) -> bool:
        return self.names.event_isset(effect.name)

    def event_wait(self, conn, effect: fx.EventWait) -> bool:
        self.names.event_enter(effect.name, self.slot)
        try:
            with self._blocked(conn):
                return wait_in_slices(lambda seconds: self.names.event_wait(effect.name, seconds),
                                      effect.timeout, conn.hung_up)
        finally:
            self.names.event_leave(effect.name, self.slot)

    # -- server-wide --------------------------------------------------------------------

    def reconfigure(self, conn, effect: fx.Reconfigure) -> None:
        generation = self.commons.generation
        with generation.get_lock():
            self.commons.settings.publish({name: getattr(self.config, name)
                                           for name in effect.names})
            generation.value += 1
        # The shared semaphores are resized once, here, for every worker.
        if "pool_size" in effect.names:
            with self.books_lock:
                self.state.ledger.resize(self.config.pool_size)
            self.leases.resize(self.config.pool_size)
        if "maxclients" in effect.names:
            self.client_slots.resize(self.config.maxclients)

    def model_info(self, conn, effect: fx.ModelInfo) -> dict:
        barriers, events = self.names.counts()
        return {"workers": self.commons.workers, "worker": self.slot,
                "threads_alive": threading.active_count(), "key_locks": len(self.key_locks),
                "barriers": barriers, "events": events}

    def shutdown(self, conn, effect: fx.Shutdown) -> None:
        os.kill(self.commons.supervisor_pid, signal.SIGTERM)   # it stops every worker


def _work(config, commons: Commons, slot: int, listener: socket.socket) -> None:
    """A worker process's life."""
    _die_with_parent()
    worker = Worker(config, commons, slot, listener)
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda *_: worker.stop())
    # Blocked since the fork (Server._start): one that came meanwhile is delivered now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    worker.serve_forever()


def _die_with_parent() -> None:
    """Ask Linux to end this worker if the supervisor dies (even by SIGKILL): no orphan
    workers left serving a port nobody can stop."""
    with suppress(OSError, AttributeError):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Server:
    """The supervisor: it accepts nothing itself; it starts, watches and stops the workers."""

    def __init__(self, config):
        self.config = config
        self.workers = config.workers if config.workers > 0 else (os.cpu_count() or 1)
        self.stopping = threading.Event()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)   # a signal handler must never block on it
        self.processes: list = []
        self._turn_unseen = 0   # looks in a row that found no turn (_look_for_the_turn)

    def listen(self) -> None:
        # The host first: forked before the listening socket exists, it holds no copy of it.
        self.commons = Commons(self.config, self.workers)
        try:
            self.listener = open_listener(self.config, self.stop)
        except BaseException:
            self.commons.close()
            raise
        self.processes = [self._start(slot) for slot in range(self.workers)]

    def _start(self, slot: int):
        for name in ("connected", "blocked", "running", "lists_sleepers", "turn",
                     "live_commands", "live_internal_errors", "live_preauth_refusals",
                     "live_work_refusals"):
            self.commons.figures.set(slot, name, 0)
        process = CONTEXT.Process(target=_work, name=f"contend-worker-{slot}",
                                  args=(self.config, self.commons, slot, self.listener))
        # Until the worker has its own handlers, a SIGTERM would run the supervisor's
        # (copied by the fork) and be lost: the child starts with them blocked.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return process

    def serve_forever(self) -> None:
        while not self.stopping.is_set():
            sentinels = {process.sentinel: slot for slot, process in enumerate(self.processes)}
            ready = wait_for_any([*sentinels, self._wake_reader], timeout=TURN_LOOK)
            for one in ready:
                if one is self._wake_reader:
                    with suppress(BlockingIOError):
                        self._wake_reader.recv(4096)
                elif not self.stopping.is_set():
                    self._replace(sentinels[one])
            if not ready:
                self._look_for_the_turn()
        self._finish()

    def _look_for_the_turn(self) -> None:
        """Put a new turn in play if a client waits and the turn is nowhere, twice running.

        A worker SIGKILLed between taking the turn and raising its flag (or lowering the
        flag and passing the turn on) takes the turn with it, and nobody would accept
        again. A live worker is in such a gap for a few instructions, never for two looks
        TURN_LOOK apart."""
        commons = self.commons
        visible = (any(turn.get_value() for turn in commons.turns)
                   or any(commons.figures.get(slot, "turn") for slot in range(self.workers)))
        if visible or not wait_for_any([self.listener], timeout=0):
            self._turn_unseen = 0
            return
        self._turn_unseen += 1
        if self._turn_unseen >= 2:
            log.warning("the accept turn was lost with a dead worker; putting a new one in play")
            commons.turns[0].release()
            self._turn_unseen = 0

    def _replace(self, slot: int) -> None:
        dead = self.processes[slot]
        dead.join()
        log.warning("worker %d (pid %s) ended with exit code %s; freeing what its clients "
                    "held and starting another", slot, dead.pid, dead.exitcode)
        self._bury(slot)
        if not self.stopping.is_set():
            self.processes[slot] = self._start(slot)

    def _bury(self, slot: int) -> None:
        """Free what a dead worker's clients held: leases, list waiters and the items a push
        handed them, barrier parties, event waiters, client slots, and the door's turn."""
        commons, figures = self.commons, self.commons.figures
        with commons.books_lock:
            freed = commons.ledger.left_with(slot)
        commons.stepper.left_with(slot)   # its parked commands died with it
        for _ in range(freed):
            commons.leases.release()
        # A multiprocessing.Condition's notify waits until each sleeper it wakes says so;
        # a dead one never will. Each is told to the Condition as if its wait timed out.
        for _ in range(figures.get(slot, "lists_sleepers")):
            commons.lists_changed._woken_count.release()
        if commons.keyspace_lock.acquire(timeout=GRACE):
            try:
                for key, value, left in commons.waiters.left_with(slot):
                    steps = hand_back_steps(commons, Handed(key, value, left))
                    with suppress(StopIteration):
                        next(steps)   # its Guard: the keyspace lock, held here
                        steps.send(None)   # a Pushed, if it served someone: notified below
                commons.lists_changed.notify_all()
            finally:
                commons.keyspace_lock.release()
        else:
            # Only a process killed inside a command can hold it: multiprocessing's locks
            # are not robust mutexes, and nobody can know how far its change got.
            log.error("worker %d died holding the keyspace lock; stopping the server", slot)
            self.stop()
        commons.names.left_with(slot)
        commons.clients.left_with(slot)
        for _ in range(figures.get(slot, "connected")):
            commons.client_slots.release()
        if figures.get(slot, "turn"):
            commons.turns[(slot + 1) % self.workers].release()

    def stop(self) -> None:
        """Ask for a graceful stop; safe from any thread and from a signal handler."""
        self.stopping.set()
        with suppress(OSError):
            self._wake_writer.send(b"\0")

    def _finish(self) -> None:
        """Every worker is told to stop (SIGTERM), given GRACE seconds, then killed."""
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + GRACE
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        self.listener.close()
        self.commons.close()
