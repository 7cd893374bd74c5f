"""MULTI, EXEC, DISCARD, WATCH, UNWATCH: Redis 7.0's rules, atomicity in each sync mode.

Most tests run on the in-process model (tests/inprocess.py), whose checker
fails a command that climbs the lock ladder the wrong way, so EXEC's one
guard over everything and the nested guards of the commands it runs are
checked in every mode. The last tests start real servers: the same scripts
go to every model and to a real redis-server, and the replies must be the
same; and EXEC's guard is exercised on each model's own locks.
"""

from __future__ import annotations

import pytest

from contend.shared.effects import ALL_KEYS, Guard
from contend.shared.guards import EXCLUSIVE, LISTS, lock_plan
from contend.shared.resp import NULL_ARRAY, ReplyError
from tests.inprocess import InProcess

MODES = ["off", "lock", "striped", "unordered"]
GUARDED = ["lock", "striped", "unordered"]
EXECABORT = "-EXECABORT Transaction discarded because of previous errors."


def shown(reply):
    """A reply with each error as its line's text ("-ERR ..."), so that replies compare."""
    if isinstance(reply, ReplyError):
        return "-" + reply.text
    return [shown(item) for item in reply] if isinstance(reply, list) else reply


def ask(model: InProcess, conn, *args):
    """Send one command, let time pass until it is answered, and return its one reply."""
    conn.send(*args)
    model.settle()
    replies = conn.replies()
    assert len(replies) == 1, (args, replies)
    return shown(replies[0])


def script(model: InProcess, conn, *commands) -> list:
    return [ask(model, conn, *command) for command in commands]


def idle(model: InProcess) -> bool:
    """No lock is held or wanted any more."""
    return not (model.key_locks or model.rw_lock.holders or model.keyspace_lock.holders
                or model.lists_lock.holders)


# -- MULTI, the queue, EXEC ---------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_exec_runs_the_queue_in_order_and_answers_every_reply(mode):
    model = InProcess(sync=mode, race_window_us=500)
    a = model.connect("a")
    assert script(model, a, ("MULTI",), ("SET", "k", "1"), ("INCR", "k"), ("RPUSH", "l", "x"),
                  ("LRANGE", "l", "0", "-1"), ("BANK.TRANSFER", "k", "acct", "2")) == [
        "OK", "QUEUED", "QUEUED", "QUEUED", "QUEUED", "QUEUED"]
    assert model.data == {}   # queued, not run
    assert ask(model, a, "EXEC") == ["OK", 2, 1, [b"x"], [0, 2]]
    assert model.data[b"acct"] == b"2" and model.data[b"k"] == b"0"
    assert ask(model, a, "EXEC") == "-ERR EXEC without MULTI"
    assert idle(model)


def test_an_empty_transaction_answers_an_empty_array():
    model = InProcess()
    a = model.connect("a")
    assert script(model, a, ("MULTI",), ("EXEC",)) == ["OK", []]


def test_multi_inside_multi_is_an_error_and_the_transaction_goes_on():
    model = InProcess()
    a = model.connect("a")
    assert script(model, a, ("MULTI",), ("MULTI",), ("SET", "k", "v"), ("EXEC",)) == [
        "OK", "-ERR MULTI calls can not be nested", "QUEUED", ["OK"]]


def test_exec_and_discard_without_multi_are_errors():
    model = InProcess()
    a = model.connect("a")
    assert script(model, a, ("EXEC",), ("DISCARD",)) == [
        "-ERR EXEC without MULTI", "-ERR DISCARD without MULTI"]


def test_watch_inside_multi_is_an_error_and_the_transaction_goes_on():
    model = InProcess()
    a = model.connect("a")
    assert script(model, a, ("MULTI",), ("WATCH", "k"), ("SET", "k", "v"), ("EXEC",)) == [
        "OK", "-ERR WATCH inside MULTI is not allowed", "QUEUED", ["OK"]]
    assert not model.state.keyspace.watchers


def test_discard_drops_the_queue():
    model = InProcess()
    a = model.connect("a")
    assert script(model, a, ("MULTI",), ("SET", "k", "v"), ("DISCARD",), ("EXEC",)) == [
        "OK", "QUEUED", "OK", "-ERR EXEC without MULTI"]
    assert model.data == {}


@pytest.mark.parametrize("refused", [("NOSUCH", "x"), ("SET", "k"), ("GET",), ("WATCH",),
                                     ("MULTI", "x"), ("DISCARD", "x")])
def test_a_command_refused_while_queueing_dooms_the_exec(refused):
    model = InProcess()
    a = model.connect("a")
    replies = script(model, a, ("MULTI",), ("SET", "k", "v"), refused, ("SET", "j", "v"))
    assert replies[:2] == ["OK", "QUEUED"] and replies[3] == "QUEUED"
    assert replies[2].startswith("-ERR ")
    assert ask(model, a, "EXEC") == EXECABORT
    assert model.data == {}   # nothing ran
    assert ask(model, a, "EXEC") == "-ERR EXEC without MULTI"   # and it is over


def test_exec_with_arguments_discards_the_transaction_at_once():
    model = InProcess()
    a = model.connect("a")
    assert script(model, a, ("WATCH", "w"), ("MULTI",), ("SET", "k", "v"), ("EXEC", "now")) == [
        "OK", "OK", "QUEUED",
        "-EXECABORT Transaction discarded because of: "
        "wrong number of arguments for 'exec' command"]
    assert ask(model, a, "EXEC") == "-ERR EXEC without MULTI"
    assert model.data == {} and not model.state.keyspace.watchers


def test_exec_before_auth_says_noauth_as_its_reason():
    model = InProcess(requirepass="pw")
    a = model.connect("a")
    assert ask(model, a, "EXEC") == (
        "-EXECABORT Transaction discarded because of: NOAUTH Authentication required.")
    assert ask(model, a, "MULTI") == "-NOAUTH Authentication required."


def test_errors_inside_exec_are_replies_and_the_rest_still_runs():
    model = InProcess()
    a = model.connect("a")
    script(model, a, ("SET", "s", "text"), ("MULTI",), ("INCR", "s"), ("LPUSH", "s", "x"),
           ("SET", "k", "v"), ("BANK.WITHDRAW", "k", "5"))
    assert ask(model, a, "EXEC") == [
        "-ERR value is not an integer or out of range",
        "-WRONGTYPE Operation against a key holding the wrong kind of value",
        "OK", "-ERR value is not an integer or out of range"]
    assert model.data[b"k"] == b"v"   # no rollback: Redis has none


@pytest.mark.parametrize("name", ["POOL.ACQUIRE", "POOL.USE", "BARRIER.WAIT", "EVENT.WAIT",
                                  "SLEEP"])
def test_the_playgrounds_waits_are_refused_inside_multi(name):
    model = InProcess()
    a = model.connect("a")
    args = {"POOL.ACQUIRE": [], "POOL.USE": ["10"], "BARRIER.WAIT": ["b", "2"],
            "EVENT.WAIT": ["e"], "SLEEP": ["10"]}[name]
    assert ask(model, a, "MULTI") == "OK"
    refusal = ask(model, a, name, *args)
    assert refusal == (f"-ERR Command not allowed inside a transaction: {name} may wait, "
                       f"and EXEC never waits")
    assert ask(model, a, "EXEC") == EXECABORT
    assert model.state.ledger.in_use == 0 and not model.barriers


def test_shutdown_is_refused_inside_multi_as_redis_does():
    model = InProcess()
    a, b = model.connect("a"), model.connect("b")
    assert script(model, a, ("MULTI",), ("SHUTDOWN",), ("EXEC",)) == [
        "OK", "-ERR Command not allowed inside a transaction", EXECABORT]
    assert not model.stopping and ask(model, b, "PING") == "PONG"


def test_quit_inside_multi_is_answered_at_once_and_closes():
    model = InProcess()
    a = model.connect("a")
    assert script(model, a, ("MULTI",), ("QUIT",)) == ["OK", "OK"]
    assert a.closed


# -- BLPOP inside a transaction -----------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_blpop_inside_exec_answers_at_once_instead_of_waiting(mode):
    model = InProcess(sync=mode)
    a = model.connect("a")
    script(model, a, ("RPUSH", "q", "job"), ("MULTI",), ("BLPOP", "none", "q", "0"),
           ("BRPOP", "q", "0"), ("BLPOP", "none", "0"))
    assert ask(model, a, "EXEC") == [[b"q", b"job"], NULL_ARRAY, NULL_ARRAY]
    assert model.now == 0 and model.state.waiters.count == 0 and idle(model)


@pytest.mark.parametrize("mode", MODES)
def test_a_push_inside_exec_serves_a_blocked_client(mode):
    model = InProcess(sync=mode)
    a, b = model.connect("a"), model.connect("b")
    b.send("BLPOP", "q", "0")
    model.run()
    assert script(model, a, ("MULTI",), ("RPUSH", "q", "x", "y"), ("LLEN", "q"), ("EXEC",)) == [
        "OK", "QUEUED", "QUEUED", [2, 1]]
    assert b.replies() == [[b"q", b"x"]] and idle(model)


# -- WATCH: optimistic locking --------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_another_clients_write_to_a_watched_key_makes_exec_answer_null(mode):
    model = InProcess(sync=mode, race_window_us=500)
    a, b = model.connect("a"), model.connect("b")
    assert script(model, a, ("SET", "k", "1"), ("WATCH", "k", "other"), ("GET", "k")) == [
        "OK", "OK", b"1"]
    assert ask(model, b, "INCR", "k") == 2
    assert script(model, a, ("MULTI",), ("SET", "k", "100"), ("EXEC",)) == ["OK", "QUEUED",
                                                                            NULL_ARRAY]
    assert model.data[b"k"] == b"2"   # nothing ran
    assert not model.state.keyspace.watchers and not a.session.client.watching
    # EXEC forgot the watches: the next transaction runs whatever b writes.
    assert ask(model, b, "SET", "k", "3") == "OK"
    assert script(model, a, ("MULTI",), ("SET", "k", "100"), ("EXEC",))[-1] == ["OK"]


def test_exec_runs_when_no_watched_key_was_written():
    model = InProcess()
    a, b = model.connect("a"), model.connect("b")
    script(model, a, ("WATCH", "k"))
    assert ask(model, b, "SET", "unwatched", "1") == "OK"
    assert ask(model, b, "GET", "k") is None   # a read is no write
    assert script(model, a, ("MULTI",), ("SET", "k", "v"), ("EXEC",))[-1] == ["OK"]


def test_a_clients_own_write_to_a_key_it_watches_also_fails_its_exec():
    model = InProcess()
    a = model.connect("a")
    assert script(model, a, ("WATCH", "k"), ("SET", "k", "mine"), ("MULTI",), ("PING",),
                  ("EXEC",)) == ["OK", "OK", "OK", "QUEUED", NULL_ARRAY]


@pytest.mark.parametrize("write", [("DEL", "k"), ("SET", "k", "1"), ("BANK.DEPOSIT", "k", "1"),
                                   ("MSET", "z", "1", "k", "2"), ("EXPIRE", "k", "100")])
def test_every_kind_of_write_counts(write):
    model = InProcess()
    a, b = model.connect("a"), model.connect("b")
    script(model, a, ("SET", "k", "1"), ("WATCH", "k"))
    ask(model, b, *write)
    assert script(model, a, ("MULTI",), ("PING",), ("EXEC",))[-1] is NULL_ARRAY


def test_flushall_fails_the_exec_of_a_watched_key_that_existed_only():
    model = InProcess()
    a, b, c = model.connect("a"), model.connect("b"), model.connect("c")
    script(model, a, ("SET", "k", "1"), ("WATCH", "k"))
    script(model, c, ("WATCH", "missing"))
    assert ask(model, b, "FLUSHALL") == "OK"
    assert script(model, a, ("MULTI",), ("PING",), ("EXEC",))[-1] is NULL_ARRAY
    assert script(model, c, ("MULTI",), ("PING",), ("EXEC",))[-1] == ["PONG"]


def test_unwatch_and_discard_forget_the_watches():
    model = InProcess()
    a, b = model.connect("a"), model.connect("b")
    script(model, a, ("WATCH", "k", "j"))
    ask(model, b, "SET", "k", "1")
    assert a.session.client.dirty
    assert ask(model, a, "UNWATCH") == "OK"
    assert not a.session.client.dirty and not model.state.keyspace.watchers
    assert script(model, a, ("MULTI",), ("PING",), ("EXEC",))[-1] == ["PONG"]
    script(model, a, ("WATCH", "k"), ("MULTI",), ("DISCARD",))
    assert not model.state.keyspace.watchers
    ask(model, b, "SET", "k", "2")
    assert script(model, a, ("MULTI",), ("PING",), ("EXEC",))[-1] == ["PONG"]


def test_a_refused_transaction_forgets_its_watches_too():
    model = InProcess()
    a = model.connect("a")
    assert script(model, a, ("WATCH", "k"), ("MULTI",), ("NOSUCH",), ("EXEC",))[-1] == EXECABORT
    assert not model.state.keyspace.watchers and not a.session.client.watching


def test_execabort_wins_over_a_written_watched_key():
    model = InProcess()
    a, b = model.connect("a"), model.connect("b")
    script(model, a, ("WATCH", "k"), ("MULTI",), ("GET",))
    ask(model, b, "SET", "k", "1")
    assert ask(model, a, "EXEC") == EXECABORT


def test_watched_keys_are_shared_by_their_watchers_and_each_forgets_its_own():
    model = InProcess()
    a, b = model.connect("a"), model.connect("b")
    script(model, a, ("WATCH", "k", "j"))
    script(model, b, ("WATCH", "k"))
    watchers = model.state.keyspace.watchers
    assert watchers[b"k"] == {a.session.client.id, b.session.client.id}
    ask(model, a, "UNWATCH")
    assert watchers == {b"k": {b.session.client.id}}


@pytest.mark.parametrize("mode", MODES)
def test_a_client_that_disconnects_forgets_its_watches(mode):
    model = InProcess(sync=mode)
    a, b = model.connect("a"), model.connect("b")
    script(model, a, ("WATCH", "k", "j"), ("MULTI",), ("SET", "k", "v"))
    script(model, b, ("WATCH", "j"))
    a.hang_up()
    model.settle()
    assert a.closed and model.state.keyspace.watchers == {b"j": {b.session.client.id}}
    b.hang_up()
    model.settle()
    assert model.state.keyspace.watchers == {} and idle(model)
    assert model.data == {}   # a's queue never ran


def test_a_leaving_client_forgets_its_watches_in_the_servers_mode_now():
    model = InProcess(sync="off", race_window_us=1000)
    a, b = model.connect("a"), model.connect("b")
    script(model, a, ("WATCH", "k"))   # a's last command ran with no guard at all...
    ask(model, b, "CONFIG", "SET", "sync", "striped")
    b.send("INCR", "k")
    model.run()   # ...and b is halfway through an INCR on k, holding the keyspace shared
    a.hang_up()
    model.run()
    assert "waits for lock keyspace-rw" in model.trace_of("a")   # it waits its turn
    model.settle()
    assert model.state.keyspace.watchers == {} and model.data[b"k"] == b"1" and idle(model)


def test_a_watched_key_whose_time_runs_out_fails_the_exec():
    model = InProcess()
    a = model.connect("a")
    script(model, a, ("SET", "k", "v", "PX", "100"), ("WATCH", "k"))
    model.advance(0.2)   # nobody looks at k: it is still in the keyspace, past its time
    assert script(model, a, ("MULTI",), ("SET", "x", "1"), ("EXEC",))[-1] is NULL_ARRAY


def test_a_key_already_past_its_time_when_watched_does_not_fail_the_exec():
    model = InProcess()
    a = model.connect("a")
    script(model, a, ("SET", "k", "v", "PX", "50"))
    model.advance(0.1)
    script(model, a, ("WATCH", "k"))
    assert script(model, a, ("MULTI",), ("SET", "x", "1"), ("EXEC",))[-1] == ["OK"]


def test_client_list_shows_multi_and_a_doomed_watch():
    model = InProcess()
    a, b = model.connect("a"), model.connect("b")
    script(model, a, ("WATCH", "k"), ("MULTI",))
    assert b"flags=x " in ask(model, b, "CLIENT", "LIST").split(b"\n")[0]
    ask(model, b, "SET", "k", "1")
    assert b"flags=xd " in ask(model, b, "CLIENT", "LIST").split(b"\n")[0]


def test_check_and_set_retries_and_loses_no_update():
    """Two clients increment one counter with WATCH, GET, MULTI, SET, EXEC, their steps
    interleaved: a client whose EXEC answers null read a stale value and goes round again."""
    model = InProcess(sync="off")   # no lock at all: WATCH alone keeps the count right
    conns = [model.connect("a"), model.connect("b")]
    rounds, retries = 20, [0, 0]

    def increments(who: int):
        conn = conns[who]
        for _ in range(rounds):
            while True:
                yield conn, ("WATCH", "counter")
                value = yield conn, ("GET", "counter")
                yield conn, ("MULTI",)
                yield conn, ("SET", "counter", int(value or 0) + 1)
                if (yield conn, ("EXEC",)) is not NULL_ARRAY:
                    break
                retries[who] += 1

    clients = [increments(0), increments(1)]
    steps = [next(client) for client in clients]
    while any(step is not None for step in steps):
        for who, client in enumerate(clients):   # one step of each in turn: they interleave
            if steps[who] is not None:
                conn, command = steps[who]
                try:
                    steps[who] = client.send(ask(model, conn, *command))
                except StopIteration:
                    steps[who] = None
    assert model.data[b"counter"] == b"%d" % (2 * rounds)
    assert sum(retries) >= rounds   # in lockstep, every round one of them lost the race
    assert model.state.keyspace.watchers == {}


def test_without_watch_the_same_interleaving_loses_updates():
    """The control: GET, then MULTI/SET/EXEC with no WATCH, interleaved the same way."""
    model = InProcess(sync="off")
    a, b = model.connect("a"), model.connect("b")
    for _ in range(10):
        seen_a, seen_b = ask(model, a, "GET", "counter"), ask(model, b, "GET", "counter")
        for conn, seen in ((a, seen_a), (b, seen_b)):
            script(model, conn, ("MULTI",), ("SET", "counter", int(seen or 0) + 1), ("EXEC",))
    assert model.data[b"counter"] == b"10"   # 20 increments acknowledged, 10 lost


# -- atomicity in each mode -----------------------------------------------------------------

def race_exec_against_incr(mode: str) -> tuple[list, int, InProcess]:
    """a's EXEC runs INCR k twice, each with its race window open; b's INCR k comes
    while a's first window is open."""
    model = InProcess(sync=mode, race_window_us=1000)
    a, b = model.connect("a"), model.connect("b")
    script(model, a, ("MULTI",), ("INCR", "k"), ("INCR", "k"))
    a.send("EXEC")
    model.run()                   # a reads k, then waits in its window...
    b.send("INCR", "k")
    model.run()                   # ...and b's INCR comes
    model.settle()
    [exec_reply], [incr_reply] = a.replies(), b.replies()
    return exec_reply + [incr_reply], int(model.data[b"k"]), model


@pytest.mark.parametrize("mode", GUARDED)
def test_exec_is_atomic_in_every_guarded_mode(mode):
    replies, total, model = race_exec_against_incr(mode)
    assert replies == [1, 2, 3] and total == 3   # b waited for the whole transaction
    assert any(event.startswith("waits for lock") for event in model.trace_of("b"))
    assert idle(model)


def test_exec_is_not_atomic_with_sync_off():
    """The lesson: with no guard, another client's INCR lands inside the transaction's
    race window, and one of the three acknowledged increments is lost."""
    replies, total, _ = race_exec_against_incr("off")
    assert total == 2 and sorted(replies) == [1, 1, 2]


def test_exec_takes_the_whole_keyspace_then_the_lists_lock():
    assert [step.lock for step in lock_plan("striped", Guard(ALL_KEYS, lists=True))] == [
        EXCLUSIVE, LISTS]
    assert [step.lock for step in lock_plan("unordered", Guard(ALL_KEYS))] == [EXCLUSIVE]
    model = InProcess(sync="striped")
    a = model.connect("a")
    script(model, a, ("MULTI",), ("RPUSH", "l", "x"), ("INCR", "k"), ("EXEC",))
    taken = [event for event in model.trace_of("a") if event.startswith(("takes", "re-enters"))]
    assert taken == ["takes keyspace-rw", "takes lists"]   # the queued commands take no more


def test_a_nested_guard_may_take_the_lists_only_when_its_command_holds_them():
    from contend.shared.session import Call, Session

    def call_holding(guard: Guard) -> Call:
        session = Session(InProcess(sync="striped").state)
        session.client.sync = "striped"
        call = Call(session, iter(()), b"test")
        call.guard_plan(guard)
        return call

    assert call_holding(Guard(ALL_KEYS, lists=True)).guard_plan(Guard((b"k",), lists=True)) == ()
    with pytest.raises(RuntimeError):
        call_holding(Guard(ALL_KEYS)).guard_plan(Guard((b"k",), lists=True))
    with pytest.raises(RuntimeError):
        call_holding(Guard((b"k",))).guard_plan(Guard((b"k",), lists=True))
    held = call_holding(Guard((b"k",), lists=True))
    assert [step.lock for step in held.guard_plan(Guard((b"k",), lists=True))] == ["key"]


@pytest.mark.parametrize("mode", MODES)
def test_a_queued_config_set_sync_leaves_the_rest_of_the_exec_in_its_mode(mode):
    model = InProcess(sync=mode, race_window_us=500)
    a = model.connect("a")
    other = "lock" if mode != "lock" else "striped"   # a lock-mode plan would reach up
    script(model, a, ("MULTI",), ("CONFIG", "SET", "sync", other), ("INCR", "k"),
           ("BANK.TRANSFER", "k", "j", "1"))
    assert ask(model, a, "EXEC") == ["OK", 1, [0, 1]]
    assert idle(model)
    assert ask(model, a, "INCR", "k") == 1 and a.session.client.sync == other


def test_a_client_that_hangs_up_while_its_exec_waits_for_the_keyspace():
    model = InProcess(sync="striped", race_window_us=1000)
    a, b = model.connect("a"), model.connect("b")
    assert script(model, a, ("WATCH", "w"), ("MULTI",), ("INCR", "k")) == ["OK", "OK", "QUEUED"]
    b.send("INCR", "k")
    model.run()   # b holds k's lock, in its race window
    a.send("EXEC")
    model.run()   # a waits for the whole keyspace
    assert "waits for lock keyspace-rw" in model.trace_of("a")
    a.hang_up()
    model.settle()
    assert model.data[b"k"] == b"2"   # the EXEC ran (its reply went nowhere), then a left
    assert a.closed and model.state.keyspace.watchers == {} and idle(model)


# -- the same scripts on every model and on redis-server ---------------------------------

# name -> steps; a step is (client number, command...). Client 0 runs the transaction.
CASES = {
    "queue and exec": [(0, "MULTI"), (0, "SET", "a", "1"), (0, "INCR", "a"), (0, "GET", "a"),
                       (0, "RPUSH", "l", "x", "y"), (0, "LRANGE", "l", "0", "-1"), (0, "EXEC"),
                       (0, "GET", "a"), (0, "MULTI"), (0, "EXEC")],
    "misplaced": [(0, "EXEC"), (0, "DISCARD"), (0, "MULTI"), (0, "MULTI"), (0, "WATCH", "k"),
                  (0, "SET", "k", "v"), (0, "EXEC"), (0, "UNWATCH"), (0, "EXEC", "x"),
                  (0, "DISCARD", "x"), (0, "MULTI", "x")],
    "execabort": [(0, "MULTI"), (0, "SET", "a", "1"), (0, "NOSUCH", "x"), (0, "EXEC"),
                  (0, "GET", "a"), (0, "MULTI"), (0, "SET", "a"), (0, "EXEC"),
                  (0, "MULTI"), (0, "WATCH"), (0, "EXEC"), (0, "MULTI"), (0, "EXEC", "x"),
                  (0, "EXEC"), (0, "MULTI"), (0, "SHUTDOWN"), (0, "EXEC")],
    "errors inside exec": [(0, "SET", "s", "text"), (0, "MULTI"), (0, "INCR", "s"),
                           (0, "LPUSH", "s", "x"), (0, "SET", "k", "v"), (0, "INCRBY", "k", "x"),
                           (0, "GET", "k"), (0, "EXEC")],
    "blpop inside multi": [(0, "RPUSH", "q", "a"), (0, "MULTI"), (0, "BLPOP", "none", "q", "0"),
                           (0, "BRPOP", "q", "0"), (0, "BLPOP", "none", "0"), (0, "EXEC")],
    "discard": [(0, "MULTI"), (0, "SET", "k", "v"), (0, "DISCARD"), (0, "GET", "k"),
                (0, "WATCH", "k"), (0, "MULTI"), (0, "DISCARD"), (1, "SET", "k", "w"),
                (0, "MULTI"), (0, "GET", "k"), (0, "EXEC")],
    "watch": [(0, "SET", "k", "1"), (0, "WATCH", "k", "j"), (0, "GET", "k"), (1, "INCR", "k"),
              (0, "MULTI"), (0, "SET", "k", "100"), (0, "EXEC"), (0, "GET", "k"),
              (0, "WATCH", "k"), (1, "GET", "k"), (1, "SET", "other", "1"), (0, "MULTI"),
              (0, "SET", "k", "100"), (0, "EXEC"), (0, "GET", "k")],
    "own write and unwatch": [(0, "WATCH", "k"), (0, "SET", "k", "mine"), (0, "MULTI"),
                              (0, "PING"), (0, "EXEC"), (0, "WATCH", "k"), (1, "DEL", "k"),
                              (0, "UNWATCH"), (0, "MULTI"), (0, "PING"), (0, "EXEC"),
                              (0, "MULTI"), (0, "UNWATCH"), (0, "EXEC")],
    "flushall": [(0, "SET", "k", "1"), (0, "WATCH", "k"), (1, "WATCH", "missing"),
                 (2, "FLUSHALL"), (0, "MULTI"), (0, "PING"), (0, "EXEC"),
                 (1, "MULTI"), (1, "PING"), (1, "EXEC")],
    "list writes count": [(0, "RPUSH", "l", "a"), (0, "WATCH", "l"), (1, "LPOP", "l"),
                          (0, "MULTI"), (0, "LLEN", "l"), (0, "EXEC"), (0, "WATCH", "l"),
                          (1, "LPOP", "l"), (0, "MULTI"), (0, "LLEN", "l"), (0, "EXEC")],
    "quit inside multi": [(0, "MULTI"), (0, "SET", "k", "v"), (0, "QUIT"), (1, "GET", "k")],
}


def run_steps(server, steps) -> list:
    """Run a case's steps on `server`, each client on a connection of its own."""
    clients = {}
    try:
        with server.raw() as admin:
            admin.call("FLUSHALL")
        replies = []
        for who, *command in steps:
            if who not in clients:
                clients[who] = server.raw()
            replies.append(shown(clients[who].call(*command)))
        return replies
    finally:
        for client in clients.values():
            client.close()


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_transactions_answer_as_redis_does(case, target, redis_server):
    expected = run_steps(redis_server, CASES[case])
    got = run_steps(target, CASES[case])
    for step, want, have in zip(CASES[case], expected, got, strict=True):
        assert have == want, f"{step}: redis says {want!r}, {target.name} says {have!r}"


@pytest.mark.parametrize("mode", GUARDED)
def test_exec_is_atomic_on_every_model(server, mode):
    """The real models under EXEC's guard: the whole keyspace, then the lists' lock; a
    queued push wakes a blocked client, and an INCR sent meanwhile goes before or after."""
    with server.raw() as admin:
        admin.call("CONFIG", "SET", "sync", mode, "race-window-us", "2000")
    with server.raw() as a, server.raw() as b, server.raw() as c:
        b.send_command("BLPOP", "q", "5")
        for command in (("MULTI",), ("INCR", "k"), ("RPUSH", "q", "x"), ("INCR", "k")):
            a.call(*command)
        a.send_command("EXEC")
        c.send_command("INCR", "k")   # while the EXEC's first race window is open
        first, pushed, second = a.read()
        incr, popped = c.read(), b.read()
    assert second == first + 1 and {first, second, incr} == {1, 2, 3} and pushed == 1
    assert popped == [b"q", b"x"]
