"""The command table: every command's name, arity, group and handler.

A handler takes `(client, argv)` and returns a reply value (see
`shared.resp.encode`), raises `ReplyError`, or returns a generator that
yields `shared.effects` to its model and returns the reply at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

NO_AUTH = "no-auth"      # may run before AUTH (AUTH, HELLO, QUIT)


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    arity: int           # Redis's convention: n exact, -n at least n (name included)
    group: str
    handler: Callable
    flags: tuple[str, ...] = ()
    keys: tuple[int, int, int] = (0, 0, 0)   # first key, last key, step (COMMAND INFO)

    def info(self) -> list:
        """COMMAND INFO's entry, the ten fields Redis 7 sends."""
        first, last, step = self.keys
        return [self.name.encode(), self.arity, [f.encode() for f in self.flags],
                first, last, step, [b"@" + self.group.encode()], [], [], []]


COMMANDS: dict[bytes, Command] = {}


def command(name: str, arity: int, group: str, *, flags: tuple[str, ...] = (),
            keys: tuple[int, int, int] = (0, 0, 0)):
    """Register the decorated function as the handler of `name`."""
    def register(handler: Callable) -> Callable:
        COMMANDS[name.encode()] = Command(name, arity, group, handler, flags, keys)
        return handler
    return register
