"""The fast path agrees with the reference: hiredis_parser.HiredisRequestParser gives the
same commands, the same protocol errors and the same leftover bytes as resp.RequestParser,
for any bytes cut into any reads (no sockets); `--parser` chooses, INFO says which."""

from __future__ import annotations

import sysconfig

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contend.shared.config import default_parser
from contend.shared.hiredis_parser import HiredisRequestParser
from contend.shared.resp import encode_command
from tests.helpers import info_field
from tests.servers import start_contend
from tests.test_resp import chunked, outcome, resp_pieces


def agree(chunks: list[bytes], unauthenticated: bool = False):
    reference = outcome(chunks, unauthenticated)
    assert outcome(chunks, unauthenticated, kind=HiredisRequestParser) == reference
    return reference


# Well-formed requests, the fast path's daily bread: any arguments, pipelined.
plain_commands = st.lists(st.lists(st.binary(max_size=40), min_size=1, max_size=5),
                          max_size=12)

# What hiredis reads as bytes (or as a list) and Redis refuses or reads another way:
# simple strings, verbatims, big numbers, RESP3 sets, maps, pushes and attributes, null
# and nested arrays, plus the pieces of plain requests they may hide among.
other_types = st.lists(st.sampled_from([
    b"*1\r\n", b"*2\r\n", b"*0\r\n", b"*-1\r\n", b"*1\r\n*1\r\n_\r\n", b"$4\r\nPING\r\n",
    b"+PING\r\n", b"+OK\r\n", b"=8\r\ntxt:PING\r\n", b"(123\r\n", b"~1\r\n", b">1\r\n",
    b"%1\r\n", b"|1\r\n$1\r\na\r\n$1\r\nb\r\n", b":5\r\n", b"_\r\n", b",1.5\r\n", b"#t\r\n",
    b"-ERR x\r\n", b"!3\r\nabc\r\n", b"$-1\r\n", b"$04\r\nPING\r\n", b"*01\r\n",
    b"$4\r\nPINGxx", b"*1\rX", b"PING\r\n", b"\x00", b"$2000000\r\n", b"*2000000\r\n",
    b"*11\r\n", b"$16385\r\n"]), max_size=12).map(b"".join)


def requests(commands: list[list[bytes]]) -> bytes:
    return b"".join(encode_command(*command) for command in commands)


@settings(max_examples=600, deadline=None)
@given(chunked(st.one_of(st.binary(max_size=300), resp_pieces, other_types,
                         plain_commands.map(requests))), st.booleans())
def test_both_parsers_agree_on_any_bytes_in_any_chunks(case, unauthenticated):
    data, chunks = case
    assert agree(chunks, unauthenticated) == agree([data], unauthenticated)


@settings(max_examples=300, deadline=None)
@given(chunked(st.tuples(plain_commands, other_types, plain_commands).map(
    lambda parts: requests(parts[0]) + parts[1] + requests(parts[2]))))
def test_both_parsers_agree_when_odd_input_hides_among_plain_requests(case):
    data, chunks = case
    agree(chunks)


@settings(max_examples=300, deadline=None)
@given(plain_commands, st.integers(1, 64))
def test_plain_requests_in_any_reads_come_out_whole(commands, read_size):
    data = requests(commands)
    reads = [data[start:start + read_size] for start in range(0, len(data), read_size)]
    expected = ([command for command in commands], 0)
    assert agree([data]) == expected
    assert agree(reads) == expected


@pytest.mark.parametrize("data, error", [
    (b"*1\r\n+PING\r\n", b"-ERR Protocol error: expected '$', got '+'\r\n"),
    (b"*1\r\n=8\r\ntxt:PING\r\n", b"-ERR Protocol error: expected '$', got '='\r\n"),
    (b"*1\r\n(5\r\n", b"-ERR Protocol error: expected '$', got '('\r\n"),
    (b"*1\r\n*1\r\n_\r\n", b"-ERR Protocol error: expected '$', got '*'\r\n"),
    (b"*2000000\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*3000000000\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*1\r\n*3000000000\r\n", b"-ERR Protocol error: expected '$', got '*'\r\n"),
    (b"*1\r\n$2000\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
])
def test_what_hiredis_would_take_gets_redis_error(data, error):
    assert outcome([data], kind=HiredisRequestParser) == ([], error)


def test_a_set_or_a_push_is_an_inline_command_as_in_redis():
    # Redis reads a request that does not start with '*' as an inline command.
    for data in [b"~1\r\n$4\r\nPING\r\n", b">1\r\n$4\r\nPING\r\n"]:
        assert outcome([data], kind=HiredisRequestParser)[0] == outcome([data])[0]


def test_a_pipeline_cut_mid_command_goes_back_to_hiredis_once_whole():
    batch = requests([[b"INCR", b"counter"]] * 16)
    parser = HiredisRequestParser(1024)
    taken = []
    for start in range(0, 4 * len(batch), 100):   # reads that cut commands anywhere
        parser.feed((batch * 4)[start:start + 100])
        while (command := parser.next_command()) is not None:
            taken.append(command)
    assert taken == [[b"INCR", b"counter"]] * 64
    assert parser.buffered == 0
    assert not parser._catching_up   # the reference holds nothing: hiredis frames what comes


# -- the flag, on a real server -------------------------------------------------------

@pytest.mark.parametrize("parser", ["python", "hiredis"])
def test_parser_flag_is_what_info_reports_and_both_frame_alike(parser):
    odd = b"*1\r\n+PING\r\n"   # hiredis alone would take it as PING
    with start_contend("selectors", "--parser", parser) as server, server.raw() as client:
        assert info_field(client, "parser", "playground") == parser
        client.send(requests([[b"SET", b"k", b"v"]] * 3 + [[b"GET", b"k"]]))
        assert [client.read() for _ in range(4)] == ["OK", "OK", "OK", b"v"]
        client.send(odd)
        assert client.read().text == "ERR Protocol error: expected '$', got '+'"


def test_default_parser_is_hiredis_unless_that_would_turn_the_gil_on():
    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    assert default_parser() == ("python" if free_threaded else "hiredis")
