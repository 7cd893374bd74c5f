"""Start contend servers and a real redis-server as child processes, on free loopback ports.

Used by `contend race`, `contend bench` and the tests: every server is started
fresh, found by the banner it prints, and stopped by whoever started it. A
contend server runs on this Python, or on another one (`--python PATH`: say a
free-threaded 3.13t beside this 3.11), asked first who it is.
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
import sysconfig
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from contend.client.connection import Connection, parse_info

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

    def gil(self) -> str:
        """"on" or "off", as the server's INFO says now; "" from a server that does not say.
        Asked after a run, not read from the build: a free-threaded Python turns its GIL
        back on when it imports a C extension that has not declared it can run without."""
        with self.connect() as client:
            info = client.call("INFO", "playground")
        return parse_info(info.decode()).get("gil", "") if isinstance(info, bytes) else ""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self) -> str:
        return f"<{self.name} on {self.host}:{self.port}>"


def start_contend(model: str, *flags: str, wait: float = 15, preexec_fn=None,
                  server_class=RunningServer, python: str | None = None) -> RunningServer:
    """`python -m contend.server --model MODEL --port 0 FLAGS`, ready once it prints its banner.

    `MODEL+LOOP` names a model on another event loop: `asyncio+uvloop` adds `--loop uvloop`.
    `python` is the interpreter to run it on (default: this one); `contend.server` imports
    no more than a server needs, so a free-threaded Python keeps its GIL off."""
    name, _, loop = model.partition("+")
    loop_flags = ("--loop", loop) if loop else ()
    process = subprocess.Popen(
        [python or sys.executable, "-m", "contend.server", "--model", name, "--port", "0",
         *loop_flags, *flags],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=preexec_fn)
    said = []   # what it printed instead of the banner
    try:
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
            said.append(line)
    except BaseException:   # Ctrl-C while it starts: no server left behind
        process.kill()
        process.wait()
        raise
    process.kill()
    said += process.stdout.readlines()
    process.wait()
    # Its last words say why (a traceback's last line is the error itself).
    why = next((line.strip() for line in reversed(said) if line.strip()),
               f"no banner within {wait:g} s")
    raise RuntimeError(f"contend {model} did not start: {why}")


# -- the Python a server runs on ------------------------------------------------

# What an interpreter says about itself: its version, and whether it was built free-threaded
# (PEP 703, `--disable-gil`). Importing contend.server on the way checks it can run one.
PROBE = ("import sys, sysconfig, contend.server; "
         "print(*sys.version_info[:2], bool(sysconfig.get_config_var('Py_GIL_DISABLED')))")


@dataclass(frozen=True)
class Interpreter:
    """A Python to run servers on, and the label tables show for it."""
    path: str
    label: str              # "3.11"; "3.13t" for a free-threaded build, as its binary is named
    free_threaded: bool     # built so the GIL can be off (whether it stays off: RunningServer.gil)


def short_label(major: int, minor: int, free_threaded: bool) -> str:
    return f"{major}.{minor}{'t' if free_threaded else ''}"


def this_interpreter() -> Interpreter:
    """The Python running contend now: what servers run on when no --python is given."""
    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    return Interpreter(sys.executable, short_label(*sys.version_info[:2], free_threaded),
                       free_threaded)


def probe_interpreter(path: str) -> Interpreter:
    """Ask the Python at `path` who it is. ValueError, saying why, when it cannot run a server."""
    try:
        # From ROOT, as start_contend runs it: the same `contend` must be importable there.
        answer = subprocess.run([path, "-c", PROBE], cwd=ROOT, capture_output=True, text=True,
                                timeout=60)
    except FileNotFoundError:
        raise ValueError(f"--python {path}: no such interpreter") from None
    except (OSError, subprocess.SubprocessError) as problem:
        raise ValueError(f"--python {path}: cannot run it ({problem})") from None
    if answer.returncode != 0:
        why = (answer.stderr.strip().splitlines() or [f"exit status {answer.returncode}"])[-1]
        checkout = (f": {path} -m pip install -e {ROOT}" if (ROOT / "pyproject.toml").exists()
                    else "")   # installed from a wheel: no checkout here to point at
        raise ValueError(f"--python {path} cannot import contend.server ({why}); "
                         f"install contend for that interpreter too{checkout}")
    try:
        major, minor, built_free = answer.stdout.split()[-3:]
        free_threaded = built_free == "True"
        return Interpreter(path, short_label(int(major), int(minor), free_threaded),
                           free_threaded)
    except ValueError:
        raise ValueError(f"--python {path}: not a Python? it answered {answer.stdout!r}") from None


def find_interpreters(paths: list[str] | None) -> list[Interpreter]:
    """Each `--python` path probed, in order, once (none given: this Python). Two that share
    a label, say two 3.11s, are told apart by their file names ("3.11 (python3.11)",
    "3.11 (python)"), or by their whole paths when those are the same too."""
    if not paths:
        return [this_interpreter()]
    # A path with a slash is taken from here, not from ROOT where servers start; a bare
    # name (python3.13t) is looked up on PATH.
    paths = [os.path.abspath(path) if os.sep in path else path for path in paths]
    found = [probe_interpreter(path) for path in dict.fromkeys(paths)]
    shared = Counter(python.label for python in found)
    names = Counter((python.label, os.path.basename(python.path)) for python in found)

    def told_apart(python: Interpreter) -> str:
        name = os.path.basename(python.path)
        return f"{python.label} ({name if names[python.label, name] == 1 else python.path})"

    return [replace(python, label=told_apart(python)) if shared[python.label] > 1 else python
            for python in found]


def worth_naming(labels: Iterable[str]) -> bool:
    """Whether a table names each server's Python: only when some server ran on another
    than contend's own, so a run without --python reads as it always did."""
    return bool(set(labels) - {"", this_interpreter().label})


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
