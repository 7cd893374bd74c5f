"""Expiry, as Redis 7.0 does it: SET's options, EXPIRE and friends, lazy and active expiry.

Most tests run in the in-process model (tests/inprocess.py), whose keyspace
reads the fake clock: a time to live ends exactly when `fake.advance` says,
so every rule is checked to the millisecond with no sleeping. The last ones
run the deterministic replies on every model and on a real redis-server.
"""

from __future__ import annotations

import pytest

from contend.shared.commands.expiry import ACTIVE_EXPIRY_KEYS_PER_LOOP, ACTIVE_EXPIRY_MAX_LOOPS
from contend.shared.resp import NULL_ARRAY, ReplyError
from tests.helpers import wait_until
from tests.inprocess import EPOCH_MS, InProcess

WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"


@pytest.fixture
def fake():
    """The in-process model, with its fake clock (`model` would be a real server's fixture)."""
    return InProcess()


@pytest.fixture
def a(fake):
    return fake.connect("a")


def text(reply) -> str:
    assert isinstance(reply, ReplyError), reply
    return reply.text


# -- TTL and PTTL ---------------------------------------------------------------------------

def test_ttl_and_pttl_count_down_with_the_clock(fake, a):
    assert a.call("SET", "k", "v", "EX", "10") == "OK"
    assert (a.call("TTL", "k"), a.call("PTTL", "k")) == (10, 10_000)
    fake.advance(0.4)
    assert (a.call("TTL", "k"), a.call("PTTL", "k")) == (10, 9_600)   # 9.6 s rounds to 10
    fake.advance(0.1)
    assert (a.call("TTL", "k"), a.call("PTTL", "k")) == (10, 9_500)   # half up, as Redis
    fake.advance(0.001)
    assert (a.call("TTL", "k"), a.call("PTTL", "k")) == (9, 9_499)


def test_ttl_is_minus_two_for_a_missing_key_and_minus_one_without_a_ttl(a):
    assert (a.call("TTL", "nope"), a.call("PTTL", "nope")) == (-2, -2)
    a.call("SET", "k", "v")
    a.call("RPUSH", "l", "x")
    assert (a.call("TTL", "k"), a.call("PTTL", "k"), a.call("TTL", "l")) == (-1, -1, -1)


def test_a_key_is_there_at_its_time_and_gone_one_millisecond_later(fake, a):
    a.call("SET", "k", "v", "PX", "50")
    fake.advance(0.05)
    assert (a.call("PTTL", "k"), a.call("TTL", "k"), a.call("GET", "k")) == (0, 0, b"v")
    fake.advance(0.001)
    assert (a.call("GET", "k"), a.call("PTTL", "k")) == (None, -2)
    assert b"k" not in fake.data


# -- lazy expiry: gone for every command --------------------------------------------------

# (how the key is made, the command that looks at it after its time, the reply, deleted?)
LOOKS = [
    (["SET", "k", "v"], ["GET", "k"], None, True),
    (["SET", "k", "v"], ["EXISTS", "k"], 0, True),
    (["SET", "k", "v"], ["TYPE", "k"], "none", True),
    (["SET", "k", "v"], ["MGET", "k", "k"], [None, None], True),
    (["SET", "k", "v"], ["DEL", "k"], 0, True),
    (["SET", "k", "7"], ["INCR", "k"], 1, False),           # a new key, made by the INCR
    (["SET", "k", "7"], ["BANK.DEPOSIT", "k", "5"], 5, False),
    (["SET", "k", "v"], ["SET", "k", "w", "NX"], "OK", False),
    (["SET", "k", "v"], ["SET", "k", "w", "XX"], None, True),
    (["SET", "k", "v"], ["SET", "k", "w", "GET"], None, False),
    (["SET", "k", "v"], ["EXPIRE", "k", "100"], 0, True),
    (["SET", "k", "v"], ["PERSIST", "k"], 0, True),
    (["SET", "k", "v"], ["TTL", "k"], -2, True),
    (["SET", "k", "v"], ["PTTL", "k"], -2, True),
    (["RPUSH", "k", "a", "b"], ["LLEN", "k"], 0, True),
    (["RPUSH", "k", "a", "b"], ["LRANGE", "k", "0", "-1"], [], True),
    (["RPUSH", "k", "a", "b"], ["LPOP", "k"], None, True),
    (["RPUSH", "k", "a", "b"], ["RPOP", "k", "2"], NULL_ARRAY, True),
    (["RPUSH", "k", "a", "b"], ["BLPOP", "k", "0.01"], NULL_ARRAY, True),
    (["RPUSH", "k", "a", "b"], ["RPUSH", "k", "c"], 1, False),   # a new list of one
    (["RPUSH", "k", "a", "b"], ["GET", "k"], None, True),        # not WRONGTYPE: it is gone
    (["RPUSH", "k", "a", "b"], ["SET", "k", "v", "GET"], None, False),
]


@pytest.mark.parametrize(("make", "look", "reply", "deleted"), LOOKS,
                         ids=[" ".join(look) for _, look, _, _ in LOOKS])
def test_a_key_past_its_time_is_gone_for_every_command(fake, make, look, reply, deleted):
    a = fake.connect("a")
    a.call(*make)
    a.call("PEXPIRE", "k", "50")
    # 51 ms on: past its time, and before the next active expiry (due at 100 ms), so
    # what sees the key gone is the command's own lookup.
    fake.advance(0.051)
    assert b"k" in fake.data
    a.send(*look)
    fake.settle()   # BLPOP's timeout
    assert a.replies() == [reply]
    assert (b"k" not in fake.data) is deleted
    assert a.call("TTL", "k") in (-2, -1)   # whatever a look made anew has no time to live


def test_keys_leaves_out_a_key_past_its_time(fake, a):
    a.call("MSET", "k1", "v", "k2", "v")
    a.call("PEXPIRE", "k1", "50")
    fake.advance(0.051)
    assert a.call("KEYS", "*") == [b"k2"]
    assert a.call("KEYS", "k1") == []


def test_dbsize_counts_a_key_until_it_is_deleted_as_redis_does(fake, a):
    a.call("SET", "k", "v", "PX", "50")
    fake.advance(0.051)   # past its time, before the active expiry comes round
    assert a.call("DBSIZE") == 1
    assert a.call("EXISTS", "k") == 0
    assert a.call("DBSIZE") == 0


# -- what keeps a time to live and what takes it away ---------------------------------------

def test_incr_keeps_the_ttl(fake, a):
    a.call("SET", "n", "1", "EX", "100")
    fake.advance(1)
    assert (a.call("INCR", "n"), a.call("INCRBY", "n", "10"), a.call("DECR", "n")) == (2, 12, 11)
    assert a.call("TTL", "n") == 99


def test_set_takes_the_ttl_away_and_keepttl_keeps_it(a):
    a.call("SET", "k", "v", "EX", "100")
    assert a.call("SET", "k", "w", "KEEPTTL") == "OK"
    assert a.call("TTL", "k") == 100
    assert a.call("SET", "k", "x") == "OK"
    assert (a.call("TTL", "k"), a.call("GET", "k")) == (-1, b"x")
    a.call("SET", "k", "v", "EX", "100")
    a.call("MSET", "k", "y")
    assert a.call("TTL", "k") == -1


def test_keepttl_keeps_no_time_that_has_passed(fake, a):
    a.call("SET", "k", "v", "PX", "50")
    fake.advance(0.051)
    assert a.call("SET", "k", "w", "KEEPTTL") == "OK"
    assert (a.call("GET", "k"), a.call("TTL", "k")) == (b"w", -1)


def test_del_and_flushall_forget_the_ttl(a):
    a.call("SET", "k", "v", "EX", "100")
    a.call("DEL", "k")
    a.call("SET", "k", "v")
    assert a.call("TTL", "k") == -1
    a.call("SET", "k", "v", "EX", "100")
    a.call("FLUSHALL")
    a.call("SET", "k", "v")
    assert a.call("TTL", "k") == -1


def test_a_list_keeps_its_ttl_while_it_has_items(a):
    a.call("RPUSH", "l", "a")
    a.call("EXPIRE", "l", "100")
    a.call("RPUSH", "l", "b")
    assert a.call("TTL", "l") == 100
    a.call("LPOP", "l")
    assert a.call("TTL", "l") == 100
    a.call("LPOP", "l")   # the last item: the key goes, and its time to live with it
    a.call("RPUSH", "l", "c")
    assert a.call("TTL", "l") == -1


def test_persist_takes_the_ttl_away(fake, a):
    a.call("SET", "k", "v", "PX", "50")
    assert (a.call("PERSIST", "k"), a.call("PERSIST", "k"), a.call("PERSIST", "nope")) == (1, 0, 0)
    fake.advance(1)
    assert (a.call("GET", "k"), a.call("TTL", "k")) == (b"v", -1)


# -- SET's options --------------------------------------------------------------------------

def test_set_ex_px_exat_pxat(a):
    now_s = EPOCH_MS // 1000
    assert a.call("SET", "ex", "v", "EX", "20") == "OK"
    assert a.call("SET", "px", "v", "PX", "1500") == "OK"
    assert a.call("SET", "exat", "v", "EXAT", str(now_s + 30)) == "OK"
    assert a.call("SET", "pxat", "v", "PXAT", str(EPOCH_MS + 2500)) == "OK"
    assert [a.call("PTTL", key) for key in ("ex", "px", "exat", "pxat")] == [
        20_000, 1_500, 30_000, 2_500]
    assert a.call("SET", "past", "v", "PXAT", str(EPOCH_MS - 1)) == "OK"   # gone at once
    assert (a.call("GET", "past"), a.call("EXISTS", "past")) == (None, 0)


def test_set_get_answers_the_old_value(a):
    assert a.call("SET", "k", "v", "GET") is None
    assert a.call("SET", "k", "w", "GET") == b"v"
    assert a.call("SET", "k", "x", "NX", "GET") == b"w"   # not set, the old value still told
    assert a.call("SET", "j", "x", "XX", "GET") is None
    assert (a.call("GET", "k"), a.call("EXISTS", "j")) == (b"w", 0)


def test_set_get_on_a_list_is_wrongtype_and_changes_nothing(a):
    a.call("RPUSH", "l", "x")
    assert text(a.call("SET", "l", "v", "GET")) == WRONGTYPE
    assert text(a.call("SET", "l", "v", "GET", "EX", "10")) == WRONGTYPE
    assert (a.call("TYPE", "l"), a.call("TTL", "l")) == ("list", -1)
    assert a.call("SET", "l", "v") == "OK"   # without GET, a SET replaces any type


@pytest.mark.parametrize(("args", "error"), [
    (["EX", "0"], "ERR invalid expire time in 'set' command"),
    (["PX", "-5"], "ERR invalid expire time in 'set' command"),
    (["EXAT", "0"], "ERR invalid expire time in 'set' command"),
    (["EX", str(2**63 // 1000 + 1)], "ERR invalid expire time in 'set' command"),
    (["PX", str(2**63 - 1)], "ERR invalid expire time in 'set' command"),   # now + that overflows
    (["EX", "ten"], "ERR value is not an integer or out of range"),
    (["EX"], "ERR syntax error"),
    (["EX", "10", "PX", "100"], "ERR syntax error"),
    (["EX", "10", "KEEPTTL"], "ERR syntax error"),
    (["KEEPTTL", "PXAT", "100"], "ERR syntax error"),
    (["NX", "XX"], "ERR syntax error"),
    (["FOO"], "ERR syntax error"),
    (["EX", "0", "FOO"], "ERR syntax error"),   # the options first, then the time
])
def test_set_option_errors(a, args, error):
    a.call("SET", "k", "old", "EX", "100")
    assert text(a.call("SET", "k", "v", *args)) == error
    assert (a.call("GET", "k"), a.call("TTL", "k")) == (b"old", 100)   # nothing changed


def test_set_options_may_repeat_and_the_last_expiry_wins(a):
    assert a.call("SET", "k", "v", "nx", "NX", "get", "GET", "ex", "abc", "EX", "20") is None
    assert a.call("TTL", "k") == 20
    assert a.call("SET", "k", "v", "KEEPTTL", "keepttl", "XX") == "OK"
    assert a.call("TTL", "k") == 20


# -- EXPIRE and friends -----------------------------------------------------------------

def test_expire_pexpire_expireat_pexpireat(a):
    a.call("MSET", "a", "1", "b", "1", "c", "1", "d", "1")
    assert a.call("EXPIRE", "a", "10") == 1
    assert a.call("PEXPIRE", "b", "1500") == 1
    assert a.call("EXPIREAT", "c", str(EPOCH_MS // 1000 + 30)) == 1
    assert a.call("PEXPIREAT", "d", str(EPOCH_MS + 2500)) == 1
    assert [a.call("PTTL", key) for key in "abcd"] == [10_000, 1_500, 30_000, 2_500]
    assert a.call("EXPIRE", "nope", "10") == 0


@pytest.mark.parametrize("args", [
    ["EXPIRE", "k", "0"], ["EXPIRE", "k", "-1"], ["PEXPIRE", "k", "-100"],
    ["EXPIREAT", "k", "1"], ["PEXPIREAT", "k", str(EPOCH_MS)],
])
def test_a_time_in_the_past_deletes_the_key_at_once(fake, a, args):
    a.call("SET", "k", "v")
    assert a.call(*args) == 1
    assert b"k" not in fake.data and not fake.state.keyspace.expires


def test_expire_nx_xx_gt_lt(a):
    a.call("SET", "k", "v")
    assert a.call("EXPIRE", "k", "100", "XX") == 0   # XX: only a key that has a TTL
    assert a.call("EXPIRE", "k", "100", "GT") == 0   # no TTL is forever: nothing is greater
    assert a.call("EXPIRE", "k", "100", "NX") == 1   # NX: only a key that has none
    assert a.call("EXPIRE", "k", "200", "NX") == 0
    assert a.call("EXPIRE", "k", "50", "GT") == 0
    assert a.call("EXPIRE", "k", "100", "GT") == 0   # equal is not greater
    assert a.call("EXPIRE", "k", "300", "GT") == 1
    assert a.call("EXPIRE", "k", "400", "LT") == 0
    assert a.call("EXPIRE", "k", "40", "XX", "LT") == 1
    assert a.call("TTL", "k") == 40
    a.call("PERSIST", "k")
    assert a.call("EXPIRE", "k", "10", "LT") == 1    # less than forever
    assert a.call("TTL", "k") == 10


@pytest.mark.parametrize(("args", "error"), [
    (["EXPIRE", "k", "10", "FOO"], "ERR Unsupported option FOO"),
    (["EXPIRE", "k", "ten", "FOO"], "ERR Unsupported option FOO"),   # options first
    (["EXPIRE", "k", "10", "NX", "XX"], "ERR NX and XX, GT or LT options at the same time "
                                        "are not compatible"),
    (["EXPIRE", "k", "10", "nx", "lt"], "ERR NX and XX, GT or LT options at the same time "
                                        "are not compatible"),
    (["PEXPIRE", "k", "10", "GT", "LT"], "ERR GT and LT options at the same time are not "
                                         "compatible"),
    (["EXPIRE", "k", "ten"], "ERR value is not an integer or out of range"),
    (["EXPIRE", "k", str(2**63 // 1000 + 1)], "ERR invalid expire time in 'expire' command"),
    (["EXPIREAT", "k", str(-(2**63) // 1000)], "ERR invalid expire time in 'expireat' command"),
    (["PEXPIRE", "k", str(2**63 - 1)], "ERR invalid expire time in 'pexpire' command"),
    (["EXPIRE"], "ERR wrong number of arguments for 'expire' command"),
    (["TTL", "a", "b"], "ERR wrong number of arguments for 'ttl' command"),
])
def test_expire_errors(a, args, error):
    a.call("SET", "k", "v", "EX", "100")
    assert text(a.call(*args)) == error
    assert a.call("TTL", "k") == 100


# -- active expiry ----------------------------------------------------------------------

def test_active_expiry_removes_keys_nobody_reads(fake, a):
    for i in range(100):
        a.call("SET", f"short:{i}", "v", "PX", "50")
    for i in range(10):
        a.call("SET", f"kept:{i}", "v")
    fake.advance(0.2)   # nobody reads them; the next command's turn runs the upkeep first
    assert a.call("DBSIZE") == 10
    assert sorted(fake.data) == sorted(f"kept:{i}".encode() for i in range(10))


def test_active_expiry_is_bounded_and_comes_back_every_100_ms(fake, a):
    per_cycle = ACTIVE_EXPIRY_KEYS_PER_LOOP * ACTIVE_EXPIRY_MAX_LOOPS
    count = 2 * per_cycle + 10
    for i in range(count):
        a.call("SET", f"k{i}", "v", "PX", "10")
    fake.advance(0.1)
    assert a.call("DBSIZE") == count - per_cycle   # one cycle, and it stopped at its bound
    fake.advance(0.05)
    assert a.call("DBSIZE") == count - per_cycle   # not due again yet
    fake.advance(0.05)
    assert a.call("DBSIZE") == 10
    fake.advance(0.1)
    assert a.call("DBSIZE") == 0


def test_active_expiry_reaches_keys_behind_long_lived_ones(fake, a):
    for i in range(30):
        a.call("SET", f"long:{i}", "v", "EX", "1000")
    for i in range(30):
        a.call("SET", f"short:{i}", "v", "PX", "50")
    sizes = []
    for _ in range(5):
        fake.advance(0.1)
        sizes.append(a.call("DBSIZE"))
    assert sizes[-1] == 30   # every short one gone, though each sample starts with long ones
    assert all(key.startswith(b"long:") for key in fake.data)


def test_active_expiry_runs_only_while_some_key_has_a_ttl(fake, a):
    a.call("SET", "k", "v")
    for _ in range(3):
        fake.advance(0.1)
        a.call("GET", "k")
    assert "runs chore" not in fake.trace_of("a")
    a.call("EXPIRE", "k", "100")   # the first cycle runs on the next turn, at once
    assert fake.trace_of("a").count("runs chore") == 1
    for _ in range(9):             # 90 ms of commands: not due again
        fake.advance(0.01)
        a.call("GET", "k")
    assert fake.trace_of("a").count("runs chore") == 1
    fake.advance(0.01)
    a.call("GET", "k")             # 100 ms on: due again
    assert fake.trace_of("a").count("runs chore") == 2


def test_with_no_ttl_the_upkeep_and_lookups_never_read_the_clock(fake, a):
    def no_clock() -> int:
        raise AssertionError("the clock was read")
    fake.state.keyspace.clock = no_clock
    a.call("SET", "k", "v")
    assert (a.call("GET", "k"), a.call("EXISTS", "k"), a.call("INCR", "n")) == (b"v", 1, 1)
    assert fake.state.due_chore() is None


@pytest.mark.parametrize(("mode", "lock"), [("lock", "keyspace"), ("striped", "keyspace-rw"),
                                            ("unordered", "keyspace-rw")])
def test_active_expiry_holds_the_whole_keyspace(mode, lock):
    fake = InProcess(sync=mode)
    a = fake.connect("a")
    a.call("SET", "k", "v", "PX", "10")
    fake.advance(0.1)
    a.call("PING")
    trace = fake.trace_of("a")
    chore = len(trace) - 1 - trace[::-1].index("runs chore")
    assert trace[chore + 1] == "takes " + lock   # exclusive: no command is halfway through
    assert not fake.data


# -- INFO -------------------------------------------------------------------------------

def test_info_keyspace_counts_keys_and_expires(fake, a):
    a.call("MSET", "a", "1", "b", "2", "c", "3")
    a.call("EXPIRE", "a", "100")
    a.call("PEXPIRE", "b", "100000")
    assert fake.info("db0") == "keys=3,expires=2,avg_ttl=0"
    a.call("PERSIST", "b")
    assert fake.info("db0") == "keys=3,expires=1,avg_ttl=0"


# -- WATCH: an expiry is a write ------------------------------------------------------------

@pytest.mark.parametrize("how", ["lazily", "actively", "by EXPIRE in the past", "by PERSIST"])
def test_a_watched_key_that_expires_or_loses_its_ttl_makes_its_watcher_dirty(fake, how):
    a, b = fake.connect("a"), fake.connect("b")
    a.call("SET", "k", "v", "PX", "50")   # the first upkeep runs now; the next at 100 ms
    assert a.call("WATCH", "k") == "OK"
    client = a.session.client
    assert not client.dirty
    if how == "lazily":
        fake.advance(0.051)
        assert b.call("GET", "k") is None
    elif how == "actively":
        fake.advance(0.1)
        b.call("PING")
        assert b"k" not in fake.data
    elif how == "by EXPIRE in the past":
        b.call("EXPIRE", "k", "-1")
    else:
        b.call("PERSIST", "k")
    assert client.dirty


@pytest.mark.parametrize("read_by_another", [True, False])
def test_exec_fails_when_a_watched_key_expired(fake, read_by_another):
    a, b = fake.connect("a"), fake.connect("b")
    a.call("SET", "k", "v", "PX", "50")
    assert a.call("WATCH", "k") == "OK"
    fake.advance(0.051)   # past its time; the next active expiry is not due yet
    if read_by_another:
        assert b.call("GET", "k") is None
    assert a.call("MULTI") == "OK"
    assert a.call("SET", "k", "mine") == "QUEUED"
    assert a.call("EXEC") == NULL_ARRAY   # refused: the key changed under the WATCH
    assert a.call("GET", "k") is None


def test_a_key_already_past_its_time_when_watched_does_not_fail_the_exec(fake):
    a = fake.connect("a")
    a.call("SET", "k", "v", "PX", "50")
    fake.advance(0.051)
    assert a.call("WATCH", "k") == "OK"   # it was gone already: no change to watch
    assert a.call("MULTI") == "OK"
    assert a.call("SET", "k", "mine") == "QUEUED"
    assert a.call("EXEC") == ["OK"]


# -- the upkeep's guard, in the mode every other command is in ----------------------------

def test_active_expiry_waits_for_an_incr_halfway_through_on_a_new_connection():
    fake = InProcess(sync="striped", race_window_us=5000)
    a = fake.connect("a")
    a.call("SET", "k", "5", "PX", "99")   # the first upkeep runs now; the next at 100 ms
    fake.advance(0.099)
    a.send("INCR", "k")                   # reads 5 at its last millisecond, then a window
    fake.run()
    fake.advance(0.002)
    b = fake.connect("b")
    b.send("PING")                        # a first turn: the upkeep is due, and k is past
    fake.advance(0.01)
    assert (a.replies(), b.replies()) == ([6], ["PONG"])
    # In Redis the INCR keeps the key's time to live, so the key is gone now. Had the
    # upkeep deleted it between the INCR's read and its write, the write would bring it
    # back with no time to live at all.
    assert (a.call("GET", "k"), a.call("TTL", "k")) == (None, -2)


# -- every model and a real redis-server ------------------------------------------------

# Replies that do not depend on how much time passes between two commands.
SCRIPT = [
    (("SET", "k", "v", "EX", "1000"), "OK"), (("TTL", "k"), 1000),
    (("PTTL", "k"), lambda r: 999_000 < r <= 1_000_000),
    (("SET", "k", "w", "KEEPTTL", "GET"), b"v"), (("TTL", "k"), 1000),
    (("SET", "k", "x", "XX"), "OK"), (("TTL", "k"), -1),
    (("EXPIRE", "k", "1000", "XX"), 0), (("EXPIRE", "k", "1000", "GT"), 0),
    (("EXPIRE", "k", "1000", "NX"), 1), (("EXPIRE", "k", "500", "GT"), 0),
    (("EXPIRE", "k", "500", "LT"), 1), (("TTL", "k"), 500),
    (("PERSIST", "k"), 1), (("PERSIST", "k"), 0), (("TTL", "k"), -1),
    (("PERSIST", "nope"), 0), (("TTL", "nope"), -2), (("PTTL", "nope"), -2),
    (("EXPIRE", "nope", "10"), 0),
    (("SET", "n", "1", "PX", "5000000"), "OK"), (("INCR", "n"), 2), (("TTL", "n"), 5000),
    (("SET", "k", "v", "NX", "GET"), b"x"), (("SET", "new", "v", "XX", "GET"), None),
    (("RPUSH", "l", "a"), 1), (("SET", "l", "v", "GET"), ("error", WRONGTYPE)),
    (("SET", "k", "v", "EX", "0"), ("error", "ERR invalid expire time in 'set' command")),
    (("SET", "k", "v", "PX", "-1"), ("error", "ERR invalid expire time in 'set' command")),
    (("SET", "k", "v", "EX", "1", "PX", "1"), ("error", "ERR syntax error")),
    (("SET", "k", "v", "KEEPTTL", "EX", "1"), ("error", "ERR syntax error")),
    (("SET", "k", "v", "EX"), ("error", "ERR syntax error")),
    (("SET", "k", "v", "EX", "x"), ("error", "ERR value is not an integer or out of range")),
    (("EXPIRE", "k", "10", "FOO"), ("error", "ERR Unsupported option FOO")),
    (("EXPIRE", "k", "10", "NX", "GT"),
     ("error", "ERR NX and XX, GT or LT options at the same time are not compatible")),
    (("EXPIRE", "k", "10", "GT", "LT"),
     ("error", "ERR GT and LT options at the same time are not compatible")),
    (("EXPIRE", "k", "9223372036854776"),
     ("error", "ERR invalid expire time in 'expire' command")),
    (("PEXPIRE", "k", "9223372036854775807"),
     ("error", "ERR invalid expire time in 'pexpire' command")),
    (("EXPIRE", "k", "-1"), 1), (("EXISTS", "k"), 0),
    (("SET", "k", "v", "PXAT", "1"), "OK"), (("GET", "k"), None),
    (("SET", "k", "v"), "OK"), (("EXPIREAT", "k", "1"), 1), (("EXISTS", "k"), 0),
]


def test_expiry_replies_match_redis(target):
    with target.raw() as client:
        client.call("FLUSHALL")
        for command, expected in SCRIPT:
            reply = client.call(*command)
            if isinstance(reply, Exception):
                reply = ("error", str(reply))
            ok = expected(reply) if callable(expected) else reply == expected
            assert ok, f"{target.name}: {command} answered {reply!r}"
        client.call("FLUSHALL")


def test_a_key_with_px_50_is_gone_once_get_says_nil(target):
    with target.raw() as client:
        client.call("FLUSHALL")
        assert client.call("SET", "k", "v", "PX", "50") == "OK"
        wait_until(lambda: client.call("GET", "k") is None, message="k to expire")
        assert (client.call("EXISTS", "k"), client.call("TTL", "k")) == (0, -2)


def test_keys_nobody_reads_are_expired_by_the_server(target):
    with target.raw() as client:
        client.call("FLUSHALL")
        client.call("SET", "kept", "v")
        for i in range(50):
            client.call("SET", f"k{i}", "v", "PX", "10")
        wait_until(lambda: client.call("DBSIZE") == 1, message="active expiry")
        assert client.call("KEYS", "*") == [b"kept"]
