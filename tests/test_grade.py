"""`contend grade`: full marks for redis-server and every model, a racy toy server caught
losing updates, a hung or one-at-a-time server failed in bounded time, and the report
card itself (table and JSON) checked with no network at all."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager, suppress

import pytest
from rich.console import Console

from contend.client import grade_cases
from contend.client.grade import StageResult, grade, render, report
from contend.client.grade_cases import STAGES, Difference, Target, reply_end
from contend.client.servers import RunningServer
from tests.servers import BANNER, ROOT, free_port

# The CLI as this interpreter runs it: no activated venv, no PATH lookup.
GRADE = [sys.executable, "-m", "contend.client.cli", "grade"]
STAGE_NAMES = [stage.name for stage in STAGES]


def run_grade(host: str, port: int, json_path, *flags: str) -> tuple[subprocess.CompletedProcess,
                                                                    dict | None]:
    done = subprocess.run([*GRADE, "--target", f"{host}:{port}", "--json", str(json_path), *flags],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    card = json.loads(json_path.read_text()) if json_path.exists() else None
    return done, card


def assert_full_marks(done: subprocess.CompletedProcess, card: dict) -> None:
    failed = [stage for stage in card["stages"] if not stage["passed"]]
    assert not failed, json.dumps(failed, indent=2)
    assert done.returncode == 0, done.stderr
    assert [stage["name"] for stage in card["stages"]] == STAGE_NAMES
    assert card["passed"] and card["stages_passed"] == len(STAGES)
    assert "full marks" in done.stdout


# -- real servers: full marks ---------------------------------------------------------

def test_redis_server_gets_full_marks_and_is_left_as_it_was(redis_server, tmp_path):
    assert_full_marks(*run_grade(redis_server.host, redis_server.port, tmp_path / "card.json"))
    with redis_server.raw() as client:
        assert client.call("KEYS", "grade:*") == []   # the run's keys are deleted after it


def test_every_model_gets_full_marks_and_is_left_as_it_was(server, tmp_path):
    assert_full_marks(*run_grade(server.host, server.port, tmp_path / "card.json"))
    with server.raw() as client:
        assert client.call("KEYS", "grade:*") == []


# -- a student's first server: racy, and caught at it --------------------------------------

@pytest.fixture
def racy_server():
    process = subprocess.Popen([sys.executable, str(ROOT / "tests" / "racy_server.py")],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    banner = BANNER.search(process.stdout.readline())
    try:
        assert banner, "tests/racy_server.py printed no banner"
        yield RunningServer("racy", process, banner.group(1), int(banner.group(2)))
    finally:
        process.kill()
        process.wait()


def test_racy_server_passes_ping_and_fails_the_incr_stage_with_its_lost_updates(racy_server,
                                                                                tmp_path):
    """INCR's unguarded read-modify-write with a 1 ms window, 50 clients from one start
    line: losing updates is certain, not likely."""
    done, card = run_grade(racy_server.host, racy_server.port, tmp_path / "card.json")
    assert done.returncode == 1, done.stderr
    stages = {stage["name"]: stage for stage in card["stages"]}
    assert stages["ping"]["passed"] and stages["many-clients"]["passed"]
    assert stages["echo-set-get"]["passed"]   # binary-safe too: it reads bulk lengths
    incr = stages["incr-race"]
    assert not incr["passed"]
    assert incr["facts"]["expected"] == 10000
    lost = incr["facts"]["lost_updates"]
    assert lost == 10000 - incr["facts"]["got"] and lost > 0
    assert incr["detail"].startswith(f"lost {lost} of 10000 updates")
    assert str(lost) in done.stdout   # the table wraps the sentence; the JSON holds it whole
    # It never learnt BLPOP or MULTI: those stages say so, and still ran.
    assert not stages["blpop"]["passed"] and "does not know" in stages["blpop"]["detail"]
    assert not stages["transactions"]["passed"]
    assert "3 of 7 stages passed" in done.stdout


# -- bounded in time, whatever the server does ---------------------------------------------

def test_an_unreachable_target_exits_3_with_one_line(tmp_path):
    port = free_port()   # nobody listens there
    done, card = run_grade("127.0.0.1", port, tmp_path / "card.json")
    assert done.returncode == 3
    assert done.stderr.splitlines() == [
        f"contend grade: cannot connect to 127.0.0.1:{port}: "
        "connection refused (is the server running, on this port?)"]
    assert card is None and done.stdout == ""


def test_a_bad_target_is_a_usage_error(tmp_path):
    done = subprocess.run([*GRADE, "--target", "no-port-here"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "expected HOST:PORT" in done.stderr and "Traceback" not in done.stderr


def test_a_server_that_never_answers_fails_every_stage_in_bounded_time():
    """The kernel accepts its connections (a listening socket's backlog), nobody reads them:
    every stage must give up on its own timeout, not hang."""
    # A backlog with room for every connection the stages open (two stages open 50 each).
    with socket.create_server(("127.0.0.1", 0), backlog=1024) as silent:
        began = time.monotonic()
        results = grade(Target("127.0.0.1", silent.getsockname()[1], wait=0.1))
        took = time.monotonic() - began
    assert [result.passed for result in results] == [False] * len(STAGES)
    assert all("no reply within 0.1 s" in result.detail for result in results), \
        [result.detail for result in results]
    assert took < 10   # about a second: seven stages, each giving up after 0.1 or 0.2 s


@contextmanager
def toy_server(answer):
    """A loopback server in a thread, serving one connection at a time until it closes:
    `answer(data)` is what it sends back for each read."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:   # closed: the test is over
                return
            # A client that hangs up on replies it did not read resets the connection.
            with connection, suppress(ConnectionError):
                while data := connection.recv(65536):
                    connection.sendall(answer(data))

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield Target("127.0.0.1", listener.getsockname()[1], wait=0.3)
    finally:
        listener.shutdown(socket.SHUT_RDWR)   # wakes the accept() the thread is blocked in
        listener.close()


def test_a_server_that_serves_one_client_at_a_time_fails_many_clients_at_client_2():
    pongs = lambda data: b"+PONG\r\n" * data.count(b"PING")   # noqa: E731
    with toy_server(pongs) as target, pytest.raises(Difference) as found:
        grade_cases.many_clients(target)
    assert found.value.summary == (
        "PING from client 2 of 50 (all 50 connected at once): no reply within 0.3 s: "
        "client 1 got its PONG; is the server serving one connection at a time?")
    assert found.value.got == "nothing within 0.3 s"


def test_a_bulk_string_pong_is_told_apart_from_the_status_pong():
    with toy_server(lambda data: b"$4\r\nPONG\r\n") as target, pytest.raises(Difference) as found:
        grade_cases.ping(target)
    assert found.value.sent == b"PING\r\n"
    assert found.value.expected == r"b'+PONG\r\n', a status reply"
    assert found.value.got == r"b'$4\r\nPONG\r\n', a bulk string"
    assert "The text is right, the type is not" in found.value.summary


def test_a_reply_ending_in_a_bare_newline_is_called_incomplete():
    with toy_server(lambda data: b"+PONG\n") as target, pytest.raises(Difference) as found:
        grade_cases.ping(target)
    assert "an incomplete reply (a RESP line ends with \\r\\n, not \\n alone)" \
        in found.value.summary
    assert found.value.got == r"b'+PONG\n', then nothing within 0.3 s"


# -- framing and the report card, no network -------------------------------------------

@pytest.mark.parametrize("data, end", [
    (b"+PONG\r\n", 7),
    (b"+PONG", None),
    (b"$5\r\nhel", None),
    (b"$-1\r\n:1\r\n", 5),
    (b"*2\r\n$1\r\nk\r\n$3\r\njob\r\n", 20),
    (b"*2\r\n$1\r\nk\r\n", None),
    (b"*-1\r\n", 5),
    (b"$4\r\na\r\nb\r\n", 10),   # binary-safe: the length counts, not the \r\n inside
])
def test_reply_end_frames_whole_replies(data, end):
    assert reply_end(data) == end


@pytest.mark.parametrize("data, why", [
    (b"PONG\r\n", "starts with + - : $ or *"),
    (b"$5\r\nhi\r\nthere\r\n", "not followed by \\r\\n"),
    (b"$x\r\n", "must be followed by a number"),
    (b"*-2\r\n", "the only negative length is -1"),
])
def test_reply_end_says_why_bytes_are_not_a_reply(data, why):
    with pytest.raises(ValueError, match=re.escape(why)):
        reply_end(data)


RESULTS = [
    StageResult(1, "ping", "PING", True, "inline PING and multibulk PING both answered +PONG",
                0.0012),
    StageResult(4, "incr-race", "INCR race", False,
                "lost 42 of 10000 updates: 50 clients x 200 INCRs on one key", 0.5,
                sent=r"b'*2\r\n$3\r\nGET\r\n$1\r\nk\r\n'",
                expected=r"b'$5\r\n10000\r\n', a bulk string",
                got=r"b'$4\r\n9958\r\n', a bulk string",
                facts={"expected": 10000, "got": 9958, "lost_updates": 42}),
]


def test_report_card_shows_each_stage_its_result_and_first_difference():
    console = Console(record=True, width=200)
    render("127.0.0.1:7070", RESULTS, console)
    text = console.export_text()
    assert "contend grade: 127.0.0.1:7070" in text
    assert "1. PING" in text and "passed" in text
    assert "4. INCR race" in text and "FAILED" in text
    assert "lost 42 of 10000 updates" in text
    # bytes shown as sent, brackets and all, never taken for rich markup
    assert r"sent:     b'*2\r\n$3\r\nGET\r\n$1\r\nk\r\n'" in text
    assert r"expected: b'$5\r\n10000\r\n', a bulk string" in text
    assert r"got:      b'$4\r\n9958\r\n', a bulk string" in text
    assert "1 of 2 stages passed: not yet" in text


def test_json_holds_the_same_results():
    card = report("127.0.0.1:7070", RESULTS)
    assert card["target"] == "127.0.0.1:7070"
    assert card["passed"] is False and card["stages_passed"] == 1
    incr = card["stages"][1]
    assert incr["name"] == "incr-race" and incr["passed"] is False
    assert incr["facts"]["lost_updates"] == 42
    assert incr["got"] == RESULTS[1].got and incr["seconds"] == 0.5
    assert json.loads(json.dumps(card)) == card
