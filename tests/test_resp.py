"""The sans-io protocol core with no sockets at all: parser, inline splitting, encoder."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contend.shared.resp import (
    INLINE_MAX,
    NEED_MORE,
    NO_REPLY,
    NULL_ARRAY,
    ProtocolError,
    ReplyError,
    ReplyParser,
    RequestParser,
    encode,
    encode_command,
    split_inline,
)


def parse_all(data: bytes, max_bulk: int = 512 * 1024 * 1024) -> list:
    parser = RequestParser(max_bulk)
    parser.feed(data)
    commands = []
    while (command := parser.next_command()) is not None:
        commands.append(command)
    return commands


def test_multibulk_and_inline_commands():
    data = encode_command("SET", "k", "v") + b"GET k\r\n" + encode_command("ECHO", b"\r\n\x00")
    assert parse_all(data) == [[b"SET", b"k", b"v"], [b"GET", b"k"], [b"ECHO", b"\r\n\x00"]]


def test_partial_command_waits_for_the_rest():
    parser = RequestParser()
    parser.feed(b"*2\r\n$4\r\nECHO\r\n$5\r\nhel")
    assert parser.next_command() is None
    parser.feed(b"lo\r\n")
    assert parser.next_command() == [b"ECHO", b"hello"]
    assert parser.next_command() is None and parser.buffered == 0


@pytest.mark.parametrize("data", [b"\r\n", b"\n", b"   \r\n", b"*0\r\n", b"*-10\r\n", b"*-1\r\n"])
def test_empty_requests_are_skipped(data):
    assert parse_all(data + b"PING\r\n") == [[b"PING"]]


@pytest.mark.parametrize("data, message", [
    (b"*3000000000\r\n", "invalid multibulk length"),
    (b"*1048577\r\n", "invalid multibulk length"),
    (b"*x\r\n", "invalid multibulk length"),
    (b"*+1\r\n", "invalid multibulk length"),
    (b"*1\r\nfoo\r\n", "expected '$', got 'f'"),
    (b"*1\r\n$-1\r\n", "invalid bulk length"),
    (b"*1\r\n$abc\r\n", "invalid bulk length"),
    (b'"unbalanced\r\n', "unbalanced quotes in request"),
    (b'"closed"x\r\n', "unbalanced quotes in request"),
    (b"'single'x\r\n", "unbalanced quotes in request"),
])
def test_protocol_errors_use_redis_texts(data, message):
    with pytest.raises(ProtocolError) as caught:
        parse_all(data)
    assert caught.value.reply == f"-ERR Protocol error: {message}\r\n".encode()


def test_multibulk_count_at_the_limit_is_accepted():
    parser = RequestParser()
    parser.feed(b"*1048576\r\n")
    assert parser.next_command() is None   # waits for a million elements, no error


def test_bulk_length_over_proto_max_bulk_len_is_refused():
    with pytest.raises(ProtocolError, match="invalid bulk length"):
        parse_all(b"*1\r\n$1025\r\n", max_bulk=1024)
    assert parse_all(encode_command("x" * 1024), max_bulk=1024) == [[b"x" * 1024]]


@pytest.mark.parametrize("before, line_start, message", [
    (b"", b"a", "too big inline request"),
    (b"", b"*", "too big mbulk count string"),
    (b"*1\r\n", b"$", "too big bulk count string")])
def test_lines_without_newline_are_cut_off_past_64k(before, line_start, message):
    parser = RequestParser()
    parser.feed(before + line_start + b"1" * (INLINE_MAX - 1))   # exactly 64 KiB: still waiting
    assert parser.next_command() is None
    parser.feed(b"a")
    with pytest.raises(ProtocolError, match=message):
        parser.next_command()


def test_nul_byte_stops_the_newline_search_like_strchr():
    parser = RequestParser()
    parser.feed(b"\x00payload\n" + b"x" * INLINE_MAX)
    with pytest.raises(ProtocolError, match="too big inline request"):
        parser.next_command()


@pytest.mark.parametrize("line, args", [
    (b"SET k v", [b"SET", b"k", b"v"]),
    (b'SET "a b" c', [b"SET", b"a b", b"c"]),
    (b'ECHO "\\x41\\n\\t\\"\\\\"', [b"ECHO", b'A\n\t"\\']),
    (b"ECHO 'it\\'s' \"\"", [b"ECHO", b"it's", b""]),
    (b"ECHO '\\n'", [b"ECHO", b"\\n"]),
    (b"  PING\t", [b"PING"]),
    (b"", []),
    (b"ECHO \"\\xZZ\"", [b"ECHO", b"xZZ"]),
    (b"a\x00b c", [b"a"]),
])
def test_inline_splitting_follows_sdssplitargs(line, args):
    assert split_inline(line) == args


def test_encoder_covers_every_reply_shape():
    assert encode("OK") == b"+OK\r\n"
    assert encode("PONG") == b"+PONG\r\n"
    assert encode(ReplyError("ERR bad\r\nthing")) == b"-ERR bad  thing\r\n"
    assert encode(42) == b":42\r\n" and encode(-1) == b":-1\r\n"
    assert encode(True) == b":1\r\n"
    assert encode(b"foo") == b"$3\r\nfoo\r\n" and encode(b"") == b"$0\r\n\r\n"
    assert encode(None) == b"$-1\r\n"
    assert encode(NULL_ARRAY) == b"*-1\r\n"
    assert encode([]) == b"*0\r\n"
    assert encode([b"a", 1, [None, "OK"]]) == b"*3\r\n$1\r\na\r\n:1\r\n*2\r\n$-1\r\n+OK\r\n"
    assert encode(NO_REPLY) == b""
    with pytest.raises(TypeError):
        encode(1.5)


def test_reply_parser_reads_what_the_encoder_writes():
    values = ["OK", 7, b"bulk", None, NULL_ARRAY, [b"a", [1, None]], []]
    parser = ReplyParser()
    data = b"".join(encode(v) for v in values) + encode(ReplyError("ERR x"))
    for byte in range(len(data)):   # one byte at a time
        parser.feed(data[byte:byte + 1])
    got = []
    while (reply := parser.next_reply()) is not NEED_MORE:
        got.append(reply)
    assert got[:-1] == values and str(got[-1]) == "ERR x"


# -- properties: any bytes, any chunking ---------------------------------------

def outcome(chunks: list[bytes]):
    """Commands parsed from the chunks, and the protocol error if one ended it."""
    parser = RequestParser(max_bulk=1024)
    commands = []
    try:
        for chunk in chunks:
            parser.feed(chunk)
            while (command := parser.next_command()) is not None:
                commands.append(command)
    except ProtocolError as error:
        return commands, error.reply
    return commands, None


@st.composite
def chunked(draw, data_strategy):
    data = draw(data_strategy)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    return data, [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


# Arbitrary bytes, plus bytes built from RESP's own pieces so the parser's deep
# paths (partial bulks, bad lengths, quotes) are reached often.
resp_pieces = st.lists(st.sampled_from([
    b"*", b"$", b"\r\n", b"\n", b"\r", b"1", b"2", b"3", b"-1", b"0", b"x", b"PING", b'"', b"'",
    b"\\", b" ", b"\x00", b"1025", b"*2\r\n", b"$4\r\nECHO\r\n", b"$2\r\nhi\r\n"]), max_size=40
).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(chunked(st.one_of(st.binary(max_size=300), resp_pieces)))
def test_any_bytes_in_any_chunks_parse_like_the_whole(case):
    data, chunks = case
    assert outcome(chunks) == outcome([data])   # only ProtocolError may escape, and the same one


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.binary(max_size=50), min_size=1, max_size=5), max_size=10))
def test_encoded_commands_round_trip(commands):
    data = b"".join(encode([bytes(a) for a in command]) for command in commands)
    assert outcome([data]) == (commands, None)
