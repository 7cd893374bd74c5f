"""The race lab and the one lock order, through the in-process model, on a fake clock.

The model checks every lock a command takes against the ladder of
shared/guards.py (keyspace < key locks < the lists' lock; key locks sorted
in `striped`; nested guards only re-enter) and fails the test on a breach.
Here: what each sync mode means for two interleaved commands, the deadlock
`unordered` exists to show, and the three seams the ladder closes. Each
seam case accepts only outcomes that some serial order of the commands gives.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from contend.shared import guards, session
from contend.shared.commands import COMMANDS
from contend.shared.effects import Guard
from contend.shared.keyspace import Keyspace
from contend.shared.resp import ReplyError
from tests.inprocess import InProcess

GUARDED = ["lock", "striped", "unordered"]
WINDOW = 0.001   # the race window of these tests, in seconds


def new_model(mode: str, **settings) -> InProcess:
    return InProcess(sync=mode, race_window_us=int(WINDOW * 1_000_000), **settings)


def is_error(reply, prefix: str) -> bool:
    return isinstance(reply, ReplyError) and reply.text.startswith(prefix)


# -- the race lab --------------------------------------------------------------------

def test_sync_off_with_a_race_window_loses_an_update():
    model = new_model("off")
    a, b = model.connect("a"), model.connect("b")
    a.send("INCR", "k")
    b.send("INCR", "k")
    model.run()            # both have read 0 and wait in their windows
    model.advance(WINDOW)
    assert a.replies() == [1] and b.replies() == [1]
    assert model.data[b"k"] == b"1"   # two acknowledged increments, one survives


def test_sync_off_with_no_window_loses_nothing_because_nothing_interleaves():
    model = InProcess(sync="off")
    a, b = model.connect("a"), model.connect("b")
    a.send("INCR", "k")
    b.send("INCR", "k")
    model.run()
    assert model.data[b"k"] == b"2"


@pytest.mark.parametrize("mode", GUARDED)
def test_guarded_modes_are_exact_with_the_window_open(mode):
    model = new_model(mode)
    clients = [model.connect(f"c{i}") for i in range(5)]
    for client in clients:
        client.send("INCR", "k")
    model.settle()
    assert sorted(c.replies()[0] for c in clients) == [1, 2, 3, 4, 5]
    assert model.data[b"k"] == b"5"
    assert model.now == pytest.approx(5 * WINDOW)   # one window at a time: they were serialised


def test_sync_off_pays_out_money_the_bank_does_not_have():
    model = new_model("off")
    model.data[b"acct"] = b"100"
    a, b = model.connect("a"), model.connect("b")
    a.send("BANK.WITHDRAW", "acct", "80")
    b.send("BANK.WITHDRAW", "acct", "80")
    model.settle()
    assert a.replies() == [20] and b.replies() == [20]   # both passed the check: 160 paid out


@pytest.mark.parametrize("mode", GUARDED)
def test_guarded_withdrawals_never_overdraw(mode):
    model = new_model(mode)
    model.data[b"acct"] = b"100"
    a, b = model.connect("a"), model.connect("b")
    a.send("BANK.WITHDRAW", "acct", "80")
    b.send("BANK.WITHDRAW", "acct", "80")
    model.settle()
    assert a.replies() == [20] and is_error(b.replies()[0], "ERR insufficient funds")
    assert model.data[b"acct"] == b"20"


def crossing_transfers(mode: str, **settings):
    model = new_model(mode, **settings)
    model.data.update({b"x": b"100", b"y": b"100"})
    a, b = model.connect("a"), model.connect("b")
    a.send("BANK.TRANSFER", "x", "y", "10")
    b.send("BANK.TRANSFER", "y", "x", "10")
    return model, a, b


def test_unordered_crossing_transfers_deadlock_then_give_up_having_changed_nothing():
    model, a, b = crossing_transfers("unordered", deadlock_timeout_ms=50)
    model.advance(WINDOW)   # each holds its first account and wants the other's
    assert model.trace_of("a")[-1] == "waits for lock key y"
    assert model.trace_of("b")[-1] == "waits for lock key x"
    model.advance(0.050 - 0.000001)
    assert a.replies() == [] and b.replies() == []   # not one microsecond early
    model.advance(0.000001)
    [gave_up] = a.replies()
    assert gave_up.text == ("DEADLOCK gave up waiting for the lock on 'y' after 50 ms "
                            "(locking 'x' then 'y'); nothing was changed")
    model.settle()   # its locks freed, the other transfer goes through
    assert b.replies() == [[90, 110]]
    assert model.data == {b"x": b"110", b"y": b"90"}   # a's transfer changed nothing
    assert model.info("deadlocks") == 1


def test_striped_crossing_transfers_never_deadlock():
    model, a, b = crossing_transfers("striped", deadlock_timeout_ms=50)
    model.settle()
    assert a.replies() == [[90, 110]] and b.replies() == [[100, 100]]
    assert model.info("deadlocks") == 0 and model.data == {b"x": b"100", b"y": b"100"}


@pytest.mark.parametrize("mode", ["lock", "striped", "unordered"])
def test_transfer_re_enters_its_own_guards(mode):
    model = new_model(mode)
    model.data[b"x"] = b"100"
    a = model.connect("a")
    a.send("BANK.TRANSFER", "x", "y", "10")
    model.settle()
    assert a.replies() == [[90, 10]]
    locking = [event for event in model.trace_of("a") if event.startswith(("takes", "re-enters"))]
    if mode == "lock":   # why `lock` mode's lock must be an RLock
        assert locking == ["takes keyspace", "re-enters keyspace", "re-enters keyspace"]
    else:   # the withdraw and deposit steps re-enter their key; the rw lock is never re-entered
        assert locking == ["takes keyspace-rw shared", "takes key x", "takes key y",
                           "re-enters key x", "re-enters key y"]


# -- the three seams ---------------------------------------------------------------------

@pytest.mark.parametrize("mode", GUARDED)
def test_flushall_waits_for_an_incr_in_its_race_window(mode):
    model = new_model(mode)
    model.data[b"k"] = b"5"
    a, b = model.connect("a"), model.connect("b")
    a.send("INCR", "k")
    model.run()               # INCR has read 5 and waits in its window
    b.send("FLUSHALL")
    model.run()
    assert b.replies() == []  # FLUSHALL waits for it
    model.settle()
    assert a.replies() == [6] and b.replies() == ["OK"]
    assert b"k" not in model.data   # INCR, then FLUSHALL: the one serial order possible


@pytest.mark.parametrize("mode", GUARDED)
def test_rpush_waits_for_an_incr_on_its_key(mode):
    model = new_model(mode)
    a, b = model.connect("a"), model.connect("b")
    a.send("INCR", "k")
    model.run()
    b.send("RPUSH", "k", "x")
    model.settle()
    assert a.replies() == [1]
    assert is_error(b.replies()[0], "WRONGTYPE")   # never both succeeding
    assert model.data[b"k"] == b"1"


def served_then_gone(mode: str, second_waiter: bool, then: list[str]):
    """A BLPOPs l; a push serves it; its client hangs up before it is resumed to reply."""
    model = new_model(mode)
    a, b, pusher = model.connect("a"), model.connect("b"), model.connect("pusher")
    a.send("BLPOP", "l", "0")
    if second_waiter:
        b.send("BLPOP", "l", "0")
    model.run()
    pusher.send("RPUSH", "l", "x")
    if then:
        pusher.send(*then)
    model.step()              # the pusher's turn: it serves a, and a is ready to reply
    assert model.ready and model.ready[0][0] is a
    a.hang_up()               # ...but a's client has gone first
    model.settle()
    return model, a, b, pusher


@pytest.mark.parametrize("mode", GUARDED)
def test_item_served_to_a_waiter_that_left_goes_to_the_next_even_after_a_type_change(mode):
    model, a, b, pusher = served_then_gone(mode, second_waiter=True, then=["SET", "l", "str"])
    assert pusher.replies() == [1, "OK"]
    assert "runs hand-back" in model.trace_of("a") and a.closed
    assert b.replies() == [[b"l", b"x"]]
    assert b.call("GET", "l") == b"str"


@pytest.mark.parametrize("mode", GUARDED)
def test_item_served_to_a_waiter_that_left_goes_back_into_the_list(mode):
    model, a, b, pusher = served_then_gone(mode, second_waiter=False, then=[])
    assert b.call("LRANGE", "l", "0", "-1") == [b"x"]


@pytest.mark.parametrize("mode", GUARDED)
def test_an_item_a_blpop_takes_at_once_for_a_client_that_left_meanwhile_goes_back(mode):
    model = new_model(mode)
    a, b, c, observer = (model.connect(name) for name in ("a", "b", "c", "observer"))
    observer.call("RPUSH", "l", "x")
    a.send("INCR", "k")     # holds the keyspace lock (shared, in striped) through its window
    model.run()
    b.send("DBSIZE")        # wants it exclusive: what comes after queues behind it
    c.send("BLPOP", "l", "0")
    model.run()
    assert model.trace_of("c")[-1].startswith("waits for lock keyspace")
    c.hang_up()             # mid-command: the BLPOP still runs, finds x at once...
    model.settle()
    assert "runs hand-back" in model.trace_of("c")
    assert observer.call("LRANGE", "l", "0", "-1") == [b"x"]   # ...and x is not lost


def test_a_hand_back_in_unordered_waits_for_its_key_however_long_and_loses_nothing():
    # The race window (5 ms) is longer than deadlock-timeout-ms (3 ms): a command that
    # gave up waiting for a key lock would drop the item it was handing back.
    model = InProcess(sync="unordered", race_window_us=5000, deadlock_timeout_ms=3)
    a, h, p, g = (model.connect(name) for name in "ahpg")
    a.send("BLPOP", "l", "0")
    h.send("BLPOP", "l", "z", "0")   # holds l through its window, then waits behind a
    model.advance(0.003)
    p.send("RPUSH", "l", "x")        # waits for l...
    g.send("BLPOP", "l", "y", "0")   # ...and so does g, behind p
    model.run()
    model.advance(0.002, run=False)
    model.step()                     # h's window ends: it parks as a waiter, l goes to p
    model.step()                     # p pushes: x is a's; then l goes to g, into its window
    assert p.replies() == [1] and model.ready[0][0] is a
    a.hang_up()                      # a left before hearing: x goes back, behind g's window
    model.settle()
    assert "runs hand-back" in model.trace_of("a")
    assert h.replies() == [[b"l", b"x"]]   # the next waiter on l got it
    assert model.info("deadlocks") == 0    # waiting for one key lock is never a deadlock


# -- the ladder itself ----------------------------------------------------------------

@pytest.mark.parametrize("mode", GUARDED)
def test_a_blocked_pop_holds_no_lock_while_it_waits(mode):
    model = new_model(mode)
    a = model.connect("a")
    a.send("BLPOP", "l", "0")
    model.run()
    assert not model.keyspace_lock.holders and not model.rw_lock.holders
    assert not model.lists_lock.holders and model.info("key_locks") == 0


def test_key_locks_exist_only_while_held_or_wanted():
    model = new_model("striped")
    a, b = model.connect("a"), model.connect("b")
    a.send("MSET", "p", "1", "q", "2")
    a.send("INCR", "p")
    b.send("INCR", "p")
    model.run()
    assert model.info("key_locks") == 1   # p: held by a in its window, wanted by b
    model.settle()
    assert model.info("key_locks") == 0


def test_a_waiting_flushall_is_not_overtaken_by_later_readers():
    model = new_model("striped")
    a, b, c = model.connect("a"), model.connect("b"), model.connect("c")
    a.send("INCR", "k")
    model.run()
    b.send("FLUSHALL")
    c.send("INCR", "other")   # would share the keyspace lock with a, but b queued first
    model.settle()
    taking = [who for who, event in model.trace if event.startswith("takes keyspace-rw")]
    assert taking == ["a", "b", "c"]   # first come, first served: no writer starves
    assert c.replies() == [1] and model.data == {b"other": b"1"}


def test_a_command_keeps_the_sync_mode_it_started_in():
    model = new_model("striped")
    model.data[b"x"] = b"100"
    a, b = model.connect("a"), model.connect("b")
    a.send("BANK.TRANSFER", "x", "y", "10")
    a.send("BANK.DEPOSIT", "x", "1")
    model.run()   # the transfer holds x and y, and waits in its withdraw step's window
    assert b.call("CONFIG", "SET", "sync", "lock") == "OK"
    model.settle()
    assert a.replies() == [[90, 10], 91]
    trace = model.trace_of("a")
    switched = trace.index("runs BANK.DEPOSIT")
    assert "re-enters key y" in trace[:switched]   # the transfer's deposit step: still striped
    assert trace[switched + 1] == "takes keyspace"  # the next command: the new mode


def test_the_checker_fails_a_plan_that_reaches_up_the_ladder(monkeypatch):
    real = session.lock_plan
    monkeypatch.setattr(session, "lock_plan", lambda *a, **k: real(*a, **k)[::-1])
    model = new_model("striped")
    a = model.connect("a")
    a.send("RPUSH", "l", "x")   # lists, then the key, then the keyspace: upside down
    with pytest.raises(AssertionError, match="lock order: a takes key l while holding lists"):
        model.run()


def test_the_checker_fails_striped_key_locks_out_of_sorted_order(monkeypatch):
    monkeypatch.setattr(guards, "key_order", lambda mode, keys: list(keys))
    model = new_model("striped")
    a = model.connect("a")
    a.send("MSET", "b", "1", "a", "2")
    with pytest.raises(AssertionError, match="a takes key a while holding key b"):
        model.run()


def test_the_checker_fails_a_nested_guard_that_takes_a_new_lock(monkeypatch):
    real = session.lock_plan
    monkeypatch.setattr(session, "lock_plan",
                        lambda mode, guard, nested=False: real(mode, guard, nested=False))
    model = new_model("striped")
    a = model.connect("a")
    a.send("BANK.TRANSFER", "x", "y", "1")   # its nested guards would take the rw lock again
    with pytest.raises(AssertionError, match="keyspace-rw again; it is not reentrant"):
        model.settle()


def test_the_session_refuses_a_nested_guard_over_keys_the_command_does_not_hold(monkeypatch):
    def sneaky(client, argv):
        yield Guard((b"a",))
        yield Guard((b"b",))   # nested, over a key it never locked
        return "OK"

    monkeypatch.setitem(COMMANDS, b"echo", dataclasses.replace(COMMANDS[b"echo"], handler=sneaky))
    model = InProcess(sync="striped", bugs_allowed=True)
    assert is_error(model.connect("a").call("ECHO", "x"), "ERR internal error")
    assert model.info("internal_errors") == 1 and model.info("key_locks") == 0


# -- many clients, random interleavings --------------------------------------------------

class Crowd:
    """Clients doing random things, some of which hang up; and what must hold throughout."""

    ACCOUNTS = [f"acct{i}" for i in range(4)]

    def __init__(self, mode: str, seed: int):
        self.rng = random.Random(seed)
        self.model = new_model(mode, pool_size=2, deadlock_timeout_ms=3)
        self.model.data.update({name.encode(): b"100" for name in self.ACCOUNTS})
        self.live: list = []
        self.flaky: set = set()    # closed-loop clients that may hang up at any moment
        self.sent: dict = {}
        self.pushed: set[bytes] = set()   # every item a push really stored (see the test)

    def command(self, client) -> list:
        rng, flaky = self.rng, client in self.flaky
        lists = rng.choice([["l0"], ["l1"], ["l0", "l1"]])
        timeout = rng.choice(["0", "0.001", "0.003"])
        accounts = rng.sample(self.ACCOUNTS, 2)
        choices = [
            lambda: [rng.choice(["RPUSH", "LPUSH"]), lists[0], *self.new_items(rng.randint(1, 2))],
            lambda: [rng.choice(["BLPOP", "BRPOP"]), *lists, timeout],
            lambda: ["BANK.TRANSFER", *accounts, str(rng.randint(1, 30))],
            lambda: ["BANK.AUDIT", *self.ACCOUNTS],
            lambda: ["INCR", "counter"],
            lambda: [rng.choice(["DBSIZE", "LLEN"])] + ([] if rng.random() < 0.5 else ["l0"]),
            lambda: ["POOL.ACQUIRE", "0.002"],
            lambda: ["POOL.USE", "1", "0.002"],
            lambda: ["POOL.RELEASE", str(rng.randint(1, 5))],
            lambda: [rng.choice(["EVENT.SET", "EVENT.CLEAR"]), "e"],
            lambda: ["EVENT.WAIT", "e", "0.002"],
            lambda: ["BARRIER.WAIT", "b", "2", "0.003"],
        ]
        if not flaky:   # a pop that is no wait is lost with a client that leaves mid-command
            choices.append(lambda: [rng.choice(["LPOP", "RPOP"]), lists[0], "2"])
        args = rng.choice(choices)()
        if args[0] == "DBSIZE":
            args = ["DBSIZE"]
        return args

    def new_items(self, count: int) -> list[str]:
        self.items = getattr(self, "items", 0) + count
        return [f"item{self.items - i}" for i in range(count)]

    def play(self, rounds: int) -> None:
        model, rng = self.model, self.rng
        for _ in range(rounds):
            roll = rng.random()
            if not self.live or roll < 0.05:
                client = model.connect(f"c{len(model.connections)}")
                self.live.append(client)
                self.sent[client] = 0
                if rng.random() < 0.5:
                    self.flaky.add(client)
            elif roll < 0.12:
                flaky = [c for c in self.live if c in self.flaky]
                if flaky:
                    client = rng.choice(flaky)
                    client.hang_up()
                    self.live.remove(client)
            elif roll < 0.27:
                model.advance(rng.choice([0.0005, 0.001, 0.002]))
            elif roll < 0.37:
                model.step()
            elif roll < 0.47:
                model.run()
            else:
                client = rng.choice(self.live)
                if client in self.flaky and len(client.received) < self.sent[client]:
                    continue   # closed loop: a flaky client waits for its answer first
                client.send(*self.command(client))
                self.sent[client] += 1
            ledger = model.state.ledger
            assert ledger.in_use <= ledger.size   # never more leases than the pool has
        model.settle()   # every answer out, before the steady clients leave too
        for client in self.live:
            client.hang_up()
        model.settle()


@pytest.mark.parametrize("mode", GUARDED)
@pytest.mark.parametrize("seed", range(8))
def test_random_interleavings_keep_every_promise(mode, seed, monkeypatch):
    crowd = Crowd(mode, seed)
    push = Keyspace.push

    def recorded_push(keyspace, key, values, left):
        length = push(keyspace, key, values, left)   # (a push that fails stores nothing)
        crowd.pushed.update(values)
        return length

    # Pushes sent but never run (pipelined behind a wait whose client then left) don't count.
    monkeypatch.setattr(Keyspace, "push", recorded_push)
    crowd.play(rounds=400)
    model = crowd.model
    assert all(conn.closed for conn in model.connections)
    # Nothing held, queued or waiting is left behind.
    assert not (model.keyspace_lock.holders or model.rw_lock.holders or model.lists_lock.holders)
    assert model.info("key_locks") == 0 and model.info("list_waiters") == 0
    assert model.info("pool_in_use") == 0 and model.info("pool_waiting") == 0
    assert model.info("connected_clients") == 0 and model.info("blocked_clients") == 0
    # Money is conserved; every INCR that ran and did not give up (a DEADLOCK) counted;
    # every item pushed is somewhere, once.
    assert sum(int(model.data[name.encode()]) for name in crowd.ACCOUNTS) == 400
    runs = sum(event == "runs INCR" for _, event in model.trace)
    gave_up = sum(event == "gives up on key counter" for _, event in model.trace)
    assert int(model.data.get(b"counter", b"0")) == runs - gave_up
    received = []
    for conn in model.connections:
        for reply in conn.received:
            if isinstance(reply, list) and reply[:1] in ([b"l0"], [b"l1"]):
                received.append(reply[1])                      # BLPOP, BRPOP
            elif isinstance(reply, list) and all(isinstance(r, bytes) for r in reply):
                received += [r for r in reply if r.startswith(b"item")]   # LPOP l 2
    left = [item for key in (b"l0", b"l1") for item in model.data.get(key, ())]
    assert sorted(received + left) == sorted(crowd.pushed)   # none lost, none twice
