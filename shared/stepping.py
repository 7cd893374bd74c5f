"""Step mode: the student is the scheduler.

With `race-window step` (`--race-window step`, or CONFIG SET), a command that
reaches its race window does not sleep there: it parks, holding whatever
guards it holds, until someone says `DEBUG.STEP RELEASE id`. `DEBUG.STEP LIST`
shows who is parked: the client, the command, what it has read, which locks
it holds. So a student performs the lost update on purpose (two INCRs both
read 5, release one, release the other, GET says 6), watches `lock` keep the
second INCR from even reaching its window, and lets two crossing transfers in
`unordered` mode each take one lock, then the DEADLOCK.

This module is the book of parked commands, with no waiting in it. Each model
parks a command the way it waits for any named event (its own EVENT.WAIT: a
threading.Event, a parked continuation, an await), on the event named
`step_event(id)`; DEBUG.STEP RELEASE sets that event. So stepping works in
every model, and in the processes model the book and the events live in the
host, where every worker sees them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass


@dataclass(frozen=True)
class Parked:
    """One command waiting in its race window for a student to let it go."""
    id: int
    client: int            # the client's id (CLIENT LIST's id=)
    command: str           # as it was sent, e.g. "incr counter"
    read: str              # what it has read before its window ("" when nothing yet)
    holds: str             # the locks it holds meanwhile, e.g. "keyspace" or "key:a"
    worker: int | None = None   # the processes model: the worker it runs in

    def line(self) -> str:
        """DEBUG.STEP LIST's line for it, CLIENT LIST's shape: name=value pairs."""
        return (f"id={self.id} client={self.client} command=\"{self.command}\" "
                f"read={self.read or '-'} holds={self.holds or '-'}")


# A parked command whose wait ended without a release: its client left, or the server stops.
# It ends here, without its write.
CUT_SHORT = "ERR the parked command was given up: its client left or the server is stopping"


def step_event(step_id: int) -> bytes:
    """The named event a parked command waits on; a name no client can type into
    EVENT.SET by accident, since it holds a space."""
    return b"step %d" % step_id


class Stepper:
    """The parked commands, by id. Threads park and release at once (the threads
    model; the processes model's host serves each worker in a thread of its own), so
    every step is one operation on the dict that no other can split: a single
    `pop` decides who took a command off the book, a release or its own leaving."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)   # next() on a count is atomic
        self._parked: dict[int, Parked] = {}

    def park(self, client: int, command: str, read: str, holds: str,
             worker: int | None = None) -> int:
        step_id = next(self._ids)
        self._parked[step_id] = Parked(step_id, client, command, read, holds, worker)
        return step_id

    def release(self, step_id: int) -> bool:
        """Take it off the book; False when nobody is parked with that id. The caller then
        sets its event, which lets the command go on."""
        return self._parked.pop(step_id, None) is not None

    def leave(self, step_id: int) -> None:
        """The command is no longer parked (released, or its client left, or the server
        stops): off the book, whoever got there first."""
        self._parked.pop(step_id, None)

    def parked(self) -> list[Parked]:
        return sorted(list(self._parked.values()), key=lambda parked: parked.id)

    def ids(self) -> list[int]:
        return sorted(list(self._parked))

    def left_with(self, worker: int) -> list[int]:
        """A worker process died: its parked commands went with it."""
        gone = [step_id for step_id, parked in list(self._parked.items())
                if parked.worker == worker]
        for step_id in gone:
            self._parked.pop(step_id, None)
        return gone


def describe(argv: list[bytes], limit: int = 60) -> str:
    """A command as DEBUG.STEP LIST shows it: its name in lowercase, then its arguments."""
    text = " ".join(word.decode("utf-8", "replace") for word in [argv[0].lower(), *argv[1:]])
    return text if len(text) <= limit else text[:limit - 3] + "..."
