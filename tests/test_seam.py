"""The seam's promises, in every model and every guarded mode, over real sockets.

Three faults the one lock order and the shared session exist to prevent:
- a whole-keyspace command (FLUSHALL) must wait for a write already in flight;
- a list command on a key must wait for a string command on it already in flight;
- an item a push hands to a BLPOP whose client has left goes on to the next
  waiter (or back), even when the key has become a string meanwhile; the
  server never stops over it.

Each case accepts every outcome some serial order of the commands gives,
and only those: the faults produced outcomes no serial order can.
"""

from __future__ import annotations

import os
import signal

import pytest

from contend.shared.resp import ReplyError, encode_command
from tests.helpers import blocked_clients, info_field, wait_until

GUARDED = ["lock", "striped", "unordered"]
WINDOW_US = "300000"   # wide: the second command surely arrives while the first is in its window


def configure(server, **settings) -> None:
    with server.raw() as client:
        for name, value in settings.items():
            assert client.call("CONFIG", "SET", name.replace("_", "-"), value) == "OK"


def in_flight(server) -> int:
    with server.raw() as probe:
        return info_field(probe, "commands_in_flight")


@pytest.mark.parametrize("mode", GUARDED)
def test_flushall_waits_for_an_incr_in_its_race_window(server, mode):
    configure(server, sync=mode, race_window_us=WINDOW_US)
    with server.raw() as writer, server.raw() as flusher:
        assert writer.call("SET", "k", "5") == "OK"
        writer.send_command("INCR", "k")
        wait_until(lambda: in_flight(server) == 1, message="the INCR in flight")
        assert flusher.call("FLUSHALL") == "OK"
        incr = writer.read()
        final = flusher.call("GET", "k")
    # INCR then FLUSHALL, or (had FLUSHALL won the race for the guard) FLUSHALL then INCR.
    # Never (6, b"6"): an INCR that read before the flush writing its value back after it.
    assert (incr, final) in [(6, None), (1, b"1")]


@pytest.mark.parametrize("mode", GUARDED)
def test_rpush_waits_for_an_incr_on_the_same_key(server, mode):
    configure(server, sync=mode, race_window_us=WINDOW_US)
    with server.raw() as counter, server.raw() as pusher:
        counter.send_command("INCR", "k")
        wait_until(lambda: in_flight(server) == 1, message="the INCR in flight")
        push = pusher.call("RPUSH", "k", "x")
        incr = counter.read()
        kind = pusher.call("TYPE", "k")
    if incr == 1:    # the INCR went first: the key is a string and the push is refused
        assert isinstance(push, ReplyError) and push.text.startswith("WRONGTYPE")
        assert kind == "string"
    else:            # the push went first: the INCR is refused
        assert isinstance(incr, ReplyError) and incr.text.startswith("WRONGTYPE")
        assert push == 1 and kind == "list"


@pytest.mark.parametrize("mode", GUARDED)
def test_an_item_served_to_a_client_that_left_reaches_the_next_waiter(server, mode):
    """The same turn: A hangs up, a push serves A, a SET makes the key a string.

    The server is paused (SIGSTOP) while that happens, so when it resumes it
    finds all of it at once, in whatever order its model reads them. In every
    order the item must reach B, the other waiter, and the server must live.
    """
    configure(server, sync=mode)
    with server.raw() as first, server.raw() as second, server.raw() as producer:
        first.send_command("BLPOP", "l", "0")
        wait_until(lambda: blocked_clients(server) == 1, message="A blocked")
        second.send_command("BLPOP", "l", "0")
        wait_until(lambda: blocked_clients(server) == 2, message="B blocked")
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            first.close()
            producer.send(encode_command("RPUSH", "l", "x") + encode_command("SET", "l", "str"))
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        assert second.read() == [b"l", b"x"]
        assert producer.read() == 1
        assert producer.read() == "OK"
        assert producer.call("GET", "l") == b"str"
        assert producer.call("PING") == "PONG"
    assert server.process.poll() is None
