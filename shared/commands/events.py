"""Barriers and events: BARRIER.WAIT/RESET/STATUS and EVENT.SET/CLEAR/WAIT/ISSET.

The waiting is the model's (threading.Barrier, threading.Event, ...); here are
the arguments, the replies and the error texts every model shares.
"""

from __future__ import annotations

from contend.shared.args import parse_positive, parse_timeout
from contend.shared.commands.table import command
from contend.shared.effects import (
    BarrierReset,
    BarrierStatus,
    BarrierWait,
    EventClear,
    EventIsSet,
    EventSet,
    EventWait,
)
from contend.shared.resp import NULL_ARRAY, ReplyError


def broken(name: bytes) -> ReplyError:
    return ReplyError(f"BROKEN barrier '{name.decode('utf-8', 'replace')}' is broken")


def parties_mismatch(name: bytes, parties: int, asked: int) -> ReplyError:
    return ReplyError(f"ERR barrier '{name.decode('utf-8', 'replace')}' has {parties} parties, "
                      f"not {asked}; BARRIER.RESET it first")


@command("barrier.wait", -3, "barrier", flags=("blocking",))
def barrier_wait(client, argv):
    if len(argv) > 4:
        raise ReplyError("ERR syntax error")
    parties = parse_positive(argv[2], "parties")
    timeout = parse_timeout(argv[3]) if len(argv) == 4 else None
    return _wait_at_barrier(argv[1], parties, timeout)


def _wait_at_barrier(name, parties, timeout):
    index = yield BarrierWait(name, parties, timeout)
    return index


@command("barrier.reset", 2, "barrier")
def barrier_reset(client, argv):
    existed = yield BarrierReset(argv[1])
    return int(existed)


@command("barrier.status", 2, "barrier")
def barrier_status(client, argv):
    view = yield BarrierStatus(argv[1])
    return NULL_ARRAY if view is None else view.reply()


@command("event.set", 2, "event")
def event_set(client, argv):
    released = yield EventSet(argv[1])
    return released


@command("event.clear", 2, "event")
def event_clear(client, argv):
    yield EventClear(argv[1])
    return "OK"


@command("event.isset", 2, "event")
def event_isset(client, argv):
    is_set = yield EventIsSet(argv[1])
    return int(is_set)


@command("event.wait", -2, "event", flags=("blocking",))
def event_wait(client, argv):
    if len(argv) > 3:
        raise ReplyError("ERR syntax error")
    return _wait_for_event(argv[1], parse_timeout(argv[2]) if len(argv) == 3 else None)


def _wait_for_event(name, timeout):
    was_set = yield EventWait(name, timeout)
    return int(was_set)
