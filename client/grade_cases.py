"""What `contend grade` checks, stage by stage, and the probe it checks with.

Each stage is a function of a `Target` that returns `Passed`, or raises
`Difference` at the first reply that is not what Redis sends. The cases are the
product's own, written for any RESP server; tests/test_conformance.py and
tests/test_protocol_robustness.py hold contend itself to far more.

Replies are read as the exact bytes the server sent, framed here rather than
decoded: a `+PONG` status and a `$4\\r\\nPONG` bulk string decode to the same text
and are still different answers (redis-py hands one back as str, the other as
bytes), so a grade that decoded first could not tell a student which one they sent.
Every wait is bounded by a socket timeout: a server that hangs fails a stage with
"no reply within N s", it never hangs the grade.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from contend.shared.resp import NULL_ARRAY, encode, encode_command

SHOWN_BYTES = 80   # how much of a request or reply the report card quotes
INCR_STAGE_SECONDS = 30   # the whole INCR stage, however slow each reply is
BLPOP_TIMEOUT = 0.1   # the timeout a BLPOP must wait out before answering *-1


class Difference(Exception):
    """The first thing a stage saw that Redis would not have done, said for the student."""

    def __init__(self, summary: str, sent: bytes | None = None, expected: str | None = None,
                 got: str | None = None, facts: dict | None = None):
        super().__init__(summary)
        self.summary = summary
        self.sent = sent
        self.expected = expected
        self.got = got
        self.facts = facts or {}


@dataclass
class Passed:
    detail: str                                 # what was checked, one line
    facts: dict = field(default_factory=dict)   # figures the JSON keeps (the INCR stage's count)


# -- what a reply should be ----------------------------------------------------------

def clip(data: bytes) -> str:
    """bytes as Python writes them, cut short with a count when long."""
    if len(data) <= SHOWN_BYTES:
        return repr(data)
    return f"{data[:SHOWN_BYTES]!r}... ({len(data)} bytes)"


def kind_of(raw: bytes) -> str:
    """What sort of RESP2 reply `raw` is, in words."""
    header = raw[1:raw.find(b"\r\n")]
    kind = raw[:1]
    if kind == b"$":
        return "a null bulk string" if header == b"-1" else "a bulk string"
    if kind == b"*":
        return "a null array" if header == b"-1" else f"an array of {int(header)}"
    return {b"+": "a status reply", b"-": "an error", b":": "an integer"}.get(kind, "?")


def shown(raw: bytes) -> str:
    return f"{clip(raw)}, {kind_of(raw)}"


def text_of(raw: bytes) -> bytes | None:
    """A one-value reply's text whatever its type (status, error, integer, bulk)."""
    header_end = raw.find(b"\r\n")
    if raw[:1] in (b"+", b"-", b":"):
        return raw[1:header_end]
    if raw[:1] == b"$" and raw[1:header_end] != b"-1":
        return raw[header_end + 2:-2]
    return None


def hint(expected: bytes, got: bytes) -> str:
    """A word on two common near misses: the right text as the wrong type, and a command
    the server does not know yet."""
    if text_of(expected) is not None and text_of(expected) == text_of(got):
        return (f"The text is right, the type is not: Redis sends {kind_of(expected)} here, "
                f"and clients tell {kind_of(got)} apart from it.")
    if got.lower().startswith(b"-err unknown command") and expected[:1] != b"-":
        return "The server does not know this command yet."
    return ""


def also(summary: str, near_miss: str) -> str:
    return f"{summary}. {near_miss}" if near_miss else summary


@dataclass(frozen=True)
class Exactly:
    """A reply as Redis sends it, byte for byte."""
    raw: bytes

    def matches(self, got: bytes) -> bool:
        return got == self.raw

    def __str__(self) -> str:
        return shown(self.raw)


def reply(value) -> Exactly:
    """The reply Redis sends for a value (`"OK"` is +OK, `None` is $-1): shared/resp.py's encode."""
    return Exactly(encode(value))


@dataclass(frozen=True)
class ErrorStarting:
    """An error whose text starts with `prefix`: Redis adds details a server need not copy."""
    prefix: str

    def matches(self, got: bytes) -> bool:
        return got.startswith(b"-" + self.prefix.encode())

    def __str__(self) -> str:
        return f"an error starting -{self.prefix}"


class AnInteger:
    """Any integer reply: what each of many INCRs answers depends on the others."""

    def matches(self, got: bytes) -> bool:
        return got[:1] == b":" and got[1:-2].lstrip(b"-").isdigit()

    def __str__(self) -> str:
        return "an integer, :N\\r\\n"


class AnyReply:
    """Whatever comes back, judged by the stage itself (the INCR stage's count)."""

    def matches(self, got: bytes) -> bool:
        return True

    def __str__(self) -> str:
        return "a reply"


PONG, OK, QUEUED = reply("PONG"), reply("OK"), reply("QUEUED")


# -- the probe: one connection, replies as exact bytes ---------------------------------

def reply_end(buffer: bytes | bytearray, start: int = 0) -> int | None:
    """Where the RESP2 reply beginning at `start` ends; None while it has not all arrived.
    ValueError, saying why, when the bytes cannot be a RESP2 reply."""
    newline = buffer.find(b"\r\n", start)
    if newline < 0:
        return None
    kind, header, end = buffer[start:start + 1], bytes(buffer[start + 1:newline]), newline + 2
    if kind in (b"+", b"-"):
        return end
    if kind not in (b":", b"$", b"*"):
        raise ValueError(f"a RESP2 reply starts with + - : $ or *, this one with {bytes(kind)!r}")
    if not header.lstrip(b"-").isdigit():
        raise ValueError(f"{bytes(kind).decode()} must be followed by a number, not {header!r}")
    count = int(header)
    if kind == b":" or count == -1:
        return end
    if count < 0:
        raise ValueError(f"{bytes(kind).decode()}{count}: the only negative length is -1 (null)")
    if kind == b"$":
        if len(buffer) < end + count + 2:
            return None
        if buffer[end + count:end + count + 2] != b"\r\n":
            raise ValueError(f"the {count} bytes after ${count} are not followed by \\r\\n: "
                             "is the length the value's length in bytes?")
        return end + count + 2
    for _ in range(count):
        found = reply_end(buffer, end)
        if found is None:
            return None
        end = found
    return end


class NoReply(Exception):
    """What came instead of a whole reply: `summary` for the sentence, `got` for the column;
    `silent` when nothing at all came before the wait ran out."""

    def __init__(self, summary: str, got: str, silent: bool = False):
        super().__init__(summary)
        self.summary, self.got, self.silent = summary, got, silent


def connection_problem(problem: OSError, wait: float) -> str:
    if isinstance(problem, TimeoutError):
        return f"no answer within {wait:g} s"
    if isinstance(problem, ConnectionRefusedError):
        return "connection refused (is the server running, on this port?)"
    if isinstance(problem, socket.gaierror):
        return f"no such host ({problem.strerror})"
    return problem.strerror or str(problem) or type(problem).__name__


class Wire:
    """One connection to the server under grade, each reply read as the bytes it sent."""

    def __init__(self, target: Target, who: str = "the client"):
        self.wait = target.wait
        try:
            self.sock = socket.create_connection((target.host, target.port), timeout=target.wait)
        except OSError as problem:
            raise Difference(f"{who} could not connect: "
                             f"{connection_problem(problem, target.wait)}") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending = bytearray()   # bytes received past the last whole reply

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes, step: str) -> None:
        try:
            self.sock.sendall(data)
        except OSError as problem:
            raise Difference(f"{step}: the connection broke while sending "
                             f"({connection_problem(problem, self.wait)})", sent=data) from None

    def _receive(self, until: float) -> bytes:
        """The next bytes, b"" once the server has closed; TimeoutError past `until`."""
        self.sock.settimeout(max(until - time.monotonic(), 0.001))
        try:
            return self.sock.recv(65536)
        except ConnectionError:   # reset by the server: as good as closed
            return b""

    def read_reply(self, wait: float | None = None) -> bytes:
        """The next whole reply's bytes; NoReply if none comes within the wait."""
        wait = self.wait if wait is None else wait
        until = time.monotonic() + wait
        while True:
            try:
                end = reply_end(self.pending)
            except ValueError as why:
                raise NoReply(f"not a RESP2 reply: {why}", clip(bytes(self.pending))) from None
            if end is not None:
                raw = bytes(self.pending[:end])
                del self.pending[:end]
                return raw
            try:
                data = self._receive(until)
            except TimeoutError:
                data = None
            if not data:
                raise self._nothing_more(closed=data is not None, wait=wait)
            self.pending += data

    def _nothing_more(self, closed: bool, wait: float) -> NoReply:
        ending = "the server closed the connection" if closed else f"nothing within {wait:g} s"
        if not self.pending:
            summary = ("the server closed the connection instead of replying" if closed
                       else f"no reply within {wait:g} s")
            return NoReply(summary, ending, silent=not closed)
        partial = bytes(self.pending)
        why = " (a RESP line ends with \\r\\n, not \\n alone)" \
            if b"\n" in partial and b"\r\n" not in partial else ""
        return NoReply(f"an incomplete reply{why}", f"{clip(partial)}, then {ending}")

    def expect(self, expected, step: str, sent: bytes, wait: float | None = None,
               silence_means: str = "") -> bytes:
        """The next reply, which must be `expected`; Difference at the first that is not."""
        try:
            got = self.read_reply(wait)
        except NoReply as none:
            because = f": {silence_means}" if silence_means and none.silent else ""
            raise Difference(f"{step}: {none.summary}{because}", sent, str(expected),
                             none.got) from None
        if not expected.matches(got):
            near_miss = hint(expected.raw if isinstance(expected, Exactly) else b"", got)
            raise Difference(also(f"{step}: not the reply Redis sends", near_miss),
                             sent, str(expected), shown(got))
        return got

    def exchange(self, sent: bytes, expected, step: str, **how) -> bytes:
        self.send(sent, step)
        return self.expect(expected, step, sent, **how)

    def expect_silence(self, seconds: float, step: str, sent: bytes, expected) -> None:
        """Nothing at all for `seconds`: a blocking command is still waiting."""
        try:
            got = self.read_reply(seconds)
        except NoReply as none:
            if none.silent:
                return
            raise Difference(f"{step}: {none.summary}", sent, str(expected), none.got) from None
        raise Difference(also(f"{step}: answered at once, where it should wait for a push",
                              hint(b"", got)), sent, f"nothing yet, later {expected}", shown(got))

    def expect_close(self, step: str, sent: bytes) -> None:
        """The server hangs up: after a protocol error no frame boundary is left to trust."""
        until = time.monotonic() + self.wait
        try:
            while data := self._receive(until):
                self.pending += data
        except TimeoutError:
            raise Difference(f"{step}: the connection stayed open for {self.wait:g} s; Redis "
                             "closes it after a protocol error, since it can no longer tell "
                             "where the next command starts", sent, "the connection closed",
                             "the connection still open") from None
        if self.pending:
            raise Difference(f"{step}: more bytes after the error reply", sent,
                             "the connection closed", clip(bytes(self.pending)))


@dataclass(frozen=True)
class Target:
    """The server under grade, and the grade's settings."""
    host: str
    port: int
    wait: float = 2.0       # seconds to wait for any one reply
    clients: int = 50       # clients at once, in the many-clients and INCR stages
    requests: int = 200     # INCRs per client
    run: str = "grade"      # names this run's keys, so two runs never share one
    # Every key the run has named, so that tidy_up can delete them afterwards.
    used: set[bytes] = field(default_factory=set, compare=False, repr=False)

    def key(self, name: str) -> bytes:
        key = f"grade:{self.run}:{name}".encode()
        self.used.add(key)
        return key

    def connect(self, who: str = "the client") -> Wire:
        return Wire(self, who)


def command(*args) -> bytes:
    return encode_command(*args)


def tidy_up(target: Target) -> None:
    """Delete the keys the run wrote, where the server knows DEL. Best effort: the grade
    never depended on DEL, and a server that does not know it keeps the keys."""
    if not target.used:
        return
    try:
        with target.connect("the tidy-up") as wire:
            wire.send(command("DEL", *sorted(target.used)), "DEL")
            wire.read_reply()
    except (Difference, NoReply, OSError):
        pass


def connect_all(target: Target, clients: int, who: Callable[[int], str]) -> list[Wire]:
    """`clients` connections, all open at once (none left open if one fails)."""
    wires: list[Wire] = []
    try:
        for number in range(1, clients + 1):
            wires.append(target.connect(who(number)))
    except BaseException:
        for wire in wires:
            wire.close()
        raise
    return wires


# -- the stages ------------------------------------------------------------------------

def ping(target: Target) -> Passed:
    with target.connect() as wire:
        wire.exchange(b"PING\r\n", PONG, "an inline PING (a plain line of text)")
        wire.exchange(command("PING"), PONG, "a multibulk PING (an array of bulk strings)")
    return Passed("inline PING and multibulk *1 $4 PING both answered +PONG")


def many_clients(target: Target) -> Passed:
    """All connected before any is answered: a server that serves one connection until
    it closes answers client 1 and leaves client 2 waiting."""
    clients = target.clients
    wires = connect_all(target, clients, lambda number: f"client {number} of {clients} "
                                                        f"({number - 1} already connected)")
    try:
        for number, wire in enumerate(wires, 1):
            wire.send(command("PING"), f"PING from client {number} of {clients}")
        for number, wire in enumerate(wires, 1):
            step = f"PING from client {number} of {clients} (all {clients} connected at once)"
            if number == 1:
                waiting = ""
            elif number == 2:
                waiting = "client 1 got its PONG; is the server serving one connection at a time?"
            else:
                waiting = (f"clients 1 to {number - 1} got theirs; does the server serve only "
                           f"{number - 1} connections at a time?")
            wire.expect(PONG, step, command("PING"), silence_means=waiting)
    finally:
        for wire in wires:
            wire.close()
    return Passed(f"{clients} clients connected at once, each PINGed and got +PONG")


def echo_set_get(target: Target) -> Passed:
    key, never_set = target.key("string"), target.key("never-set")
    binary = b"line one\r\nline two\x00after a NUL"
    with target.connect() as wire:
        wire.exchange(command("ECHO", "hey"), reply(b"hey"), "ECHO hey")
        wire.exchange(command("SET", key, "hello"), OK, "SET")
        wire.exchange(command("GET", key), reply(b"hello"), "GET of the key just SET")
        wire.exchange(command("SET", key, binary), OK, "SET of a value with \\r\\n and a NUL in it")
        wire.exchange(command("GET", key), reply(binary),
                      "GET of that value (binary-safe: the same bytes must come back)")
        wire.exchange(command("SET", key, ""), OK, "SET of the empty string")
        wire.exchange(command("GET", key), reply(b""),
                      "GET of the empty string (present, so $0, not the null $-1)")
        wire.exchange(command("GET", never_set), reply(None),
                      "GET of a key never set (the null bulk string $-1)")
    return Passed("ECHO, SET and GET (binary-safe and empty values), and $-1 for a missing key")


def incr_under_contention(target: Target) -> Passed:
    """Every client increments one key from the same start line; the count must be exact."""
    key, clients, each = target.key("counter"), target.clients, target.requests
    expected = clients * each
    incr = command("INCR", key)
    wires = connect_all(target, clients, lambda number: f"client {number} of {clients}")
    # Everyone connected before anyone sends, so the first INCRs collide as hard as they can.
    start_line = threading.Barrier(clients, timeout=target.wait + 5)
    give_up_at = time.monotonic() + INCR_STAGE_SECONDS
    stop = threading.Event()   # set at the first difference, so the others stop early
    # Threads find differences at once; without the lock two could both think they were first.
    first_lock = threading.Lock()
    first: list[Difference] = []

    def client(number: int, wire: Wire) -> None:
        try:
            start_line.wait()
            for done in range(each):
                if stop.is_set():
                    return
                if time.monotonic() > give_up_at:
                    raise Difference(f"{clients} clients x {each} INCRs did not finish within "
                                     f"{INCR_STAGE_SECONDS} s (client {number} had sent {done})")
                wire.exchange(incr, AnInteger(), f"client {number}'s INCR number {done + 1}")
        except Difference as difference:
            with first_lock:
                first.append(difference)
            stop.set()
        except threading.BrokenBarrierError:
            with first_lock:
                first.append(Difference(f"the {clients} clients never all reached the start line"))
            stop.set()
        finally:
            wire.close()

    threads = [threading.Thread(target=client, args=(number, wire), daemon=True)
               for number, wire in enumerate(wires, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if first:
        raise first[0]
    get = command("GET", key)
    with target.connect() as wire:
        raw = wire.exchange(get, AnyReply(), "GET after the INCRs")
    count = text_of(raw) if raw[:1] == b"$" else None
    got = int(count) if count and count.isdigit() else None
    facts = {"clients": clients, "incrs_per_client": each, "expected": expected, "got": got,
             "lost_updates": None if got is None else expected - got}
    if got == expected:
        return Passed(f"{clients} clients x {each} INCRs from one start line: GET says "
                      f"{expected}, not one lost", facts)
    if got is None:
        summary = "GET after the INCRs: not the count as a bulk string"
    elif got < expected:
        summary = (f"lost {expected - got} of {expected} updates: {clients} clients x {each} "
                   f"INCRs on one key, and GET says {got}. Two clients read the same value and "
                   "both wrote it plus one; INCR's read-modify-write needs a guard (a lock around "
                   "it, or one thread doing every write)")
    else:
        summary = f"counted {got - expected} more than the {expected} INCRs sent"
    raise Difference(summary, get, shown(encode(b"%d" % expected)), shown(raw), facts)


def blpop_wakeups(target: Target) -> Passed:
    queue, empty = target.key("queue"), target.key("empty")
    blpop = command("BLPOP", queue, "10")   # bounded: a missed wake-up must not block forever
    with target.connect("the waiting client") as waiter, \
            target.connect("the pushing client") as pusher:
        waiter.send(blpop, "BLPOP on an empty list")
        waiter.expect_silence(0.1, "BLPOP on an empty list", blpop, reply([queue, b"job"]))
        pusher.exchange(command("RPUSH", queue, "job"), reply(1),
                        "RPUSH from a second client while the first waits in BLPOP")
        waiter.expect(reply([queue, b"job"]), "the waiting BLPOP, after the other's RPUSH", blpop,
                      silence_means="the RPUSH did not wake the client blocked in BLPOP")
        pusher.exchange(command("LLEN", queue), reply(0),
                        "LLEN once the woken BLPOP has taken the item")
        timed = command("BLPOP", empty, f"{BLPOP_TIMEOUT:g}")
        began = time.monotonic()
        waiter.exchange(timed, reply(NULL_ARRAY),
                        f"BLPOP with a {BLPOP_TIMEOUT:g} s timeout on an empty list",
                        wait=target.wait + BLPOP_TIMEOUT)
        waited = time.monotonic() - began
    if waited < BLPOP_TIMEOUT / 2:
        raise Difference(f"BLPOP with a {BLPOP_TIMEOUT:g} s timeout answered *-1 after only "
                         f"{waited:.3f} s: it should wait out its timeout first", timed,
                         f"{shown(encode(NULL_ARRAY))} after {BLPOP_TIMEOUT:g} s",
                         f"{shown(encode(NULL_ARRAY))} after {waited:.3f} s")
    return Passed(f"an RPUSH woke a blocked BLPOP; a {BLPOP_TIMEOUT:g} s BLPOP answered *-1 "
                  f"after {waited:.2f} s")


def transactions(target: Target) -> Passed:
    counter, watched, untouched = (target.key(name) for name in ("tx", "watched", "untouched"))
    with target.connect() as wire, target.connect("the other client") as other:
        wire.exchange(command("MULTI"), OK, "MULTI")
        wire.exchange(command("SET", counter, "1"), QUEUED, "SET inside MULTI (queued, not run)")
        wire.exchange(command("INCR", counter), QUEUED, "INCR inside MULTI")
        wire.exchange(command("EXEC"), reply(["OK", 2]), "EXEC (every queued reply, in order)")
        wire.exchange(command("WATCH", watched), OK, "WATCH")
        other.exchange(command("SET", watched, "theirs"), OK,
                       "SET of the WATCHed key from another client")
        wire.exchange(command("MULTI"), OK, "MULTI after WATCH")
        wire.exchange(command("SET", watched, "mine"), QUEUED, "SET inside MULTI")
        wire.exchange(command("EXEC"), reply(NULL_ARRAY),
                      "EXEC after another client wrote the WATCHed key (must abort: null array)")
        wire.exchange(command("GET", watched), reply(b"theirs"), "GET after the aborted EXEC")
        wire.exchange(command("WATCH", untouched), OK, "WATCH of a key nobody writes")
        wire.exchange(command("MULTI"), OK, "MULTI")
        wire.exchange(command("INCR", untouched), QUEUED, "INCR inside MULTI")
        wire.exchange(command("EXEC"), reply([1]), "EXEC when the WATCHed key was left alone")
    return Passed("MULTI queues (+QUEUED), EXEC answers every reply; a write to a WATCHed "
                  "key makes EXEC answer *-1")


def bad_input(target: Target) -> Passed:
    with target.connect() as wire:
        wire.exchange(command("NOSUCHCOMMAND", "x"), ErrorStarting("ERR unknown command"),
                      "an unknown command")
        wire.exchange(command("PING"), PONG, "PING on the same connection after that error")
        wire.exchange(command("PING", "a", "b"), ErrorStarting("ERR wrong number of arguments"),
                      "PING with too many arguments")
        wire.exchange(b"\r\n" + command("PING"), PONG,
                      "an empty line, then PING (the empty line gets no reply)")
    for sent, error, step in [
            (b"*1\r\nfoo\r\n", b"expected '$', got 'f'", "an array element without its $ header"),
            (b"*abc\r\n", b"invalid multibulk length", "an array count that is not a number")]:
        with target.connect() as wire:
            wire.exchange(sent, Exactly(b"-ERR Protocol error: " + error + b"\r\n"), step)
            wire.expect_close(step, sent)
    with target.connect() as wire:
        wire.exchange(command("PING"), PONG, "PING on a new connection after the protocol errors")
    return Passed("unknown command and wrong arity answered; protocol errors answered with "
                  "Redis's text, the connection closed, the server still serving")


@dataclass(frozen=True)
class Stage:
    name: str      # JSON's key for it
    title: str     # the report card's
    check: Callable[[Target], Passed]


STAGES = [
    Stage("ping", "PING", ping),
    Stage("many-clients", "many clients", many_clients),
    Stage("echo-set-get", "ECHO, SET, GET", echo_set_get),
    Stage("incr-race", "INCR race", incr_under_contention),
    Stage("blpop", "BLPOP wake-ups", blpop_wakeups),
    Stage("transactions", "MULTI, EXEC, WATCH", transactions),
    Stage("bad-input", "bad input", bad_input),
]
