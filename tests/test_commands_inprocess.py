"""Every command, through the in-process model (tests/inprocess.py), in milliseconds.

Two kinds of case. A *script* is what one client sends and the replies it
must get, run in every sync mode with the race window open (so each
command also climbs the lock ladder under the model's checker). A test
marked `@covers(...)` needs more than one client: waiters and wakers,
hang-ups, the fake clock. `test_every_command_has_a_case` fails when a
command joins shared/commands with neither: the performer contract check.
"""

from __future__ import annotations

from collections import deque

import pytest

from contend.shared.commands import COMMANDS
from contend.shared.commands.gil import work
from contend.shared.resp import NULL_ARRAY, ReplyError
from tests.inprocess import InProcess

MODES = ["off", "lock", "striped", "unordered"]
COVERED: set[str] = set()


def covers(*names: str):
    """This test drives these commands (the ones a one-client script cannot show)."""
    COVERED.update(names)
    return lambda test: test


def error(prefix: str):
    return lambda reply: isinstance(reply, ReplyError) and reply.text.startswith(prefix)


def contains(*parts: bytes):
    return lambda reply: all(part in reply for part in parts)


def flat(reply: list) -> dict:
    """POOL.STATUS / BARRIER.STATUS / CONFIG GET as a dict."""
    return {key.decode(): value for key, value in zip(reply[::2], reply[1::2], strict=True)}


# command name -> [(what the client sends, the reply it gets, or a check of the reply)]
SCRIPTS = {
    "ping": [(["PING"], "PONG"), (["PING", "hi"], b"hi"), (["PING", "a", "b"], error("ERR wrong"))],
    "echo": [(["ECHO", "hi"], b"hi")],
    "select": [(["SELECT", "0"], "OK"), (["SELECT", "1"], error("ERR DB index"))],
    "hello": [(["HELLO", "2"], lambda r: flat(r)["proto"] == 2),
              (["HELLO", "3"], lambda r: r[b"proto"] == 3), (["GET", "k"], None),
              (["HELLO", "4"], error("NOPROTO"))],
    "client": [(["CLIENT", "SETNAME", "ann"], "OK"), (["CLIENT", "GETNAME"], b"ann"),
               (["CLIENT", "ID"], 1), (["CLIENT", "LIST"], contains(b"id=1", b"name=ann")),
               (["CLIENT", "SETINFO", "lib-name", "x"], "OK"), (["CLIENT", "NOPE"], error("ERR"))],
    "command": [(["COMMAND", "COUNT"], len(COMMANDS)), (["COMMAND", "DOCS"], []),
                (["COMMAND", "INFO", "get"], lambda r: r[0][0] == b"get"),
                (["COMMAND"], lambda r: len(r) == len(COMMANDS))],
    "config": [(["CONFIG", "SET", "pool-size", "3"], "OK"),
               (["CONFIG", "GET", "pool-size"], [b"pool-size", b"3"]),
               (["POOL.STATUS"], lambda r: flat(r)["size"] == 3),
               (["CONFIG", "SET", "sync", "sideways"], error("ERR CONFIG SET failed")),
               (["CONFIG", "RESETSTAT"], "OK")],
    "info": [(["INFO"], contains(b"model:inprocess", b"key_locks:0", b"internal_errors:0")),
             (["INFO", "stats"], lambda r: b"# Stats" in r and b"# Server" not in r)],
    "dbsize": [(["MSET", "a", "1", "b", "2"], "OK"), (["DBSIZE"], 2)],
    "flushall": [(["SET", "a", "1"], "OK"), (["FLUSHALL"], "OK"), (["DBSIZE"], 0),
                 (["FLUSHALL", "ASYNC"], "OK"), (["FLUSHALL", "X"], error("ERR syntax"))],
    "flushdb": [(["SET", "a", "1"], "OK"), (["FLUSHDB", "SYNC"], "OK"), (["EXISTS", "a"], 0)],
    "get": [(["GET", "k"], None), (["SET", "k", "v"], "OK"), (["GET", "k"], b"v"),
            (["RPUSH", "l", "x"], 1), (["GET", "l"], error("WRONGTYPE"))],
    "set": [(["SET", "k", "v", "NX"], "OK"), (["SET", "k", "w", "NX"], None),
            (["SET", "k", "w", "XX"], "OK"), (["SET", "j", "w", "XX"], None),
            (["SET", "k", "v", "NX", "XX"], error("ERR syntax")), (["GET", "k"], b"w")],
    "del": [(["MSET", "a", "1", "b", "2"], "OK"), (["DEL", "a", "b", "c"], 2)],
    "expire": [(["SET", "k", "v"], "OK"), (["EXPIRE", "k", "100"], 1), (["TTL", "k"], 100),
               (["EXPIRE", "k", "50", "GT"], 0), (["EXPIRE", "nope", "1"], 0),
               (["EXPIRE", "k", "-1"], 1), (["EXISTS", "k"], 0)],
    "pexpire": [(["SET", "k", "v"], "OK"), (["PEXPIRE", "k", "100000", "NX"], 1),
                (["PTTL", "k"], 100000), (["PEXPIRE", "k", "1", "FOO"], error("ERR Unsupported"))],
    "expireat": [(["SET", "k", "v"], "OK"), (["EXPIREAT", "k", "1"], 1), (["GET", "k"], None)],
    "pexpireat": [(["SET", "k", "v"], "OK"), (["PEXPIREAT", "k", str(2**62)], 1),
                  (["TTL", "k"], lambda r: r > 10**15)],
    "ttl": [(["TTL", "nope"], -2), (["SET", "k", "v"], "OK"), (["TTL", "k"], -1)],
    "pttl": [(["SET", "k", "v", "PX", "100000"], "OK"), (["PTTL", "k"], 100000)],
    "persist": [(["SET", "k", "v", "EX", "100"], "OK"), (["PERSIST", "k"], 1),
                (["PERSIST", "k"], 0), (["TTL", "k"], -1)],
    "exists": [(["SET", "a", "1"], "OK"), (["EXISTS", "a", "a", "b"], 2)],
    "type": [(["SET", "s", "1"], "OK"), (["RPUSH", "l", "x"], 1), (["TYPE", "s"], "string"),
             (["TYPE", "l"], "list"), (["TYPE", "nope"], "none")],
    "keys": [(["MSET", "ka", "1", "kb", "2", "x", "3"], "OK"),
             (["KEYS", "k*"], lambda r: sorted(r) == [b"ka", b"kb"])],
    "mget": [(["SET", "a", "1"], "OK"), (["RPUSH", "l", "x"], 1),
             (["MGET", "a", "l", "nope"], [b"1", None, None])],
    "mset": [(["MSET", "a", "1", "b"], error("ERR wrong number")), (["MSET", "a", "1"], "OK")],
    "incr": [(["INCR", "n"], 1), (["INCR", "n"], 2), (["SET", "s", "x"], "OK"),
             (["INCR", "s"], error("ERR value is not an integer")),
             (["SET", "big", str(2**63 - 1)], "OK"), (["INCR", "big"], error("ERR increment"))],
    "decr": [(["DECR", "n"], -1)],
    "incrby": [(["INCRBY", "n", "5"], 5), (["INCRBY", "n", "x"], error("ERR value"))],
    "decrby": [(["DECRBY", "n", "5"], -5), (["DECRBY", "n", str(-2**63)], error("ERR decrement"))],
    "lpush": [(["LPUSH", "l", "a", "b"], 2), (["LRANGE", "l", "0", "-1"], [b"b", b"a"])],
    "rpush": [(["RPUSH", "l", "a", "b"], 2), (["SET", "s", "1"], "OK"),
              (["RPUSH", "s", "x"], error("WRONGTYPE"))],
    "lpop": [(["RPUSH", "l", "a", "b", "c"], 3), (["LPOP", "l"], b"a"),
             (["LPOP", "l", "5"], [b"b", b"c"]), (["LPOP", "l"], None),
             (["LPOP", "l", "1"], NULL_ARRAY), (["LPOP", "l", "-1"], error("ERR value is out"))],
    "rpop": [(["RPUSH", "l", "a", "b"], 2), (["RPOP", "l"], b"b")],
    "llen": [(["RPUSH", "l", "a", "b"], 2), (["LLEN", "l"], 2), (["LLEN", "nope"], 0)],
    "lrange": [(["RPUSH", "l", "a", "b", "c"], 3), (["LRANGE", "l", "1", "5"], [b"b", b"c"]),
               (["LRANGE", "l", "-2", "-2"], [b"b"]), (["LRANGE", "l", "x", "1"], error("ERR"))],
    "blpop": [(["RPUSH", "l", "a", "b"], 2), (["BLPOP", "nope", "l", "0"], [b"l", b"a"]),
              (["BLPOP", "nope", "0.5"], NULL_ARRAY), (["BLPOP", "l", "-1"], error("ERR timeout"))],
    "brpop": [(["RPUSH", "l", "a", "b"], 2), (["BRPOP", "l", "0"], [b"l", b"b"])],
    "multi": [(["MULTI"], "OK"), (["INCR", "n"], "QUEUED"),
              (["MULTI"], error("ERR MULTI calls can not be nested")), (["EXEC"], [1])],
    "exec": [(["MULTI"], "OK"), (["RPUSH", "l", "x"], "QUEUED"),
             (["BLPOP", "l", "nope", "0"], "QUEUED"), (["BANK.DEPOSIT", "acct", "5"], "QUEUED"),
             (["EXEC"], [1, [b"l", b"x"], 5]), (["EXEC"], error("ERR EXEC without MULTI"))],
    "discard": [(["MULTI"], "OK"), (["SET", "k", "v"], "QUEUED"), (["DISCARD"], "OK"),
                (["GET", "k"], None)],
    "watch": [(["WATCH", "k"], "OK"), (["SET", "k", "v"], "OK"), (["MULTI"], "OK"),
              (["EXEC"], NULL_ARRAY)],
    "unwatch": [(["WATCH", "k"], "OK"), (["SET", "k", "v"], "OK"), (["UNWATCH"], "OK"),
                (["MULTI"], "OK"), (["EXEC"], [])],
    "bank.deposit": [(["BANK.DEPOSIT", "acct", "100"], 100),
                     (["BANK.DEPOSIT", "acct", "0"], error("ERR amount must be positive"))],
    "bank.withdraw": [(["BANK.DEPOSIT", "acct", "100"], 100), (["BANK.WITHDRAW", "acct", "30"], 70),
                      (["BANK.WITHDRAW", "acct", "71"], error("ERR insufficient funds")),
                      (["GET", "acct"], b"70")],
    "bank.transfer": [(["BANK.DEPOSIT", "a", "100"], 100),
                      (["BANK.TRANSFER", "a", "b", "40"], [60, 40]),
                      (["BANK.TRANSFER", "b", "a", "41"], error("ERR insufficient funds")),
                      (["BANK.TRANSFER", "a", "a", "10"], [60, 60]),
                      (["MGET", "a", "b"], [b"60", b"40"])],
    "bank.audit": [(["MSET", "a", "1", "b", "2"], "OK"), (["BANK.AUDIT", "a", "b", "c"], 3)],
    "pool.acquire": [(["POOL.ACQUIRE"], 1), (["POOL.ACQUIRE", "1", "2"], error("ERR syntax")),
                     (["POOL.STATUS"], lambda r: flat(r)["in-use"] == 1)],
    "pool.release": [(["POOL.ACQUIRE"], 1), (["POOL.RELEASE", "1"], 1), (["POOL.RELEASE", "1"], 0)],
    "pool.use": [(["POOL.USE", "20"], 1), (["POOL.USE", "-1"], error("ERR milliseconds")),
                 (["POOL.STATUS"],
                  lambda r: flat(r)["in-use"] == 0 and flat(r)["acquired-total"] == 1)],
    "pool.status": [(["POOL.STATUS"], [b"size", 4, b"in-use", 0, b"waiting", 0, b"peak-in-use", 0,
                                       b"acquired-total", 0, b"timeouts", 0])],
    "barrier.wait": [(["BARRIER.WAIT", "b", "1"], 0),
                     (["BARRIER.WAIT", "b", "0"], error("ERR parties")),
                     (["BARRIER.WAIT", "b", "2"], error("ERR barrier 'b' has 1 parties, not 2"))],
    "barrier.status": [(["BARRIER.STATUS", "b"], NULL_ARRAY), (["BARRIER.WAIT", "b", "1"], 0),
                       (["BARRIER.STATUS", "b"], [b"parties", 1, b"waiting", 0, b"broken", 0,
                                                  b"generation", 1])],
    "barrier.reset": [(["BARRIER.RESET", "b"], 0), (["BARRIER.WAIT", "b", "1"], 0),
                      (["BARRIER.RESET", "b"], 1), (["BARRIER.STATUS", "b"], NULL_ARRAY)],
    "event.set": [(["EVENT.SET", "e"], 0), (["EVENT.WAIT", "e"], 1)],
    "event.clear": [(["EVENT.SET", "e"], 0), (["EVENT.CLEAR", "e"], "OK"),
                    (["EVENT.ISSET", "e"], 0)],
    "event.isset": [(["EVENT.ISSET", "e"], 0), (["EVENT.SET", "e"], 0), (["EVENT.ISSET", "e"], 1)],
    "event.wait": [(["EVENT.WAIT", "e", "0.25"], 0),
                   (["EVENT.WAIT", "e", "x"], error("ERR timeout"))],
    "debug.step": [(["DEBUG.STEP", "LIST"], b""), (["DEBUG.STEP", "RELEASE", "ALL"], 0),
                   (["DEBUG.STEP", "RELEASE", "7"], error("ERR no command is parked with id 7")),
                   (["DEBUG.STEP", "RELEASE", "x"], error("ERR the id")),
                   (["DEBUG.STEP", "NOPE"], error("ERR unknown subcommand"))],
    "work": [(["WORK", "2"], work(2)), (["WORK", "-1"], error("ERR units"))],
    "sleep": [(["SLEEP", "10"], "OK"), (["SLEEP", "x"], error("ERR value"))],
}


def replies_to(model: InProcess, client, *args) -> list:
    """Send one command and let time pass until it is answered (race windows, timeouts)."""
    client.send(*args)
    model.settle()
    return client.replies()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_command_script(name, mode):
    model = InProcess(sync=mode, race_window_us=500)
    client = model.connect("a")
    for args, expected in SCRIPTS[name]:
        replies = replies_to(model, client, *args)
        assert len(replies) == 1, (args, replies)
        reply = replies[0]
        assert expected(reply) if callable(expected) else reply == expected, (args, reply)
    assert not model.key_locks and not model.rw_lock.holders and not model.keyspace_lock.holders


def test_every_command_has_a_case():
    missing = {name.decode() for name in COMMANDS} - set(SCRIPTS) - COVERED
    assert not missing, f"no test drives {sorted(missing)} through the in-process model"


def test_the_model_performs_every_effect():
    from contend.shared import effects as fx
    assert set(fx.performers(InProcess())) == set(fx.PERFORMED_BY)


# -- connection life ------------------------------------------------------------------

@covers("quit")
def test_quit_is_answered_then_the_server_closes_and_runs_nothing_after():
    model = InProcess()
    a = model.connect("a")
    a.send_raw(b"QUIT\r\nSET k v\r\n")
    model.run()
    assert a.replies() == ["OK"] and a.closed and not model.data
    assert model.info("connected_clients") == 0


@covers("auth")
def test_requirepass_demands_auth_first():
    model = InProcess(requirepass="s3cret")
    a = model.connect("a")
    assert error("NOAUTH")(a.call("GET", "k"))
    assert error("NOAUTH HELLO")(a.call("HELLO", "2"))
    assert error("WRONGPASS")(a.call("AUTH", "nope"))
    assert a.call("AUTH", "s3cret") == "OK"
    assert a.call("GET", "k") is None
    b = model.connect("b")
    assert a.call("PING") == "PONG"
    assert flat(b.call("HELLO", "2", "AUTH", "default", "s3cret"))["proto"] == 2


def test_auth_without_a_password_configured_is_refused():
    model = InProcess()
    assert error("ERR AUTH <password> called without")(model.connect().call("AUTH", "x"))


@covers("shutdown")
def test_shutdown_closes_everyone_and_answers_the_blocked_as_on_a_timeout():
    model = InProcess()
    idle, blocked, boss = model.connect("idle"), model.connect("blocked"), model.connect("boss")
    blocked.send("BLPOP", "l", "0")
    model.run()
    boss.send("SHUTDOWN")
    model.run()
    assert boss.replies() == [] and boss.closed   # SHUTDOWN answers nothing
    assert idle.closed and blocked.closed
    assert blocked.replies() == [NULL_ARRAY]
    assert model.info("connected_clients") == 0


def test_bytes_pipelined_behind_a_blocked_command_wait_their_turn():
    model = InProcess()
    a, b = model.connect("a"), model.connect("b")
    a.send_raw(b"BLPOP l 0\r\nPING\r\n")
    model.run()
    assert a.replies() == []
    b.call("RPUSH", "l", "x")
    model.run()
    assert a.replies() == [[b"l", b"x"], "PONG"]


# -- lists: a Condition's producer and consumer -------------------------------------------

@covers("blpop", "brpop")
def test_blpop_waiters_are_woken_by_a_push_first_come_first_served():
    model = InProcess()
    a, b, c = model.connect("a"), model.connect("b"), model.connect("c")
    a.send("BLPOP", "l", "0")
    b.send("BRPOP", "other", "l", "0")
    model.run()
    assert model.info("blocked_clients") == 2
    assert c.call("RPUSH", "l", "x", "y", "z") == 3
    assert a.replies() == [[b"l", b"x"]] and b.replies() == [[b"l", b"z"]]
    assert list(model.data[b"l"]) == [b"y"]
    assert model.info("blocked_clients") == 0 and model.info("list_waiters") == 0


def test_blpop_times_out_exactly_on_the_fake_clock():
    model = InProcess()
    a = model.connect("a")
    a.send("BLPOP", "l", "1.5")
    model.advance(1.499999)
    assert a.replies() == []
    model.advance(0.000001)
    assert a.replies() == [NULL_ARRAY] and model.info("list_waiters") == 0


def test_blpop_waiter_that_hangs_up_is_removed_and_loses_nothing():
    model = InProcess()
    a, b, c = model.connect("a"), model.connect("b"), model.connect("c")
    a.send("BLPOP", "l", "0")
    b.send("BLPOP", "l", "0")
    model.run()
    a.hang_up()
    model.run()
    assert a.closed and model.info("list_waiters") == 1
    c.call("RPUSH", "l", "x")
    assert b.replies() == [[b"l", b"x"]]


# -- the pool: a Semaphore ------------------------------------------------------------

def test_pool_never_lends_more_than_its_size_and_the_next_waiter_gets_a_returned_lease():
    model = InProcess(pool_size=2)
    a, b, c = model.connect("a"), model.connect("b"), model.connect("c")
    assert a.call("POOL.ACQUIRE") == 1 and b.call("POOL.ACQUIRE") == 2
    c.send("POOL.ACQUIRE")
    model.run()
    assert c.replies() == [] and flat(a.call("POOL.STATUS"))["waiting"] == 1
    assert b.call("POOL.RELEASE", "1") == 0   # only the holder may give it back
    assert a.call("POOL.RELEASE", "1") == 1
    assert c.replies() == [3]
    status = flat(a.call("POOL.STATUS"))
    assert status["in-use"] == 2 and status["peak-in-use"] == 2 and status["waiting"] == 0


def test_pool_lease_is_released_when_its_client_hangs_up():
    model = InProcess(pool_size=1)
    a, b = model.connect("a"), model.connect("b")
    assert a.call("POOL.ACQUIRE") == 1
    b.send("POOL.ACQUIRE", "0")
    model.run()
    a.hang_up()
    model.run()
    assert "runs lease-return" in model.trace_of("a")
    assert b.replies() == [2]
    assert model.state.ledger.holders == {2: b.session.client.id}


def test_pool_acquire_times_out_with_null_and_counts_it():
    model = InProcess(pool_size=1)
    a, b = model.connect("a"), model.connect("b")
    a.call("POOL.ACQUIRE")
    b.send("POOL.ACQUIRE", "0.25")
    model.advance(0.25)
    assert b.replies() == [None]
    assert flat(a.call("POOL.STATUS"))["timeouts"] == 1 and model.info("pool_waiting") == 0


def test_pool_waiter_that_hangs_up_is_forgotten_and_takes_no_lease():
    model = InProcess(pool_size=1)
    a, b, c = model.connect("a"), model.connect("b"), model.connect("c")
    a.call("POOL.ACQUIRE")
    b.send("POOL.ACQUIRE")
    c.send("POOL.ACQUIRE")
    model.run()
    b.hang_up()
    model.run()
    assert model.info("pool_waiting") == 1
    a.call("POOL.RELEASE", "1")
    assert c.replies() == [2]


def test_pool_use_holds_a_lease_for_its_time_on_the_clock():
    model = InProcess(pool_size=1)
    a, b = model.connect("a"), model.connect("b")
    a.send("POOL.USE", "100")
    b.send("POOL.USE", "100")
    model.run()
    model.advance(0.1)
    assert a.replies() == [1] and b.replies() == []
    model.advance(0.1)
    assert b.replies() == [2] and model.now == pytest.approx(0.2)


def test_a_client_that_hangs_up_mid_pool_use_gives_its_lease_back():
    model = InProcess(pool_size=1)
    a, b = model.connect("a"), model.connect("b")
    a.send("POOL.USE", "1000")
    b.send("POOL.ACQUIRE")
    model.run()
    a.hang_up()
    model.run()
    assert b.replies() == [2]


def test_growing_the_pool_at_run_time_hands_leases_to_waiters():
    model = InProcess(pool_size=1)
    a, b = model.connect("a"), model.connect("b")
    a.call("POOL.ACQUIRE")
    b.send("POOL.ACQUIRE")
    model.run()
    assert a.call("CONFIG", "SET", "pool-size", "2") == "OK"
    assert b.replies() == [2]


# -- barriers and events --------------------------------------------------------------

def test_barrier_gives_each_party_a_distinct_index_and_counts_generations():
    model = InProcess()
    parties = [model.connect(f"p{i}") for i in range(3)]
    for party in parties[:2]:
        party.send("BARRIER.WAIT", "start", "3")
    model.run()
    observer = model.connect("observer")
    assert flat(observer.call("BARRIER.STATUS", "start"))["waiting"] == 2
    parties[2].send("BARRIER.WAIT", "start", "3")
    model.run()
    assert [p.replies() for p in parties] == [[0], [1], [2]]
    assert flat(observer.call("BARRIER.STATUS", "start"))["generation"] == 1


def test_barrier_breaks_when_a_waiting_party_hangs_up():
    model = InProcess()
    a, b, c = model.connect("a"), model.connect("b"), model.connect("c")
    a.send("BARRIER.WAIT", "x", "3")
    b.send("BARRIER.WAIT", "x", "3")
    model.run()
    a.hang_up()
    model.run()
    assert error("BROKEN barrier 'x' is broken")(b.replies()[0])
    assert error("BROKEN")(c.call("BARRIER.WAIT", "x", "3"))   # until reset
    assert c.call("BARRIER.RESET", "x") == 1
    assert c.call("BARRIER.WAIT", "x", "1") == 0


def test_barrier_timeout_breaks_it_for_everyone():
    model = InProcess()
    a, b = model.connect("a"), model.connect("b")
    a.send("BARRIER.WAIT", "x", "3", "10")
    b.send("BARRIER.WAIT", "x", "3", "0.5")
    model.advance(0.5)
    assert error("BROKEN")(a.replies()[0]) and error("BROKEN")(b.replies()[0])
    assert flat(a.call("BARRIER.STATUS", "x"))["broken"] == 1


def test_barrier_reset_breaks_the_waiters():
    model = InProcess()
    a, b = model.connect("a"), model.connect("b")
    a.send("BARRIER.WAIT", "x", "2")
    model.run()
    assert b.call("BARRIER.RESET", "x") == 1
    assert error("BROKEN")(a.replies()[0])


def test_event_set_releases_every_waiter_and_counts_them():
    model = InProcess()
    waiters = [model.connect(f"w{i}") for i in range(3)]
    for waiter in waiters:
        waiter.send("EVENT.WAIT", "open")
    model.run()
    setter = model.connect("setter")
    assert setter.call("EVENT.SET", "open") == 3
    assert [w.replies() for w in waiters] == [[1]] * 3
    assert setter.call("EVENT.SET", "open") == 0   # already set: nobody to release


def test_event_wait_times_out_exactly_on_the_fake_clock():
    model = InProcess()
    a = model.connect("a")
    a.send("EVENT.WAIT", "e", "2")
    model.advance(1.999)
    assert a.replies() == []
    model.advance(0.001)
    assert a.replies() == [0]


def test_event_waiter_that_hangs_up_is_not_counted():
    model = InProcess()
    a, b = model.connect("a"), model.connect("b")
    a.send("EVENT.WAIT", "e")
    model.run()
    a.hang_up()
    model.run()
    assert b.call("EVENT.SET", "e") == 0


def test_sleep_takes_exactly_its_time_and_a_hang_up_ends_it():
    model = InProcess()
    a, b = model.connect("a"), model.connect("b")
    a.send("SLEEP", "250")
    b.send("SLEEP", "10000")
    model.advance(0.25)
    assert a.replies() == ["OK"] and model.info("blocked_clients") == 1
    b.hang_up()
    model.run()
    assert b.closed and model.info("blocked_clients") == 0


def test_lists_of_several_waiters_keep_items_in_order():
    model = InProcess()
    a, b = model.connect("a"), model.connect("b")
    for item in "xyz":
        a.send("RPUSH", "l", item)
    b.send("LRANGE", "l", "0", "-1")
    model.run()
    assert b.replies() == [[b"x", b"y", b"z"]]
    assert model.data[b"l"] == deque([b"x", b"y", b"z"])
