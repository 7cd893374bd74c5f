"""What one INCR costs when the count lives where more than one process can reach it.

    python3 labs/sharing_costs.py [--count N]

One process increments one counter N times (no contention: this is the price of
reaching the state at all) in each place the processes model could have kept its
keyspace, and prints microseconds per INCR:

    dict           a plain dict in this process: the floor, and what no other process sees
    manager dict   multiprocessing.Manager().dict(): a get, then a set, two round trips
    hosted         contend's own Keyspace in a manager (read_int, then write_int): the
                   processes model's choice, every command's meaning kept in shared/
    shared memory  a multiprocessing.Value under a multiprocessing.Lock: fast, but only
                   integers, at places fixed before the fork
    owner          one process owns the key; ask it through a pipe to do the whole INCR
                   (fast-ish, and no race left to show: the owner reads and writes together)
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

from contend.server.processes_sync import CONTEXT, Host, Hosted


def per_incr(incr, count: int) -> float:
    """Microseconds per call of `incr`, after a short warm-up."""
    for _ in range(min(count, 100)):
        incr()
    started = time.perf_counter()
    for _ in range(count):
        incr()
    return (time.perf_counter() - started) / count * 1e6


def _owner(conn) -> None:
    """The owner process: INCR its one key whenever asked, until told to stop."""
    value = 0
    while conn.recv() is not None:
        value += 1
        conn.send(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="INCRs per place (bounded)")
    count = parser.parse_args(argv).count
    costs: dict[str, float] = {}

    local = {b"n": 0}

    def dict_incr():
        local[b"n"] = local[b"n"] + 1
    costs["dict"] = per_incr(dict_incr, count)

    with multiprocessing.Manager() as manager:
        shared = manager.dict({b"n": 0})

        def manager_incr():
            shared[b"n"] = shared[b"n"] + 1
        costs["manager dict"] = per_incr(manager_incr, count)

    host = Host(ctx=CONTEXT)
    host.start(Hosted.make, (1,))
    try:
        keyspace = host.keyspace()

        def hosted_incr():
            keyspace.write_int(b"n", keyspace.read_int(b"n") + 1)
        costs["hosted"] = per_incr(hosted_incr, count)
    finally:
        host.shutdown()

    counter, lock = CONTEXT.RawValue("q", 0), CONTEXT.Lock()

    def shared_incr():
        with lock:
            counter.value += 1
    costs["shared memory"] = per_incr(shared_incr, count)

    mine, theirs = CONTEXT.Pipe()
    owner = CONTEXT.Process(target=_owner, args=(theirs,), daemon=True)
    owner.start()
    try:
        def owner_incr():
            mine.send(b"n")
            mine.recv()
        costs["owner"] = per_incr(owner_incr, count)
    finally:
        mine.send(None)
        owner.join(5)

    for place, micros in costs.items():
        print(f"{place:<14} {micros:9.2f} us per INCR   {micros / costs['dict']:8.0f}x a dict")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
