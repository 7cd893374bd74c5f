"""Every command's meaning, written once for all models.

`dispatch(client, argv)` checks the name, the arity and authentication in
Redis's order and calls the handler. Import order below only fills the table.
"""

from __future__ import annotations

import time

from contend.shared.args import wrong_arity
from contend.shared.commands import (  # noqa: F401
    bank,
    connection,
    events,
    expiry,
    gil,
    lists,
    pool,
    server,
    stepping,
    strings,
    transactions,
)
from contend.shared.commands.table import COMMANDS, NO_AUTH, Command
from contend.shared.resp import ReplyError

NOAUTH = ReplyError("NOAUTH Authentication required.")

__all__ = ["BLOCKING", "COMMANDS", "Command", "dispatch", "lookup", "run", "unknown_command"]

# Names of the commands that may wait; a model sends earlier replies before running one.
BLOCKING = frozenset(name for name, command in COMMANDS.items() if "blocking" in command.flags)


def unknown_command(argv: list[bytes]) -> ReplyError:
    args = ""
    for arg in argv[1:]:
        if len(args) >= 128:
            break
        args += "'" + arg.decode("utf-8", "replace")[:128 - len(args)] + "' "
    name = argv[0].decode("utf-8", "replace")[:128]
    return ReplyError(f"ERR unknown command '{name}', with args beginning with: {args}")


def lookup(client, argv: list[bytes]) -> Command | ReplyError:
    """The command argv names, or the error Redis answers instead, checked in Redis's
    order: the name, the arity, then authentication. (MULTI queues what passes.)"""
    command = COMMANDS.get(argv[0].lower())
    if command is None:
        return unknown_command(argv)
    arity, argc = command.arity, len(argv)
    if (argc != arity) if arity > 0 else (argc < -arity):
        return wrong_arity(command.name)
    if not client.authenticated and NO_AUTH not in command.flags:
        return NOAUTH
    return command


def run(client, command: Command, argv: list[bytes]):
    """Run a looked-up command: a reply value, or a generator of effects for the model."""
    client.commands += 1
    client.last_command = argv[0].lower()
    client.last_active = time.time()
    # A command keeps the sync mode it started in for all its guards: if CONFIG SET
    # switched modes between a command's first guard and a nested one, a command
    # holding the keyspace lock could wait for a key lock whose holder waits for
    # the keyspace lock, a deadlock made by the switch rather than by the lesson.
    client.sync = client.server.config.sync
    try:
        return command.handler(client, argv)
    except ReplyError as error:
        return error


def dispatch(client, argv: list[bytes]):
    """Look a command up and run it: a reply value, or a generator of effects."""
    command = lookup(client, argv)
    if type(command) is not Command:
        return command   # the error Redis answers
    return run(client, command, argv)
