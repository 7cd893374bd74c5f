"""`contend step`: you are the scheduler.

    contend step --target 127.0.0.1:7070             # clients a and b, and a prompt
    printf 'a incr k\\nb incr k\\nwait\\nrelease a\\nrelease b\\nget k\\n' \\
        | contend step --target 127.0.0.1:7070         # the same moves, from a pipe

With the server in step mode (`contend serve --race-window step`, or `CONFIG SET
race-window step`), a command that reaches its race window parks there, holding
whatever locks it holds, until someone releases it (shared/stepping.py). This
tool gives that someone a desk: one connection per named client, lines that say
who sends what and who goes on next, and after every line the parked commands and
the replies that came back. So a student performs a lost update on purpose, or a
deadlock, one step at a time.

The lines it reads, one a line, from a prompt or from a pipe:

    a incr k              client a sends INCR k and does not wait: it may park
    b bank.transfer y x 10
    release 3             DEBUG.STEP RELEASE 3: parked command 3 goes on
    release a             whatever client a has parked goes on
    release all           everything parked goes on
    list                  (or an empty line) the parked commands again
    wait [NAME...] [S]    until what those clients (or all) sent is answered or parked,
                          5 s at most (or S): a DEADLOCK takes deadlock-timeout-ms to come
    get k                 any other line is a command for the admin connection, which
    admin wait 0 0        waits for its reply (`admin ...` reaches a command whose
                          name is one of these words)
    help, quit            (end of input quits too)

After a line it waits for what the line set going (the client that sent, the
commands released) to be answered or to park, 0.2 s at most: a command blocked on
a lock does neither, and a bystander never holds a line up. A script that needs a
state which takes longer (a DEADLOCK, a slow machine) says `wait`.

It changes nothing on the server by itself: with the server not in step mode it
says so, and `config set race-window step` is a line like any other. `--mode step`
switches step mode on first and puts back what was there on exit. On quit it
closes its connections; the server gives up a command still parked there, without
its write.

Four connections, not three: the table and the releases go over one of their own
(`control`), so an admin command that parks (`incr k` typed bare) never hides the
table that would let it go.

Exit status: 0 after quit or end of input, 2 a usage error (and `--mode step`
against a server with no step mode), 3 the server cannot be reached or goes away,
130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import selectors
import shlex
import sys
import time
from collections import deque
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from contend.client.connection import Connection, parse_info
from contend.client.load import parse_target
from contend.shared.resp import NEED_MORE, NULL_ARRAY, ReplyError
from contend.shared.stepping import describe

CANNOT_CONNECT, USAGE = 3, 2
SETTLE = 0.2          # seconds a line waits for what it set going to park or answer
POLL = 0.02           # between two DEBUG.STEP LISTs while it waits
WAIT_DEFAULT, WAIT_MAX = 5.0, 60.0
# Words a line starts with that are not a client's name.
KEYWORDS = {"admin", "release", "list", "wait", "help", "quit", "exit"}
NAME = re.compile(r"[a-z][a-z0-9_-]*")
LIST_LINE = re.compile(r'^id=(\d+) client=(\d+) command="(.*)" read=(.*) holds=(\S*)$')
HELP = """\
  NAME COMMAND...       that client sends it, without waiting (it may park)
  release ID|NAME|all   let a parked command go on (DEBUG.STEP RELEASE)
  list                  the parked commands (an empty line too)
  wait [NAME...] [S]    until what they (or all) sent is answered or parked (5 s at most)
  COMMAND...            the admin connection sends it and waits for its reply
  admin COMMAND...      the same, for a command named like one of these words
  quit                  (end of input too)"""


def client_names(text: str) -> list[str]:
    names = [name.strip().lower() for name in text.split(",")]
    for name in names:
        if not NAME.fullmatch(name):
            raise argparse.ArgumentTypeError(
                f"{name!r}: a client's name is a letter, then letters, digits, - or _")
        if name in KEYWORDS:
            raise argparse.ArgumentTypeError(f"{name!r} is a word the lines use: "
                                             f"name clients otherwise")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r}: each client once")
    return names


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a number of seconds") from None
    if not 0 < value <= 60:
        raise argparse.ArgumentTypeError(f"{text!r}: more than 0, at most 60 seconds")
    return value


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", type=parse_target, default=("127.0.0.1", 7070),
                        metavar="HOST:PORT", help="the server (default: 127.0.0.1:7070)")
    parser.add_argument("--clients", type=client_names, default=["a", "b"], metavar="A,B,...",
                        help="the clients' names, one connection each (default: a,b)")
    parser.add_argument("--mode", choices=["step"],
                        help="step: CONFIG SET race-window step first, and put back what was "
                             "there on exit (default: change nothing)")
    parser.add_argument("--password", default="",
                        help="AUTH with this password first (empty: no AUTH)")
    parser.add_argument("--timeout", type=seconds, default=2.0,
                        help="seconds to wait for a connection, and for the admin's reply "
                             "(default: 2)")


class ServerGone(Exception):
    """The control connection failed: without it the tool can show nothing."""


@dataclass
class Seat:
    """A named client's connection, and what it sent that has no reply yet, oldest first:
    RESP answers in order, so the next reply belongs to the first of them."""
    name: str
    connection: Connection
    client_id: int | None             # CLIENT ID: how DEBUG.STEP LIST names it
    pending: deque[str] = field(default_factory=deque)
    open: bool = True


@dataclass(frozen=True)
class Parked:
    """One line of DEBUG.STEP LIST."""
    id: int
    client: int
    command: str
    read: str
    holds: str


@dataclass(frozen=True)
class News:
    """What to show after the line: a reply that came back to a seat's command, or,
    with no seat, a sentence of the tool's own (a release's answer, a closed connection)."""
    seat: str
    command: str
    reply: object


def shown(reply) -> str:
    """A reply as redis-cli shows it on a terminal."""
    if isinstance(reply, ReplyError):
        return f"(error) {reply.text}"
    if reply is None or reply is NULL_ARRAY:
        return "(nil)"
    if isinstance(reply, bool):
        return f"(boolean) {reply}"
    if isinstance(reply, int):
        return f"(integer) {reply}"
    if isinstance(reply, bytes):
        text = reply.decode("utf-8", "replace")
        if "\n" in text:
            return "\n" + "\n".join("   " + line for line in text.rstrip("\n").splitlines())
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(reply, list):
        if not reply:
            return "(empty array)"
        return "\n" + "\n".join(f"   {n}) {shown(item).strip()}" for n, item in enumerate(reply, 1))
    return str(reply)


def problem_in_words(problem: BaseException, timeout: float) -> str:
    if isinstance(problem, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(problem, ConnectionRefusedError):
        return "connection refused (is the server running, on this port?)"
    return getattr(problem, "strerror", None) or str(problem) or type(problem).__name__


def open_connection(host: str, port: int, password: str, timeout: float) -> Connection:
    connection = Connection(host, port, timeout)
    if password:
        reply = connection.call("AUTH", password)
        if isinstance(reply, ReplyError):
            connection.close()
            raise ConnectionError(f"AUTH refused: {reply.text}")
    return connection


class Scheduler:
    """The student's desk: the named clients' seats, the admin's, and the control
    connection that lists and releases; what came back is collected without ever
    blocking, so no line can hang the tool."""

    def __init__(self, host: str, port: int, names: list[str], password: str, timeout: float,
                 console: Console):
        self.host, self.port, self.timeout, self.console = host, port, timeout, console
        self.selector = selectors.DefaultSelector()
        self.seats: dict[str, Seat] = {}
        self.control: Connection | None = None
        self.news: list[News] = []
        try:
            for name in [*names, "admin"]:
                connection = open_connection(host, port, password, timeout)
                reply = connection.call("CLIENT", "ID")
                seat = Seat(name, connection, reply if isinstance(reply, int) else None)
                self.seats[name] = seat
                self.selector.register(connection.sock, selectors.EVENT_READ, seat)
            self.control = open_connection(host, port, password, timeout)
        except BaseException:
            self.close()
            raise

    @property
    def admin(self) -> Seat:
        return self.seats["admin"]

    def close(self) -> None:
        for seat in self.seats.values():
            seat.connection.close()
        if self.control is not None:
            self.control.close()
        self.selector.close()

    # -- the control connection: short calls that never park ------------------------

    def ask(self, *argv):
        """One command on the control connection, its reply within the timeout."""
        try:
            return self.control.call(*argv)
        except (OSError, ConnectionError) as problem:
            raise ServerGone(problem_in_words(problem, self.timeout)) from None

    def playground(self) -> dict[str, str]:
        reply = self.ask("INFO", "playground")
        return parse_info(reply.decode()) if isinstance(reply, bytes) else {}

    def parked(self) -> list[Parked]:
        reply = self.ask("DEBUG.STEP", "LIST")
        if not isinstance(reply, bytes):
            return []
        rows = []
        for line in reply.decode("utf-8", "replace").splitlines():
            found = LIST_LINE.match(line)
            if found:
                step_id, client, command, read, holds = found.groups()
                rows.append(Parked(int(step_id), int(client), command, read, holds))
        return rows

    def name_of(self, client: int) -> str:
        for seat in self.seats.values():
            if seat.client_id == client:
                return seat.name
        return f"#{client}"   # a connection that is not one of ours

    # -- the seats: send without waiting, collect what came ------------------------

    def send(self, seat: Seat, words: list[str]) -> list[Seat]:
        """Send without waiting; the seat, to wait for, once the command is on its way."""
        if not seat.open:
            self.say(f"{seat.name}: its connection is closed")
            return []
        try:
            seat.connection.send_command(*words)
        except OSError as problem:
            self.hang_up(seat, problem_in_words(problem, self.timeout))
            return []
        seat.pending.append(describe([word.encode() for word in words]))
        return [seat]

    def collect(self, timeout: float) -> None:
        """Every reply that arrives within `timeout` seconds (0: only those already here)."""
        for key, _ in self.selector.select(max(timeout, 0)):
            seat: Seat = key.data
            try:
                seat.connection.parser.feed(seat.connection.receive())
            except (OSError, ConnectionError) as problem:
                self.hang_up(seat, problem_in_words(problem, self.timeout))
                continue
            while (reply := seat.connection.parser.next_reply()) is not NEED_MORE:
                command = seat.pending.popleft() if seat.pending else "?"
                self.news.append(News(seat.name, command, reply))

    def hang_up(self, seat: Seat, why: str) -> None:
        seat.open = False
        self.selector.unregister(seat.connection.sock)
        seat.connection.close()
        unanswered = f", with no reply to {', '.join(seat.pending)}" if seat.pending else ""
        self.say(f"{seat.name}: the connection ended ({why}){unanswered}")
        seat.pending.clear()

    def settle(self, seats: list[Seat], bound: float) -> list[Parked]:
        """Wait until each of `seats` is answered or parked, `bound` seconds at most,
        collecting replies meanwhile; the parked commands as they are then. A command
        blocked on a lock is neither, so a line that leaves one waits the whole bound."""
        deadline = time.monotonic() + bound
        while True:
            self.collect(min(POLL, deadline - time.monotonic()))
            rows = self.parked()
            parked_clients = {row.client for row in rows}
            if all(seat.client_id in parked_clients for seat in seats if seat.pending):
                return rows
            if time.monotonic() >= deadline:
                return rows

    # -- one line -------------------------------------------------------------------

    def say(self, text: str) -> None:
        self.news.append(News("", "", text))

    def do(self, line: str) -> bool:
        """Carry out one line and show what it led to; False when it says quit."""
        if line.lstrip().startswith("#"):
            return True
        try:
            words = shlex.split(line)
        except ValueError as problem:
            self.say(f"cannot read that line: {problem}")
            words = ["list"]
        first = words[0].lower() if words else "list"
        if first in ("quit", "exit"):
            return False
        if first == "help":
            self.console.print(HELP)
            return True
        # What the line set going, and so what it waits for: answered or parked. A
        # bystander blocked on a lock would make every line wait its whole bound.
        focus, bound = [], SETTLE
        if first == "release":
            focus = self.release(words[1:])
        elif first == "wait":
            focus, bound = self.wait_for(words[1:])
        elif first in self.seats and first != "admin":
            if len(words) < 2:
                self.say(f"{first}: send what? e.g. `{first} incr k`")
            else:
                focus = self.send(self.seats[first], words[1:])
        elif first != "list":
            command = words[1:] if first == "admin" else words
            if command:
                # The admin waits for its own reply, as redis-cli would; a command of
                # its that parks is answered later, like a client's.
                focus, bound = self.send(self.admin, command), self.timeout
            else:
                self.say("admin: send what? e.g. `admin get k`")
        self.show(self.settle(focus, bound))
        return True

    def wait_for(self, words: list[str]) -> tuple[list[Seat], float]:
        """`wait [NAME...] [SECONDS]`: those clients (every one when none is named)."""
        names = [word.lower() for word in words if word.lower() in self.seats]
        numbers = [word for word in words if word.lower() not in self.seats]
        bound = WAIT_DEFAULT
        if numbers:
            try:
                bound = min(max(float(numbers[0]), 0.0), WAIT_MAX)
            except ValueError:
                self.say(f"wait: {numbers[0]!r} is neither a client nor a number of seconds")
                return [], 0.0
        return [self.seats[name] for name in names] or list(self.seats.values()), bound

    def release(self, words: list[str]) -> list[Seat]:
        """Let parked commands go on; the seats whose commands they were."""
        if len(words) != 1:
            self.say("release what? `release 3`, `release a` or `release all`")
            return []
        which = words[0].lower()
        rows = self.parked()
        if which == "all":
            reply = self.ask("DEBUG.STEP", "RELEASE", "ALL")
            self.say(f"release all: {reply} released" if isinstance(reply, int)
                     else f"release all: {shown(reply)}")
        elif which.isdigit():
            self.say(f"release {which}: {shown(self.ask('DEBUG.STEP', 'RELEASE', which))}")
            rows = [row for row in rows if row.id == int(which)]
        elif which in self.seats:
            rows = [row for row in rows if row.client == self.seats[which].client_id]
            if not rows:
                self.say(f"release {which}: {which} has nothing parked")
            for row in rows:
                self.say(f"release {which} (id {row.id}): "
                         f"{shown(self.ask('DEBUG.STEP', 'RELEASE', str(row.id)))}")
        else:
            self.say(f"release {which}: no client of that name, nor an id")
            rows = []
        released = {row.client for row in rows}
        return [seat for seat in self.seats.values() if seat.client_id in released]

    # -- what a line led to ---------------------------------------------------------

    def show(self, rows: list[Parked]) -> None:
        console = self.console
        for news in self.news:
            if not news.seat:
                console.print(news.reply)
            else:
                reply = shown(news.reply)
                arrow = "->" if reply.startswith("\n") else "-> "
                console.print(f"{news.seat}: {news.command} {arrow}{reply}")
        self.news.clear()
        if rows:
            table = Table(title=None, show_edge=True)
            for column in ("id", "client", "command", "read", "holds"):
                table.add_column(column, justify="right" if column == "id" else "left")
            for row in rows:
                table.add_row(str(row.id), self.name_of(row.client), row.command,
                              row.read, row.holds)
            console.print(f"parked: {len(rows)}")
            console.print(table)
        else:
            console.print("parked: none")
        parked_clients = {row.client for row in rows}
        for seat in self.seats.values():
            if seat.pending and seat.client_id not in parked_clients:
                console.print(f"{seat.name}: {seat.pending[0]} is blocked, not parked "
                              f"(waiting for a lock?)")
            for later in list(seat.pending)[1:]:
                console.print(f"{seat.name}: {later} is queued behind it")

    def unanswered(self) -> list[str]:
        return [f"{seat.name} {command}" for seat in self.seats.values()
                for command in seat.pending]


def lines(interactive: bool, console: Console):
    """The student's lines: from a prompt on a terminal, else from stdin, each echoed
    after the prompt so that the output reads as the session it was."""
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (arrow keys and history at the prompt)
        while True:
            try:
                yield input("step> ")
            except EOFError:
                console.print()
                return
    else:
        for line in sys.stdin:
            line = line.rstrip("\n")
            console.print(f"step> {line}")
            yield line


def main(options) -> int:
    host, port = options.target
    console = Console(highlight=False, markup=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)

    def fail(problem: str, status: int) -> int:
        err.print(f"contend step: {problem}")
        return status

    try:
        scheduler = Scheduler(host, port, options.clients, options.password, options.timeout,
                              console)
    except (OSError, ConnectionError) as problem:
        return fail(f"cannot connect to {host}:{port}: "
                    f"{problem_in_words(problem, options.timeout)}", CANNOT_CONNECT)
    put_back = None
    try:
        settings = scheduler.playground()
        if options.mode == "step" and settings.get("race_window") != "step":
            reply = scheduler.ask("CONFIG", "SET", "race-window", "step")
            if isinstance(reply, ReplyError):
                return fail(f"{host}:{port} has no step mode: CONFIG SET race-window step "
                            f"answered {reply.text}", USAGE)
            put_back = settings.get("race_window", "timed")
            settings["race_window"] = "step"
        if "model" in settings:
            console.print(f"contend step: {host}:{port}, model {settings['model']}, "
                          f"sync {settings.get('sync', '?')}, "
                          f"race-window {settings.get('race_window', '?')}")
        else:
            console.print(f"contend step: {host}:{port}, which has no INFO playground "
                          f"(not a contend server?)")
        console.print(", ".join(f"{seat.name} is client {seat.client_id}"
                                for seat in scheduler.seats.values())
                      + ". Type help for the commands.")
        if settings.get("race_window") != "step":
            console.print("note: not in step mode, so no command parks: "
                          "`config set race-window step` (or --mode step) turns it on")
        for line in lines(sys.stdin.isatty(), console):
            if not scheduler.do(line):
                break
        unanswered = scheduler.unanswered()
        if unanswered:
            console.print("leaving with no reply yet to: " + ", ".join(unanswered)
                          + " (a parked one is given up as its client leaves)")
        return 0
    except ServerGone as problem:
        return fail(f"{host}:{port}: {problem}", CANNOT_CONNECT)
    finally:
        if put_back is not None:
            try:
                scheduler.ask("CONFIG", "SET", "race-window", put_back)
                console.print(f"race-window {put_back} again, as it was")
            except ServerGone:
                pass
        scheduler.close()
