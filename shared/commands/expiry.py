"""Time to live: EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT, TTL, PTTL, PERSIST, and active expiry.

Time is shared state like any other: a key's time to live is read and written
under the key's guard, and a key past its time is deleted by whoever looks at
it first (shared/keyspace.py, lazy expiry). Keys that nobody reads are
collected by `active_expiry_steps`, the server's upkeep (`ServerState.due_chore`),
run as a command over the whole keyspace on whichever connection's turn it is.
"""

from __future__ import annotations

from contend.shared.args import INT64_MAX, parse_int
from contend.shared.commands.table import command
from contend.shared.effects import ALL_KEYS, Guard
from contend.shared.resp import NO_REPLY, ReplyError

# Redis's active expiry cycle (expire.c): sample 20 keys that have a time to live,
# delete those past it, and go again while more than a quarter were; bounded, so
# the whole-keyspace guard is never held long.
ACTIVE_EXPIRY_PERIOD_MS = 100      # Redis's server.hz = 10
ACTIVE_EXPIRY_KEYS_PER_LOOP = 20
ACTIVE_EXPIRY_MAX_LOOPS = 16


def invalid_expire_time(name: str) -> ReplyError:
    return ReplyError(f"ERR invalid expire time in '{name}' command")


def active_expiry_steps(keyspace):
    """Delete a sample of the keys past their time; the server's upkeep, no reply."""
    yield Guard(ALL_KEYS)   # alone in the keyspace: no command is between a read and its write
    for _ in range(ACTIVE_EXPIRY_MAX_LOOPS):
        looked_at, expired = keyspace.expire_some(ACTIVE_EXPIRY_KEYS_PER_LOOP)
        if not looked_at or expired * 4 <= looked_at:
            break   # a quarter or less were stale: not worth another loop now
    return NO_REPLY


# -- EXPIRE and friends ---------------------------------------------------------------

NX, XX, GT, LT = b"nx", b"xx", b"gt", b"lt"


def _expire_options(argv: list[bytes]) -> set[bytes]:
    """NX | XX | GT | LT, checked as Redis's parseExtendedExpireArgumentsOrReply does."""
    options = set()
    for arg in argv[3:]:
        option = arg.lower()
        if option not in (NX, XX, GT, LT):
            raise ReplyError("ERR Unsupported option " + arg.decode("utf-8", "replace"))
        options.add(option)
    if NX in options and len(options) > 1:
        raise ReplyError("ERR NX and XX, GT or LT options at the same time are not compatible")
    if GT in options and LT in options:
        raise ReplyError("ERR GT and LT options at the same time are not compatible")
    return options


def _expire(client, argv, name: str, seconds: bool, relative: bool):
    options = _expire_options(argv)
    when = parse_int(argv[2])
    if seconds:
        # A negative time is allowed (the key goes at once); an overflow is not.
        if abs(when) > INT64_MAX // 1000:
            raise invalid_expire_time(name)
        when *= 1000
    return _expire_steps(client.server.keyspace, argv[1], when, relative, options, name)


def _expire_steps(keyspace, key, when, relative, options, name):
    yield Guard((key,))
    if relative:
        now = keyspace.clock()
        if when > INT64_MAX - now:
            raise invalid_expire_time(name)
        when += now   # counted from when it runs, not from when it queued for its guard
    if not keyspace.exists(key):
        return 0
    if options:
        current = keyspace.expiry(key)   # None: no time to live, an infinite one for GT/LT
        if ((NX in options and current is not None)
                or (XX in options and current is None)
                or (GT in options and (current is None or when <= current))
                or (LT in options and current is not None and when >= current)):
            return 0
    keyspace.expire_at(key, when)   # a time already past deletes the key, and says 1
    return 1


@command("expire", -3, "keyspace", keys=(1, 1, 1))
def expire(client, argv):
    return _expire(client, argv, "expire", seconds=True, relative=True)


@command("pexpire", -3, "keyspace", keys=(1, 1, 1))
def pexpire(client, argv):
    return _expire(client, argv, "pexpire", seconds=False, relative=True)


@command("expireat", -3, "keyspace", keys=(1, 1, 1))
def expireat(client, argv):
    return _expire(client, argv, "expireat", seconds=True, relative=False)


@command("pexpireat", -3, "keyspace", keys=(1, 1, 1))
def pexpireat(client, argv):
    return _expire(client, argv, "pexpireat", seconds=False, relative=False)


# -- reading and removing it ------------------------------------------------------------

@command("ttl", 2, "keyspace", keys=(1, 1, 1))
def ttl(client, argv):
    yield Guard((argv[1],))
    left = client.server.keyspace.ttl_ms(argv[1])
    return left if left < 0 else (left + 500) // 1000   # rounded, as Redis does


@command("pttl", 2, "keyspace", keys=(1, 1, 1))
def pttl(client, argv):
    yield Guard((argv[1],))
    return client.server.keyspace.ttl_ms(argv[1])


@command("persist", 2, "keyspace", keys=(1, 1, 1))
def persist(client, argv):
    yield Guard((argv[1],))
    return int(client.server.keyspace.persist(argv[1]))
