"""The resource pool: POOL.ACQUIRE, POOL.RELEASE, POOL.USE, POOL.STATUS.

`pool-size` leases, like tellers at a bank: the model bounds them with its
Semaphore (or equivalent); the ledger in shared/pool.py says who holds what.
"""

from __future__ import annotations

from contend.shared.args import parse_int, parse_milliseconds, parse_timeout
from contend.shared.commands.table import command
from contend.shared.effects import LeaseAcquire, LeaseRelease, Sleep
from contend.shared.resp import NO_REPLY, ReplyError


@command("pool.acquire", -1, "pool", flags=("blocking",))
def pool_acquire(client, argv):
    if len(argv) > 2:
        raise ReplyError("ERR syntax error")
    return _acquire(parse_timeout(argv[1]) if len(argv) == 2 else None)


def _acquire(timeout):
    lease = yield LeaseAcquire(timeout)
    return lease   # None (a null reply) when the timeout passed first


@command("pool.release", 2, "pool")
def pool_release(client, argv):
    return _release(parse_int(argv[1]))


def _release(lease):
    released = yield LeaseRelease(lease)
    return int(released)


@command("pool.use", -2, "pool", flags=("blocking",))
def pool_use(client, argv):
    if len(argv) > 3:
        raise ReplyError("ERR syntax error")
    hold = parse_milliseconds(argv[1])
    return _use(hold, parse_timeout(argv[2]) if len(argv) == 3 else None)


def _use(hold: float, timeout):
    lease = yield LeaseAcquire(timeout)
    if lease is None:
        return None
    yield Sleep(hold)
    yield LeaseRelease(lease)
    return lease


def return_leases_steps(leases: list[int]):
    """A client is leaving: every lease it still holds goes back to the pool (shared/session.py)."""
    for lease in leases:
        yield LeaseRelease(lease)
    return NO_REPLY


@command("pool.status", 1, "pool")
def pool_status(client, argv):
    return client.server.ledger.status()
