"""Clients that misbehave never stop the server and leak nothing: no lease, waiter or thread."""

from __future__ import annotations

import socket

from contend.shared.resp import encode_command
from tests.helpers import as_dict, info_field, run_together, wait_until


def settled(server, baseline_threads=None) -> dict:
    """The counters that must return to rest once every misbehaving client is gone."""
    with server.raw() as client:
        figures = {name: info_field(client, name) for name in
                   ("connected_clients", "blocked_clients", "list_waiters", "pool_in_use",
                    "pool_waiting")}
        text = client.call("INFO", "playground").decode()
        if "threads_alive:" in text:
            figures["threads_alive"] = info_field(client, "threads_alive")
        return figures


def test_a_crowd_of_misbehaving_clients_leaves_nothing_behind(server):
    rest = settled(server)

    def misbehave(i):
        sock = socket.create_connection((server.host, server.port), timeout=10)
        kind = i % 6
        if kind == 0:
            sock.sendall(b"*1\r\nfoo\r\n")                       # protocol error
        elif kind == 1:
            sock.sendall(encode_command("BLPOP", f"q{i}", "0"))  # block, then vanish
        elif kind == 2:
            sock.sendall(encode_command("POOL.ACQUIRE") * 3)     # take leases, then vanish
        elif kind == 3:
            sock.sendall(encode_command("SLEEP", "100000"))      # sleep, then vanish
        elif kind == 4:
            sock.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\nhalf")  # half a command
        else:
            sock.sendall(encode_command("EVENT.WAIT", "never", "0"))
        sock.close()

    run_together(24, misbehave)
    wait_until(lambda: settled(server) == rest, message=f"the server to settle back to {rest}")
    with server.raw() as client:
        assert client.call("PING") == "PONG"


def test_a_client_that_never_reads_does_not_stall_the_others(server):
    """It pipelines megabytes of replies it never reads; others are served meanwhile."""
    with server.raw() as setup:
        setup.call("SET", "big", b"x" * 100_000)
    hog = socket.create_connection((server.host, server.port), timeout=10)
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    request = encode_command("GET", "big") * 200   # 20 MB of replies, never read
    hog.setblocking(False)
    sent = 0
    try:
        while sent < len(request):
            sent += hog.send(request[sent:])
    except BlockingIOError:
        pass   # the server stopped reading from us: back-pressure
    with server.raw() as other:
        for _ in range(20):
            assert other.call("INCR", "served") is not None
        assert other.call("GET", "served") == b"20"
    hog.close()
    wait_until(lambda: settled(server)["connected_clients"] == 1, message="the hog to be dropped")


def test_pool_waiters_that_time_out_are_counted_and_forgotten(server):
    with server.raw() as holder:
        for _ in range(4):
            holder.call("POOL.ACQUIRE")
        replies = run_together(6, lambda _: _acquire_briefly(server))
        assert replies == [None] * 6
        status = as_dict(holder.call("POOL.STATUS"))
        assert status["waiting"] == 0 and status["timeouts"] >= 6 and status["in-use"] == 4


def _acquire_briefly(server):
    with server.raw() as client:
        return client.call("POOL.ACQUIRE", "0.05")


def test_per_key_locks_are_forgotten_once_free(server):
    """Millions of distinct keys must not leave a lock each behind after they are gone.

    (The processes model's locks are a fixed array made before the fork: it starts,
    and stays, at that many.)"""
    with server.raw() as client:
        fixed = info_field(client, "key_locks")
        for mode in ("striped", "unordered"):
            client.call("CONFIG", "SET", "sync", mode)
            for n in range(300):
                client.call("INCR", f"counter:{n}")
            client.call("BANK.TRANSFER", "counter:1", "counter:2", "1")
            client.call("MSET", *[f"k:{n}" for n in range(100) for _ in (0, 1)])
            client.call("FLUSHALL")
            assert info_field(client, "key_locks") == fixed
