"""Small helpers the behaviour tests share."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import contend
from contend.client.connection import parse_info

FREE_THREADED_BUILD = "/opt/python3.13t/bin/python3.13t"   # scripts/free-threaded-python.sh's


def wait_until(condition, timeout: float = 10, message: str = "condition"):
    """Poll `condition()` until it is truthy; fail after `timeout` seconds.

    This waits *for a state* (a client is blocked, a waiter is gone), never a
    fixed time, so a slow machine makes a test slower, not flaky.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(0.005)


def info_field(client, name: str, section: str = "everything"):
    value = parse_info(client.call("INFO", section).decode())[name]   # KeyError: not there
    return int(value) if value.lstrip("-").isdigit() else value


def blocked_clients(server) -> int:
    with server.raw() as client:
        return info_field(client, "blocked_clients")


def as_dict(flat: list) -> dict:
    """POOL.STATUS / BARRIER.STATUS / CONFIG GET replies as a dict."""
    return {key.decode(): value for key, value in zip(flat[::2], flat[1::2], strict=True)}


def run_together(count: int, work) -> list:
    """Run work(i) in `count` threads that start at one Barrier; return results by i."""
    start = threading.Barrier(count)
    results: list = [None] * count
    errors: list = []

    def runner(i):
        try:
            start.wait()
            results[i] = work(i)
        except BaseException as error:   # surfaced below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if errors:
        raise errors[0]
    return results


@functools.cache
def free_threaded_python() -> tuple[str | None, str]:
    """A free-threaded CPython that imports this checkout's contend, or None and why not."""
    ours = str(Path(contend.__file__).resolve())
    reason = ("no free-threaded CPython (scripts/free-threaded-python.sh finds or builds one; "
              "then `python3.13t -m pip install -e .`)")
    for candidate in (os.environ.get("CONTEND_FREE_THREADED_PYTHON"), shutil.which("python3.14t"),
                      shutil.which("python3.13t"), FREE_THREADED_BUILD):
        if not candidate or not os.path.exists(candidate):
            continue
        check = subprocess.run(
            [candidate, "-c", "import sysconfig, contend.server, pathlib; "
             "assert sysconfig.get_config_var('Py_GIL_DISABLED'); "
             "print(pathlib.Path(contend.__file__).resolve())"], capture_output=True, text=True)
        if check.returncode != 0:
            continue
        if check.stdout.strip() != ours:
            reason = (f"{candidate} imports contend from {check.stdout.strip()}, not {ours} "
                      "(`pip install -e .` with it)")
            continue
        return candidate, ""
    return None, reason
