"""Unsent replies are bounded: what a client that asks for more than it reads may cost.

As Redis's client-output-buffer-limit, in every model, decided once in shared/session.py:
- past `output-buffer-soft-limit` unsent bytes, none of that client's commands run (and
  the model reads none of its bytes) until its replies are sent: a FLUSH;
- a FLUSH that cannot go out within `output-buffer-soft-seconds` (the client stopped
  reading), or one reply past `output-buffer-hard-limit`, closes the connection: INFO
  counts it (client_output_disconnects), the log says so once, and the session's
  clean-up runs as for any client that leaves (its leases come back).

The first tests drive the session with no sockets; the rest start each model.
"""

from __future__ import annotations

import logging
import socket
import time

import pytest

from contend.shared import effects as fx
from contend.shared.config import Config
from contend.shared.resp import NEED_MORE, ReplyParser, encode_command
from contend.shared.session import CLOSE, FLUSH, NEED_DATA, Call, Session
from contend.shared.state import ServerState
from tests.conftest import MODELS
from tests.helpers import info_field, wait_until
from tests.inprocess import InProcess

SOFT_LIMIT = 4096   # small, so a few replies cross it


def new_session(**settings) -> Session:
    return Session(ServerState(Config(**settings)), addr="test:1")


def echo(size: int) -> bytes:
    return encode_command("ECHO", b"x" * size)


# -- the session: the rule, once, with no sockets --------------------------------------

def test_the_soft_limit_comes_from_config():
    session = new_session(output_buffer_soft_limit=SOFT_LIMIT)
    session.receive_data(echo(3000) * 3)
    assert session.next_event() is FLUSH   # two replies are past 4096 bytes: the third waits
    assert SOFT_LIMIT <= session.out_size < 2 * SOFT_LIMIT and session.buffered > 0
    session.data_to_send()
    assert session.next_event() is NEED_DATA and session.out_size > 0   # the third ran


def test_config_set_moves_the_soft_limit_of_a_connection_already_open():
    session = new_session()
    session.receive_data(echo(3000) * 3)
    assert session.next_event() is NEED_DATA   # the default, 1 MiB, is far off
    session.data_to_send()
    session.state.config.set([(b"output-buffer-soft-limit", str(SOFT_LIMIT).encode())])
    session.receive_data(echo(3000) * 3)
    assert session.next_event() is FLUSH


def test_flush_timeout_is_the_soft_seconds_and_zero_means_no_limit():
    session = new_session()
    assert session.flush_timeout == 60
    session.state.config.set([(b"output-buffer-soft-seconds", b"0")])
    assert session.flush_timeout is None


def test_a_flush_that_times_out_closes_after_the_clean_up_and_is_counted_once(caplog):
    session = new_session(output_buffer_soft_limit=SOFT_LIMIT)
    state = session.state
    state.ledger.grant(session.client.id)   # a lease it holds must come back
    session.receive_data(echo(3000) * 2 + encode_command("SET", "after", "1"))
    assert session.next_event() is FLUSH
    with caplog.at_level(logging.WARNING, logger="contend"):
        session.flush_timed_out()   # what the model says when the client read nothing in time
        session.flush_timed_out()   # twice (a final send after it): still one client closed
    assert len(caplog.records) == 1 and "output-buffer-soft-seconds" in caplog.text
    lease_return = session.next_event()
    assert isinstance(lease_return, Call) and lease_return.name == b"lease-return"
    value = None
    while (effect := lease_return.send(value)) is not None:
        assert isinstance(effect, fx.LeaseRelease)
        value = state.ledger.revoke(effect.lease, session.client.id)
    assert session.next_event() is CLOSE
    assert session.data_to_send() == b"" and state.ledger.in_use == 0
    assert b"after" not in state.keyspace.data   # nothing past the FLUSH ran
    assert state.stats.output_disconnects == 0   # counted when the socket is closed
    session.close()
    assert state.stats.output_disconnects == 1


def test_one_reply_past_the_hard_limit_closes_the_connection_and_returns_its_leases(caplog):
    model = InProcess(output_buffer_hard_limit=8192)
    hog, other = model.connect("hog"), model.connect("other")
    assert hog.call("POOL.ACQUIRE") == 1
    assert hog.call("RPUSH", "big", *[b"x" * 100] * 100) == 100
    with caplog.at_level(logging.WARNING, logger="contend"):
        hog.send("LRANGE", "big", "0", "-1")   # about 10 KB in one reply
        hog.send("SET", "after", "1")
        model.run()
    assert hog.replies() == [] and hog.closed   # dropped, not sent
    assert "runs lease-return" in model.trace_of("hog")
    assert model.state.ledger.in_use == 0 and b"after" not in model.data
    assert model.info("client_output_disconnects") == 1
    assert len(caplog.records) == 1 and "output-buffer-hard-limit" in caplog.text
    assert len(other.call("LRANGE", "big", "0", "9")) == 10   # a smaller one is served


def test_replies_under_the_hard_limit_all_arrive():
    model = InProcess(output_buffer_soft_limit=SOFT_LIMIT, output_buffer_hard_limit=8192)
    client = model.connect()
    for n in range(20):
        client.send("ECHO", b"%d" % n * 1000)
    model.run()
    assert client.replies() == [b"%d" % n * 1000 for n in range(20)] and not client.closed
    assert model.info("client_output_disconnects") == 0


# -- every model, on real sockets --------------------------------------------------------

def peak_rss_mb(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    raise AssertionError("no VmHWM in /proc")


def reading_little(server) -> socket.socket:
    """A client socket that reads nothing and lets the kernel hold little for it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # before connect: the window
    sock.connect((server.host, server.port))
    return sock


def send_what_fits(sock: socket.socket, data: bytes) -> None:
    """Send `data` without blocking: the server may stop reading (that is the back-pressure)."""
    sock.setblocking(False)
    sent = 0
    try:
        while sent < len(data):
            sent += sock.send(data[sent:])
    except BlockingIOError:
        pass


def closed_by_server(sock: socket.socket, timeout: float = 10) -> bool:
    """Read to the end: True once the server has closed the connection."""
    sock.setblocking(True)
    sock.settimeout(timeout)
    try:
        while sock.recv(1 << 20):
            pass
    except ConnectionResetError:   # it closed with our requests unread: a reset
        pass
    except TimeoutError:
        return False
    return True


def figures(server) -> dict:
    with server.raw() as client:
        return {name: info_field(client, name) for name in
                ("client_output_disconnects", "connected_clients", "pool_in_use")}


@pytest.mark.parametrize("model", MODELS)
def test_a_client_that_never_reads_costs_bounded_memory_and_is_closed_after_soft_seconds(
        serve, model):
    server = serve(model)
    with server.raw() as setup:
        setup.call("RPUSH", "big", *[b"x" * 1000] * 1000)   # LRANGE big 0 -1: about 1 MB
        setup.call("CONFIG", "SET", "output-buffer-soft-limit", "65536",
                   "output-buffer-soft-seconds", "1")
    rest = peak_rss_mb(server.process.pid)
    hog = reading_little(server)
    began = time.monotonic()
    # 300 MB of replies if they were all kept; a lease, which must come back.
    send_what_fits(hog, encode_command("POOL.ACQUIRE")
                   + encode_command("LRANGE", "big", "0", "-1") * 300)
    with server.raw() as other:   # served meanwhile
        for _ in range(20):
            other.call("INCR", "served")
        assert other.call("GET", "served") == b"20"
    wait_until(lambda: figures(server)["client_output_disconnects"] == 1, timeout=30,
               message="the client that never reads to be closed")
    assert time.monotonic() - began >= 0.9   # after its FLUSH waited a second, not sooner
    wait_until(lambda: figures(server) == {"client_output_disconnects": 1,
                                           "connected_clients": 1, "pool_in_use": 0},
               message="its connection and lease to be gone")
    assert closed_by_server(hog)
    hog.close()
    # What it cost: the soft limit, one reply and the kernel's buffers, not 300 replies.
    assert peak_rss_mb(server.process.pid) < rest + 64


@pytest.mark.parametrize("model", MODELS)
def test_one_reply_past_the_hard_limit_closes_the_connection_at_once(serve, model):
    server = serve(model)
    with server.raw() as client:
        client.call("RPUSH", "big", *[b"x" * 1000] * 1000)
        client.call("CONFIG", "SET", "output-buffer-hard-limit", "524288")
        assert client.call("POOL.ACQUIRE") == 1
        with pytest.raises(ConnectionError):   # closed with no reply, not after 60 seconds
            client.call("LRANGE", "big", "0", "-1")
    wait_until(lambda: figures(server) == {"client_output_disconnects": 1,
                                           "connected_clients": 1, "pool_in_use": 0},
               message="the connection and its lease to be gone")
    with server.raw() as client:
        assert len(client.call("LRANGE", "big", "0", "99")) == 100   # under the limit: served


@pytest.mark.parametrize("model", MODELS)
def test_a_slow_reader_gets_every_reply(serve, model):
    server = serve(model)
    value = bytes(range(256)) * 400   # 100 KB
    with server.raw() as setup:
        setup.call("SET", "v", value)
        setup.call("CONFIG", "SET", "output-buffer-soft-limit", "65536",
                   "output-buffer-soft-seconds", "10")
    reader = reading_little(server)
    reader.settimeout(30)
    reader.sendall(encode_command("GET", "v") * 100)   # 10 MB of replies, 160 FLUSHes
    parser, replies, chunks = ReplyParser(), [], 0
    while len(replies) < 100:
        data = reader.recv(4096)
        assert data, "the server closed the connection"
        parser.feed(data)
        while (reply := parser.next_reply()) is not NEED_MORE:
            replies.append(reply)
        chunks += 1
        if chunks % 16 == 0:
            time.sleep(0.001)   # slower than the server: it waits for us, every FLUSH
    reader.close()
    assert replies == [value] * 100
    assert figures(server)["client_output_disconnects"] == 0
