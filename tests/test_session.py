"""The session (shared/session.py) with no sockets and no model: bytes in, events out.

Effects are performed by hand here, the way a model would, so each test
shows one promise the session keeps for every model: framing errors, QUIT,
flush-before-block, back-pressure, hand-back, lease return, bugs.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque

import pytest

from contend.shared import effects as fx
from contend.shared.commands import COMMANDS
from contend.shared.config import Config
from contend.shared.resp import NEED_MORE, ReplyError, ReplyParser, encode_command
from contend.shared.session import CLOSE, FLUSH, NEED_DATA, Call, Session
from contend.shared.state import ServerState
from contend.shared.waiters import ListWaiter

OUTPUT_SOFT_LIMIT = Config.output_buffer_soft_limit   # CONFIG's default


def new_session(state: ServerState | None = None) -> Session:
    return Session(state or ServerState(Config()), addr="test:1")


def by_hand(effect):
    """A model that grants every guard at once and has nothing to wait for."""
    if isinstance(effect, (fx.Guard, fx.RaceWindow, fx.Pushed)):
        return None
    if isinstance(effect, fx.ModelInfo):
        return {}
    raise AssertionError(f"this test did not expect {effect}")


def drive(call: Call, perform=by_hand) -> list:
    """Perform each effect the Call yields until it ends; the effects, in order."""
    seen, value = [], None
    while (effect := call.send(value)) is not None:
        seen.append(effect)
        value = perform(effect)
    return seen


def serve(session: Session, data: bytes = b"", perform=by_hand) -> list:
    """Feed bytes, then drive the session until it needs more or closes; the events seen."""
    if data:
        session.receive_data(data)
    events = []
    while True:
        event = session.next_event()
        events.append(event)
        if event is NEED_DATA or event is CLOSE:
            return events
        if event is not FLUSH:
            drive(event, perform)


def replies(data: bytes) -> list:
    parser = ReplyParser()
    parser.feed(data)
    out = []
    while (reply := parser.next_reply()) is not NEED_MORE:
        out.append(reply)
    return out


def texts(data: bytes) -> list:
    """Replies with errors as their text, so lists of them compare."""
    return [r.text if isinstance(r, ReplyError) else r for r in replies(data)]


# -- framing ------------------------------------------------------------------------

@pytest.mark.parametrize("request_bytes, error", [
    (b"*abc\r\n", "ERR Protocol error: invalid multibulk length"),
    (b"*2000000\r\n", "ERR Protocol error: invalid multibulk length"),
    (b"*1\r\nfoo\r\n", "ERR Protocol error: expected '$', got 'f'"),
    (b"*1\r\n$-1\r\n", "ERR Protocol error: invalid bulk length"),
    (b"*1\r\n$x\r\n", "ERR Protocol error: invalid bulk length"),
    (b'SET k "v\r\n', "ERR Protocol error: unbalanced quotes in request"),
], ids=["count", "count-too-big", "not-a-bulk", "negative-bulk", "bulk-not-a-number", "quotes"])
def test_a_protocol_error_is_answered_then_the_connection_closes(request_bytes, error):
    session = new_session()
    assert serve(session, b"PING\r\n" + request_bytes + b"PING\r\n") == [CLOSE]
    assert texts(session.data_to_send()) == ["PONG", error]   # nothing after the bad frame


def test_a_line_past_64k_with_no_newline_is_cut_off():
    session = new_session()
    assert serve(session, b"x" * (64 * 1024)) == [NEED_DATA]   # still may end in time
    assert serve(session, b"x") == [CLOSE]
    assert texts(session.data_to_send()) == ["ERR Protocol error: too big inline request"]


def test_empty_lines_and_empty_multibulks_get_no_reply():
    session = new_session()
    assert serve(session, b"\r\n*0\r\n*-10\r\nPING\r\n") == [NEED_DATA]
    assert texts(session.data_to_send()) == ["PONG"]


def test_unknown_command_and_wrong_arity_keep_the_connection():
    session = new_session()
    assert serve(session, b"NOPE a b\r\nPING a b\r\nECHO hi\r\n") == [NEED_DATA]
    assert texts(session.data_to_send()) == [
        "ERR unknown command 'NOPE', with args beginning with: 'a' 'b' ",
        "ERR wrong number of arguments for 'ping' command", b"hi"]


def test_inline_and_multibulk_split_into_single_bytes_parse_like_the_whole():
    stream = (encode_command("SET", "k", "a b") + b"GET k\r\n" + b'ECHO "x\\ty"\r\n'
              + encode_command("ECHO", b"\r\n\x00"))
    session = new_session()
    seen = []
    for i in range(len(stream)):
        seen += serve(session, stream[i:i + 1])
    assert FLUSH not in seen and CLOSE not in seen
    assert texts(session.data_to_send()) == ["OK", b"a b", b"x\ty", b"\r\n\x00"]


def test_quit_is_answered_then_the_connection_closes():
    session = new_session()
    assert serve(session, b"QUIT\r\nSET k v\r\n") == [CLOSE]
    assert texts(session.data_to_send()) == ["OK"]
    assert b"k" not in session.state.keyspace.data   # nothing after QUIT runs
    session.close()
    assert session.client.id not in session.state.clients


# -- ordering and back-pressure ---------------------------------------------------------

def test_earlier_replies_are_flushed_before_a_blocking_command_runs():
    session = new_session()
    session.receive_data(b"PING\r\nBLPOP l 0\r\n")
    assert session.next_event() is FLUSH
    assert texts(session.data_to_send()) == ["PONG"]
    call = session.next_event()
    assert isinstance(call, Call) and call.name.lower() == b"blpop"


def test_a_blocking_command_with_nothing_before_it_runs_without_a_flush():
    session = new_session()
    session.receive_data(b"BLPOP l 0\r\n")
    assert isinstance(session.next_event(), Call)


def test_pipelined_commands_that_do_not_block_need_no_flush():
    session = new_session()
    assert serve(session, b"PING\r\nECHO a\r\nPING\r\n") == [NEED_DATA]
    assert texts(session.data_to_send()) == ["PONG", b"a", "PONG"]


def test_past_the_output_limit_the_session_asks_for_a_flush_before_running_more():
    session = new_session()
    big = b"x" * (OUTPUT_SOFT_LIMIT // 3 + 1)
    session.receive_data(encode_command("ECHO", big) * 4)
    assert session.next_event() is FLUSH   # three replies are past the limit
    assert session.out_size >= OUTPUT_SOFT_LIMIT and session.buffered > 0   # the 4th waits
    assert replies(session.data_to_send()) == [big] * 3
    assert session.next_event() is NEED_DATA
    assert replies(session.data_to_send()) == [big]


# -- a client that leaves ----------------------------------------------------------

def blpop_until_it_waits(session: Session) -> Call:
    session.receive_data(b"BLPOP l 0\r\n")
    call = session.next_event()
    assert isinstance(call.send(None), fx.Guard)
    assert isinstance(call.send(None), fx.PopWait)
    return call


def test_an_item_served_to_a_waiter_that_left_goes_back_to_the_list():
    session = new_session()
    call = blpop_until_it_waits(session)
    session.connection_lost()           # the push served it; its client left before the reply
    assert call.send((b"l", b"x")) is None
    hand_back = session.next_event()
    assert isinstance(hand_back, Call) and hand_back.name == b"hand-back"
    assert [type(e) for e in drive(hand_back)] == [fx.Guard]
    assert session.next_event() is CLOSE
    assert session.state.keyspace.data[b"l"] == deque([b"x"])
    assert session.data_to_send() == b""


def test_an_item_served_to_a_waiter_that_left_goes_to_the_next_waiter():
    session = new_session()
    call = blpop_until_it_waits(session)
    other = session.state.waiters.add(ListWaiter(99, (b"l",), left=True))
    session.connection_lost()
    call.send((b"l", b"x"))
    effects = drive(session.next_event())
    assert isinstance(effects[-1], fx.Pushed) and effects[-1].served == [other]
    assert other.item == (b"l", b"x") and b"l" not in session.state.keyspace.data


def test_a_handed_back_item_reaches_the_next_waiter_even_when_the_key_became_a_string():
    session = new_session()
    call = blpop_until_it_waits(session)
    other = session.state.waiters.add(ListWaiter(99, (b"l",), left=True))
    session.connection_lost()
    call.send((b"l", b"x"))
    session.state.keyspace.set(b"l", b"str")   # a SET ran meanwhile
    drive(session.next_event())
    assert other.item == (b"l", b"x")
    assert session.state.keyspace.data[b"l"] == b"str"
    assert session.next_event() is CLOSE


def test_a_client_that_leaves_gives_back_every_lease_it_holds():
    state = ServerState(Config(pool_size=2))
    session = new_session(state)

    def pool(effect):
        if isinstance(effect, fx.LeaseAcquire):
            return state.ledger.grant(session.client.id)
        if isinstance(effect, fx.LeaseRelease):
            return state.ledger.revoke(effect.lease, session.client.id)
        return by_hand(effect)

    serve(session, b"POOL.ACQUIRE\r\n", pool)
    serve(session, b"POOL.ACQUIRE\r\n", pool)
    assert texts(session.data_to_send()) == [1, 2] and state.ledger.in_use == 2
    session.receive_data(b"")   # end of file: the client has gone
    lease_return = session.next_event()
    assert lease_return.name == b"lease-return"
    assert drive(lease_return, pool) == [fx.LeaseRelease(1), fx.LeaseRelease(2)]
    assert session.next_event() is CLOSE
    assert state.ledger.in_use == 0


def test_quit_gives_back_leases_too():
    state = ServerState(Config())
    session = new_session(state)
    state.ledger.grant(session.client.id)
    session.receive_data(b"QUIT\r\n")
    assert session.next_event().name == b"lease-return"


def test_nothing_is_sent_after_connection_lost():
    session = new_session()
    session.receive_data(b"PING\r\nINCR k\r\nPING\r\n")
    call = session.next_event()            # INCR: PING's reply is queued before it
    assert isinstance(call.send(None), fx.Guard)
    session.connection_lost()              # mid-command: it ends, its reply goes nowhere
    assert call.send(None) is None         # (a window 0 wide is no wait: straight to the write)
    session.receive_data(b"PING\r\n")      # bytes after the loss are not read
    assert session.next_event() is CLOSE
    assert session.data_to_send() == b""
    assert session.state.keyspace.data[b"k"] == b"1"   # the write itself was not half done


def test_a_cancelled_call_ends_without_a_reply():
    session = new_session()
    call = blpop_until_it_waits(session)
    session.connection_lost()
    call.cancel()
    assert session.call is None and not session.client.running
    assert session.next_event() is CLOSE


def test_the_next_event_waits_for_the_running_call_to_end():
    session = new_session()
    session.receive_data(b"GET k\r\n")
    session.next_event()
    with pytest.raises(RuntimeError):
        session.next_event()


def test_an_effect_failed_with_a_reply_error_is_the_commands_reply():
    session = new_session()
    session.receive_data(b"INCR k\r\n")
    call = session.next_event()
    call.send(None)
    assert call.send(ReplyError("DEADLOCK gave up")) is None
    assert texts(session.data_to_send()) == ["DEADLOCK gave up"]
    assert b"k" not in session.state.keyspace.data


# -- a bug inside a command ---------------------------------------------------------

def broken_command(monkeypatch, name: bytes, handler) -> None:
    monkeypatch.setitem(COMMANDS, name, dataclasses.replace(COMMANDS[name], handler=handler))


def info_field(session: Session, name: str):
    serve(session, b"INFO\r\n")
    text = replies(session.data_to_send())[-1].decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)[name]


def test_a_bug_in_a_command_answers_internal_error_is_logged_once_and_counted(
        monkeypatch, caplog):
    def crash(client, argv):
        return 1 // 0

    broken_command(monkeypatch, b"ping", crash)
    session = new_session()
    with caplog.at_level(logging.ERROR, logger="contend"):
        serve(session, b"PING\r\nPING\r\nPING\r\nECHO still-here\r\n")
    assert texts(session.data_to_send()) == ["ERR internal error"] * 3 + [b"still-here"]
    logged = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info[0] is ZeroDivisionError
    assert info_field(session, "internal_errors") == "3"


def test_a_bug_after_a_guard_and_an_unencodable_reply_are_internal_errors_too(monkeypatch):
    def crash_when_guarded(client, argv):
        yield fx.Guard((argv[1],))
        raise KeyError("oops")

    def odd_reply(client, argv):
        return object()

    broken_command(monkeypatch, b"get", crash_when_guarded)
    broken_command(monkeypatch, b"echo", odd_reply)
    session = new_session()
    serve(session, b"GET k\r\nECHO x\r\nPING\r\n")
    assert texts(session.data_to_send()) == ["ERR internal error", "ERR internal error", "PONG"]
    assert session.state.tally("internal_errors") == 2
    assert not session.client.running


@pytest.mark.parametrize("window_us", [0, 500])
def test_a_race_window_is_asked_of_the_model_only_when_it_is_wider_than_zero(window_us):
    session = new_session(ServerState(Config(race_window_us=window_us)))
    session.receive_data(b"INCR k\r\n")
    call = session.next_event()
    assert isinstance(call.send(None), fx.Guard)
    effect = call.send(None)
    if window_us:
        assert isinstance(effect, fx.RaceWindow)
        effect = call.send(None)
    assert effect is None
    assert session.data_to_send() == b":1\r\n"
