"""Errors a person can read: each mistake or mishap is one line on stderr, `contend
SUBCOMMAND: ...`, and an exit status that says which kind it was (never 1, which means
an invariant broke): 2 a usage error, 3 cannot connect or cannot listen, 130 Ctrl-C."""

from __future__ import annotations

import importlib.metadata
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from contend.client import servers as client_servers
from contend.client.connection import Connection
from contend.shared.resp import ReplyError
from contend.shared.state import VERSION
from tests.helpers import info_field, wait_until
from tests.servers import CONTEND, ROOT, free_port, start_contend

USAGE, CANNOT_CONNECT, INTERRUPTED = 2, 3, 130


def contend(*args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([*CONTEND, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def one_line(done, prefix: str) -> str:
    """The single stderr line of a failed command, checked for its prefix."""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def locked_server():
    """A server that wants a password: clients without one hear NOAUTH."""
    server = start_contend("threads", "--requirepass", "secret")
    yield server
    server.stop()


# -- contend serve ---------------------------------------------------------------

@pytest.mark.parametrize("model", ["threads", "processes"])
def test_serve_on_a_port_in_use_exits_3(model):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = contend("serve", "--model", model, "--port", str(port))
    assert done.returncode == CANNOT_CONNECT
    line = one_line(done, "contend serve: ")
    assert f"127.0.0.1:{port}" in line and "in use" in line


def test_serve_on_a_host_that_does_not_resolve_exits_3():
    """Exit 3, not 2: the flag is well formed, the name just names no address here."""
    done = contend("serve", "--host", "does-not-resolve.invalid", "--port", str(free_port()))
    assert done.returncode == CANNOT_CONNECT
    assert "does-not-resolve.invalid" in one_line(done, "contend serve: ")


@pytest.mark.parametrize("flags", [
    ("--port", "99999"),
    ("--port", "seven"),
    ("--pool-size", "-3"),
    ("--maxclients", "-1"),
    ("--race-window-us", "-5"),
    ("--model", "nosuch"),
], ids=["port-too-big", "port-not-a-number", "negative-pool", "negative-maxclients",
        "negative-race-window", "unknown-model"])
def test_serve_refuses_a_bad_flag_at_parse_time_with_exit_2(flags):
    done = contend("serve", *flags)
    assert done.returncode == USAGE
    assert flags[0] in one_line(done, "contend serve: ")
    assert done.stdout == ""   # refused before any banner


def test_config_set_refuses_a_negative_race_window_as_redis_refuses_a_bad_argument(
        locked_server):
    with locked_server.connect() as client:
        assert client.call("AUTH", "secret") == "OK"
        reply = client.call("CONFIG", "SET", "race-window-us", "-5")
        assert isinstance(reply, ReplyError)
        assert reply.text.startswith("ERR CONFIG SET failed (possibly related to argument "
                                     "'race-window-us')")
        assert client.call("CONFIG", "GET", "race-window-us") == [b"race-window-us", b"0"]
        assert client.call("INCR", "still-served") == 1


# -- contend load, race, demo: usage --------------------------------------------

@pytest.mark.parametrize("command", ["race", "demo"])
def test_no_clients_is_a_usage_error(command):
    done = contend(command, "--clients", "0")
    assert done.returncode == USAGE
    assert "--clients" in one_line(done, f"contend {command}: ")


def test_load_json_into_a_missing_folder_is_refused_before_the_run(tmp_path):
    """Nothing listens on the target: a run would exit 3, so 2 means it never started."""
    path = tmp_path / "missing-dir" / "out.json"
    done = contend("load", "--target", f"127.0.0.1:{free_port()}", "--requests", "1",
                   "--json", str(path))
    assert done.returncode == USAGE
    assert "missing-dir" in one_line(done, "contend load: ")
    assert not path.parent.exists()


def test_race_with_an_unknown_model_lists_the_models():
    done = contend("race", "--models", "threads,nosuch")
    assert done.returncode == USAGE
    line = one_line(done, "contend race: ")
    assert "nosuch" in line and all(model in line for model in ("threads", "trio", "asyncio"))


def test_a_server_that_will_not_start_says_why():
    """What `contend race` reports for a model whose server fails: its last words."""
    with pytest.raises(RuntimeError) as failure:
        client_servers.start_contend("threads", "--pool-size", "-3")
    message = str(failure.value)
    assert "\n" not in message and "--pool-size" in message


def test_version_is_the_package_version():
    done = contend("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"contend {VERSION}"
    assert importlib.metadata.version("contend") == VERSION


# -- contend load: the server says no --------------------------------------------

def test_load_without_the_password_says_noauth_and_exits_3(locked_server):
    done = contend("load", "--target", f"{locked_server.host}:{locked_server.port}",
                   "--scenario", "incr", "--requests", "1")
    assert done.returncode == CANNOT_CONNECT
    assert "NOAUTH" in one_line(done, "contend load: ")


# -- Ctrl-C ------------------------------------------------------------------------

def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(child) for child in task.read_text().split()]
    return found


def listening_port(pid: int) -> int | None:
    """The loopback port process `pid` listens on, found through /proc (its sockets'
    inodes matched against the kernel's table of listening TCP sockets)."""
    try:
        inodes = {os.readlink(fd).removeprefix("socket:[").removesuffix("]")
                  for fd in Path(f"/proc/{pid}/fd").iterdir()}
    except OSError:   # not yet exec'd into the server, or gone
        return None
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        if fields[3] == "0A" and fields[9] in inodes:   # 0A: LISTEN
            return int(fields[1].rpartition(":")[2], 16)
    return None


def interrupt(process: subprocess.Popen) -> tuple[int, str]:
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    return process.returncode, stderr


@pytest.mark.parametrize("driver", ["threads", "trio", "processes", "selectors"])
def test_ctrl_c_during_load_is_one_line_and_exit_130(locked_server, driver):
    """trio's driver raises it inside an exception group; the processes driver's workers,
    which a signal to the parent alone does not reach, are ended with it."""
    process = subprocess.Popen(
        [*CONTEND, "load", "--target", f"{locked_server.host}:{locked_server.port}",
         "--password", "secret", "--scenario", "ping", "--clients", "2", "--duration", "60",
         "--driver", driver],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with locked_server.connect() as watcher:
            watcher.call("AUTH", "secret")
            # Both load clients connected (the watcher is the third): the run is under way.
            wait_until(lambda: info_field(watcher, "connected_clients", "clients") >= 3,
                       message="the load's clients")
        workers = children(process.pid)
        status, stderr = interrupt(process)
    finally:
        process.kill()
        process.wait()
    assert status == INTERRUPTED, stderr
    assert stderr.splitlines() == ["contend load: interrupted"]
    assert not [pid for pid in workers if os.path.exists(f"/proc/{pid}")]


def test_ctrl_c_during_race_stops_its_server_and_exits_130():
    # Two clients through a 2 ms window, 100000 times each: minutes, unless interrupted.
    process = subprocess.Popen(
        [*CONTEND, "race", "--models", "threads", "--clients", "2", "--requests", "100000"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        server = wait_until(lambda: children(process.pid), message="the race's server")[0]
        port = wait_until(lambda: listening_port(server), message="the server listening")
        with Connection("127.0.0.1", port) as watcher:
            # Both racing clients connected (the watcher is the third): the race is on.
            wait_until(lambda: info_field(watcher, "connected_clients", "clients") >= 3,
                       message="the racing clients")
        status, stderr = interrupt(process)
    finally:
        process.kill()
        process.wait()
    assert status == INTERRUPTED, stderr
    assert stderr.splitlines() == ["contend race: interrupted"]
    assert not os.path.exists(f"/proc/{server}")
