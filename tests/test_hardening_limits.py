"""What one client may cost (docs/design.md, "Bad input"): huge timeouts, WORK's cap,
protected mode, and names that must not create state.

Each limit is pinned twice: fast, through the in-process model or the session
itself, and on every real model (the `server` fixture), where the bug was.
"""

from __future__ import annotations

import pytest

from contend.server import warn_if_exposed
from contend.shared.args import LONGEST_WAIT, parse_timeout
from contend.shared.config import Config
from contend.shared.resp import NULL_ARRAY, ReplyError
from contend.shared.session import Session
from contend.shared.state import DENIED_REPLY
from tests.helpers import blocked_clients, info_field, wait_until
from tests.inprocess import Connection, InProcess

OUT_OF_RANGE = "ERR timeout is out of range"
HUGE = "1e16"     # seconds: its deadline in ms is past a signed 64-bit integer, as in Redis
LONG = "1e10"     # seconds: accepted, as Redis accepts it; once an OverflowError in threads

# Every command that takes a timeout in seconds, with HUGE as that timeout.
HUGE_TIMEOUTS = [
    ("BLPOP", "q", HUGE), ("BRPOP", "q", HUGE), ("BARRIER.WAIT", "b", "2", HUGE),
    ("POOL.ACQUIRE", HUGE), ("POOL.USE", "1", HUGE), ("EVENT.WAIT", "e", HUGE),
]


def error(text: str):
    return lambda reply: isinstance(reply, ReplyError) and reply.text.startswith(text)


# -- huge timeouts: parsing ----------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    (b"0", None), (b"0.5", 0.5), (b"2", 2.0), (b"1e10", None), (LONG.encode(), None),
    (str(LONGEST_WAIT).encode(), float(LONGEST_WAIT)),
])
def test_timeouts_are_read_as_redis_reads_them(text, expected):
    assert parse_timeout(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    (b"1e16", OUT_OF_RANGE), (b"inf", OUT_OF_RANGE), (b"1e300", OUT_OF_RANGE),
    (b"-1", "ERR timeout is negative"), (b"-inf", "ERR timeout is negative"),
    (b"nan", "ERR timeout is not a float or out of range"),
    (b"abc", "ERR timeout is not a float or out of range"),
    (b" 1", "ERR timeout is not a float or out of range"),
    (b"1_0", "ERR timeout is not a float or out of range"),
])
def test_timeouts_redis_refuses_are_refused_with_its_text(text, message):
    with pytest.raises(ReplyError) as refused:
        parse_timeout(text)
    assert refused.value.text == message


# -- huge timeouts: in-process ---------------------------------------------------------

@pytest.mark.parametrize("command", HUGE_TIMEOUTS, ids=lambda c: c[0])
def test_huge_timeout_is_refused_and_leaves_nothing_waiting(command):
    model = InProcess()
    a = model.connect("a")
    assert error(OUT_OF_RANGE)(a.call(*command))
    assert model.info("blocked_clients") == 0 and model.state.waiters.count == 0
    assert model.info("barriers") == 0 and model.info("events") == 0
    assert model.state.ledger.waiting == 0


def test_after_a_refused_huge_timeout_the_next_push_reaches_a_real_waiter():
    model = InProcess()
    refused, waiter, pusher = model.connect("refused"), model.connect("waiter"), model.connect()
    assert error(OUT_OF_RANGE)(refused.call("BLPOP", "q", HUGE))
    waiter.send("BLPOP", "q", "0")
    model.run()
    assert pusher.call("RPUSH", "q", "job") == 1
    assert waiter.replies() == [[b"q", b"job"]] and refused.replies() == []


def test_a_long_but_valid_timeout_waits_and_is_served():
    model = InProcess()
    waiter, pusher = model.connect("waiter"), model.connect("pusher")
    waiter.send("BLPOP", "q", LONG)
    model.advance(30 * 86400)   # a month on: still waiting (past 24 days is forever)
    assert waiter.replies() == [] and model.info("blocked_clients") == 1
    assert pusher.call("RPUSH", "q", "job") == 1
    assert waiter.replies() == [[b"q", b"job"]]


@pytest.mark.parametrize("command", [("SLEEP", "3000000000"), ("POOL.USE", "3000000000")])
def test_sleeps_past_the_longest_wait_are_refused(command):
    model = InProcess()
    reply = model.connect().call(*command)
    assert error("ERR milliseconds must be at most 2073600000")(reply)
    assert model.state.ledger.in_use == 0


# -- WORK's cap ----------------------------------------------------------------------

def test_work_above_work_max_units_is_refused_and_counted():
    model = InProcess(work_max_units=5)
    a = model.connect()
    assert isinstance(a.call("WORK", "5"), int)
    reply = a.call("WORK", "1000000")
    assert error("ERR units must be between 0 and 5")(reply) and "work-max-units" in reply.text
    assert model.info("work_refusals") == 1
    assert error("ERR units")(a.call("WORK", "-1")) and model.info("work_refusals") == 1
    assert a.call("CONFIG", "SET", "work-max-units", "6") == "OK"
    assert isinstance(a.call("WORK", "6"), int)


def test_work_max_units_defaults_to_ten_thousand():
    model = InProcess()
    assert model.connect().call("CONFIG", "GET", "work-max-units") == [b"work-max-units",
                                                                        b"10000"]


# -- protected mode -------------------------------------------------------------------

def connect_from(model: InProcess, addr: str, name: str = "remote") -> Connection:
    """model.connect(), from a made-up peer address (no packet leaves this process)."""
    conn = Connection(model, name, Session(model.state, addr=addr))
    model.connections.append(conn)
    model.ready.append((conn, None))
    return conn


@pytest.mark.parametrize("addr", ["203.0.113.7:50000", "10.0.0.2:1234", "2001:db8::7:50000"])
def test_a_client_from_elsewhere_is_denied_with_redis_s_text_and_counted(addr):
    model = InProcess()
    remote = connect_from(model, addr)
    remote.send("PING")
    model.run()
    assert remote.closed and len(remote.received) == 1
    denied = remote.received[0]
    assert isinstance(denied, ReplyError) and denied.text.startswith(
        "DENIED contend is running in protected mode because protected mode is enabled "
        "and no password is set for the default user.")
    for advice in ("'CONFIG SET protected-mode no'", "'--protected-mode no'",
                   "authentication password", "loopback interface"):
        assert advice in denied.text
    assert model.info("denied_connections") == 1


@pytest.mark.parametrize("addr", ["127.0.0.1:5000", "127.8.9.10:5000", "::1:5000",
                                  "::ffff:127.0.0.1:5000", "inprocess:9"])
def test_a_client_on_this_machine_is_served(addr):
    model = InProcess()
    assert connect_from(model, addr).call("PING") == "PONG"
    assert model.info("denied_connections") == 0


def test_with_a_password_set_a_client_from_elsewhere_is_served():
    model = InProcess(requirepass="secret")
    remote = connect_from(model, "203.0.113.7:50000")
    assert error("NOAUTH")(remote.call("PING"))
    assert remote.call("AUTH", "secret") == "OK" and remote.call("PING") == "PONG"
    assert model.info("denied_connections") == 0


def test_config_set_protected_mode_no_serves_clients_from_elsewhere():
    model = InProcess()
    assert model.connect("local").call("CONFIG", "SET", "protected-mode", "no") == "OK"
    assert connect_from(model, "203.0.113.7:50000").call("PING") == "PONG"
    assert model.connect("local2").call("CONFIG", "SET", "protected-mode", "yes") == "OK"
    assert error("DENIED")(connect_from(model, "203.0.113.8:50000", "again").call("PING"))


def test_the_denial_is_one_line_of_resp():
    assert DENIED_REPLY.startswith(b"-DENIED ") and DENIED_REPLY.endswith(b"\r\n")
    assert DENIED_REPLY.count(b"\r") == 1 and b"\n" not in DENIED_REPLY[:-1]


@pytest.mark.parametrize(("settings", "warned"), [
    ({"host": "0.0.0.0"}, True), ({"host": "::"}, True), ({"host": "192.0.2.1"}, True),
    ({"host": "127.0.0.1"}, False), ({"host": "::1"}, False), ({"host": "localhost"}, False),
    ({"host": "0.0.0.0", "requirepass": "x"}, False),
    ({"host": "0.0.0.0", "protected_mode": "no"}, False),
])
def test_start_up_warns_once_when_bound_beyond_loopback_unprotected(capsys, settings, warned):
    warn_if_exposed(Config(**settings))
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == int(warned)
    if warned:
        assert "protected mode" in err and "--protected-mode no" in err


# -- names must not create state -----------------------------------------------------

def test_lookups_of_new_names_create_nothing():
    model = InProcess()
    a = model.connect()
    for n in range(1000):
        a.send("EVENT.ISSET", f"e{n}")
        a.send("EVENT.CLEAR", f"c{n}")
        a.send("BARRIER.STATUS", f"b{n}")
    model.run()
    assert len(a.replies()) == 3000
    assert model.info("events") == 0 and model.info("barriers") == 0


def test_an_event_is_kept_while_set_or_waited_for_and_forgotten_when_idle():
    model = InProcess()
    a, b, c = model.connect("a"), model.connect("b"), model.connect("c")
    assert a.call("EVENT.SET", "open") == 0 and model.info("events") == 1   # set: state
    assert a.call("EVENT.ISSET", "open") == 1
    assert a.call("EVENT.CLEAR", "open") == "OK" and model.info("events") == 0
    assert a.call("EVENT.ISSET", "open") == 0
    b.send("EVENT.WAIT", "open", "0.5")
    c.send("EVENT.WAIT", "open", "0")
    model.run()
    assert model.info("events") == 1
    model.advance(0.5)
    assert b.replies() == [0] and model.info("events") == 1   # c still waits
    assert a.call("EVENT.SET", "open") == 1 and c.replies() == [1]
    assert a.call("EVENT.CLEAR", "open") == "OK" and model.info("events") == 0
    c.send("EVENT.WAIT", "gone", "0")
    model.run()
    c.hang_up()
    model.run()
    assert model.info("events") == 0


def test_barriers_are_made_only_by_a_wait():
    model = InProcess()
    a = model.connect()
    assert error("ERR parties")(a.call("BARRIER.WAIT", "b", "0"))
    assert a.call("BARRIER.RESET", "b") == 0
    assert model.info("barriers") == 0
    assert a.call("BARRIER.WAIT", "b", "1") == 0 and model.info("barriers") == 1
    assert a.call("BARRIER.RESET", "b") == 1 and model.info("barriers") == 0


# -- every real model ---------------------------------------------------------------

def test_huge_timeouts_are_refused_and_the_next_push_reaches_a_real_waiter(server):
    with server.raw() as client:
        for command in HUGE_TIMEOUTS:
            assert str(client.call(*command)) == OUT_OF_RANGE, command
        assert str(client.call("BLPOP", "q", "inf")) == OUT_OF_RANGE
        assert str(client.call("SLEEP", "3000000000")).startswith(
            "ERR milliseconds must be at most")
        assert client.call("PING") == "PONG"   # the connection answered each and goes on
        assert info_field(client, "blocked_clients") == 0
    waiter = server.raw()
    waiter.send_command("BLPOP", "q", LONG)   # accepted: waits (past 24 days, for ever)
    wait_until(lambda: blocked_clients(server) == 1, message="the BLPOP to block")
    with server.raw() as pusher:
        assert pusher.call("RPUSH", "q", "job") == 1
        assert pusher.call("LLEN", "q") == 0
    assert waiter.read() == [b"q", b"job"]
    waiter.close()


def test_long_valid_timeouts_wait_in_every_blocking_command(server):
    holder = server.raw()
    leases = [holder.call("POOL.ACQUIRE") for _ in range(4)]   # the pool is empty now
    commands = [("EVENT.WAIT", "long-e", LONG), ("POOL.ACQUIRE", LONG),
                ("BARRIER.WAIT", "long-b", "2", LONG), ("SLEEP", "2073600000")]
    waiters = []
    for n, command in enumerate(commands):
        waiter = server.raw()
        waiter.send_command(*command)
        waiters.append(waiter)
        wait_until(lambda n=n: blocked_clients(server) == n + 1, message=f"{command} to block")
    with server.raw() as client:
        assert client.call("EVENT.SET", "long-e") == 1
        assert client.call("BARRIER.WAIT", "long-b", "2") in (0, 1)
        assert holder.call("POOL.RELEASE", leases[0]) == 1
        assert client.call("PING") == "PONG"
    assert waiters[0].read() == 1
    assert isinstance(waiters[1].read(), int)   # a lease, once one came back
    assert waiters[2].read() in (0, 1)
    for waiter in [*waiters, holder]:
        waiter.close()
    wait_until(lambda: blocked_clients(server) == 0, message="the sleeper to leave")
    with server.raw() as client:
        client.call("EVENT.CLEAR", "long-e")
        wait_until(lambda: client.call("POOL.STATUS")[3] == 0, message="the leases to return")


def test_work_over_the_cap_is_refused_at_once_and_counted(server):
    with server.raw() as client:
        assert client.call("CONFIG", "GET", "work-max-units") == [b"work-max-units", b"10000"]
        before = info_field(client, "work_refusals")
        refused = str(client.call("WORK", "1000000"))
        assert refused.startswith("ERR units must be between 0 and 10000")
        assert "work-max-units" in refused
        assert info_field(client, "work_refusals") == before + 1
        assert isinstance(client.call("WORK", "10"), int)


def test_lookups_of_new_names_leave_no_events_or_barriers(server):
    with server.raw() as client:
        events, barriers = info_field(client, "events"), info_field(client, "barriers")
        for n in range(1000):   # pipelined: sent at once, then every reply read
            client.send_command("EVENT.ISSET", f"new-e{n}")
            client.send_command("EVENT.CLEAR", f"new-c{n}")
            client.send_command("BARRIER.STATUS", f"new-b{n}")
        replies = [client.read() for _ in range(3000)]
        assert replies[:3] == [0, "OK", NULL_ARRAY]
        assert info_field(client, "events") == events
        assert info_field(client, "barriers") == barriers
        assert client.call("EVENT.WAIT", "brief", "0.01") == 0
        assert info_field(client, "events") == events   # a wait that ended leaves nothing
        assert client.call("EVENT.SET", "kept") == 0
        assert info_field(client, "events") == events + 1   # set: that is state
        assert client.call("EVENT.CLEAR", "kept") == "OK"
        assert info_field(client, "events") == events


def test_loopback_clients_are_served_in_protected_mode(server):
    with server.raw() as client:
        assert client.call("CONFIG", "GET", "protected-mode") == [b"protected-mode", b"yes"]
        assert client.call("PING") == "PONG"
        assert info_field(client, "denied_connections") == 0


def test_an_idle_timeout_of_years_keeps_every_model_serving(server):
    """The selectors loop once passed such a deadline straight to select(), which refused it."""
    with server.raw() as client:
        assert client.call("CONFIG", "SET", "timeout", "100000000") == "OK"
        try:
            with server.raw() as other:
                assert other.call("PING") == "PONG"
            assert client.call("PING") == "PONG"
        finally:
            assert client.call("CONFIG", "SET", "timeout", "0") == "OK"
    assert server.process.poll() is None
