"""Lists: LPUSH, RPUSH, LPOP, RPOP, LLEN, LRANGE, and the blocking BLPOP, BRPOP.

Each guards its key with `lists=True`, which adds the lock of the Condition
that BLPOP waits on: a pop that finds nothing must register as a waiter
before any push can slip in between, or the push's wake-up would be lost.

A push hands its items straight to the longest-waiting BLPOPs (shared/waiters.py)
and asks the model only to wake them (`Pushed`). An item handed to a waiter
whose client left before the reply could go out comes back (`hand_back_steps`).
"""

from __future__ import annotations

from contend.shared.args import parse_int, parse_timeout
from contend.shared.commands.table import command
from contend.shared.effects import Guard, PopWait, Pushed
from contend.shared.resp import NO_REPLY, NULL_ARRAY, ReplyError
from contend.shared.state import ServerState


def _push(client, argv, left: bool):
    key, server = argv[1], client.server
    yield Guard((key,), lists=True)
    length = server.keyspace.push(key, argv[2:], left)
    # The new items go to blocked clients first, longest waiting first; the model wakes them.
    served = server.waiters.serve(key)
    if served:
        yield Pushed(served)
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
    yield Guard((key,), lists=True)
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
    yield Guard((argv[1],), lists=True)
    return client.server.keyspace.length(argv[1])


@command("lrange", 4, "list", keys=(1, 1, 1))
def lrange(client, argv):
    start, stop = parse_int(argv[2]), parse_int(argv[3])
    return _range(client.server.keyspace, argv[1], start, stop)


def _range(keyspace, key, start, stop):
    yield Guard((key,), lists=True)
    return keyspace.range(key, start, stop)


def _blocking_pop(client, argv, left: bool):
    keys, timeout = tuple(argv[1:-1]), parse_timeout(argv[-1])
    return _blocking_pop_steps(client.server.keyspace, keys, left, timeout)


def _blocking_pop_steps(keyspace, keys, left, timeout):
    yield Guard(keys, lists=True)
    for key in keys:
        value = keyspace.pop(key, left)
        if value is not None:
            # Handed, not [key, value]: its client may have hung up while this waited for
            # its guard, and then the item must go back rather than to nobody.
            return Handed(key, value, left)
    served = yield PopWait(keys, left, timeout)   # every guard is given up while it waits
    return NULL_ARRAY if served is None else Handed(served[0], served[1], left)


@command("blpop", -3, "list", flags=("blocking",), keys=(1, -2, 1))
def blpop(client, argv):
    return _blocking_pop(client, argv, left=True)


@command("brpop", -3, "list", flags=("blocking",), keys=(1, -2, 1))
def brpop(client, argv):
    return _blocking_pop(client, argv, left=False)


class Handed:
    """BLPOP's reply when it got an item (at once, or handed by a push): the session sends
    it as [key, value], or, when the client left first, runs `hand_back_steps` so the
    item is not lost."""

    __slots__ = ("key", "value", "left")

    def __init__(self, key: bytes, value: bytes, left: bool):
        self.key, self.value, self.left = key, value, left

    def reply(self) -> list[bytes]:
        return [self.key, self.value]


def hand_back_steps(server: ServerState, handed: Handed):
    """Return an item whose waiter left before its reply went out: to the next waiter,
    else to the end of the list it came from. Never lost, and never a crash."""
    yield Guard((handed.key,), lists=True)
    keyspace, waiters = server.keyspace, server.waiters
    try:
        keyspace.push(handed.key, [handed.value], handed.left)
        served = waiters.serve(handed.key)
    except ReplyError:
        # The key became a string meanwhile (a SET); the next waiter on it still gets the
        # item. With nobody waiting it goes the way the SET sent the rest of its list.
        served = waiters.hand(handed.key, handed.value)
    if served:
        yield Pushed(served)
    return NO_REPLY
