"""A server's life in every model: clients it admits, passwords, idle clients, stopping.

Each test starts its own server with the flags it needs, on a free port.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from contend.shared.commands import COMMANDS
from tests.conftest import MODELS
from tests.helpers import info_field, wait_until
from tests.servers import BANNER, CONTEND, ROOT

pytestmark = pytest.mark.parametrize("model", MODELS)


def test_connections_beyond_maxclients_are_refused_and_closed(serve, model):
    server = serve(model, "--maxclients", "2")
    first, second = server.raw(), server.raw()
    assert first.call("PING") == "PONG" and second.call("PING") == "PONG"
    with server.raw() as third:
        assert str(third.read()) == "ERR max number of clients reached"
        assert third.closed_by_server()
    first.close()

    def admitted():
        with server.raw() as client:
            client.send_command("PING")
            return client.read() == "PONG"
    wait_until(admitted, message="a slot to free up")
    assert info_field(second, "rejected_connections") >= 1
    second.close()


def test_maxclients_can_be_raised_at_run_time(serve, model):
    server = serve(model, "--maxclients", "1")
    with server.raw() as first:
        assert first.call("CONFIG", "SET", "maxclients", "3") == "OK"
        with server.raw() as second:
            assert second.call("PING") == "PONG"


def test_requirepass_demands_auth_first(serve, model):
    server = serve(model, "--requirepass", "s3cret")
    with server.raw() as client:
        assert str(client.call("GET", "k")) == "NOAUTH Authentication required."
        assert str(client.call("AUTH", "wrong")) == \
            "WRONGPASS invalid username-password pair or user is disabled."
        assert client.call("AUTH", "s3cret") == "OK"
        assert client.call("PING") == "PONG"
    with server.raw() as client:
        reply = client.call("HELLO", "2", "AUTH", "default", "s3cret", "SETNAME", "student")
        assert reply[reply.index(b"proto") + 1] == 2
        assert client.call("CLIENT", "GETNAME") == b"student"
    with server.raw() as client:
        assert str(client.call("HELLO", "2")).startswith("NOAUTH")
        assert client.call("QUIT") == "OK"   # allowed before AUTH, as in Redis
        assert client.closed_by_server()


def test_idle_clients_are_closed_after_timeout(serve, model):
    server = serve(model, "--timeout", "1")
    with server.raw() as idle, server.raw() as blocked:
        blocked.send_command("BLPOP", "never", "0")   # Redis never times out a blocked client
        started = time.monotonic()
        assert idle.closed_by_server(timeout=10)
        assert time.monotonic() - started >= 0.9
        with server.raw() as client:
            assert info_field(client, "blocked_clients") == 1


def stop_with(server, signum) -> tuple[int, float]:
    started = time.monotonic()
    code = server.stop(signum)
    return code, time.monotonic() - started


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_gracefully_with_idle_and_blocked_clients(serve, model, signum):
    server = serve(model)
    idle = server.raw()
    blocked = server.raw()
    blocked.send_command("BLPOP", "never", "0")
    assert idle.call("PING") == "PONG"
    wait_until(lambda: info_field(idle, "blocked_clients") == 1, message="a blocked client")
    code, took = stop_with(server, signum)
    assert code == 0
    assert took < 3
    assert idle.closed_by_server() and blocked_closed(blocked)


def blocked_closed(client) -> bool:
    """The blocked client may get a null reply before the close; either way it ends."""
    try:
        client.read()
    except (ConnectionError, OSError):
        return True
    return client.closed_by_server()


def test_shutdown_command_answers_nothing_and_exits_zero(serve, model):
    server = serve(model)
    bystander = server.raw()
    with server.raw() as client:
        client.send_command("SHUTDOWN")
        assert client.closed_by_server()
    assert server.process.wait(5) == 0
    assert bystander.closed_by_server()


def test_in_flight_command_is_answered_during_shutdown(serve, model):
    server = serve(model)
    with server.raw() as worker, server.raw() as other:
        worker.send_command("WORK", "2000")   # about a tenth of a second of CPU
        other.send_command("SHUTDOWN")
        assert isinstance(worker.read(), int)
    assert server.process.wait(5) == 0


def test_client_list_and_ids(serve, model):
    server = serve(model)
    with server.raw() as a, server.raw() as b:
        a.call("CLIENT", "SETNAME", "alpha")
        b.call("CLIENT", "SETINFO", "LIB-NAME", "tests")
        first, second = a.call("CLIENT", "ID"), b.call("CLIENT", "ID")
        assert second > first
        listing = a.call("CLIENT", "LIST").decode()
        lines = listing.strip().split("\n")
        assert len(lines) == 2
        assert f"id={first} " in lines[0] and "name=alpha" in lines[0]
        assert "lib-name=tests" in lines[1] and "cmd=client|" not in lines[1]
        assert str(a.call("CLIENT", "SETINFO", "COLOR", "red")).startswith("ERR Unrecognized")


def test_info_sections_and_playground_fields(serve, model):
    server = serve(model, "--pool-size", "7", "--sync", "striped")
    with server.raw() as client:
        client.call("SET", "k", "v")
        text = client.call("INFO").decode()
        for header in ("# Server", "# Clients", "# Stats", "# Keyspace", "# Playground"):
            assert header in text
        name, _, loop = model.partition("+")
        assert info_field(client, "model") == name
        if loop:
            assert info_field(client, "event_loop") == loop
        assert info_field(client, "pool_size") == 7
        assert info_field(client, "sync") == "striped"
        assert info_field(client, "total_commands_processed") >= 2
        only = client.call("INFO", "clients").decode()
        assert only.startswith("# Clients") and "# Server" not in only


def test_command_count_docs_and_info(serve, model):
    server = serve(model)
    with server.raw() as client:
        assert client.call("COMMAND", "COUNT") == len(COMMANDS)
        assert client.call("COMMAND", "DOCS") == []
        info = client.call("COMMAND", "INFO", "incr", "bank.transfer")
        assert info[0][:2] == [b"incr", 2] and info[1][:2] == [b"bank.transfer", 4]
        assert len(client.call("COMMAND")) == len(COMMANDS)


def test_contend_serve_and_python_dash_m_contend_server_are_the_same_server(model):
    name, _, loop = model.partition("+")
    flags = ["--model", name, *(["--loop", loop] if loop else [])]
    for command in ([*CONTEND, "serve"], [sys.executable, "-m", "contend.server"]):
        process = subprocess.Popen([*command, *flags, "--port", "0"], cwd=ROOT,
                                   stdout=subprocess.PIPE, text=True)
        try:
            line = process.stdout.readline()
            assert BANNER.search(line), line
            assert f"contend {name} server" in line
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(10) == 0
