"""What changes when the GIL goes away: the threads model on a free-threaded CPython.

The interpreter is the one `scripts/free-threaded-python.sh` finds or builds (`python3 -m
tests` runs it first, so CI always has one); these tests look for it without building it,
and are skipped where there is none. The servers run under it; the clients are this
interpreter's and redis-benchmark.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from contend.client import servers
from tests.helpers import free_threaded_python, info_field
from tests.servers import BANNER, CONTEND, ROOT, TestServer

FREE_THREADED, WHY_NOT = free_threaded_python()
needs_free_threading = pytest.mark.skipif(FREE_THREADED is None, reason=WHY_NOT)


@pytest.fixture
def serve_free_threaded():
    started: list[TestServer] = []

    def start(*flags: str) -> TestServer:
        server = servers.start_contend("threads", *flags, server_class=TestServer,
                                       python=FREE_THREADED)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def incr_from_many_clients(server: TestServer, requests: int = 100_000) -> int:
    """redis-benchmark's 50 clients INCR one key `requests` times between them; the count."""
    with server.raw() as client:
        client.call("SET", "hits", "0")
    subprocess.run(["redis-benchmark", "-h", server.host, "-p", str(server.port), "-c", "50",
                    "-n", str(requests), "-q", "INCR", "hits"],
                   check=True, capture_output=True, timeout=300)
    with server.raw() as client:
        return int(client.call("GET", "hits"))


# -- whether the GIL is on, said where a person looks ------------------------------------

def test_info_and_banner_say_whether_the_gil_is_on(serve):
    # Asked of a fresh interpreter: this one may have turned its GIL on by importing
    # an extension (hdrhistogram, for the load client).
    expected = subprocess.run(
        [sys.executable, "-c", "import sys; print('on' if getattr(sys, '_is_gil_enabled', "
         "lambda: True)() else 'off')"], capture_output=True, text=True, check=True).stdout.strip()
    server = serve("threads")
    with server.raw() as client:
        assert info_field(client, "gil", "playground") == expected
    process = subprocess.Popen([*CONTEND, "serve", "--port", "0"], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert BANNER.search(line) and line.rstrip().endswith(f"gil={expected})"), line
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0


def test_serving_imports_no_extension_that_would_turn_the_gil_back_on():
    """hdrhistogram's C extension re-enables the GIL when imported (a RuntimeWarning on
    3.13t); the load client needs it, the server must never import it."""
    code = ("import sys; from contend.client import cli; from contend import server; "
            "import contend.server.threads, contend.server.processes; "
            "cli.serve_parser().parse_args(['--port', '0']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('hdrh', 'pyhdrh')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == "[]"


# -- the lesson, on the free-threaded build -------------------------------------------

@needs_free_threading
def test_without_the_gil_sync_off_loses_updates_with_no_race_window(serve_free_threaded):
    """Two cores, no GIL: two threads' INCRs interleave between read and write with no
    window at all. (With the GIL a thread switch there is rare, not impossible: the
    contrast is measured in lab 12, not asserted.) Measured: 63-79% of 200,000 lost."""
    server = serve_free_threaded("--sync", "off", "--race-window-us", "0")
    with server.raw() as client:
        assert info_field(client, "gil", "playground") == "off"
    assert incr_from_many_clients(server) < 100_000


@needs_free_threading
@pytest.mark.parametrize("sync", ["lock", "striped", "unordered"])
def test_without_the_gil_every_guarded_mode_is_exact(serve_free_threaded, sync):
    server = serve_free_threaded("--sync", sync, "--race-window-us", "0")
    with server.raw() as client:
        assert info_field(client, "gil", "playground") == "off"
    assert incr_from_many_clients(server) == 100_000
