"""Lists: LPUSH, RPUSH, LPOP, RPOP, LLEN, LRANGE, and the blocking BLPOP, BRPOP.

All of them hold `ListsGuard`, the lock of the Condition that BLPOP waits on:
a pop that finds nothing must register as a waiter before any push can slip
in between, or the push's wake-up would be lost.
"""

from __future__ import annotations

from contend.shared.args import parse_int, parse_timeout
from contend.shared.commands.table import command
from contend.shared.effects import ListsGuard, PopWait, Pushed
from contend.shared.resp import NULL_ARRAY, ReplyError


def _push(client, argv, left: bool):
    key = argv[1]
    yield ListsGuard()
    length = client.server.keyspace.push(key, argv[2:], left)
    yield Pushed(key)   # hand the new items to blocked clients, longest waiting first
    return length


@command("lpush", -3, "list", keys=(1, 1, 1))
def lpush(client, argv):
    return _push(client, argv, left=True)


@command("rpush", -3, "list", keys=(1, 1, 1))
def rpush(client, argv):
    return _push(client, argv, left=False)


def _pop(client, argv, left: bool):
    if len(argv) > 3:
        raise ReplyError(f"ERR wrong number of arguments for '{argv[0].decode().lower()}' command")
    count = None
    if len(argv) == 3:
        count = parse_int(argv[2], "ERR value is out of range, must be positive")
        if count < 0:
            raise ReplyError("ERR value is out of range, must be positive")
    return _pop_steps(client.server.keyspace, argv[1], left, count)


def _pop_steps(keyspace, key, left, count):
    yield ListsGuard()
    if count is None:
        return keyspace.pop(key, left)
    popped = keyspace.pop_many(key, left, count)
    return NULL_ARRAY if popped is None else popped


@command("lpop", -2, "list", keys=(1, 1, 1))
def lpop(client, argv):
    return _pop(client, argv, left=True)


@command("rpop", -2, "list", keys=(1, 1, 1))
def rpop(client, argv):
    return _pop(client, argv, left=False)


@command("llen", 2, "list", keys=(1, 1, 1))
def llen(client, argv):
    yield ListsGuard()
    return client.server.keyspace.length(argv[1])


@command("lrange", 4, "list", keys=(1, 1, 1))
def lrange(client, argv):
    start, stop = parse_int(argv[2]), parse_int(argv[3])
    return _range(client.server.keyspace, argv[1], start, stop)


def _range(keyspace, key, start, stop):
    yield ListsGuard()
    return keyspace.range(key, start, stop)


def _blocking_pop(client, argv, left: bool):
    keys, timeout = tuple(argv[1:-1]), parse_timeout(argv[-1])
    return _blocking_pop_steps(client.server.keyspace, keys, left, timeout)


def _blocking_pop_steps(keyspace, keys, left, timeout):
    yield ListsGuard()
    for key in keys:
        value = keyspace.pop(key, left)
        if value is not None:
            return [key, value]
    served = yield PopWait(keys, left, timeout)
    return NULL_ARRAY if served is None else list(served)


@command("blpop", -3, "list", flags=("blocking",), keys=(1, -2, 1))
def blpop(client, argv):
    return _blocking_pop(client, argv, left=True)


@command("brpop", -3, "list", flags=("blocking",), keys=(1, -2, 1))
def brpop(client, argv):
    return _blocking_pop(client, argv, left=False)
