"""What the load clients do, and how the result is judged: one class per scenario.

A scenario is sans-io, like the server's core: it names the command a client
sends next and judges each reply; the driver (threads, trio, processes,
selectors) owns the sockets. Each client keeps its own `tally` (a plain dict,
so a worker process can send it home), and `verdict` merges the tallies and
reads the server's state back to say whether the invariant held.

Most requests are one command and one reply (`command`, then `check`). A
conversational scenario's request is a dialogue (`exchange`): a generator that
yields the commands of each step, is sent their replies, and returns what
`check` judges; `cas` reads, computes and writes back that way.

Replies arrive as hiredis reads them (loadgen.new_reply_reader) or, in tests,
as shared.resp.ReplyParser does: errors are ReplyError values in both, and a
scenario never compares a status (+OK is bytes in one, str in the other) and
takes RESP2's two nulls through `is_null` (*-1 is None in one, NULL_ARRAY in
the other).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

from contend.shared.commands.gil import work
from contend.shared.resp import NULL_ARRAY, ReplyError


def is_null(reply) -> bool:
    """A null: $-1 or *-1 in RESP2 (*-1: BLPOP's timeout, a refused EXEC), _ in RESP3."""
    return reply is None or reply is NULL_ARRAY


@dataclass
class Invariant:
    holds: bool
    expected: object
    observed: object
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Scenario:
    """The base: a run of `clients`; subclasses say what to send and what must hold."""
    clients: int
    prefix: str = "contend"
    seed: int = 1
    options: dict = field(default_factory=dict)

    name = "base"
    needs_request_count = False   # true where every client must do the same number of requests
    conversational = False        # true where a request is several round trips (`exchange`)

    def __post_init__(self) -> None:
        """Subclasses prepare what they need from `options` here."""

    def key(self, *parts) -> str:
        return ":".join([self.prefix, self.name, *map(str, parts)])

    def setup(self, admin) -> None:
        """Before the start line, on one connection: make the state the verdict expects."""

    def command(self, client: int, seq: int) -> tuple:
        raise NotImplementedError

    def exchange(self, client: int, seq: int):
        """A conversational request: yields each step's commands (a list, sent together),
        is sent their replies (a list), returns the reply `check` judges."""
        raise NotImplementedError

    def check(self, reply, client: int, seq: int, tally: dict) -> str | None:
        """Record what the reply means for the verdict; return an error kind, or None."""
        if isinstance(reply, ReplyError):
            return reply.text.split(" ", 1)[0]
        return None

    def verdict(self, admin, tallies: list[dict], ops: int, errors: int) -> Invariant:
        return Invariant(errors == 0, 0, errors, f"{errors} error replies")

    def figures(self, tallies: list[dict], ops: int) -> dict:
        """The scenario's own figures, shown beside ops/s (cas: its retries)."""
        return {}


class Ping(Scenario):
    name = "ping"

    def command(self, client, seq):
        return ("PING",)


class Incr(Scenario):
    """Shared counters: every acknowledged INCR must be in the total read back."""
    name = "incr"
    counters = 4

    def setup(self, admin):
        admin.call("DEL", *[self.key(n) for n in range(self.counters)])

    def command(self, client, seq):
        return ("INCR", self.key((client + seq) % self.counters))

    def check(self, reply, client, seq, tally):
        if isinstance(reply, int):
            tally["acknowledged"] = tally.get("acknowledged", 0) + 1
            return None
        return super().check(reply, client, seq, tally)

    def verdict(self, admin, tallies, ops, errors):
        return counted_in_full(self, admin, sum(t.get("acknowledged", 0) for t in tallies))


def counted_in_full(scenario, admin, expected: int) -> Invariant:
    """The lost-update check: every increment the server acknowledged is in the counters."""
    observed = sum(int(admin.call("GET", scenario.key(n)) or 0)
                   for n in range(scenario.counters))
    lost = expected - observed
    return Invariant(lost == 0, expected, observed,
                     "no lost updates" if lost == 0 else f"{lost} lost updates")


@dataclass
class Attempts:
    """How a conversational request ended: its last reply (None: it gave up), and its
    retries, the EXECs the server refused it (each sent it round again, or made it give up)."""
    reply: object
    retries: int


class Cas(Scenario):
    """Optimistic locking: shared counters incremented with check-and-set, no lock held.

    Each increment is WATCH and GET, then MULTI, SET (the value read, plus one)
    and EXEC. EXEC answers null when another client wrote the key after our
    WATCH: our value is stale, nothing was written, and the client goes round
    again. After `max_retries` retries it gives up (an error of kind `gave-up`). Every
    EXEC that succeeded must be in the total read back, as with `incr`.
    """
    name = "cas"
    counters = 4
    conversational = True

    def __post_init__(self):
        self.max_retries = self.options.get("max_retries", 100)

    def setup(self, admin):
        admin.call("DEL", *[self.key(n) for n in range(self.counters)])

    def exchange(self, client, seq):
        key = self.key((client + seq) % self.counters)
        for retries in range(self.max_retries + 1):
            watched, value = yield [("WATCH", key), ("GET", key)]
            failed = next((r for r in (watched, value) if isinstance(r, ReplyError)), None)
            if failed is None and not (value or b"0").lstrip(b"-").isdigit():
                failed = ReplyError("ERR value is not an integer or out of range")
            if failed is not None:
                yield [("UNWATCH",)]   # a key left watched would abort a later request
                return Attempts(failed, retries)
            *_queued, done = yield [("MULTI",), ("SET", key, int(value or 0) + 1), ("EXEC",)]
            if not is_null(done):
                return Attempts(done, retries)   # the SET's [OK], or why EXEC refused
        return Attempts(None, self.max_retries + 1)

    def check(self, attempts, client, seq, tally):
        tally["retries"] = tally.get("retries", 0) + attempts.retries
        if isinstance(attempts.reply, list):
            tally["committed"] = tally.get("committed", 0) + 1
            return None
        if attempts.reply is None:
            return "gave-up"
        return super().check(attempts.reply, client, seq, tally)

    def verdict(self, admin, tallies, ops, errors):
        return counted_in_full(self, admin, sum(t.get("committed", 0) for t in tallies))

    def figures(self, tallies, ops):
        retries = sum(t.get("retries", 0) for t in tallies)
        return {"retries": retries, "retries_per_op": round(retries / ops, 2) if ops else 0.0}


class Bank(Scenario):
    """Random transfers and withdrawals: money is neither created nor destroyed."""
    name = "bank"
    accounts = 5
    opening = 1000

    def setup(self, admin):
        names = [self.key(n) for n in range(self.accounts)]
        admin.call("DEL", *names)
        for name in names:
            admin.call("BANK.DEPOSIT", name, self.opening)

    def command(self, client, seq):
        rng = random.Random(self.seed * 1_000_003 + client * 10_007 + seq)
        source, target = rng.sample(range(self.accounts), 2)
        amount = rng.randint(1, 50)
        if rng.random() < 0.2:
            return ("BANK.WITHDRAW", self.key(source), amount)
        return ("BANK.TRANSFER", self.key(source), self.key(target), amount)

    def check(self, reply, client, seq, tally):
        if isinstance(reply, ReplyError) and reply.text == "ERR insufficient funds":
            tally["refused"] = tally.get("refused", 0) + 1
            return None   # a refusal is the bank working, not an error
        if isinstance(reply, int):   # a withdrawal paid out
            tally["withdrawn"] = tally.get("withdrawn", 0) + int(self.command(client, seq)[2])
        return super().check(reply, client, seq, tally)

    def verdict(self, admin, tallies, ops, errors):
        withdrawn = sum(t.get("withdrawn", 0) for t in tallies)
        expected = self.accounts * self.opening - withdrawn
        balances = [int(admin.call("GET", self.key(n)) or 0) for n in range(self.accounts)]
        observed = sum(balances)
        overdrafts = sum(1 for b in balances if b < 0)
        delta = observed - expected
        words = []
        if delta > 0:
            words.append(f"{delta} money created")
        elif delta < 0:
            words.append(f"{-delta} money destroyed")
        if overdrafts:
            words.append(f"{overdrafts} overdrawn accounts")
        return Invariant(delta == 0 and not overdrafts, expected, observed,
                         ", ".join(words) or "money conserved, no overdrafts")


class Pool(Scenario):
    """POOL.USE: the pool never lends more leases than it has."""
    name = "pool"

    def setup(self, admin):
        admin.call("CONFIG", "RESETSTAT")

    def command(self, client, seq):
        return ("POOL.USE", self.options.get("hold_ms", 1), 10)

    def check(self, reply, client, seq, tally):
        if is_null(reply):
            return "timeout"
        return super().check(reply, client, seq, tally)

    def verdict(self, admin, tallies, ops, errors):
        status = admin.call("POOL.STATUS")
        figures = dict(zip(status[::2], status[1::2], strict=True))
        size, peak = figures[b"size"], figures[b"peak-in-use"]
        return Invariant(peak <= size, f"<= {size}", peak,
                         f"peak {peak} of {size} leases in use")


class Barrier(Scenario):
    """Rounds of BARRIER.WAIT: in every round the indices are distinct and complete."""
    name = "barrier"
    needs_request_count = True

    def setup(self, admin):
        admin.call("BARRIER.RESET", self.key())

    def command(self, client, seq):
        return ("BARRIER.WAIT", self.key(), self.clients, 30)

    def check(self, reply, client, seq, tally):
        if isinstance(reply, int):
            tally.setdefault("indices", []).append([seq, reply])
            return None
        return super().check(reply, client, seq, tally)

    def verdict(self, admin, tallies, ops, errors):
        rounds: dict[int, list[int]] = {}
        for tally in tallies:
            for seq, index in tally.get("indices", []):
                rounds.setdefault(seq, []).append(index)
        bad = [seq for seq, indices in rounds.items()
               if sorted(indices) != list(range(self.clients))]
        return Invariant(not bad and errors == 0, f"{len(rounds)} rounds of 0..{self.clients - 1}",
                         f"{len(rounds) - len(bad)} complete rounds",
                         f"rounds with duplicate or missing indices: {bad[:10]}" if bad
                         else "every round's indices distinct and complete")


class Queue(Scenario):
    """Producers RPUSH, consumers BLPOP: every item is consumed exactly once."""
    name = "queue"

    def setup(self, admin):
        admin.call("DEL", self.key())

    def producer(self, client: int) -> bool:
        return client % 2 == 0

    def command(self, client, seq):
        if self.producer(client):
            return ("RPUSH", self.key(), f"{client}:{seq}")
        return ("BLPOP", self.key(), 2)

    def check(self, reply, client, seq, tally):
        if self.producer(client) and isinstance(reply, int):
            tally.setdefault("produced", []).append(f"{client}:{seq}")
            return None
        if isinstance(reply, list):
            tally.setdefault("consumed", []).append(reply[1].decode())
            return None
        if is_null(reply):
            return None   # nothing to take before the timeout: not an error
        return super().check(reply, client, seq, tally)

    def verdict(self, admin, tallies, ops, errors):
        produced = [item for t in tallies for item in t.get("produced", [])]
        consumed = [item for t in tallies for item in t.get("consumed", [])]
        left = [item.decode() for item in admin.call("LRANGE", self.key(), 0, -1)]
        twice = len(consumed) - len(set(consumed))
        missing = set(produced) - set(consumed) - set(left)
        invented = set(consumed) - set(produced)
        holds = not twice and not missing and not invented
        return Invariant(holds, len(produced), len(consumed) + len(left),
                         f"{len(consumed)} consumed, {len(left)} left in the queue"
                         + (f", {twice} consumed twice" if twice else "")
                         + (f", {len(missing)} lost" if missing else "")
                         + (f", {len(invented)} never produced" if invented else ""))


class Work(Scenario):
    """WORK: CPU-bound requests; every checksum must be right."""
    name = "work"

    def __post_init__(self):
        self.units = self.options.get("units", 10)
        self.checksum = work(self.units)

    def command(self, client, seq):
        return ("WORK", self.units)

    def check(self, reply, client, seq, tally):
        if isinstance(reply, int) and reply != self.checksum:
            return "wrong-checksum"
        return super().check(reply, client, seq, tally)


class Sleep(Scenario):
    """SLEEP: IO-bound requests, the GIL lab's other half."""
    name = "sleep"

    def command(self, client, seq):
        return ("SLEEP", self.options.get("sleep_ms", 1))


class Mixed(Incr):
    """A mix of PING, INCR, SLEEP and WORK; the INCRs are held to the counters' invariant."""
    name = "mixed"

    def command(self, client, seq):
        kind = (client * 7 + seq) % 10
        if kind < 4:
            return ("PING",)
        if kind < 8:
            return super().command(client, seq)
        return ("SLEEP", 1) if kind == 8 else ("WORK", 2)

    def check(self, reply, client, seq, tally):
        if self.command(client, seq)[0] == "INCR":
            return super().check(reply, client, seq, tally)
        return Scenario.check(self, reply, client, seq, tally)


SCENARIOS = {cls.name: cls for cls in (Ping, Incr, Cas, Bank, Pool, Barrier, Queue, Work, Sleep,
                                        Mixed)}
