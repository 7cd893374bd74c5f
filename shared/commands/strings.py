"""Strings and counters: GET, SET, DEL, EXISTS, TYPE, KEYS, MGET, MSET, INCR family.

SET takes Redis's options: NX|XX, GET, and a time to live (EX, PX, EXAT, PXAT)
or KEEPTTL; without KEEPTTL a SET takes the old time to live away, while the
INCR family keeps it (shared/commands/expiry.py has the rest of expiry).

Every command names the keys it touches in a `Guard`, so the sync mode
decides how it is protected. The INCR family is the race lab's read-modify-
write: read, a `RaceWindow` (a real suspension point), then write.
"""

from __future__ import annotations

from contend.shared.args import INT64_MAX, INT64_MIN, SYNTAX, checked_add, parse_int, wrong_arity
from contend.shared.commands.expiry import invalid_expire_time
from contend.shared.commands.table import command
from contend.shared.effects import ALL_KEYS, Guard, RaceWindow
from contend.shared.resp import ReplyError


@command("get", 2, "string", keys=(1, 1, 1))
def get(client, argv):
    yield Guard((argv[1],))
    return client.server.keyspace.get(argv[1])


@command("set", -3, "string", keys=(1, 1, 1))
def set_(client, argv):
    options, expiry = _set_options(argv[3:])
    # The time is checked before the key is looked at, as in Redis.
    ttl = None if expiry is None else _expire_time(*expiry)
    return _set(client.server.keyspace, argv[1], argv[2], options, ttl)


# SET's expiry options, and whether each counts seconds and from now.
_EXPIRY = {b"ex": (True, True), b"px": (False, True), b"exat": (True, False),
           b"pxat": (False, False)}
# Each option of SET, and those it may not follow (Redis's parseExtendedStringArgumentsOrReply).
_CONFLICTS = {b"nx": {b"xx"}, b"xx": {b"nx"}, b"get": set(), b"keepttl": set(_EXPIRY),
              **{option: {b"keepttl", *_EXPIRY} - {option} for option in _EXPIRY}}


def _set_options(args: list[bytes]) -> tuple[set[bytes], tuple[bytes, bytes] | None]:
    """[NX|XX] [GET] [EX s|PX ms|EXAT ts|PXAT ms-ts|KEEPTTL], read as Redis reads them:
    an option may be repeated (the last expiry wins), one that conflicts with an
    option before it is a syntax error. Returns the options given and the expiry."""
    given: set[bytes] = set()
    expiry: tuple[bytes, bytes] | None = None   # (option, its argument)
    i = 0
    while i < len(args):
        option = args[i].lower()
        conflicts = _CONFLICTS.get(option)
        if conflicts is None or conflicts & given:
            raise ReplyError(SYNTAX)
        if option in _EXPIRY:
            i += 1
            if i == len(args):
                raise ReplyError(SYNTAX)
            expiry = (option, args[i])
        given.add(option)
        i += 1
    return given, expiry


def _expire_time(option: bytes, text: bytes) -> tuple[int, bool]:
    """SET's expiry argument as (ms, counted from now?); Redis's checks and texts."""
    seconds, relative = _EXPIRY[option]
    amount = parse_int(text)
    if amount <= 0 or (seconds and amount > INT64_MAX // 1000):
        raise invalid_expire_time("set")
    return (amount * 1000 if seconds else amount), relative


def _set(keyspace, key, value, options, ttl):
    yield Guard((key,))
    when = None
    if ttl is not None:
        when, relative = ttl
        if relative:   # counted from when it runs, not from when it queued for its guard
            when += keyspace.clock()
            if when > INT64_MAX:
                raise invalid_expire_time("set")
    # GET answers the old value, and refuses a list before anything changes.
    old = keyspace.get(key) if b"get" in options else None
    # NX and XX are check-then-act: only the guard makes the check still true at the write.
    exists = keyspace.exists(key)   # a key past its time is deleted here, its TTL with it
    if (b"nx" in options and exists) or (b"xx" in options and not exists):
        return old
    keyspace.set(key, value, keep_ttl=b"keepttl" in options)
    if when is not None:
        keyspace.expire_at(key, when)   # EXAT/PXAT in the past: gone at once
    return old if b"get" in options else "OK"


@command("del", -2, "keyspace", keys=(1, -1, 1))
def del_(client, argv):
    keys = tuple(argv[1:])
    yield Guard(keys)
    return sum(client.server.keyspace.delete(key) for key in keys)


@command("exists", -2, "keyspace", keys=(1, -1, 1))
def exists(client, argv):
    keys = tuple(argv[1:])
    yield Guard(keys)
    return sum(client.server.keyspace.exists(key) for key in keys)


@command("type", 2, "keyspace", keys=(1, 1, 1))
def type_(client, argv):
    yield Guard((argv[1],))
    return client.server.keyspace.type_of(argv[1])


@command("keys", 2, "keyspace")
def keys(client, argv):
    yield Guard(ALL_KEYS)
    return client.server.keyspace.keys(argv[1])


@command("mget", -2, "string", keys=(1, -1, 1))
def mget(client, argv):
    keys = tuple(argv[1:])
    yield Guard(keys)
    keyspace = client.server.keyspace
    # MGET answers nil for a key of another type rather than failing.
    return [value if type(value) is bytes else None
            for value in (keyspace.value(key) for key in keys)]


@command("mset", -3, "string", keys=(1, -1, 2))
def mset(client, argv):
    if len(argv) % 2 == 0:
        raise wrong_arity("mset")
    pairs = list(zip(argv[1::2], argv[2::2], strict=True))
    return _mset(client.server.keyspace, pairs)


def _mset(keyspace, pairs):
    yield Guard(tuple(key for key, _ in pairs))
    for key, value in pairs:
        keyspace.set(key, value)
    return "OK"


def add(keyspace, key: bytes, delta: int):
    """Read, widen the race window, write: the read-modify-write the race lab is about."""
    yield Guard((key,))
    value = keyspace.read_int(key)
    yield RaceWindow(read=value)   # with sync off, another client may write here and be overwritten
    value = checked_add(value, delta)
    keyspace.write_int(key, value)
    return value


@command("incr", 2, "string", keys=(1, 1, 1))
def incr(client, argv):
    return add(client.server.keyspace, argv[1], 1)


@command("decr", 2, "string", keys=(1, 1, 1))
def decr(client, argv):
    return add(client.server.keyspace, argv[1], -1)


@command("incrby", 3, "string", keys=(1, 1, 1))
def incrby(client, argv):
    return add(client.server.keyspace, argv[1], parse_int(argv[2]))


@command("decrby", 3, "string", keys=(1, 1, 1))
def decrby(client, argv):
    delta = parse_int(argv[2])
    if delta == INT64_MIN:
        raise ReplyError("ERR decrement would overflow")
    return add(client.server.keyspace, argv[1], -delta)
