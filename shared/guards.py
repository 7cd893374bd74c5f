"""The one lock order every model follows, and the locks each sync mode takes.

Every guarded command climbs the same ladder, from the top down, and never
takes a lock above one it holds:

    1. the keyspace lock   `lock` mode: one reentrant lock, for every command;
                           `striped`/`unordered`: a readers-writer lock, taken
                           shared by per-key guards and exclusive by commands
                           over the whole keyspace (FLUSHALL, FLUSHDB, KEYS, DBSIZE)
    2. key locks           sorted (`striped`) or in argument order (`unordered`)
    3. the lists' lock     the lock of the Condition BLPOP waits on; taken after
                           the exclusive keyspace lock only by EXEC, whose queued
                           commands may push, pop and wake waiters

Because every mode but `off` puts the whole keyspace above the keys, a
FLUSHALL waits for an INCR that is halfway through, and an RPUSH on a key
waits for an INCR on the same key: no acknowledged write is overwritten by a
command that was already in flight. `lock_plan` turns a `Guard` into the
steps a model takes; the model only maps each step to its own primitive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from contend.shared.effects import ALL_KEYS, Guard

# What a step takes. In `lock` mode the one reentrant lock is also the lists'
# lock (the Condition is built on it), so a lock-mode plan has one step.
KEYSPACE = "keyspace"     # `lock` mode's one reentrant lock
SHARED = "shared"         # the readers-writer lock, shared: many per-key commands at once
EXCLUSIVE = "exclusive"   # the readers-writer lock, exclusive: the whole keyspace, alone
KEY = "key"               # one key's lock
LISTS = "lists"           # the lists' Condition lock


@dataclass(frozen=True, slots=True)
class Step:
    lock: str
    key: bytes | None = None
    # `unordered`: hold what is taken already for a race window before this
    # step, so two crossing transfers each take their first lock (the deadlock).
    window: bool = False
    # `unordered`: give up after deadlock-timeout-ms, change nothing, reply DEADLOCK.
    # Only a second key lock has it: waiting for the first, a command holds no key, so
    # it is in no cycle, and a hand-back (one key) must never give up its item.
    patience: bool = False


def key_order(mode: str, keys: tuple[bytes, ...]) -> list[bytes]:
    """The per-key locks a guard takes, in the order taken: `striped` sorts them
    (every client climbs the same ladder, so no cycle can form); `unordered`
    takes them as the arguments name them (crossing transfers can deadlock)."""
    return sorted(set(keys)) if mode == "striped" else list(dict.fromkeys(keys))


_LOCK_MODE_PLAN = (Step(KEYSPACE),)   # the same for every guard: made once
_WHOLE_KEYSPACE_PLAN = (Step(EXCLUSIVE),)
_WHOLE_KEYSPACE_AND_LISTS_PLAN = (Step(EXCLUSIVE), Step(LISTS))   # EXEC


def lock_plan(mode: str, guard: Guard, nested: bool = False) -> Sequence[Step]:
    """The steps that grant `guard` under `mode`, top of the ladder first.

    `nested`: the command already holds a guard over these keys (the session
    checks that), so only the reentrant locks are taken again: the keyspace
    RLock in `lock` mode (why it must be an RLock) and the key locks. The
    readers-writer lock is never re-entered: a second shared acquire behind a
    waiting writer would wait for a writer that waits for us.
    """
    if mode == "lock":
        return _LOCK_MODE_PLAN
    if mode == "off" or (nested and guard.keys is ALL_KEYS):
        return ()
    if guard.keys is ALL_KEYS:
        return _WHOLE_KEYSPACE_AND_LISTS_PLAN if guard.lists else _WHOLE_KEYSPACE_PLAN
    keys = key_order(mode, guard.keys)
    unordered = mode == "unordered" and not nested
    steps = [] if nested else [Step(SHARED)]
    steps += [Step(KEY, key, window=unordered and position > 0,
                   patience=unordered and position > 0)
              for position, key in enumerate(keys)]
    if guard.lists and not nested:
        steps.append(Step(LISTS))
    return steps


def key_steps(plan: Sequence[Step]) -> list[bytes]:
    """The keys a plan locks, in order (for the DEADLOCK reply)."""
    return [step.key for step in plan if step.key is not None]
