"""What a command asks of the model it runs in.

A command that must wait, or must be guarded, is written once as a generator
in shared/commands and *yields* one of these effects at the point where it
needs the model. The model performs the effect in its own way (a
threading.Condition, a parked continuation in a selector loop, an `await`
in trio) and sends the result back into the generator. That is the whole
seam between "what a command means" and "how a model waits".

Rules every model keeps:
- A `Guard` or `ListsGuard` is held from the moment it is granted until the
  command ends (its generator returns or raises); a nested guard over keys
  the command already holds must be granted at once (BANK.TRANSFER re-enters
  the guarded withdraw and deposit steps).
- An effect with `blocking = True` may take a long time; the model sends
  the replies of earlier pipelined commands first and gives up the wait
  when the client hangs up.
- A model raises `ReplyError` from `perform` to fail the command (a DEADLOCK,
  a BROKEN barrier); the command's own code never half-applies a change
  before its guards are all granted.
"""

from __future__ import annotations

from dataclasses import dataclass

from contend.shared.resp import ReplyError

ALL_KEYS = None  # Guard(ALL_KEYS): the command touches the whole keyspace


class Effect:
    __slots__ = ()
    blocking = False


@dataclass(slots=True)
class Guard(Effect):
    """Exclusive use of these keys under the current sync mode (off: nothing)."""
    keys: tuple[bytes, ...] | None


def lock_order(mode: str, keys: tuple[bytes, ...]) -> list[bytes]:
    """The per-key locks a Guard takes, in the order taken: `striped` sorts them
    (every client climbs the same ladder, so no cycle can form); `unordered`
    takes them as the arguments name them (crossing transfers can deadlock)."""
    return sorted(set(keys)) if mode == "striped" else list(dict.fromkeys(keys))


def deadlock(key: bytes, order: list[bytes], timeout_ms: int) -> ReplyError:
    """The reply when a lock wait in `unordered` mode gives up."""
    taken = " then ".join(f"'{k.decode('utf-8', 'replace')}'" for k in order)
    return ReplyError(f"DEADLOCK gave up waiting for the lock on "
                      f"'{key.decode('utf-8', 'replace')}' after {timeout_ms} ms "
                      f"(locking {taken}); nothing was changed")


@dataclass(slots=True)
class ListsGuard(Effect):
    """Exclusive use of the lists and their waiters: the Condition's lock."""


@dataclass(slots=True)
class RaceWindow(Effect):
    """The gap between a read and its write; race-window-us wide."""


@dataclass(slots=True)
class Sleep(Effect):
    seconds: float
    blocking = True


@dataclass(slots=True)
class PopWait(Effect):
    """Wait, holding ListsGuard, for a push to hand this client an item (BLPOP/BRPOP).

    The model registers a `shared.waiters.ListWaiter`, waits until it is
    served, times out or hangs up, and returns `(key, item)` or None.
    """
    keys: tuple[bytes, ...]
    left: bool
    timeout: float | None
    blocking = True


@dataclass(slots=True)
class Pushed(Effect):
    """A list got items: serve its waiters in arrival order, then wake them."""
    key: bytes


@dataclass(slots=True)
class LeaseAcquire(Effect):
    """Take one pool lease (a Semaphore permit); returns the lease id or None on timeout."""
    timeout: float | None
    blocking = True


@dataclass(slots=True)
class LeaseRelease(Effect):
    """Give back a lease; returns False unless this client holds it."""
    lease: int


@dataclass(slots=True)
class BarrierWait(Effect):
    """Wait at the named barrier; returns the arrival index or raises ReplyError(BROKEN)."""
    name: bytes
    parties: int
    timeout: float | None
    blocking = True


@dataclass(slots=True)
class BarrierReset(Effect):
    """Break the waiters, then make the barrier whole again; returns whether it existed."""
    name: bytes


@dataclass(slots=True)
class BarrierStatus(Effect):
    """Returns `shared.barriers.BarrierView` or None for an unknown barrier."""
    name: bytes


@dataclass(slots=True)
class EventSet(Effect):
    """Set the named event; returns how many waiters it released."""
    name: bytes


@dataclass(slots=True)
class EventClear(Effect):
    name: bytes


@dataclass(slots=True)
class EventIsSet(Effect):
    name: bytes


@dataclass(slots=True)
class EventWait(Effect):
    """Returns True once the event is set, False on timeout."""
    name: bytes
    timeout: float | None
    blocking = True


@dataclass(slots=True)
class Reconfigure(Effect):
    """CONFIG SET changed these parameters; the model resizes what depends on them."""
    names: tuple[str, ...]


@dataclass(slots=True)
class ModelInfo(Effect):
    """Returns a dict of model-specific INFO fields (threads alive, loop stalls, ...)."""


@dataclass(slots=True)
class Shutdown(Effect):
    """Begin a graceful stop: stop accepting, finish in-flight replies, close all."""


# Each effect, and the name of the model method that performs it. Every model
# builds its dispatch table from this, so a model missing one fails at start-up.
PERFORMED_BY = {
    Guard: "guard", ListsGuard: "lists_guard", RaceWindow: "race_window", Sleep: "sleep",
    PopWait: "pop_wait", Pushed: "pushed",
    LeaseAcquire: "lease_acquire", LeaseRelease: "lease_release",
    BarrierWait: "barrier_wait", BarrierReset: "barrier_reset", BarrierStatus: "barrier_status",
    EventSet: "event_set", EventClear: "event_clear", EventIsSet: "event_isset",
    EventWait: "event_wait",
    Reconfigure: "reconfigure", ModelInfo: "model_info", Shutdown: "shutdown",
}


def performers(model) -> dict:
    """{effect type: the model's bound method that performs it}."""
    return {effect: getattr(model, name) for effect, name in PERFORMED_BY.items()}
