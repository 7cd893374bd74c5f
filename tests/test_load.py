"""`contend load` and `contend race`: verdicts checked against the server's own state,
exit statuses, the JSON, latency measured from the due time under a stall, and the
client's own CPU, which says when the client was the bottleneck."""

from __future__ import annotations

import json
import multiprocessing
import socket
import subprocess
import threading

import pytest
from rich.console import Console

from contend.client import loadgen
from contend.client.load import LoadResult, client_cpu, render
from contend.client.loadgen import DRIVERS, ClientRun, Plan, new_reply_reader, shared_progress
from contend.client.scenarios import SCENARIOS, Cas, Ping
from contend.shared.resp import (
    NEED_MORE,
    NULL_ARRAY,
    ReplyError,
    ReplyParser,
    Simple,
    encode_command,
)
from tests.helpers import as_dict, info_field, wait_until
from tests.servers import CONTEND, ROOT


def contend(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([*CONTEND, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def load(server, tmp_path, *args) -> tuple[int, dict]:
    out = tmp_path / "result.json"
    done = contend("load", "--target", f"{server.host}:{server.port}", "--json", str(out), *args)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return done.returncode, json.loads(out.read_text())


def test_incr_verdict_matches_the_counters_read_back(server, tmp_path):
    with server.raw() as client:
        client.call("CONFIG", "SET", "sync", "off", "race-window-us", "3000")
    code, result = load(server, tmp_path, "--scenario", "incr", "--clients", "8",
                        "--requests", "20")
    with server.raw() as client:
        counted = sum(int(client.call("GET", f"contend:incr:{n}") or 0) for n in range(4))
    invariant = result["invariant"]
    assert invariant["observed"] == counted
    assert invariant["expected"] == result["ops"] == 160
    assert invariant["holds"] is False and code == 1
    assert f"{160 - counted} lost updates" in invariant["detail"]


@pytest.mark.parametrize("driver, workers", [
    ("threads", None), ("trio", None), ("processes", None), ("processes", "3"),
    ("selectors", None), ("selectors", "1"), ("selectors", "3"),
])
def test_every_driver_gets_an_exact_count_under_lock(server, tmp_path, driver, workers):
    code, result = load(server, tmp_path, "--scenario", "incr", "--clients", "6",
                        "--requests", "15", "--driver", driver,
                        *(["--workers", workers] if workers else []))
    assert code == 0 and result["invariant"]["holds"] is True
    assert result["driver"] == driver and result["ops"] == 90 and result["errors"] == 0
    with server.raw() as client:
        assert sum(int(client.call("GET", f"contend:incr:{n}") or 0) for n in range(4)) == 90
    cpu = result["client_cpu"]
    assert cpu["cores"] >= 0 and cpu["ceiling"] >= 1
    assert cpu["waiting"] is None or cpu["waiting"] >= 0
    assert cpu["share"] == pytest.approx((cpu["cores"] + (cpu["waiting"] or 0)) / cpu["ceiling"],
                                         abs=0.02)   # three roundings
    assert cpu["saturated"] is (cpu["share"] >= 0.9)
    if driver in ("threads", "trio") or workers == "1":
        assert cpu["ceiling"] == 1   # one interpreter, one GIL


def test_client_cpu_is_saturated_near_what_the_client_can_use():
    assert client_cpu(0.95, 1.0, 1) == {"cores": 0.95, "waiting": None, "ceiling": 1,
                                        "share": 0.95, "saturated": True}
    assert client_cpu(0.85, 1.0, 1)["saturated"] is False
    assert client_cpu(1.0, 1.0, 2)["saturated"] is False        # one of two workers' worth
    assert client_cpu(3.7, 2.0, 2)["saturated"] is True         # 1.85 of 2
    # Ready to run but kept off the CPU by other work: starved, still the bottleneck.
    starved = client_cpu(0.4, 1.0, 1, wait_s=0.6)
    assert starved["waiting"] == 0.6 and starved["saturated"] is True
    assert client_cpu(0.2, 1.0, 1, wait_s=0.1)["saturated"] is False
    assert client_cpu(0.0, 0.0, 1)["cores"] == 0.0              # a run too short to time


def rendered(cpu: dict) -> str:
    result = LoadResult("ping", 50, "threads", 1000, 0, {}, 1.0, 1000.0,
                        dict.fromkeys(["p50", "p90", "p99", "p999", "max"], 1.0),
                        {"holds": True, "expected": 0, "observed": 0, "detail": "0 errors"},
                        client_cpu=cpu)
    console = Console(record=True, width=200)
    render(result, console)
    return console.export_text()


def test_the_table_says_when_the_client_was_the_bottleneck():
    busy = rendered(client_cpu(0.97, 1.0, 1, wait_s=0.0))
    assert "the client was the bottleneck" in busy and "0.97 used" in busy
    idle = rendered(client_cpu(0.3, 1.0, 2, wait_s=0.1))
    assert "bottleneck" not in idle and "0.30 used + 0.10 waited for, of 2" in idle


@pytest.mark.parametrize("driver", sorted(DRIVERS))
def test_every_driver_counts_a_reply_that_never_comes_as_a_timeout(driver):
    """A listening socket that never accepts: the kernel completes the connections, takes
    the PINGs, and nothing ever answers. Each client gives up after plan.timeout."""
    with socket.create_server(("127.0.0.1", 0), backlog=8) as mute:
        plan = Plan("127.0.0.1", mute.getsockname()[1], Ping(2), 2, requests=3, timeout=0.3,
                    workers=2)
        ran = DRIVERS[driver](plan, [0, 1], shared_progress(driver, 2))
    assert [outcome.errors for outcome in ran.outcomes] == [{"timeout": 1}, {"timeout": 1}]
    assert all(outcome.ops == 0 for outcome in ran.outcomes)


def test_bank_verdict_matches_an_audit(server, tmp_path):
    with server.raw() as client:
        client.call("CONFIG", "SET", "sync", "off", "race-window-us", "2000")
    code, result = load(server, tmp_path, "--scenario", "bank", "--clients", "8",
                        "--requests", "15")
    with server.raw() as client:
        audit = client.call("BANK.AUDIT", *[f"contend:bank:{n}" for n in range(5)])
    assert result["invariant"]["observed"] == audit
    assert (code == 0) == (audit == result["invariant"]["expected"])


@pytest.mark.parametrize("scenario", ["pool", "barrier", "queue", "work", "sleep", "mixed", "ping"])
def test_scenarios_hold_on_a_guarded_server(server, tmp_path, scenario):
    code, result = load(server, tmp_path, "--scenario", scenario, "--clients", "4",
                        "--requests", "10")
    assert code == 0, result
    assert result["errors"] == 0 and result["ops"] == 40
    with server.raw() as client:
        if scenario == "pool":
            assert as_dict(client.call("POOL.STATUS"))["peak-in-use"] <= 4
        if scenario == "queue":
            assert client.call("LLEN", "contend:queue") == 0


@pytest.fixture
def any_server(target):
    """Each model's shared server with the default guard (sync lock), and redis-server."""
    if target.name != "redis":
        with target.raw() as client:
            client.call("CONFIG", "SET", "sync", "lock", "race-window-us", "0")
    return target


@pytest.mark.parametrize("clients", [1, 8])
def test_cas_loses_no_update_and_counts_its_retries(any_server, tmp_path, clients):
    """WATCH/GET/MULTI/SET/EXEC under contention: every EXEC that succeeded is in the
    counters, and the retries reported are EXECs the server refused (one client: none)."""
    code, result = load(any_server, tmp_path, "--scenario", "cas", "--clients", str(clients),
                        "--requests", "15")
    with any_server.raw() as client:
        counted = sum(int(client.call("GET", f"contend:cas:{n}") or 0) for n in range(4))
    gave_up = result["errors_by_kind"].get("gave-up", 0)
    assert code == 0 and result["invariant"]["holds"] is True, result
    assert result["errors"] == gave_up and result["ops"] + gave_up == clients * 15
    assert result["invariant"]["expected"] == result["invariant"]["observed"] == counted
    assert counted == result["ops"]
    figures = result["figures"]
    assert figures["retries_per_op"] == round(figures["retries"] / result["ops"], 2)
    if clients == 1:
        assert figures["retries"] == 0   # nobody else writes between its WATCH and its EXEC


def test_cas_request_goes_round_again_when_exec_is_refused_and_gives_up_at_the_bound():
    """ClientRun and Cas with no server: the replies are written by hand."""
    scenario = Cas(1, options={"max_retries": 1})
    run = ClientRun(Plan("127.0.0.1", 0, scenario, 1, requests=2), 0, start=0.0)
    key = "contend:cas:0"

    def step(expected_commands, replies):
        sent = run.next_batch(0.0)
        assert sent == b"".join(encode_command(*command) for command in expected_commands)
        for position, reply in enumerate(replies):
            run.on_reply(position, reply, 0.001)
        run.batch_done([0, 0])

    watch_get = [("WATCH", key), ("GET", key)]
    step(watch_get, [Simple("OK"), b"41"])
    step([("MULTI",), ("SET", key, 42), ("EXEC",)], [Simple("OK"), Simple("QUEUED"), NULL_ARRAY])
    assert run.seq == 0 and run.outcome.ops == 0   # refused: the same request goes round again
    step(watch_get, [Simple("OK"), b"43"])
    step([("MULTI",), ("SET", key, 44), ("EXEC",)],
         [Simple("OK"), Simple("QUEUED"), [Simple("OK")]])
    assert run.seq == 1 and run.outcome.ops == 1
    assert run.outcome.tally == {"retries": 1, "committed": 1}
    key = "contend:cas:1"   # the second request: refused twice, and max_retries is 1
    watch_get = [("WATCH", key), ("GET", key)]
    for value in (b"7", b"8"):
        step(watch_get, [Simple("OK"), value])
        step([("MULTI",), ("SET", key, int(value) + 1), ("EXEC",)],
             [Simple("OK"), Simple("QUEUED"), NULL_ARRAY])
    assert run.seq == 2 and run.next_batch(0.0) is None
    assert run.outcome.errors == {"gave-up": 1} and run.outcome.tally["retries"] == 3
    assert scenario.figures([run.outcome.tally], run.outcome.ops) == {
        "retries": 3, "retries_per_op": 3.0}


def test_cas_request_unwatches_when_a_step_fails():
    scenario = Cas(1)
    run = ClientRun(Plan("127.0.0.1", 0, scenario, 1, requests=1), 0, start=0.0)
    run.next_batch(0.0)
    run.on_reply(0, ReplyError("ERR unknown command 'WATCH'"), 0.001)
    run.on_reply(1, None, 0.001)
    run.batch_done([0, 0])
    assert run.next_batch(0.0) == b"*1\r\n$7\r\nUNWATCH\r\n"
    run.on_reply(0, Simple("OK"), 0.002)
    run.batch_done([0, 0])
    assert run.seq == 1 and run.outcome.errors == {"ERR": 1}


def test_prefix_keeps_runs_apart(server, tmp_path):
    _, result = load(server, tmp_path, "--scenario", "incr", "--clients", "2", "--requests", "5",
                     "--prefix", "room-7")
    assert result["invariant"]["holds"]
    with server.raw() as client:
        assert sorted(client.call("KEYS", "*")) == [f"room-7:incr:{n}".encode() for n in range(4)]


def test_json_has_every_field(server, tmp_path):
    _, result = load(server, tmp_path, "--scenario", "ping", "--clients", "2", "--requests", "5",
                     "--pipeline", "4")
    for key in ("scenario", "clients", "ops", "errors", "duration_s", "ops_per_sec"):
        assert key in result
    assert set(result["latency_ms"]) >= {"p50", "p90", "p99", "p999", "max"}
    assert set(result["invariant"]) >= {"holds", "expected", "observed", "detail"}
    assert set(result["client_cpu"]) == {"cores", "waiting", "ceiling", "share", "saturated"}
    assert result["ops"] == 10 and result["driver"] == "selectors"


# Every reply shape a scenario meets, as the server sends it.
WIRE_REPLIES = [b"+OK\r\n", b"+PONG\r\n", b"+QUEUED\r\n", b":5\r\n", b":-3\r\n", b"$-1\r\n",
                b"*-1\r\n", b"$2\r\n41\r\n", b"-ERR insufficient funds\r\n",
                b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
                b"-ERR value is not an integer or out of range\r\n",
                b"*2\r\n$13\r\ncontend:queue\r\n$3\r\n0:1\r\n", b"*1\r\n+OK\r\n",
                b"*0\r\n", b"*1\r\n-ERR oops\r\n"]


def parsed(wire: bytes, parser: str):
    if parser == "hiredis":
        reader = new_reply_reader()
        reader.feed(wire)
        reply = reader.gets()
    else:
        resp = ReplyParser()
        resp.feed(wire)
        reply = resp.next_reply()
    assert reply is not NEED_MORE
    return reply


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenarios_judge_hiredis_replies_as_they_judge_resp_parser_replies(name):
    """The drivers read with hiredis, which gives +OK as bytes and *-1 as None where
    shared.resp.ReplyParser gives str and NULL_ARRAY: every verdict must come out the same."""
    scenario = SCENARIOS[name](4)
    for wire in WIRE_REPLIES:
        for client, seq in [(0, 0), (1, 3), (2, 7), (3, 8)]:
            verdicts = []
            for parser in ("hiredis", "resp"):
                tally: dict = {}
                if scenario.conversational:   # cas: the reply ends the second step
                    run = ClientRun(Plan("127.0.0.1", 0, scenario, 4, requests=1), client, 0.0)
                    run.next_batch(0.0)
                    for position in range(2):
                        run.on_reply(position, parsed(b"+OK\r\n" if position == 0
                                                      else b"$1\r\n7\r\n", parser), 0.0)
                    run.batch_done([0] * 8)
                    run.next_batch(0.0)
                    replies = [parsed(w, parser) for w in (b"+OK\r\n", b"+QUEUED\r\n", wire)]
                    for position, reply in enumerate(replies):
                        run.on_reply(position, reply, 0.0)
                    verdicts.append((dict(run.outcome.errors), run.outcome.ops,
                                     run.outcome.tally, run.exchange is None))
                    continue
                try:
                    kind = scenario.check(parsed(wire, parser), client, seq, tally)
                except (AttributeError, TypeError, IndexError, ValueError) as error:
                    kind = f"raises {type(error).__name__}"   # a shape it never meets
                verdicts.append((kind, tally))
            assert verdicts[0] == verdicts[1], (name, wire, client, seq)


@pytest.mark.parametrize("args", [
    ("--clients", "0"),
    ("--scenario", "barrier", "--duration", "1"),
    ("--scenario", "nosuch"),
    ("--target", "nohostport"),
    ("--requests", "1", "--duration", "1"),
    ("--scenario", "cas", "--pipeline", "4"),
], ids=["no-clients", "barrier-by-time", "unknown-scenario", "bad-target", "both-bounds",
        "cas-pipelined"])
def test_usage_errors_exit_2_without_a_traceback(args):
    done = contend("load", *args)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr


def test_unreachable_server_exits_3_with_a_message():
    from tests.servers import free_port
    done = contend("load", "--target", f"127.0.0.1:{free_port()}", "--requests", "1")
    assert done.returncode == 3
    assert "cannot run against" in done.stderr and "Traceback" not in done.stderr


def test_fixed_rate_latency_counts_a_server_stall(serve, tmp_path):
    """A trio server stalled by WORK: requests due during the stall are late, and p99 says so.

    The stall is the one the server measured (INFO longest_stall_ms), not the test's own
    clock, which a busy machine stretches; a busy load client only makes latencies longer."""
    server = serve("trio")
    out = tmp_path / "result.json"
    runner = subprocess.Popen([*CONTEND, "load", "--target", f"{server.host}:{server.port}",
                               "--scenario", "ping", "--clients", "4", "--rate", "400",
                               "--duration", "3", "--json", str(out)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with server.raw() as client:
        wait_until(lambda: info_field(client, "total_commands_processed") > 100,
                   message="the load to be running")
        stalls = info_field(client, "loop_stalls")
        client.call("WORK", "10000")   # the event loop does nothing else meanwhile
        assert info_field(client, "loop_stalls") > stalls
        stall_ms = float(info_field(client, "longest_stall_ms"))
    assert runner.wait(60) == 0, runner.stderr.read()
    result = json.loads(out.read_text())
    assert stall_ms > 100
    # Each client's requests are due every 10 ms (400/s over 4 clients): the one due first
    # in the stall waits all but those 10 ms of it, and the half of the stall's requests due
    # in its first half (far more than 1% of 1200) wait at least half of it.
    assert result["latency_ms"]["max"] >= stall_ms - 10
    assert result["latency_ms"]["p99"] >= stall_ms * 0.5 - 10


def test_race_shows_lost_updates_without_the_lock_and_none_with_it(tmp_path):
    out = tmp_path / "race.json"
    done = contend("race", "--models", "threads", "--clients", "8", "--requests", "10",
                   "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {row["sync"]: row for row in json.loads(out.read_text())}
    assert rows["off"]["lost_updates"] > 0 and rows["off"]["holds"] is False
    assert rows["lock"]["lost_updates"] == 0 and rows["lock"]["money_delta"] == 0
    assert rows["lock"]["holds"] is True
    assert "lost updates" in done.stdout and "threads" in done.stdout


@pytest.mark.parametrize("drive", [loadgen.run_threads, loadgen.run_loop],
                         ids=["threads", "selectors"])
def test_a_worker_whose_sibling_never_comes_gives_up_at_the_start_line(server, monkeypatch,
                                                                       drive):
    """A worker process of the processes or selectors driver whose sibling was killed
    before the start line must not wait there for ever (an orphan did, for 90 minutes)."""
    monkeypatch.setattr(loadgen, "START_LINE_WAIT", 0.2)
    plan = Plan(server.host, server.port, SCENARIOS["ping"](1), 1, requests=1)
    start_line = multiprocessing.Barrier(2)   # this worker, and one that never comes
    with pytest.raises(threading.BrokenBarrierError):
        drive(plan, [0], [0, 0], start_line)
