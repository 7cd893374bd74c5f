"""Strings and counters: GET, SET, DEL, EXISTS, TYPE, KEYS, MGET, MSET, INCR family.

Every command names the keys it touches in a `Guard`, so the sync mode
decides how it is protected. The INCR family is the race lab's read-modify-
write: read, a `RaceWindow` (a real suspension point), then write.
"""

from __future__ import annotations

from contend.shared.args import INT64_MIN, checked_add, parse_int, wrong_arity
from contend.shared.commands.table import command
from contend.shared.effects import ALL_KEYS, Guard, RaceWindow
from contend.shared.resp import ReplyError


@command("get", 2, "string", keys=(1, 1, 1))
def get(client, argv):
    yield Guard((argv[1],))
    return client.server.keyspace.get(argv[1])


@command("set", -3, "string", keys=(1, 1, 1))
def set_(client, argv):
    options = {option.lower() for option in argv[3:]}
    if len(options) != len(argv) - 3 or not options <= {b"nx", b"xx"} or len(options) > 1:
        raise ReplyError("ERR syntax error")
    return _set(client.server.keyspace, argv[1], argv[2], options)


def _set(keyspace, key, value, options):
    yield Guard((key,))
    # NX and XX are check-then-act: only the guard makes the check still true at the write.
    exists = keyspace.exists(key)
    if (b"nx" in options and exists) or (b"xx" in options and not exists):
        return None
    keyspace.set(key, value)
    return "OK"


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
            for value in (keyspace.data.get(key) for key in keys)]


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
    yield RaceWindow()   # with sync off, another client may write here and be overwritten
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
