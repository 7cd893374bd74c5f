"""`contend top`: a live dashboard of one or more servers, side by side, from INFO.

    contend top --target 127.0.0.1:7070 --target 127.0.0.1:7071 --interval 0.5

Every `--interval` seconds each server is asked `INFO everything` on one kept
connection; ops/s is the change in total_commands_processed between two answers.
A server that does not answer shows "down" and is asked again next time. A field
a model does not report (loop_stalls on threads, say) shows "-".

Stops on `q` (when stdin is a terminal), Ctrl-C, SIGTERM, `--duration S` or
`--iterations N`, with exit status 0 and the terminal as it was. `--json` prints
one JSON line per refresh instead of the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import sys
import termios
import threading
import time
import tty
from dataclasses import dataclass

from rich.console import Console
from rich.live import Live
from rich.table import Table

from contend.client.connection import Connection, parse_info
from contend.client.load import parse_target
from contend.shared.resp import ReplyError

DEFAULT_TARGET = ("127.0.0.1", 7070)

# The table's rows, top to bottom; status, ops/s and pool in use are worked out, the
# others are INFO fields shown as they are (FIELD_ROWS: row label -> INFO field).
ROW_LABELS = ["status", "ops/s", "clients", "blocked", "pool in use", "pool waiting",
              "barriers", "deadlocks", "loop stalls", "gil", "model", "sync"]
FIELD_ROWS = {"clients": "connected_clients", "blocked": "blocked_clients",
              "pool waiting": "pool_waiting", "barriers": "barriers", "deadlocks": "deadlocks",
              "loop stalls": "loop_stalls", "gil": "gil", "model": "model", "sync": "sync"}

def add_top_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", type=parse_target, action="append", metavar="HOST:PORT",
                        help="a server to watch; repeat for several side by side "
                             "(default: 127.0.0.1:7070)")
    parser.add_argument("--password", default="",
                        help="AUTH with this password first (empty: no AUTH)")
    parser.add_argument("--interval", type=float, default=1.0,
                        help="seconds between refreshes (default: 1)")
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=float, help="stop after this many seconds")
    stop.add_argument("--iterations", type=int, help="stop after this many refreshes")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON line per refresh instead of the live table")


@dataclass
class Snapshot:
    """One server's INFO at one moment, or why there was none."""
    fields: dict[str, str] | None   # None: the server did not answer
    taken_at: float                 # time.monotonic() when the answer came
    problem: str = ""               # why it is down, in words

    @property
    def up(self) -> bool:
        return self.fields is not None


@dataclass
class Watched:
    """One server's column: where it is, its kept connection, its last two snapshots."""
    host: str
    port: int
    connection: Connection | None = None   # kept open: reconnecting each time would count
    previous: Snapshot | None = None       # connections and AUTH in the figures we show
    current: Snapshot | None = None

    @property
    def label(self) -> str:
        return f"{self.host}:{self.port}"


def ask_info(watched: Watched, password: str, timeout: float) -> Snapshot:
    """INFO from one server, connecting first when there is no connection; never raises."""
    try:
        if watched.connection is None:
            watched.connection = Connection(watched.host, watched.port, timeout)
            if password:
                reply = watched.connection.call("AUTH", password)
                if isinstance(reply, ReplyError):
                    raise ConnectionError(f"AUTH refused: {reply.text}")
        reply = watched.connection.call("INFO", "everything")
        if isinstance(reply, ReplyError):
            raise ConnectionError(f"INFO refused: {reply.text}")
        return Snapshot(parse_info(reply.decode()), time.monotonic())
    except (OSError, ConnectionError) as problem:
        if watched.connection is not None:
            watched.connection.close()
            watched.connection = None   # the next refresh connects again
        reason = getattr(problem, "strerror", None) or str(problem) or type(problem).__name__
        return Snapshot(None, time.monotonic(), reason)


def ops_per_second(previous: Snapshot | None, current: Snapshot) -> float | None:
    """Commands per second between two snapshots, not counting our own INFO; None when
    there is no earlier answer to compare, or the counter went back (a restarted server)."""
    if previous is None or not previous.up or not current.up:
        return None
    try:
        before = int(previous.fields["total_commands_processed"])
        after = int(current.fields["total_commands_processed"])
    except (KeyError, ValueError):
        return None
    elapsed = current.taken_at - previous.taken_at
    # The INFO that took `current` is itself one of the commands counted.
    done = after - before - 1
    if elapsed <= 0 or done < 0:
        return None
    return done / elapsed


def column(previous: Snapshot | None, current: Snapshot | None) -> dict[str, str]:
    """One server's cells, by row label: '-' for what its INFO does not say."""
    if current is None:
        return {label: "-" for label in ROW_LABELS} | {"status": "waiting"}
    if not current.up:
        reason = f"down ({current.problem})" if current.problem else "down"
        return {label: "-" for label in ROW_LABELS} | {"status": reason}
    fields = current.fields
    rate = ops_per_second(previous, current)
    cells = {"status": "up", "ops/s": "-" if rate is None else f"{rate:,.1f}"}
    for label, name in FIELD_ROWS.items():
        cells[label] = fields.get(name, "-")
    in_use, size = fields.get("pool_in_use"), fields.get("pool_size")
    cells["pool in use"] = "-" if in_use is None else f"{in_use}/{size}" if size else in_use
    return cells


def render(servers: list[Watched]) -> Table:
    """The dashboard: a row per figure, a column per server."""
    table = Table(title="contend top  (q or Ctrl-C to quit)", title_justify="left")
    table.add_column("")
    columns = []
    for watched in servers:
        table.add_column(watched.label, justify="right")
        columns.append(column(watched.previous, watched.current))
    for label in ROW_LABELS:
        table.add_row(label, *(cells[label] for cells in columns))
    return table


def as_json(servers: list[Watched]) -> str:
    """The same figures as the table, one JSON object: {"host:port": {row: cell}}."""
    return json.dumps({watched.label: column(watched.previous, watched.current)
                       for watched in servers})


def refresh(servers: list[Watched], password: str, timeout: float) -> None:
    for watched in servers:
        watched.previous, watched.current = watched.current, ask_info(watched, password, timeout)


def watch_keys(stop: threading.Event) -> None:
    """Set `stop` when `q` is typed (stdin in cbreak mode); the select lets it see `stop`."""
    fd = sys.stdin.fileno()
    while not stop.is_set():
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            key = os.read(fd, 1)
            if key in (b"q", b"Q", b""):   # b"": stdin closed, nobody left to type q
                stop.set()


@contextlib.contextmanager
def keys_read_one_at_a_time(stop: threading.Event):
    """When stdin is a terminal: cbreak mode (a key arrives without Enter; Ctrl-C still
    signals) and a thread watching for `q`; the terminal's mode is restored however we leave."""
    if not sys.stdin.isatty():
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    watcher = threading.Thread(target=watch_keys, args=(stop,), name="top-keys", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event):
    """Ctrl-C and SIGTERM end the loop after the refresh in progress, not mid-draw:
    a KeyboardInterrupt raised inside rich's Live could leave the cursor hidden."""
    def handler(signum, frame):
        stop.set()
    saved = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, previous in saved.items():
            signal.signal(signum, previous)


def main(options) -> int:
    targets = options.target or [DEFAULT_TARGET]
    servers = [Watched(host, port) for host, port in targets]
    interval = max(options.interval, 0.05)
    # A down server must not hold up the others' refresh for long.
    timeout = min(max(interval, 0.2), 2.0)
    deadline = None if options.duration is None else time.monotonic() + options.duration
    stop = threading.Event()
    console = Console()
    refreshes = 0

    def finished() -> bool:
        return (stop.is_set()
                or (options.iterations is not None and refreshes >= options.iterations)
                or (deadline is not None and time.monotonic() >= deadline))

    def pause() -> None:
        wait = interval if deadline is None else min(interval, deadline - time.monotonic())
        stop.wait(max(wait, 0))

    def run(show) -> None:
        nonlocal refreshes
        while not finished():
            refresh(servers, options.password, timeout)
            refreshes += 1
            show()
            if not finished():
                pause()

    with stop_on_signals(stop), keys_read_one_at_a_time(stop):
        try:
            if options.json:
                run(lambda: print(as_json(servers), flush=True))
            else:
                with Live(render(servers), console=console, auto_refresh=False) as live:
                    run(lambda: live.update(render(servers), refresh=True))
        finally:
            for watched in servers:
                if watched.connection is not None:
                    watched.connection.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="contend top",
                                     description="a live dashboard of one or more servers")
    add_top_arguments(parser)
    return parser


if __name__ == "__main__":   # until `contend top` is wired into client/cli.py
    sys.exit(main(build_parser().parse_args()))
