"""Start contend servers and a real redis-server as child processes, on free loopback ports.

Used by `contend race`, `contend bench` and the tests: every server is started
fresh, found by the banner it prints, and stopped by whoever started it.
"""

from __future__ import annotations

import os
import re
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from contend.client.connection import Connection

ROOT = Path(__file__).resolve().parent.parent
BANNER = re.compile(r"listening on ([\d.]+):(\d+)")
OPEN_FILES = 65536


def raise_open_files_limit() -> tuple[int, int]:
    """Lift the soft open-files limit toward OPEN_FILES (never past the hard limit) and
    return (soft, hard). 1000 clients need more descriptors than the usual 1024, on
    both ends: servers and redis-benchmark started afterwards inherit the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES if hard == resource.RLIM_INFINITY else min(OPEN_FILES, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def on_cpu(cpu: int | None):
    """A preexec_fn that pins the child process to one CPU (None: no pinning)."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


class client_on_cpu:
    """Run the load client (this process, its threads and any worker it forks) on one CPU."""

    def __init__(self, cpu: int | None):
        self.cpu = cpu

    def __enter__(self):
        if self.cpu is not None:
            self.mask = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {self.cpu})

    def __exit__(self, *exc):
        if self.cpu is not None:
            os.sched_setaffinity(0, self.mask)


class RunningServer:
    def __init__(self, name: str, process: subprocess.Popen, host: str, port: int):
        self.name, self.process, self.host, self.port = name, process, host, port

    def connect(self, timeout: float = 10) -> Connection:
        return Connection(self.host, self.port, timeout)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self) -> str:
        return f"<{self.name} on {self.host}:{self.port}>"


def start_contend(model: str, *flags: str, wait: float = 15, preexec_fn=None,
                  server_class=RunningServer) -> RunningServer:
    """`python -m contend.server --model MODEL --port 0 FLAGS`, ready once it prints its banner.

    `MODEL+LOOP` names a model on another event loop: `asyncio+uvloop` adds `--loop uvloop`."""
    name, _, loop = model.partition("+")
    loop_flags = ("--loop", loop) if loop else ()
    process = subprocess.Popen(
        [sys.executable, "-m", "contend.server", "--model", name, "--port", "0", *loop_flags,
         *flags],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=preexec_fn)
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not selector.select(timeout=deadline - time.monotonic()):
            break
        line = process.stdout.readline()
        if not line:
            break
        found = BANNER.search(line)
        if found:
            return server_class(model, process, found.group(1), int(found.group(2)))
    process.kill()
    raise RuntimeError(f"contend {model} did not start: {process.stdout.read()}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_redis(*flags: str, preexec_fn=None, server_class=RunningServer) -> RunningServer:
    """A real redis-server on a free loopback port, keeping nothing on disk."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    for _attempt in range(5):
        port = free_port()
        process = subprocess.Popen(
            [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no", *flags],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=preexec_fn)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with Connection("127.0.0.1", port, 1) as client:
                    if client.call("PING") == "PONG":
                        return server_class("redis", process, "127.0.0.1", port)
            except OSError:
                time.sleep(0.02)
        process.kill()
        process.wait()
    raise RuntimeError("redis-server did not start")
