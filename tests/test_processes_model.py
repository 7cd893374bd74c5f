"""What only the processes model teaches: workers that truly run at once, a keyspace
reached through round trips, and a supervisor that cleans up after a dead worker.

Every test starts `contend serve --model processes --workers 2` and asks INFO which
worker process serves each client (`process_id`, and the model's `worker` slot), so
"two clients in two processes" is checked, never assumed. The waits are for states
(a client blocked, a waiter handed an item, a new worker born), never for a time.
Where the supervisor must be caught before it has cleaned up, it is paused with
SIGSTOP, so the order is certain rather than likely. Process state is read from
/proc: these tests are Linux's, like the model's fork and PR_SET_PDEATHSIG.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import time
from contextlib import ExitStack, contextmanager

import pytest

from contend.server.processes import GRACE, Commons, Server
from contend.shared.config import Config
from contend.shared.resp import encode_command
from tests.helpers import as_dict, info_field, run_together, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the processes model forks; /proc tells worker states")

WORKERS = ("--workers", "2")
PATIENCE = 20   # seconds a wanted state may take before the test fails instead of hanging

# Each client's share of the race. With sync off at window 0, two workers hammering one
# key lost at least 7,700 of these 20,000 increments in each of 20 runs on an idle
# two-CPU machine, and at least 4,200 in each of 20 with three CPU-bound processes
# competing (runs of 20 INCRs per client could lose none under that load). A loss is
# then certain in practice, and a loss-free run a sign that the workers no longer race.
INCRS_PER_CLIENT = 10_000

WORK_UNITS = 10_000   # the default work-max-units: about 0.7 s of CPU on an idle machine
STARTED = 0.05        # CPU seconds that show a worker has begun a WORK


# -- which worker serves whom --------------------------------------------------------

def worker_pid(client) -> int:
    return info_field(client, "process_id", "server")


def client_on(server, wanted, stack: ExitStack):
    """A new client whose worker pid satisfies `wanted(pid)`. The door gives client k to
    worker k mod N, so a second or third try lands on the other worker."""
    for _ in range(10):
        client = server.raw()
        if wanted(worker_pid(client)):
            return stack.enter_context(client)
        client.close()
    raise AssertionError("ten clients in a row landed on the same worker")


def clients_on_two_workers(server, stack: ExitStack):
    """Two clients served by two different worker processes of `server`."""
    first = client_on(server, lambda pid: True, stack)
    second = client_on(server, lambda pid: pid != worker_pid(first), stack)
    supervisor = server.process.pid
    for client in (first, second):
        assert parent_of(worker_pid(client)) == supervisor   # a worker, not the supervisor
        assert info_field(client, "workers", "playground") == 2
    assert info_field(first, "worker", "playground") != info_field(second, "worker", "playground")
    return first, second


# -- processes, as /proc shows them ----------------------------------------------------

def proc_stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state first, then the parent's
    pid), or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def parent_of(pid: int) -> int | None:
    fields = proc_stat(pid)
    return None if fields is None else int(fields[1])


def start_time(fields: list[str]) -> int:
    return int(fields[19])   # field 22 of stat: clock ticks after boot (tells a reused pid)


def is_running(pid: int, started: int | None = None) -> bool:
    """Alive (not a zombie) and, if `started` is given, the very process seen before."""
    fields = proc_stat(pid)
    return (fields is not None and fields[0] not in "ZX"
            and (started is None or start_time(fields) == started))


def children(parent: int) -> dict[int, int]:
    """The live (not zombie) child processes of `parent`: pid -> start time."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = proc_stat(int(entry))
            if fields is not None and int(fields[1]) == parent and fields[0] not in "ZX":
                found[int(entry)] = start_time(fields)
    return found


def kill_worker(server, pid: int) -> None:
    assert parent_of(pid) == server.process.pid, "only a worker of this server is killed"
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not is_running(pid), PATIENCE, f"worker {pid} to die")


def wait_for_replacement(server, before: dict[int, int]) -> int:
    """The pid of the worker the supervisor starts after a death. It starts one only once
    it has buried the dead one (Server._replace), so a newcomer means the burial is done."""
    supervisor = server.process.pid
    born = wait_until(lambda: set(children(supervisor)) - set(before), PATIENCE,
                      "the supervisor to start a new worker")
    (pid,) = born
    return pid


@contextmanager
def supervisor_paused(server):
    """SIGSTOP the supervisor: a worker killed meanwhile stays unburied until it resumes."""
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


# -- 1. the lost update, with no race window ------------------------------------------

def incr_from_two_workers(server, sync: str) -> int:
    """Two clients on two workers each send INCRS_PER_CLIENT INCRs in one pipeline; a
    BARRIER.WAIT at the head of both pipelines starts the two workers' INCRs together.
    Returns the counter's final value."""
    with ExitStack() as stack:
        clients = clients_on_two_workers(server, stack)
        first = clients[0]
        assert first.call("CONFIG", "SET", "sync", sync, "race-window-us", "0") == "OK"
        pipeline = (encode_command("BARRIER.WAIT", "start", "2", "60")
                    + encode_command("INCR", "hits") * INCRS_PER_CLIENT)

        def hammer(i: int) -> list:
            client = clients[i]
            client.sock.settimeout(60)   # a loaded machine is slow, not wrong
            client.send(pipeline)
            return [client.read() for _ in range(1 + INCRS_PER_CLIENT)]

        replies = run_together(2, hammer)
        assert sorted(r[0] for r in replies) == [0, 1]   # both passed the start line
        for r in replies:   # every INCR was acknowledged
            assert all(isinstance(value, int) for value in r[1:])
        return int(first.call("GET", "hits"))


# The threads model is held to neither outcome at window 0: the GIL may switch threads
# between an INCR's read and its write, or not (the same run there lost from 0 to 3,500
# of 20,000 increments), so neither "none lost" nor "some lost" is certain.

def test_sync_off_loses_increments_between_two_workers_with_no_race_window(serve):
    """An INCR is two calls into the host (read_int, then write_int); the other worker's
    calls land between them, so acknowledged increments vanish without any window."""
    server = serve("processes", *WORKERS)
    final = incr_from_two_workers(server, "off")
    assert final < 2 * INCRS_PER_CLIENT


@pytest.mark.parametrize("sync", ["lock", "striped", "unordered"])
def test_guarded_modes_lose_no_increment_between_two_workers(serve, sync):
    """The same run, guarded by multiprocessing's locks (one RLock, or shared stripes)."""
    server = serve("processes", *WORKERS)
    assert incr_from_two_workers(server, sync) == 2 * INCRS_PER_CLIENT


# -- 2. WORK in two processes at once --------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """CPU time used so far by every thread of process `pid` (stat's utime + stime)."""
    fields = proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def replied(client) -> bool:
    return bool(select.select([client.sock], [], [], 0)[0])


def test_work_on_two_workers_runs_at_the_same_time(serve):
    """Both WORKs are under way at one moment, each in its own process with its own GIL.

    INFO cannot show it: WORK is a plain function, never a command in flight. So each
    WORK is seen to begin by its worker's CPU time rising (by more than its idle threads
    use), and the first is seen not to have answered after the second began: at that
    moment both were running. Nothing is timed. To fail on a sound server the second
    worker would have to get under STARTED of CPU while the first got a whole WORK
    (WORK_UNITS, about 0.7 s); a server that ran them one after the other fails at once.
    """
    server = serve("processes", *WORKERS)
    with ExitStack() as stack:
        first, second = clients_on_two_workers(server, stack)

        def start_work(client) -> None:
            pid = worker_pid(client)
            spent = cpu_seconds(pid)
            client.send_command("WORK", WORK_UNITS)
            wait_until(lambda: cpu_seconds(pid) >= spent + STARTED, PATIENCE,
                       f"worker {pid} to begin its WORK")

        start_work(first)
        start_work(second)
        assert not replied(first), "the first WORK ended before the second began"
        result = first.read()
        assert isinstance(result, int) and second.read() == result


# -- 3. a worker killed with SIGKILL: what its clients held is freed ------------------

def test_a_killed_worker_is_replaced_and_the_server_keeps_answering(serve):
    server = serve("processes", *WORKERS)
    with ExitStack() as stack:
        doomed, survivor = clients_on_two_workers(server, stack)
        dead, slot = worker_pid(doomed), info_field(doomed, "worker", "playground")
        before = children(server.process.pid)
        kill_worker(server, dead)
        assert doomed.closed_by_server()   # the kernel closed its socket with it
        assert survivor.call("PING") == "PONG"
        newcomer = wait_for_replacement(server, before)
        assert parent_of(newcomer) == server.process.pid
        wait_until(lambda: proc_stat(dead) is None, PATIENCE, "the dead worker to be reaped")
        # New clients reach the newcomer, which serves in the dead worker's slot.
        fresh = client_on(server, lambda pid: pid == newcomer, stack)
        assert info_field(fresh, "worker", "playground") == slot
        assert fresh.call("SET", "k", "v") == "OK" and survivor.call("GET", "k") == b"v"
        everyone = children(server.process.pid)
    assert server.stop() == 0
    assert not [pid for pid, started in everyone.items() if is_running(pid, started)]


def test_a_killed_workers_pool_lease_goes_to_a_waiter_on_the_other_worker(serve):
    server = serve("processes", *WORKERS, "--pool-size", "1")
    with ExitStack() as stack:
        holder, waiter = clients_on_two_workers(server, stack)
        dead, alive = worker_pid(holder), worker_pid(waiter)
        probe = client_on(server, lambda pid: pid == alive, stack)
        lease = holder.call("POOL.ACQUIRE")
        assert isinstance(lease, int)
        waiter.send_command("POOL.ACQUIRE", "0")   # waits forever, or until the lease is free
        wait_until(lambda: as_dict(probe.call("POOL.STATUS"))["waiting"] == 1, PATIENCE,
                   "the second client to wait for the pool")
        kill_worker(server, dead)
        granted = waiter.read()
        assert isinstance(granted, int) and granted != lease
        status = as_dict(probe.call("POOL.STATUS"))
        assert (status["size"], status["in-use"], status["waiting"]) == (1, 1, 0)
        assert waiter.call("POOL.RELEASE", lease) == 0   # the dead client's lease is gone
        assert waiter.call("POOL.RELEASE", granted) == 1
        assert as_dict(probe.call("POOL.STATUS"))["in-use"] == 0


@pytest.mark.parametrize("other_waiter", [True, False], ids=["another-waiter", "no-waiter"])
@pytest.mark.parametrize("pushed", ["before-burial", "after-burial"])
def test_an_item_pushed_for_a_killed_workers_blpop_is_not_lost(serve, pushed, other_waiter):
    """A BLPOP waiter whose worker was killed: a push either finds it still registered
    (the supervisor has not buried the worker yet: paused here, so that case is certain)
    and hands it the item, which the burial hands back; or finds it forgotten. Either
    way the item reaches the next waiter or stays in the list."""
    server = serve("processes", *WORKERS)
    with ExitStack() as stack:
        doomed, survivor = clients_on_two_workers(server, stack)
        dead, alive = worker_pid(doomed), worker_pid(survivor)
        # Every connection the test needs, before a dead worker can hold the door's turn.
        pusher = client_on(server, lambda pid: pid == alive, stack)
        probe = client_on(server, lambda pid: pid == alive, stack)

        def waiters() -> int:
            return info_field(probe, "list_waiters", "playground")

        doomed.send_command("BLPOP", "q", "0")
        wait_until(lambda: waiters() == 1, PATIENCE, "the doomed client's BLPOP to wait")
        if other_waiter:   # second in line: FIFO hands the dead waiter the item first
            survivor.send_command("BLPOP", "q", "0")
            wait_until(lambda: waiters() == 2, PATIENCE, "the second BLPOP to wait")
        live_waiters = int(other_waiter)
        # A waiter is counted from when its worker enlists it, holding the keyspace lock,
        # until its Condition.wait lets the lock go. LLEN takes that lock, so once it answers
        # every waiter sleeps: the kill cannot catch a worker holding the lock (the
        # supervisor then stops the whole server, since nobody can tell how far a killed
        # holder's change got).
        assert probe.call("LLEN", "q") == 0
        before = children(server.process.pid)
        if pushed == "before-burial":
            with supervisor_paused(server):
                kill_worker(server, dead)
                pusher.send_command("RPUSH", "q", "job")
                # Served on the dead waiter's behalf: it leaves the queue holding the item.
                wait_until(lambda: waiters() == live_waiters, PATIENCE,
                           "the push to hand the dead waiter its item")
        else:
            kill_worker(server, dead)
            wait_for_replacement(server, before)   # buried: its waiter forgotten
            assert waiters() == live_waiters
            pusher.send_command("RPUSH", "q", "job")
        assert pusher.read() == 1
        if other_waiter:
            assert survivor.read() == [b"q", b"job"]
            assert probe.call("LLEN", "q") == 0
        else:
            wait_until(lambda: probe.call("LRANGE", "q", "0", "-1") == [b"job"], PATIENCE,
                       "the item to be back in its list")
        wait_for_replacement(server, before)
        assert waiters() == 0


def test_a_killed_workers_barrier_party_breaks_the_barrier_for_the_others(serve):
    server = serve("processes", *WORKERS)
    with ExitStack() as stack:
        doomed, survivor = clients_on_two_workers(server, stack)
        dead, alive = worker_pid(doomed), worker_pid(survivor)
        probe = client_on(server, lambda pid: pid == alive, stack)

        def waiting() -> int:   # BARRIER.STATUS is null until the first party arrives
            status = probe.call("BARRIER.STATUS", "gate")
            return as_dict(status)["waiting"] if isinstance(status, list) else 0

        doomed.send_command("BARRIER.WAIT", "gate", "3", "0")     # 0: wait forever
        survivor.send_command("BARRIER.WAIT", "gate", "3", "0")
        wait_until(lambda: waiting() == 2, PATIENCE, "two parties at the barrier")
        kill_worker(server, dead)
        assert str(survivor.read()) == "BROKEN barrier 'gate' is broken"
        status = as_dict(probe.call("BARRIER.STATUS", "gate"))
        assert (status["broken"], status["waiting"]) == (1, 0)
        # Broken until reset, as threading.Barrier; then a new round works across workers.
        assert str(probe.call("BARRIER.WAIT", "gate", "3", "1")).startswith("BROKEN")
        assert probe.call("BARRIER.RESET", "gate") == 1
        survivor.send_command("BARRIER.WAIT", "gate", "2", "0")
        assert sorted([probe.call("BARRIER.WAIT", "gate", "2", "0"), survivor.read()]) == [0, 1]


def test_a_killed_workers_event_waiter_is_no_longer_counted(serve):
    server = serve("processes", *WORKERS)
    with ExitStack() as stack:
        doomed, survivor = clients_on_two_workers(server, stack)
        dead, alive = worker_pid(doomed), worker_pid(survivor)
        probe = client_on(server, lambda pid: pid == alive, stack)
        doomed.send_command("EVENT.WAIT", "go", "0")
        survivor.send_command("EVENT.WAIT", "go", "0")
        wait_until(lambda: info_field(probe, "blocked_clients") == 2, PATIENCE,
                   "two clients to wait for the event")
        before = children(server.process.pid)
        kill_worker(server, dead)
        wait_for_replacement(server, before)
        assert probe.call("EVENT.SET", "go") == 1   # the survivor only
        assert survivor.read() == 1


# -- 4. SIGTERM to the supervisor --------------------------------------------------

def test_sigterm_stops_every_worker_and_the_host_and_exits_zero(serve):
    server = serve("processes", *WORKERS)
    with ExitStack() as stack:
        idle, blocked = clients_on_two_workers(server, stack)
        workers = {worker_pid(idle), worker_pid(blocked)}
        blocked.send_command("BLPOP", "never", "0")
        wait_until(lambda: info_field(idle, "blocked_clients") == 1, PATIENCE,
                   "a client blocked in the other worker")
        started = children(server.process.pid)   # both workers and the host
        assert workers < set(started)
        assert server.stop(signal.SIGTERM) == 0
        # Stopped by the supervisor before it exited, not left to die as orphans later.
        assert not [pid for pid, start in started.items() if is_running(pid, start)]
        assert idle.closed_by_server()


def test_sigterm_just_after_the_banner_stops_the_workers_without_killing_them(serve):
    """A worker forked moments before the signal must stop as gracefully as one that has
    served: within the GRACE the supervisor gives its workers before it kills them."""
    server = serve("processes", *WORKERS)
    started = time.monotonic()
    assert server.stop(signal.SIGTERM, timeout=GRACE + 10) == 0
    assert time.monotonic() - started < GRACE


# -- the door's turn, lost with a worker killed between two of its steps -------------

def test_a_turn_lost_with_a_dead_worker_is_put_back_in_play():
    """The supervisor's look for the turn, on real shared semaphores and a real socket:
    the turn taken as a worker killed in the gap would take it (no flag raised), a client
    waiting at the door, and no worker at all. The first look only counts; the second
    puts a new turn in play; with the turn in sight, or nobody waiting, it does nothing."""
    config = Config(model="processes", workers=2)
    server = Server(config)
    server.commons = Commons(config, server.workers)
    server.listener = socket.create_server(("127.0.0.1", 0))
    with server.listener, socket.socket() as knocking:
        try:
            turns = server.commons.turns
            server._look_for_the_turn()
            assert turns[0].get_value() == 1    # nobody waits: the turn stays where it is
            assert turns[0].acquire(timeout=1)  # a worker takes it ... and dies, flag down
            server._look_for_the_turn()
            server._look_for_the_turn()
            assert not any(turn.get_value() for turn in turns)   # nobody waits: none made
            knocking.connect(server.listener.getsockname())
            server.commons.figures.set(1, "turn", 1)   # in sight: a live worker holds it
            server._look_for_the_turn()
            server._look_for_the_turn()
            assert not any(turn.get_value() for turn in turns)
            server.commons.figures.set(1, "turn", 0)   # now nowhere, and a client waits
            server._look_for_the_turn()
            assert not any(turn.get_value() for turn in turns)   # once could be a gap
            server._look_for_the_turn()
            assert turns[0].get_value() == 1
        finally:
            server.commons.close()
