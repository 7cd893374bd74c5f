"""The sans-io protocol core with no sockets at all: parser, inline splitting, encoder
(RESP2 and RESP3), and the client's reply parser."""

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
    Push,
    ReplyError,
    ReplyParser,
    RequestParser,
    Verbatim,
    encode,
    encode_command,
    split_inline,
)
from tests.raw import RESP3_TYPES, reply_types


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
        encode(object())


# Each reply type, as Redis 7.0 writes it to a RESP2 and to a RESP3 client
# (the RESP3 column was read off a real redis-server 7.0: CONFIG GET, INFO,
# CLIENT INFO, ZSCORE, BLPOP on timeout).
BOTH_PROTOCOLS = [
    # value                        RESP2                                RESP3
    (b"foo",                       b"$3\r\nfoo\r\n",                    b"$3\r\nfoo\r\n"),
    (7,                            b":7\r\n",                           b":7\r\n"),
    (True,                         b":1\r\n",                           b":1\r\n"),
    ("PONG",                       b"+PONG\r\n",                        b"+PONG\r\n"),
    (ReplyError("ERR x"),          b"-ERR x\r\n",                       b"-ERR x\r\n"),
    (None,                         b"$-1\r\n",                          b"_\r\n"),
    (NULL_ARRAY,                   b"*-1\r\n",                          b"_\r\n"),
    ([b"a", None],                 b"*2\r\n$1\r\na\r\n$-1\r\n",         b"*2\r\n$1\r\na\r\n_\r\n"),
    ({b"timeout": b"0"},           b"*2\r\n$7\r\ntimeout\r\n$1\r\n0\r\n",
                                   b"%1\r\n$7\r\ntimeout\r\n$1\r\n0\r\n"),
    ({},                           b"*0\r\n",                           b"%0\r\n"),
    ({b"a"},                       b"*1\r\n$1\r\na\r\n",                b"~1\r\n$1\r\na\r\n"),
    (frozenset(),                  b"*0\r\n",                           b"~0\r\n"),
    (1.1,                          b"$18\r\n1.1000000000000001\r\n",    b",1.1000000000000001\r\n"),
    (2.0,                          b"$1\r\n2\r\n",                      b",2\r\n"),
    (float("inf"),                 b"$3\r\ninf\r\n",                    b",inf\r\n"),
    (float("-inf"),                b"$4\r\n-inf\r\n",                   b",-inf\r\n"),
    (Verbatim(b"# Keyspace\r\n"),  b"$12\r\n# Keyspace\r\n\r\n",
                                   b"=16\r\ntxt:# Keyspace\r\n\r\n"),
    (Verbatim(b""),                b"$0\r\n\r\n",                       b"=4\r\ntxt:\r\n"),
    (Verbatim(b"*hi*", "mkd"),     b"$4\r\n*hi*\r\n",                   b"=8\r\nmkd:*hi*\r\n"),
    ([{b"k": [None, NULL_ARRAY]}], b"*1\r\n*2\r\n$1\r\nk\r\n*2\r\n$-1\r\n*-1\r\n",
                                   b"*1\r\n%1\r\n$1\r\nk\r\n*2\r\n_\r\n_\r\n"),
]


@pytest.mark.parametrize("value, resp2, resp3", BOTH_PROTOCOLS, ids=lambda v: repr(v)[:30])
def test_each_reply_type_is_encoded_as_redis_does_in_both_protocols(value, resp2, resp3):
    assert encode(value) == encode(value, 2) == resp2
    assert encode(value, 3) == resp3


@pytest.mark.parametrize("value", [value for value, _, _ in BOTH_PROTOCOLS],
                         ids=lambda v: repr(v)[:30])
def test_a_resp2_client_never_sees_a_resp3_type(value):
    assert not reply_types(encode(value, 2)) & RESP3_TYPES


def parse_one_byte_at_a_time(data: bytes) -> list:
    parser = ReplyParser()
    got = []
    for byte in range(len(data)):
        parser.feed(data[byte:byte + 1])
        while (reply := parser.next_reply()) is not NEED_MORE:
            got.append(reply)
    return got


def test_reply_parser_reads_what_the_encoder_writes():
    values = ["OK", 7, b"bulk", None, NULL_ARRAY, [b"a", [1, None]], []]
    data = b"".join(encode(v) for v in values) + encode(ReplyError("ERR x"))
    got = parse_one_byte_at_a_time(data)
    assert got[:-1] == values and str(got[-1]) == "ERR x"


def test_reply_parser_reads_every_resp3_type():
    values = [{b"proto": 3, b"modules": []}, {b"a", b"b"}, 1.5, float("inf"), None, NULL_ARRAY,
              Verbatim(b"id=1 name=\n"), Verbatim(b"*x*", "mkd"), [None, {b"k": {b"v"}}], {}]
    data = b"".join(encode(v, 3) for v in values)
    got = parse_one_byte_at_a_time(data)
    # RESP3 has one null: NULL_ARRAY comes back as None
    assert got == [{b"proto": 3, b"modules": []}, {b"a", b"b"}, 1.5, float("inf"), None, None,
                   b"id=1 name=\n", b"*x*", [None, {b"k": {b"v"}}], {}]
    assert [type(v) for v in got[6:8]] == [Verbatim, Verbatim] and got[7].format == "mkd"


@pytest.mark.parametrize("data, expected", [
    (b"#t\r\n", True), (b"#f\r\n", False),
    (b"(3492890328409238509324850943850943825024385\r\n",
     3492890328409238509324850943850943825024385),
    (b",-1.5e+300\r\n", -1.5e300), (b",-inf\r\n", float("-inf")),
    (b"_\r\n", None),
    (b"~2\r\n*1\r\n:1\r\n:2\r\n", {(1,), 2}),            # arrays in a set become tuples
    (b"%1\r\n*1\r\n$1\r\nk\r\n,2.5\r\n", {(b"k",): 2.5}),    # and in a map's keys
    (b"|1\r\n+ttl\r\n:3600\r\n$1\r\nv\r\n", b"v"),           # an attribute is skipped
    (b"*2\r\n|1\r\n+a\r\n:1\r\n:5\r\n:6\r\n", [5, 6]),      # inside an array too
])
def test_reply_parser_reads_resp3_types_redis_may_send(data, expected):
    assert parse_one_byte_at_a_time(data) == [expected]


def test_reply_parser_reads_pushes_and_blob_errors():
    push, error, after = parse_one_byte_at_a_time(
        b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"
        b"!22\r\nSYNTAX invalid\r\nsyntax\r\n:1\r\n")
    assert type(push) is Push and push == [b"message", b"ch", b"hi"]
    assert isinstance(error, ReplyError) and error.text == "SYNTAX invalid\r\nsyntax"
    assert after == 1


def test_reply_parser_refuses_what_is_not_resp():
    parser = ReplyParser()
    parser.feed(b"?what\r\n")
    with pytest.raises(ValueError, match="not a RESP reply"):
        parser.next_reply()


# -- properties: any bytes, any chunking ---------------------------------------

def outcome(chunks: list[bytes], unauthenticated: bool = False, kind=RequestParser):
    """Commands parsed from the chunks, and the protocol error if one ended it
    (else how many bytes are left over: a command still incomplete), fed as the
    session feeds a parser (`kind`: tests/test_hiredis_parser.py passes the fast one)."""
    # Before AUTH a bulk over 16384 is refused; past proto-max-bulk-len, over 1024 here.
    parser = kind(max_bulk=20000 if unauthenticated else 1024)
    commands = []
    try:
        for chunk in chunks:
            parser.unauthenticated = unauthenticated
            parser.feed(chunk)
            while (command := parser.next_command()) is not None:
                commands.append(command)
    except ProtocolError as error:
        return commands, error.reply
    return commands, parser.buffered


@st.composite
def chunked(draw, data_strategy):
    data = draw(data_strategy)
    # A few cuts anywhere, or a read every few bytes: the parser keeps its place
    # inside a command between reads, and must keep it right whatever the cuts.
    if draw(st.booleans()):
        cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    else:
        cuts = list(range(0, len(data), draw(st.integers(1, 8))))
    bounds = [0, *cuts, len(data)]
    return data, [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


# Arbitrary bytes, plus bytes built from RESP's own pieces so the parser's deep
# paths (partial bulks, bad lengths, quotes) are reached often.
resp_pieces = st.lists(st.sampled_from([
    b"*", b"$", b"\r\n", b"\n", b"\r", b"1", b"2", b"3", b"-1", b"0", b"x", b"PING", b'"', b"'",
    b"\\", b" ", b"\x00", b"1025", b"*2\r\n", b"$4\r\nECHO\r\n", b"$2\r\nhi\r\n",
    b"*11\r\n", b"*10\r\n", b"$1000\r\n", b"$16385\r\n", b"x" * 500]), max_size=40
).map(b"".join)


@settings(max_examples=600, deadline=None)
@given(chunked(st.one_of(st.binary(max_size=300), resp_pieces)), st.booleans())
def test_any_bytes_in_any_chunks_parse_like_the_whole(case, unauthenticated):
    data, chunks = case
    # only ProtocolError may escape, and the same one; or the same bytes are left over
    assert outcome(chunks, unauthenticated) == outcome([data], unauthenticated)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.binary(max_size=50), min_size=1, max_size=5), max_size=10),
       st.integers(1, 64))
def test_encoded_commands_round_trip(commands, read_size):
    data = b"".join(encode([bytes(a) for a in command]) for command in commands)
    assert outcome([data]) == (commands, 0)
    reads = [data[start:start + read_size] for start in range(0, len(data), read_size)]
    assert outcome(reads) == (commands, 0)


# Any reply a handler may build, nested: maps and arrays of every reply type.
reply_values = st.recursive(
    st.one_of(st.binary(max_size=20), st.integers(-2**63, 2**63 - 1), st.none(),
              st.just(NULL_ARRAY), st.floats(allow_nan=False),
              st.builds(Verbatim, st.binary(max_size=20)), st.text(alphabet="ABCZ", max_size=5),
              st.sets(st.binary(max_size=5), max_size=3)),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.binary(max_size=5), children, max_size=3)),
    max_leaves=12)


def as_resp3_reads_it(value):
    """What a RESP3 client gets back for a value: its one null, None, for NULL_ARRAY too."""
    if value is NULL_ARRAY:
        return None
    if type(value) is list:
        return [as_resp3_reads_it(item) for item in value]
    if type(value) is dict:
        return {key: as_resp3_reads_it(item) for key, item in value.items()}
    return value


@settings(max_examples=300, deadline=None)
@given(reply_values)
def test_any_reply_round_trips_in_resp3_and_stays_resp2_for_a_resp2_client(value):
    assert not reply_types(encode(value, 2)) & RESP3_TYPES
    parser = ReplyParser()
    parser.feed(encode(value, 3))
    assert parser.next_reply() == as_resp3_reads_it(value)
    assert parser.next_reply() is NEED_MORE
