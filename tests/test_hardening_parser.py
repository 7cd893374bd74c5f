"""Hardening the request parser (issue 10): linear work however the bytes are cut, and
Redis 7.0's limits on a client that has not authenticated.

The fast tests use no sockets: the parser, then the session. The slow ones send the
same bytes to every model (and to a real redis-server where it is cheap to compare).
"""

from __future__ import annotations

import time

import pytest

from contend.client import servers
from contend.shared.config import Config
from contend.shared.resp import (
    PREAUTH_BULK_MAX,
    PREAUTH_MULTIBULK_MAX,
    ProtocolError,
    ReplyError,
    RequestParser,
    encode_command,
)
from contend.shared.session import CLOSE, NEED_DATA, Session
from contend.shared.state import ServerState
from tests.conftest import MODELS
from tests.servers import TestServer

# -- linear work ----------------------------------------------------------------


class CountingBuffer(bytearray):
    """A buffer that counts the bytes its `find` looks at: how the parser searches for
    the end of every line, so the count grows with each time a line is parsed again."""

    scanned = 0
    searches = 0

    def find(self, sub, start=0, end=None):
        stop = len(self) if end is None else min(end, len(self))
        found = super().find(sub, start, stop)
        CountingBuffer.searches += 1
        CountingBuffer.scanned += max((found + len(sub) if found >= 0 else stop) - start, 0)
        return found


class CountingParser(RequestParser):
    """The parser, its buffer swapped for a CountingBuffer after each feed (the copy
    this takes is the test's cost, not the parser's, and is not counted)."""

    __slots__ = ()

    def feed(self, data: bytes) -> None:
        super().feed(data)
        if type(self._buf) is not CountingBuffer:
            self._buf = CountingBuffer(self._buf)


def parse_in_chunks(parser: RequestParser, data: bytes, chunk: int) -> list:
    commands = []
    for start in range(0, len(data), chunk):   # bounded: len(data) / chunk reads
        parser.feed(data[start:start + chunk])
        while (command := parser.next_command()) is not None:
            commands.append(command)
    return commands


BIG_RPUSH_ELEMENTS = 100_000
BIG_RPUSH = encode_command("RPUSH", "list", *[b"%d" % i for i in range(BIG_RPUSH_ELEMENTS)])


@pytest.mark.parametrize("chunk", [7, 64 * 1024], ids=["7-byte-reads", "64KiB-reads"])
def test_a_big_multibulk_is_parsed_once_however_it_is_cut(chunk):
    CountingBuffer.scanned = CountingBuffer.searches = 0
    parser = CountingParser()
    commands = parse_in_chunks(parser, BIG_RPUSH, chunk)
    whole = RequestParser()
    whole.feed(BIG_RPUSH)
    assert commands == [whole.next_command()]
    assert len(commands[0]) == BIG_RPUSH_ELEMENTS + 2 and parser.buffered == 0
    # Parsing again from the start on each read would scan ~len * reads / 2 bytes
    # (hundreds of times the input in 64 KiB reads, far more in 7-byte ones).
    assert CountingBuffer.scanned < 2 * len(BIG_RPUSH)
    reads = -(-len(BIG_RPUSH) // chunk)
    assert CountingBuffer.searches <= (BIG_RPUSH_ELEMENTS + 3) + reads   # one per line, or per read


def test_a_big_bulk_arriving_slowly_is_not_searched_again():
    value = b"v" * (1 << 20)
    data = encode_command("SET", "k", value)
    CountingBuffer.scanned = CountingBuffer.searches = 0
    parser = CountingParser()
    assert parse_in_chunks(parser, data, 16 * 1024) == [[b"SET", b"k", value]]
    assert CountingBuffer.scanned < 100   # only the headers: the value itself is never searched


def test_a_long_line_arriving_byte_by_byte_is_searched_once():
    line = b"ECHO " + b"x" * 5000 + b"\r\n"
    CountingBuffer.scanned = 0
    parser = CountingParser()
    assert parse_in_chunks(parser, line, 1) == [[b"ECHO", b"x" * 5000]]
    assert CountingBuffer.scanned < 3 * len(line)


def test_buffered_counts_the_elements_of_a_command_not_yet_complete():
    parser = RequestParser()
    parser.feed(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nva")
    assert parser.next_command() is None
    assert parser.buffered == len(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nva")
    parser.feed(b"lue\r\nPING\r\n")
    assert parser.next_command() == [b"SET", b"k", b"value"]
    assert parser.buffered == len(b"PING\r\n")
    assert parser.next_command() == [b"PING"] and parser.buffered == 0


def test_an_error_deep_in_a_command_cut_short_is_the_same_as_whole():
    data = b"*1001\r\n" + b"$1\r\nx\r\n" * 1000 + b"$abc\r\n"   # the last element's header is bad
    for chunk in (1, 7, 1000, len(data)):
        parser = RequestParser()
        with pytest.raises(ProtocolError, match="invalid bulk length"):
            parse_in_chunks(parser, data, chunk)


# -- pre-auth limits: the parser ------------------------------------------------


def unauthenticated_parser() -> RequestParser:
    parser = RequestParser()
    parser.unauthenticated = True
    return parser


def test_preauth_limits_are_redis_7s():
    assert (PREAUTH_MULTIBULK_MAX, PREAUTH_BULK_MAX) == (10, 16384)


def test_unauthenticated_multibulk_of_10_is_parsed_and_11_refused_at_its_header():
    parser = unauthenticated_parser()
    parser.feed(encode_command(*["x"] * 10))
    assert parser.next_command() == [b"x"] * 10
    parser.feed(b"*11\r\n")   # the header alone: refused before any element arrives
    with pytest.raises(ProtocolError) as caught:
        parser.next_command()
    assert caught.value.reply == b"-ERR Protocol error: unauthenticated multibulk length\r\n"
    assert caught.value.preauth


def test_unauthenticated_bulk_of_16384_is_parsed_and_16385_refused_at_its_header():
    parser = unauthenticated_parser()
    parser.feed(encode_command("SET", "k", b"v" * 16384))
    assert parser.next_command() == [b"SET", b"k", b"v" * 16384]
    parser.feed(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$16385\r\n")   # no byte of its value yet
    with pytest.raises(ProtocolError) as caught:
        parser.next_command()
    assert caught.value.reply == b"-ERR Protocol error: unauthenticated bulk length\r\n"
    assert caught.value.preauth


def test_nothing_is_buffered_past_a_refused_header():
    """The refusal comes as the header completes: the parser never waits for the body."""
    parser = unauthenticated_parser()
    parser.feed(b"*2\r\n$4\r\nECHO\r\n$100000")
    assert parser.next_command() is None   # the header's end has not arrived
    parser.feed(b"\r")
    assert parser.next_command() is None
    parser.feed(b"\n")
    with pytest.raises(ProtocolError, match="unauthenticated bulk length"):
        parser.next_command()


@pytest.mark.parametrize("data", [
    encode_command(*["x"] * 11),
    encode_command(*["x"] * 1000),
    encode_command("SET", "k", b"v" * 16385),
    encode_command("SET", "k", b"v" * 1_000_000),
])
def test_authenticated_clients_keep_the_ordinary_limits(data):
    parser = RequestParser()
    parser.feed(data)
    assert parser.next_command() is not None


def test_the_limits_follow_the_flag_from_one_command_to_the_next():
    """AUTH in a pipeline lifts the limits for the very next command, as in Redis."""
    parser = unauthenticated_parser()
    parser.feed(b"AUTH pw\r\n" + encode_command(*["x"] * 11))
    assert parser.next_command() == [b"AUTH", b"pw"]
    parser.unauthenticated = False   # the session does this once AUTH has succeeded
    assert parser.next_command() == [b"x"] * 11


@pytest.mark.parametrize("data, message", [
    (b"*1048577\r\n", "invalid multibulk length"),
    (b"*abc\r\n", "invalid multibulk length"),
    (b"*1\r\n$-1\r\n", "invalid bulk length"),
    (b"*1\r\n$600000000\r\n", "invalid bulk length"),
    (b"*1\r\nfoo\r\n", "expected '$', got 'f'"),
])
def test_a_malformed_header_gets_its_own_error_before_the_preauth_limit(data, message):
    """networking.c checks a header's form first, then the pre-auth limit."""
    parser = unauthenticated_parser()
    parser.feed(data)
    with pytest.raises(ProtocolError) as caught:
        parser.next_command()
    assert str(caught.value) == message and not caught.value.preauth


def test_inline_commands_have_only_the_64k_limit_before_auth():
    parser = unauthenticated_parser()
    line = b"ECHO " + b"x" * 30000 + b" " + b" ".join([b"a"] * 20) + b"\r\n"
    parser.feed(line)
    assert len(parser.next_command()) == 22


# -- pre-auth limits: the session -----------------------------------------------


def run_session(session: Session, data: bytes) -> list:
    session.receive_data(data)
    events = []
    for _ in range(100):   # bounded: these tests send a few commands at most
        event = session.next_event()
        events.append(event)
        if event is NEED_DATA or event is CLOSE:
            return events
        while event.send(None) is not None:   # AUTH and PING ask for no effect worth doing
            pass
    raise AssertionError("the session never asked for data or to close")


def session_with_password() -> Session:
    return Session(ServerState(Config(requirepass="pw")), addr="127.0.0.1:1")


def test_session_answers_a_refused_request_closes_and_counts_it():
    session = session_with_password()
    assert run_session(session, b"*11\r\n")[-1] is CLOSE
    assert session.data_to_send() == b"-ERR Protocol error: unauthenticated multibulk length\r\n"
    assert session.state.tally("preauth_refusals") == 1


def test_session_counts_only_preauth_refusals():
    session = session_with_password()
    assert run_session(session, b"*1\r\n$-5\r\n")[-1] is CLOSE
    assert session.data_to_send() == b"-ERR Protocol error: invalid bulk length\r\n"
    assert session.state.tally("preauth_refusals") == 0


def test_session_lifts_the_limits_once_its_client_has_authenticated():
    session = session_with_password()
    big = encode_command("ECHO", b"v" * 20000)
    assert run_session(session, encode_command("AUTH", "pw") + big)[-1] is NEED_DATA
    assert session.data_to_send() == b"+OK\r\n$20000\r\n" + b"v" * 20000 + b"\r\n"
    assert session.state.tally("preauth_refusals") == 0


def test_session_without_a_password_has_no_preauth_limits():
    session = Session(ServerState(Config()), addr="127.0.0.1:1")
    assert run_session(session, encode_command("ECHO", b"v" * 20000))[-1] is NEED_DATA
    assert session.state.tally("preauth_refusals") == 0


# -- real servers (slow) --------------------------------------------------------


def info_field(client, name: str) -> str:
    info = client.call("INFO", "stats")
    assert not isinstance(info, ReplyError), info
    for line in info.decode().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1]
    raise AssertionError(f"INFO has no {name}")


def preauth_refusal(server: TestServer, request: bytes) -> str:
    """What an unauthenticated client gets for `request`; it must be closed after it."""
    with server.raw() as client:
        client.send(request)
        reply = client.read()
        assert isinstance(reply, ReplyError)
        assert client.closed_by_server()
        return str(reply)


@pytest.fixture(scope="module")
def redis_with_password():
    try:
        server = servers.start_redis(server_class=TestServer)
    except RuntimeError as error:   # redis-server not installed: the comparison is skipped
        pytest.skip(str(error))
    # Set once it is up: start_redis knows it is up when a PING, without AUTH, is answered.
    with server.raw() as client:
        assert client.call("CONFIG", "SET", "requirepass", "pw") == "OK"
    yield server
    server.stop()


@pytest.mark.parametrize("model", MODELS)
def test_model_refuses_an_oversized_request_before_auth_and_keeps_serving(serve, model):
    server = serve(model, "--requirepass", "pw")
    assert preauth_refusal(server, b"*11\r\n") == \
        "ERR Protocol error: unauthenticated multibulk length"
    assert preauth_refusal(server, b"*1\r\n$16385\r\n") == \
        "ERR Protocol error: unauthenticated bulk length"
    with server.raw() as client:   # others are still served, and it was counted
        assert client.call("AUTH", "pw") == "OK"
        assert client.call("ECHO", b"v" * 20000) == b"v" * 20000
        assert info_field(client, "preauth_refusals") == "2"


@pytest.mark.slow
def test_redis_gives_the_same_preauth_refusals(redis_with_password):
    assert preauth_refusal(redis_with_password, b"*11\r\n") == \
        "ERR Protocol error: unauthenticated multibulk length"
    assert preauth_refusal(redis_with_password, b"*1\r\n$16385\r\n") == \
        "ERR Protocol error: unauthenticated bulk length"


def test_a_million_element_rpush_is_answered_promptly(target):
    """About 7 MB in one command: parsed once, not once per read (which took minutes)."""
    count = 1_000_000
    request = b"*%d\r\n$5\r\nRPUSH\r\n$7\r\nmillion\r\n" % (count + 2) + b"$1\r\nx\r\n" * count
    with target.raw(timeout=120) as client:
        client.call("DEL", "million")
        started = time.monotonic()
        client.send(request)
        assert client.read() == count
        elapsed = time.monotonic() - started
        assert client.call("LLEN", "million") == count
        client.call("DEL", "million")
    print(f"{target.name}: RPUSH of {count} elements ({len(request)} bytes) in {elapsed:.2f} s")
    assert elapsed < 60
