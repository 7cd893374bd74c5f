"""Transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH, with Redis 7.0's rules.

MULTI opens a queue; the session (shared/session.py) queues every command
after it but EXEC, DISCARD, MULTI, WATCH and QUIT, answering `+QUEUED`, or
the error that refused it (unknown, wrong arity, a command that may wait),
which dooms the transaction: its EXEC answers EXECABORT and runs nothing.

EXEC runs the queue as one command, under one guard over the whole keyspace
and the lists (`Guard(ALL_KEYS, lists=True)`): in every sync mode but `off`
no other client's command runs between the queued ones. Each queued command
runs as it would alone, its effects performed by the model (its race window,
its nested guards, a push's wake-ups); only a BLPOP does not wait, as in
Redis: it answers null at once. The reply is every command's reply, errors
included; one failing does not stop the rest (Redis has no rollback).

WATCH is the optimistic lock, next to a Lock's pessimistic one: nothing is
held between WATCH and EXEC, but a write to a watched key by anyone (a
keyspace write calls `Keyspace.touch`) makes the EXEC answer a null array
and run nothing, so the client reads again and retries. EXEC, DISCARD,
UNWATCH and leaving forget every watch.

Who watches what is written under a guard, so that in every mode but `off`
it is ordered with the writes to those keys: WATCH under a guard over its
keys; forgetting under a guard over the whole keyspace, which never gives up
(in `unordered` a guard over several keys could, and a client that leaves
must not keep its watches). The watchers themselves are the keyspace's
(`Keyspace.watch`, `unwatch`, `is_dirty`).
"""

from __future__ import annotations

from collections.abc import Generator
from types import GeneratorType
from typing import Any

from contend.shared.commands.lists import Handed
from contend.shared.commands.table import Command, command
from contend.shared.effects import ALL_KEYS, Effect, Guard, PopWait
from contend.shared.resp import NULL_ARRAY, ReplyError
from contend.shared.state import Transaction

EXECABORT = "EXECABORT Transaction discarded because of previous errors."
NOT_IN_MULTI = "ERR Command not allowed inside a transaction"
QUEUED = "QUEUED"

# What runs at once inside MULTI, never queued (Redis's processCommand names the same).
RUN_AT_ONCE = frozenset({"exec", "discard", "multi", "watch", "quit", "reset"})
# Redis's commands that refuse to be queued (its `no-multi` flag), of those contend has.
NEVER_QUEUED = frozenset({"shutdown"})
# Blocking commands that EXEC runs without waiting: a BLPOP finding nothing answers null
# at once, as in Redis. The playground's other waits (a lease, a barrier, an event, a
# sleep) have no such answer, so they are refused when queued.
ANSWER_AT_ONCE = frozenset({"blpop", "brpop"})


def queue_refusal(command: Command) -> ReplyError | None:
    """Why `command` may not be queued in MULTI, or None: it may."""
    if command.name in NEVER_QUEUED:
        return ReplyError(NOT_IN_MULTI)
    if "blocking" in command.flags and command.name not in ANSWER_AT_ONCE:
        return ReplyError(f"{NOT_IN_MULTI}: {command.name.upper()} may wait, "
                          f"and EXEC never waits")
    return None


def refused(client, argv: list[bytes], error: ReplyError):
    """A command that lookup refused (unknown, wrong arity, NOAUTH): inside MULTI it dooms
    the transaction. EXEC refused so discards it at once and says why, as Redis does."""
    if argv[0].lower() == b"exec":
        client.transaction = None
        reason = error.text.removeprefix("ERR ")
        return _forget_watches(client, ReplyError(
            f"EXECABORT Transaction discarded because of: {reason}"))
    if client.transaction is not None:
        client.transaction.aborted = True
    return error


# -- the commands -----------------------------------------------------------------------

@command("multi", 1, "transaction")
def multi(client, argv):
    if client.transaction is not None:
        raise ReplyError("ERR MULTI calls can not be nested")   # and the transaction goes on
    client.transaction = Transaction()
    return "OK"


@command("exec", 1, "transaction")
def exec_(client, argv):
    transaction = client.transaction
    if transaction is None:
        raise ReplyError("ERR EXEC without MULTI")
    client.transaction = None   # whatever happens next, the transaction is over
    if transaction.aborted:
        return _forget_watches(client, ReplyError(EXECABORT))
    return _exec_steps(client, transaction.queued)


@command("discard", 1, "transaction")
def discard(client, argv):
    if client.transaction is None:
        raise ReplyError("ERR DISCARD without MULTI")
    client.transaction = None
    return _forget_watches(client, "OK")


@command("watch", -2, "transaction", keys=(1, -1, 1))
def watch(client, argv):
    if client.transaction is not None:
        # Too late: EXEC would check it at once. An error, but the transaction goes on.
        raise ReplyError("ERR WATCH inside MULTI is not allowed")
    return _watch_steps(client, tuple(argv[1:]))


@command("unwatch", 1, "transaction")
def unwatch(client, argv):
    return _forget_watches(client, "OK")


# -- EXEC ----------------------------------------------------------------------------

def _exec_steps(client, queued: list) -> Generator[Effect[Any], Any, Any]:
    # The whole keyspace, and the lists' lock too: a queued push hands items to waiters
    # and wakes them, which only the lists' lock may do.
    yield Guard(ALL_KEYS, lists=True)
    keyspace = client.server.keyspace
    for key in client.watching:
        # A watched key whose time to live ran out since WATCH fails the EXEC, as in
        # Redis: deleted now, the key is touched like any write.
        keyspace.exists(key)
    changed = client.dirty
    _unwatch(client)
    if changed:
        return NULL_ARRAY   # optimistic locking lost: nothing runs, the client retries
    mode = client.sync
    replies = []
    for command_, argv in queued:
        replies.append((yield from _run_queued(client, command_, argv, mode)))
    client.last_command = b"exec"
    return replies


def _run_queued(client, command_: Command, argv: list[bytes], mode: str):
    """One queued command, run as alone: its effects go to the model and their results
    come back, except that it never waits. Returns its reply (an error is a reply)."""
    # lazy import: the package imports this module while it fills the table
    from contend.shared.commands import run
    outcome = run(client, command_, argv)
    # run() takes the sync mode afresh; inside EXEC every guard keeps EXEC's own (a
    # queued CONFIG SET sync must not make its neighbours climb another ladder).
    client.sync = mode
    if type(outcome) is not GeneratorType:
        return outcome
    value: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                effect = outcome.send(value) if error is None else outcome.throw(error)
            except StopIteration as done:
                reply = done.value
                break
            except ReplyError as failure:
                reply = failure
                break
            value = error = None
            if type(effect) is PopWait:
                continue   # Redis: inside a transaction BLPOP does not wait; None = timed out
            if effect.blocking:   # the queue refuses such commands; a new one may forget
                error = ReplyError(f"{NOT_IN_MULTI}: EXEC never waits")
                continue
            try:
                value = yield effect
            except Exception as failure:   # the model failed the effect: the command hears it
                error = failure
    finally:
        outcome.close()
    return reply.reply() if type(reply) is Handed else reply


# -- WATCH ---------------------------------------------------------------------------

def _watch_steps(client, keys: tuple[bytes, ...]) -> Generator[Effect[Any], Any, Any]:
    yield Guard(keys)   # ordered with every write to these keys
    if client.dirty:
        return "OK"   # as Redis: its EXEC fails already, watching more changes nothing
    keyspace = client.server.keyspace
    for key in keys:
        if key in client.watching:
            continue
        # A key past its time that nobody has looked at yet goes now: its deletion is
        # no change to a watch made after its time (Redis's rule), nor touches this one.
        keyspace.exists(key)
        keyspace.watch(key, client.id)
        client.watching.add(key)
    return "OK"


def _forget_watches(client, reply):
    """`reply`, once every watch of the client is forgotten and its EXEC no longer doomed."""
    if not client.watching:
        return reply   # nothing is watched, so nothing can have made it dirty
    return unwatch_steps(client, reply)


def unwatch_steps(client, reply) -> Generator[Effect[Any], Any, Any]:
    """Forget every watch, then answer `reply`; also the session's clean-up when a
    client that WATCHes leaves (with NO_REPLY)."""
    yield Guard(ALL_KEYS)   # never gives up, in any mode; ordered with every write
    _unwatch(client)
    return reply


def _unwatch(client) -> None:
    """Stop watching every key; the caller holds a guard over them."""
    client.server.keyspace.unwatch(tuple(client.watching), client.id)
    client.watching.clear()
