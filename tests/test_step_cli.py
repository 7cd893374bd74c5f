"""`contend step`: the student as the scheduler, scripted through a pipe against every model.

Each script puts `wait` where the next line depends on a command having parked (or
answered): it waits for that state, 5 s at most, so a slow machine makes the test
slower, not flaky.
"""

from __future__ import annotations

import re
import selectors
import signal
import subprocess
import sys
import time

import pytest

from contend.client.step import LIST_LINE, client_names, shown
from contend.shared.resp import NULL_ARRAY, ReplyError
from tests.conftest import MODELS
from tests.servers import ROOT, free_port

STEP = [sys.executable, "-m", "contend.client.cli", "step"]
INTERRUPTED = 130


def step(server, script: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([*STEP, "--target", f"{server.host}:{server.port}", *flags],
                          input=script, cwd=ROOT, capture_output=True, text=True, timeout=60)


def after(output: str, line: str) -> str:
    """What the tool printed for one line of the script (its first occurrence)."""
    sections = re.split(r"^step> ", output, flags=re.MULTILINE)
    for section in sections[1:]:
        typed, _, shown_then = section.partition("\n")
        if typed == line:
            return shown_then
    raise AssertionError(f"no `{line}` in\n{output}")


def row(name: str, command: str, read: str, holds: str) -> str:
    """A parked command's row in the table, as a pattern."""
    return (rf"│\s+\d+ │ {name}\s+│ {re.escape(command)}\s+│ {re.escape(read)}\s+"
            rf"│ {re.escape(holds)}\s+│")


# -- no server --------------------------------------------------------------------------

def test_client_names_are_distinct_words_the_lines_do_not_use():
    assert client_names("a,B, c") == ["a", "b", "c"]
    for bad in ("a,a", "list", "admin", "1a", "a b"):
        with pytest.raises(Exception, match="each client once|the lines use|a letter"):
            client_names(bad)


def test_replies_read_as_redis_cli_shows_them():
    assert shown(6) == "(integer) 6"
    assert shown(b"6") == '"6"'
    assert shown(None) == shown(NULL_ARRAY) == "(nil)"
    assert shown("OK") == "OK"
    assert shown(ReplyError("DEADLOCK gave up")) == "(error) DEADLOCK gave up"
    assert shown([90, 110]) == "\n   1) (integer) 90\n   2) (integer) 110"
    assert shown([]) == "(empty array)"


def test_a_list_line_is_read_whole_even_with_quotes_in_the_command():
    found = LIST_LINE.match('id=7 client=3 command="set k "x y"" read=- holds=key:k')
    assert found.groups() == ("7", "3", 'set k "x y"', "-", "key:k")


def test_usage_errors_are_one_line_and_exit_2():
    for flags in (["--clients", "a,a"], ["--target", "nowhere"], ["--mode", "sometimes"],
                  ["--clients", "release"], ["--timeout", "0"]):
        done = subprocess.run([*STEP, *flags], input="", cwd=ROOT, capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 2, (flags, done.stderr)
        assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("contend step: ")


def test_an_unreachable_target_is_one_line_and_exit_3():
    done = subprocess.run([*STEP, "--target", f"127.0.0.1:{free_port()}"], input="a incr k\n",
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 3, done.stderr
    assert len(done.stderr.splitlines()) == 1 and "connection refused" in done.stderr
    assert "Traceback" not in done.stderr


# -- every model ------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_lost_update_performed_by_hand(serve, name):
    server = serve(name, "--race-window", "step", "--sync", "off")
    with server.raw() as admin:
        assert admin.call("SET", "k", "5") == "OK"
    done = step(server, "a incr k\nb incr k\nwait\nrelease a\nwait\nrelease b\nwait\nget k\n")
    assert done.returncode == 0, done.stdout + done.stderr
    table = after(done.stdout, "wait")
    assert re.search(row("a", "incr k", "5", "nothing"), table), table
    assert re.search(row("b", "incr k", "5", "nothing"), table), table
    assert "a: incr k -> (integer) 6" in after(done.stdout, "release a")
    assert "b: incr k -> (integer) 6" in after(done.stdout, "release b")
    assert 'admin: get k -> "6"' in after(done.stdout, "get k")   # two INCRs, one lost


@pytest.mark.parametrize("name", MODELS)
def test_under_lock_the_second_incr_cannot_reach_its_window(serve, name):
    server = serve(name, "--race-window", "step", "--sync", "lock")
    script = "a incr k\nwait\nb incr k\nwait 0.3\nrelease a\nwait\nrelease b\nwait\nget k\n"
    done = step(server, script)
    assert done.returncode == 0, done.stdout + done.stderr
    blocked = after(done.stdout, "wait 0.3")
    assert "parked: 1" in blocked and re.search(row("a", "incr k", "0", "keyspace"), blocked)
    assert "b: incr k is blocked, not parked" in blocked
    released = done.stdout[done.stdout.index("step> release a"):]
    assert "a: incr k -> (integer) 1" in released
    # Now b has the lock, and reads what a wrote.
    assert re.search(row("b", "incr k", "1", "keyspace"), after(released, "wait")), released
    assert "b: incr k -> (integer) 2" in after(done.stdout, "release b")
    assert 'admin: get k -> "2"' in after(done.stdout, "get k")


@pytest.mark.parametrize("name", MODELS)
def test_crossing_transfers_under_unordered_deadlock_on_demand(serve, name):
    server = serve(name, "--race-window", "step", "--sync", "unordered",
                   "--deadlock-timeout-ms", "300")
    with server.raw() as admin:   # single-key SETs: a multi-key command would park
        assert admin.call("SET", "x", "100") == "OK" and admin.call("SET", "y", "100") == "OK"
    done = step(server, "a bank.transfer x y 10\nb bank.transfer y x 10\nwait\n"
                        "release all\nwait\n")
    assert done.returncode == 0, done.stdout + done.stderr
    holding = after(done.stdout, "wait")
    assert re.search(row("a", "bank.transfer x y 10", "-", "key:x"), holding), holding
    assert re.search(row("b", "bank.transfer y x 10", "-", "key:y"), holding), holding
    assert re.search(r"^[ab]: bank\.transfer [xy] [xy] 10 -> \(error\) DEADLOCK gave up waiting "
                     r"for the lock on '[xy]' after 300 ms \(locking '[xy]' then '[xy]'\); "
                     r"nothing was changed$", done.stdout, re.MULTILINE), done.stdout


@pytest.mark.parametrize("name", MODELS)
def test_crossing_transfers_under_striped_take_the_sorted_order_and_one_waits(serve, name):
    server = serve(name, "--race-window", "step", "--sync", "striped")
    with server.raw() as admin:
        assert admin.call("SET", "x", "100") == "OK" and admin.call("SET", "y", "100") == "OK"
    # Each transfer parks twice, at its withdraw and at its deposit.
    done = step(server, "a bank.transfer x y 10\nwait\nb bank.transfer y x 10\nwait 0.3\n"
                        "release a\nwait a\nrelease a\nwait\nrelease b\nwait b\n"
                        "release b\nwait\nget x\nget y\n")
    assert done.returncode == 0, done.stdout + done.stderr
    # a holds both keys at its first window; b, wanting x first as well, cannot start.
    one = after(done.stdout, "wait 0.3")
    assert "parked: 1" in one and re.search(row("a", "bank.transfer x y 10", "100", "key:x,y"), one)
    assert "b: bank.transfer y x 10 is blocked, not parked" in one
    assert "DEADLOCK" not in done.stdout
    assert "a: bank.transfer x y 10 ->\n   1) (integer) 90\n   2) (integer) 110" in done.stdout
    assert "b: bank.transfer y x 10 ->\n   1) (integer) 100\n   2) (integer) 100" in done.stdout
    assert 'admin: get x -> "100"' in done.stdout and 'admin: get y -> "100"' in done.stdout


# -- what it sets, and how it ends ---------------------------------------------------------

def test_mode_step_turns_step_mode_on_and_puts_back_what_was_there(serve):
    server = serve("threads", "--sync", "off")
    done = step(server, "incr k\nrelease admin\nwait\n", "--mode", "step")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "race-window step" in done.stdout.splitlines()[0]
    # Typed bare, the admin's INCR parks too: it waits its turn, the table still shows.
    assert re.search(row("admin", "incr k", "0", "nothing"), after(done.stdout, "incr k"))
    assert "admin: incr k -> (integer) 1" in after(done.stdout, "release admin")
    assert done.stdout.rstrip().endswith("race-window timed again, as it was")
    with server.raw() as admin:
        assert admin.call("CONFIG", "GET", "race-window") == [b"race-window", b"timed"]


def test_without_mode_step_it_changes_nothing_and_says_so(serve):
    server = serve("threads")
    done = step(server, "a incr k\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "note: not in step mode" in done.stdout
    assert "a: incr k -> (integer) 1" in after(done.stdout, "a incr k")


def test_a_command_that_blocks_for_ever_never_blocks_the_tool(serve):
    server = serve("threads")
    done = step(server, "a blpop queue 0\nlist\nb rpush queue x\nwait a\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "a: blpop queue 0 is blocked, not parked" in after(done.stdout, "list")
    assert "a: blpop queue 0 ->\n   1) \"queue\"\n   2) \"x\"" in done.stdout


def test_a_client_whose_connection_ends_is_said_so_and_the_others_go_on(serve):
    server = serve("threads")
    # a's PING goes out after its QUIT, or finds the socket closed: either way, ended.
    done = step(server, "a quit\na ping\nwait a\nb ping\n")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "a: quit -> OK" in done.stdout
    assert re.search(r"^a: the connection ended \(.+\)", done.stdout, re.MULTILINE), done.stdout
    assert "b: ping -> PONG" in after(done.stdout, "b ping")


def read_until(process: subprocess.Popen, text: str, timeout: float = 10) -> str:
    """The process's stdout up to a line holding `text`, or fail after `timeout` seconds."""
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    seen, deadline = "", time.monotonic() + timeout
    while text not in seen:
        assert selector.select(deadline - time.monotonic()), f"no {text!r} in {seen!r}"
        line = process.stdout.readline()
        assert line, f"it ended before {text!r}: {seen!r}"
        seen += line
    return seen


def test_ctrl_c_is_one_line_exit_130_and_step_mode_is_put_back(serve):
    server = serve("threads", "--sync", "off")
    # A shell's background job ignores SIGINT, and Python then never turns it into
    # KeyboardInterrupt: the child hears Ctrl-C as a terminal would deliver it.
    process = subprocess.Popen([*STEP, "--target", f"{server.host}:{server.port}",
                                "--mode", "step"], cwd=ROOT, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        process.stdin.write("a incr k\nlist\n")
        process.stdin.flush()
        read_until(process, "step> list")   # it has switched and sent: it is reading lines
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == INTERRUPTED, stdout + stderr
    assert stderr.splitlines() == ["contend step: interrupted"]
    with server.raw() as admin:
        assert admin.call("CONFIG", "GET", "race-window") == [b"race-window", b"timed"]
