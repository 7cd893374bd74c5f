"""`contend top`: the table from INFO snapshots (no network), then the live dashboard in a
real terminal (tmux) against two servers, quit with `q`."""

from __future__ import annotations

import io
import json
import shlex
import shutil
import signal
import subprocess
import threading
import time
import uuid

import pytest
from rich.console import Console

from contend.client.connection import parse_info
from contend.client.top import Snapshot, Watched, column, main, render
from tests.helpers import wait_until
from tests.servers import CONTEND, ROOT, free_port

THREADS_INFO = """# Clients\r\nconnected_clients:3\r\nblocked_clients:1\r\n
# Stats\r\ntotal_commands_processed:{total}\r\n
# Playground\r\nmodel:threads\r\ngil:on\r\nsync:lock\r\ndeadlocks:2\r\npool_size:4\r\n
pool_in_use:3\r\npool_waiting:5\r\nbarriers:1\r\n"""


def watched(total_before: int, total_after: int, seconds: float) -> Watched:
    server = Watched("127.0.0.1", 7070)
    server.previous = Snapshot(parse_info(THREADS_INFO.format(total=total_before)), 100.0)
    server.current = Snapshot(parse_info(THREADS_INFO.format(total=total_after)), 100.0 + seconds)
    return server


def rendered(servers: list[Watched]) -> str:
    console = Console(file=io.StringIO(), width=160, color_system=None)
    console.print(render(servers))
    return console.file.getvalue()


def test_ops_per_second_is_the_counter_delta_less_our_own_info():
    server = watched(1000, 1201, 2.0)
    cells = column(server.previous, server.current)
    assert cells["ops/s"] == "100.0"   # 201 counted, one of them our INFO, over 2 s


def test_table_shows_each_field_and_dash_for_a_field_the_model_does_not_report():
    server = watched(10, 11, 1.0)
    cells = column(server.previous, server.current)
    assert cells == {"status": "up", "ops/s": "0.0", "clients": "3", "blocked": "1",
                     "pool in use": "3/4", "pool waiting": "5", "barriers": "1",
                     "deadlocks": "2", "loop stalls": "-", "gil": "on", "model": "threads",
                     "sync": "lock"}


def test_first_snapshot_and_a_restarted_server_have_no_rate():
    first = watched(10, 20, 1.0)
    first.previous = None
    restarted = watched(500, 3, 1.0)
    assert column(first.previous, first.current)["ops/s"] == "-"
    assert column(restarted.previous, restarted.current)["ops/s"] == "-"


def test_unreachable_server_shows_down_beside_one_that_is_up():
    up = watched(0, 51, 0.5)
    down = Watched("127.0.0.1", 1)
    down.previous = up.current
    down.current = Snapshot(None, 101.0, "Connection refused")
    text = rendered([up, down])
    assert "127.0.0.1:7070" in text and "127.0.0.1:1" in text
    assert "down (Connection refused)" in text
    ops_line = next(line for line in text.splitlines() if "ops/s" in line)
    assert "100.0" in ops_line and "-" in ops_line


def test_down_server_is_retried_and_never_a_traceback(capsys):
    options = type("Options", (), {"target": [("127.0.0.1", 1)], "password": "",
                                   "interval": 0.05, "duration": None, "iterations": 3,
                                   "json": True})
    assert main(options) == 0
    refreshes = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(refreshes) == 3
    assert all(r["127.0.0.1:1"]["status"].startswith("down") for r in refreshes)


# -- in a real terminal ----------------------------------------------------------------


def cell_numbers(pane: str, label: str) -> list[float]:
    """The numbers in one row of the table as the terminal shows it."""
    for line in pane.splitlines():
        cells = [cell.strip() for cell in line.split("│")]
        if len(cells) > 2 and cells[1] == label:
            return [float(cell.replace(",", "")) for cell in cells[2:]
                    if cell.replace(",", "").replace(".", "").isdigit()]
    return []


@pytest.mark.slow
@pytest.mark.parametrize("quit_key", ["q", "C-c"])
def test_dashboard_in_a_terminal_shows_both_servers_and_quits_cleanly(serve, quit_key):
    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed (python3 -m tests installs it)")
    servers = [serve("threads"), serve("selectors")]
    socket_name = f"contend-top-{uuid.uuid4().hex[:8]}"   # our own tmux server, not the user's
    tmux = ["tmux", "-L", socket_name]
    command = [*CONTEND, "top", "--interval", "0.2",
               "--duration", "60"]
    for server in servers:
        command += ["--target", f"{server.host}:{server.port}"]
    # The terminal's settings before and after: cbreak mode must not outlive the dashboard.
    shell = (f"cd {shlex.quote(str(ROOT))} && before=$(stty -g) && {shlex.join(command)}; "
             'echo EXIT=$?; [ "$(stty -g)" = "$before" ] && echo TERMINAL=restored; sleep 60')
    subprocess.run([*tmux, "new-session", "-d", "-x", "160", "-y", "40", "-s", "top",
                    "bash", "-c", shell], check=True)
    busy = threading.Event()

    def keep_busy():
        while not busy.is_set():
            for server in servers:
                with server.raw() as client:
                    for _ in range(20):
                        client.call("PING")
            time.sleep(0.05)

    sender = threading.Thread(target=keep_busy, daemon=True)
    sender.start()

    def pane() -> str:
        return subprocess.run([*tmux, "capture-pane", "-p", "-t", "top"], check=True,
                              capture_output=True, text=True).stdout

    try:
        wait_until(lambda: ("threads" in pane() and "selectors" in pane()
                            and len(ops := cell_numbers(pane(), "ops/s")) == 2
                            and all(ops)),
                   timeout=30, message="both servers' model names and nonzero ops/s")
        busy.set()
        sender.join()
        subprocess.run([*tmux, "send-keys", "-t", "top", quit_key], check=True)
        shown = wait_until(lambda: "TERMINAL=" in (text := pane()) and text, timeout=15,
                           message=f"contend top to exit after {quit_key}")
        assert "EXIT=0" in shown and "TERMINAL=restored" in shown
        assert "Traceback" not in shown
    finally:
        busy.set()
        subprocess.run([*tmux, "kill-server"], capture_output=True)


@pytest.mark.slow
def test_without_a_terminal_sigterm_stops_it_with_status_zero():
    top = subprocess.Popen([*CONTEND, "top", "--json",
                            "--interval", "0.05", "--target", f"127.0.0.1:{free_port()}"],
                           cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        assert "down" in top.stdout.readline()   # running, and a dead server is no traceback
        top.send_signal(signal.SIGTERM)
        assert top.wait(timeout=10) == 0
        assert "Traceback" not in top.stderr.read()
    finally:
        if top.poll() is None:
            top.kill()
            top.wait()
