"""contend load on Locust's master/worker engine (client/locust_load.py): a master and
worker processes on loopback against a real server. The workers' histograms add up
exactly at the master, every worker's share is in its JSON, and the verdict is read
back once, by the master.

Locust patches the standard library for gevent when imported, so this process never
imports it: the master and the workers are subprocesses, each bounded in time and
killed if a test fails.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields

import pytest

from contend.client.load import LoadResult
from tests.helpers import info_field, wait_until
from tests.servers import CONTEND, ROOT, free_port

needs_locust = pytest.mark.skipif(
    importlib.util.find_spec("locust") is None,
    reason="Locust is not installed: it is the optional extra `locust` (pip install "
           "'.[locust]'), which a free-threaded interpreter cannot have (gevent, which "
           "Locust needs, has no wheel for it)")

RUN_LIMIT = 90   # seconds any one master, worker or locust process may take


def empty_and_guarded(server) -> None:
    with server.raw() as client:
        client.call("FLUSHALL")
        client.call("CONFIG", "SET", "sync", "lock", "race-window-us", "0")


@pytest.fixture
def threads_server(shared_servers):
    """The shared threads server, emptied and guarded; guarded again after, for the
    other modules that share it."""
    server = shared_servers("threads")
    empty_and_guarded(server)
    yield server
    empty_and_guarded(server)


@contextmanager
def processes(*commands: list[str]) -> Iterator[list[subprocess.Popen]]:
    """Each command started; whichever is still running at the end is killed."""
    started = []
    try:
        for command in commands:
            started.append(subprocess.Popen(command, cwd=ROOT, text=True,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.communicate()


def finish(process: subprocess.Popen) -> tuple[int, str]:
    stdout, stderr = process.communicate(timeout=RUN_LIMIT)
    return process.returncode, stdout + stderr


def distributed_load(server, tmp_path, workers: int, *args: str) -> tuple[int, str, dict]:
    """`contend load --locust-master` and `workers` times `contend load --locust-worker`:
    the master's status and output, and its JSON."""
    out = tmp_path / "result.json"
    address = f"127.0.0.1:{free_port()}"
    master = [*CONTEND, "load", "--locust-master", "--locust-address", address,
              "--expect-workers", str(workers), "--target", f"{server.host}:{server.port}",
              "--json", str(out), *args]
    worker = [*CONTEND, "load", "--locust-worker", "--locust-address", address]
    with processes(master, *[worker] * workers) as (master_process, *worker_processes):
        status, said = finish(master_process)
        for process in worker_processes:   # the master tells them to quit
            worker_status, worker_said = finish(process)
            assert worker_status == 0, worker_said
    assert status in (0, 1), said
    return status, said, json.loads(out.read_text())


def counters(server) -> int:
    with server.raw() as client:
        return sum(int(client.call("GET", f"contend:incr:{n}") or 0) for n in range(4))


@needs_locust
def test_two_workers_histograms_add_up_exactly_and_the_master_reads_the_count_back(
        threads_server, tmp_path):
    status, said, result = distributed_load(threads_server, tmp_path, 2, "--scenario", "incr",
                                            "--clients", "6", "--requests", "25")
    assert status == 0, said
    assert result["driver"] == "locust" and result["clients"] == 6
    assert result["ops"] == 150 and result["errors"] == 0
    workers = result["workers"]
    assert len(workers) == 2 and all(worker["clients"] == 3 for worker in workers)
    assert sorted(worker["first_client"] for worker in workers) == [0, 3]
    # The merged histogram is the two workers' added: not a sample, not a percentile's guess.
    assert result["latency_count"] == sum(worker["latency_count"] for worker in workers) == 150
    assert [worker["ops"] for worker in workers] == [75, 75]
    assert [worker["latency_count"] for worker in workers] == [75, 75]
    invariant = result["invariant"]
    assert invariant["holds"] is True
    assert invariant["expected"] == invariant["observed"] == counters(threads_server) == 150
    assert "invariant holds: no lost updates" in said
    # Written like `contend load --json`: every field of its result, and the workers.
    assert {f.name for f in fields(LoadResult)} <= set(result)
    assert result["latency_ms"]["p50"] > 0 and result["client_cpu"]["ceiling"] == 2


@needs_locust
def test_lost_updates_on_every_worker_fail_the_master_with_status_1(threads_server, tmp_path):
    with threads_server.raw() as client:
        client.call("CONFIG", "SET", "sync", "off", "race-window-us", "3000")
    status, said, result = distributed_load(threads_server, tmp_path, 2, "--scenario", "incr",
                                            "--clients", "8", "--requests", "20")
    counted = counters(threads_server)
    invariant = result["invariant"]
    assert status == 1 and invariant["holds"] is False, said
    assert invariant["expected"] == result["ops"] == 160
    assert invariant["observed"] == counted < 160
    assert f"{160 - counted} lost updates" in invariant["detail"]


@needs_locust
def test_bank_at_a_fixed_rate_for_a_duration_keeps_every_request_and_the_money(
        threads_server, tmp_path):
    status, said, result = distributed_load(threads_server, tmp_path, 2, "--scenario", "bank",
                                            "--clients", "4", "--rate", "400",
                                            "--duration", "1")
    assert status == 0, said
    assert result["invariant"]["holds"] is True
    with threads_server.raw() as client:
        audit = client.call("BANK.AUDIT", *[f"contend:bank:{n}" for n in range(5)])
    assert result["invariant"]["observed"] == audit
    # At 400/s for a second the clients send about 400 (each stops at its own deadline).
    assert 300 <= result["ops"] + result["errors"] <= 400
    assert result["latency_count"] == result["ops"] + result["errors"]
    assert result["latency_count"] == sum(worker["latency_count"] for worker in result["workers"])


@needs_locust
def test_a_stall_shows_in_the_merged_latencies_at_a_fixed_rate(serve, tmp_path):
    """The point of contend's own histogram on Locust: a trio server stalled by WORK, and
    the requests due during the stall (never sent, in closed loop) counted late."""
    server = serve("trio")
    out = tmp_path / "result.json"
    address = f"127.0.0.1:{free_port()}"
    master = [*CONTEND, "load", "--locust-master", "--locust-address", address,
              "--target", f"{server.host}:{server.port}", "--scenario", "incr",
              "--clients", "4", "--rate", "400", "--duration", "4", "--json", str(out)]
    worker = [*CONTEND, "load", "--locust-worker", "--locust-address", address]
    with processes(master, worker) as (master_process, worker_process), server.raw() as client:
        # The counters, not the server's command count, which our own INFOs would raise.
        wait_until(lambda: int(client.call("GET", "contend:incr:0") or 0) > 10, timeout=60,
                   message="the load to be running")
        client.call("WORK", "4000")   # the event loop does nothing else meanwhile
        stall_ms = float(info_field(client, "longest_stall_ms"))
        status, said = finish(master_process)
        assert finish(worker_process)[0] == 0
    assert status == 0, said
    result = json.loads(out.read_text())
    assert stall_ms > 100
    # As in test_load: each client is due every 10 ms, so the first request due in the
    # stall waits nearly all of it, and the half due in its first half wait half of it.
    assert result["latency_ms"]["max"] >= stall_ms - 10
    assert result["latency_ms"]["p99"] >= stall_ms * 0.5 - 10


@needs_locust
def test_the_locustfile_runs_under_locusts_own_command_line(threads_server, tmp_path):
    """`locust -f client/locust_load.py`, a master and a worker, as the README shows."""
    out = tmp_path / "result.json"
    port = str(free_port())
    locust = [sys.executable, "-m", "locust", "-f", str(ROOT / "client" / "locust_load.py")]
    master = [*locust, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", port,
              "--headless", "--expect-workers", "1", "-u", "3", "-r", "100",
              "--host", f"{threads_server.host}:{threads_server.port}",
              "--contend-scenario", "incr", "--contend-requests", "10",
              "--contend-json", str(out)]
    worker = [*locust, "--worker", "--master-host", "127.0.0.1", "--master-port", port]
    with processes(master, worker) as (master_process, worker_process):
        status, said = finish(master_process)
        assert finish(worker_process)[0] == 0
    assert status == 0, said
    result = json.loads(out.read_text())
    assert result["ops"] == result["latency_count"] == counters(threads_server) == 30
    assert "invariant holds: no lost updates" in said


@needs_locust
def test_a_master_that_cannot_reach_the_server_says_so_before_waiting_for_workers():
    done = subprocess.run([*CONTEND, "load", "--locust-master", "--locust-address",
                           f"127.0.0.1:{free_port()}", "--target", f"127.0.0.1:{free_port()}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=RUN_LIMIT)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "cannot run against" in done.stderr and "Traceback" not in done.stderr


@needs_locust
def test_a_master_expecting_no_workers_is_a_usage_error():
    done = subprocess.run([*CONTEND, "load", "--locust-master", "--expect-workers", "0"],
                          cwd=ROOT, capture_output=True, text=True, timeout=RUN_LIMIT)
    assert done.returncode == 2 and "--expect-workers" in done.stderr, done.stderr


def test_without_locust_the_flags_say_how_to_install_it(monkeypatch, capsys):
    """What a free-threaded interpreter, which cannot have Locust, answers (in-process:
    it returns before anything would import Locust)."""
    from contend.client import load
    from contend.client.cli import build_parser

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(load.importlib.util, "find_spec",
                        lambda name, *rest: None if name == "locust" else find_spec(name, *rest))
    for role in ("--locust-master", "--locust-worker"):
        assert load.main(build_parser().parse_args(["load", role])) == 2
        assert "pip install 'contend[locust]'" in capsys.readouterr().err
