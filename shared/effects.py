"""What a command asks of the model it runs in: the seam between meaning and waiting.

A command that must wait, or must be guarded, is written once as a generator
in shared/commands and *yields* one of these effects at the point where it
needs the model. The model performs the effect in its own way (a
threading.Condition, a parked continuation in a selector loop, an `await`
in trio) and sends the result back into the generator. Each effect says
what it sends back: `Effect[R]` is performed into an `R`.

Rules every model keeps:
- A `Guard` is held from the moment it is granted until the command ends (its
  generator returns or raises) or gives everything up to wait (`PopWait`). The
  locks it stands for, and their order, are `shared.guards.lock_plan`'s: one
  order for every model (docs/design.md, "The lock order").
- A nested guard over keys the command already holds is granted without
  waiting (BANK.TRANSFER re-enters the guarded withdraw and deposit steps).
- An effect with `blocking = True` may take a long time; the session has the
  earlier pipelined replies sent before the command runs, and the model gives
  the wait up when the client hangs up.
- A model fails an effect by raising `ReplyError` from its performer (a
  DEADLOCK, a BROKEN barrier); the driver throws it into the command, whose
  own code never half-applies a change before its guards are all granted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from contend.shared.resp import ReplyError

if TYPE_CHECKING:   # for the annotations only
    from contend.shared.waiters import ListWaiter

R = TypeVar("R")
ALL_KEYS = None  # Guard(ALL_KEYS): the command touches the whole keyspace


class Effect(Generic[R]):
    """Something a command needs from its model; performing it gives an `R`."""
    __slots__ = ()
    blocking: ClassVar[bool] = False


@dataclass(slots=True)
class Guard(Effect[None]):
    """Exclusive use of these keys (ALL_KEYS: of the whole keyspace) under the command's sync mode.

    `lists`: the command also reads or changes lists and their waiters, so it
    takes the lists' Condition lock last (a pop that finds nothing must be
    registered as a waiter before any push can slip in)."""
    keys: tuple[bytes, ...] | None
    lists: bool = False


def deadlock(key: bytes, order: list[bytes], timeout_ms: int) -> ReplyError:
    """The reply when a lock wait in `unordered` mode gives up."""
    taken = " then ".join(f"'{k.decode('utf-8', 'replace')}'" for k in order)
    return ReplyError(f"DEADLOCK gave up waiting for the lock on "
                      f"'{key.decode('utf-8', 'replace')}' after {timeout_ms} ms "
                      f"(locking {taken}); nothing was changed")


@dataclass(slots=True)
class RaceWindow(Effect[None]):
    """The gap between a read and its write; race-window-us wide, or, in step mode,
    until a student releases it. `read` is what the command has read (DEBUG.STEP LIST)."""
    read: bytes | int | None = None


@dataclass(slots=True)
class Sleep(Effect[None]):
    seconds: float
    blocking: ClassVar[bool] = True


@dataclass(slots=True)
class PopWait(Effect["tuple[bytes, bytes] | None"]):
    """Wait for a push to hand this client an item (BLPOP/BRPOP); yielded under a lists Guard.

    The model registers a `shared.waiters.ListWaiter` while it still holds the
    guard, then gives up every guard the command holds (as Condition.wait
    gives up its lock; key locks held through a wait would block the very
    push it waits for) and waits until it is served, times out or its client
    hangs up. It returns `(key, item)` or None, and takes no guard back: the
    command only has its reply left to give.
    """
    keys: tuple[bytes, ...]
    left: bool
    timeout: float | None
    blocking: ClassVar[bool] = True


@dataclass(slots=True)
class Pushed(Effect[None]):
    """A push handed items to these waiters (shared/waiters.py, oldest first): wake them."""
    served: list[ListWaiter]


@dataclass(slots=True)
class LeaseAcquire(Effect["int | None"]):
    """Take one pool lease (a Semaphore permit); returns the lease id or None on timeout."""
    timeout: float | None
    blocking: ClassVar[bool] = True


@dataclass(slots=True)
class LeaseRelease(Effect[bool]):
    """Give back a lease; returns False unless this client holds it."""
    lease: int


@dataclass(slots=True)
class BarrierWait(Effect[int]):
    """Wait at the named barrier; returns the arrival index or raises ReplyError(BROKEN)."""
    name: bytes
    parties: int
    timeout: float | None
    blocking: ClassVar[bool] = True


@dataclass(slots=True)
class BarrierReset(Effect[bool]):
    """Break the waiters, then make the barrier whole again; returns whether it existed."""
    name: bytes


@dataclass
class BarrierView:
    """What BARRIER.STATUS reports, whichever model holds the barrier."""
    parties: int
    waiting: int
    broken: bool
    generation: int     # rounds completed so far

    def reply(self) -> dict[bytes, int]:
        """BARRIER.STATUS: a map (RESP2 flattens it: name, value, ...)."""
        return {b"parties": self.parties, b"waiting": self.waiting,
                b"broken": int(self.broken), b"generation": self.generation}


@dataclass(slots=True)
class BarrierStatus(Effect["BarrierView | None"]):
    """Returns a BarrierView, or None for an unknown barrier."""
    name: bytes


@dataclass(slots=True)
class EventSet(Effect[int]):
    """Set the named event; returns how many waiters it released."""
    name: bytes


@dataclass(slots=True)
class EventClear(Effect[None]):
    name: bytes


@dataclass(slots=True)
class EventIsSet(Effect[bool]):
    name: bytes


@dataclass(slots=True)
class EventWait(Effect[bool]):
    """Returns True once the event is set, False on timeout."""
    name: bytes
    timeout: float | None
    blocking: ClassVar[bool] = True


@dataclass(slots=True)
class Reconfigure(Effect[None]):
    """CONFIG SET changed these parameters; the model resizes what depends on them."""
    names: tuple[str, ...]


@dataclass(slots=True)
class ModelInfo(Effect["dict[str, Any]"]):
    """Returns a dict of model-specific INFO fields (threads alive, loop stalls, ...)."""


@dataclass(slots=True)
class Shutdown(Effect[None]):
    """Begin a graceful stop: stop accepting, finish in-flight replies, close all."""


# Each effect, and the name of the model method that performs it. Every model
# builds its dispatch table from this, so a model missing one fails at start-up.
PERFORMED_BY: dict[type[Effect[Any]], str] = {
    Guard: "guard", RaceWindow: "race_window", Sleep: "sleep",
    PopWait: "pop_wait", Pushed: "pushed",
    LeaseAcquire: "lease_acquire", LeaseRelease: "lease_release",
    BarrierWait: "barrier_wait", BarrierReset: "barrier_reset", BarrierStatus: "barrier_status",
    EventSet: "event_set", EventClear: "event_clear", EventIsSet: "event_isset",
    EventWait: "event_wait",
    Reconfigure: "reconfigure", ModelInfo: "model_info", Shutdown: "shutdown",
}


def performers(model: object) -> dict[type[Effect[Any]], Callable[..., Any]]:
    """{effect type: the model's bound method that performs it}; a missing one fails here."""
    missing = [name for name in PERFORMED_BY.values() if not callable(getattr(model, name, None))]
    if missing:
        raise TypeError(f"{type(model).__qualname__} cannot perform: {', '.join(missing)}")
    return {effect: getattr(model, name) for effect, name in PERFORMED_BY.items()}
