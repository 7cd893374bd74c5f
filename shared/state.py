"""What one server holds (keyspace, pool ledger, waiters, clients) and what one client is.

`ServerState` is shared by every connection of a server; `Client` belongs to
one connection. Neither locks anything: the model decides what guards them.
Counters that many threads would bump at once (commands processed) live on
the `Client`, which only its own connection writes, and are summed when read.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from itertools import count

from contend.shared.config import Config
from contend.shared.keyspace import Keyspace
from contend.shared.pool import LeaseLedger
from contend.shared.stepping import Stepper
from contend.shared.waiters import ListWaiters

VERSION = "0.1.0"
REDIS_VERSION = "7.0.0"   # the Redis whose behaviour contend follows, for clients that ask
MAXCLIENTS_REPLY = b"-ERR max number of clients reached\r\n"
# Redis 7.0's text (networking.c, clientAcceptHandler), naming contend, and without the
# ways contend lacks (a configuration file, CONFIG REWRITE).
DENIED_REPLY = (
    b"-DENIED contend is running in protected mode because protected mode is enabled and "
    b"no password is set for the default user. In this mode connections are only accepted "
    b"from the loopback interface. If you want to connect from external computers to "
    b"contend you may adopt one of the following solutions: 1) Just disable protected mode "
    b"sending the command 'CONFIG SET protected-mode no' from the loopback interface by "
    b"connecting to contend from the same host the server is running, however MAKE SURE "
    b"contend is not publicly accessible from internet if you do so. 2) If you started the "
    b"server manually just for testing, restart it with the '--protected-mode no' option. "
    b"3) Set up an authentication password for the default user (--requirepass, or CONFIG "
    b"SET requirepass). NOTE: You only need to do one of the above things in order for the "
    b"server to start accepting connections from the outside.\r\n")


@dataclass
class Stats:
    connections_received: int = 0   # written only by the code that accepts
    rejected_connections: int = 0
    commands_of_closed_clients: int = 0
    deadlocks: int = 0
    # These three are counted on each Client (one writer each, even with threads) and
    # added here when it leaves; `ServerState.tally` gives the server's total.
    internal_errors: int = 0        # commands that failed with a bug (shared/session.py)
    # Limits hit (docs/design.md, "Bad input"); INFO stats shows each.
    output_disconnects: int = 0     # clients closed for unsent replies past the output limits
    preauth_refusals: int = 0       # unauthenticated clients refused for a too-large request
    work_refusals: int = 0          # WORK calls refused for asking more than work-max-units
    denied_connections: int = 0     # protected mode: non-loopback clients with no password set
    internal_errors_logged: set = field(default_factory=set)   # where a traceback was logged


class ServerState:
    def __init__(self, config: Config):
        self.config = config
        self.keyspace = Keyspace()
        self.waiters = ListWaiters(self.keyspace)
        self.ledger = LeaseLedger(config.pool_size)
        self.stepper = Stepper()      # step mode's parked commands (shared/stepping.py)
        self.clients: dict[int, Client] = {}
        self.stats = Stats()
        self.started = time.time()
        self._client_ids = count(1)  # next() on a count is atomic under the GIL
        self.next_active_expiry = 0  # keyspace clock (ms) at which the next expiry cycle is due

    def connect(self, addr: str = "", laddr: str = "") -> Client:
        client = Client(self, next(self._client_ids), addr, laddr)
        client.authenticated = not self.config.requirepass
        self.clients[client.id] = client
        self.stats.connections_received += 1
        return client

    def disconnect(self, client: Client) -> None:
        """Forget a client (its session has returned its leases already).

        It adds to a server-wide total, so a model whose clients leave in
        parallel (threads) calls it under a lock."""
        self.clients.pop(client.id, None)
        stats = self.stats
        stats.commands_of_closed_clients += client.commands
        stats.internal_errors += client.internal_errors
        stats.preauth_refusals += client.preauth_refusals
        stats.work_refusals += client.work_refusals

    def denial(self, addr: str) -> bytes | None:
        """Protected mode's refusal for a client at `addr` ("host:port"), or None to serve it.

        As in Redis: with protected mode on and no password, only clients on
        this machine are served (a server bound to 0.0.0.0 by mistake is not
        open to the world). An address that is no IP at all (a unix socket's
        path, the in-process test model's names) is on this machine."""
        config = self.config
        if config.protected_mode != "yes" or config.requirepass:
            return None
        host = addr.rpartition(":")[0] if ":" in addr else addr
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return None
        # ::ffff:127.0.0.1 is how a dual-stack socket sees an IPv4 client on loopback.
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        if (mapped or ip).is_loopback:
            return None
        self.stats.denied_connections += 1
        return DENIED_REPLY

    def due_chore(self):
        """Upkeep the server owes now, as a command's steps for a session to run
        (under that command's guards, like any command), or None: the usual case.

        The one chore is active expiry (shared/commands/expiry.py): at most every
        100 ms, and only while some key has a time to live. Every session asks
        before every command, so the usual answer costs one truthiness check."""
        keyspace = self.keyspace
        if not keyspace.expires:
            return None
        now = keyspace.clock()
        if now < self.next_active_expiry:
            return None
        # Two threads may both find it due; then it runs twice, which is harmless.
        from contend.shared.commands.expiry import (  # here: commands import this module
            ACTIVE_EXPIRY_PERIOD_MS,
            active_expiry_steps,
        )
        self.next_active_expiry = now + ACTIVE_EXPIRY_PERIOD_MS
        return active_expiry_steps(keyspace)

    def refuse(self) -> bytes:
        """A connection past maxclients: counted, and the one line Redis sends before closing."""
        self.stats.rejected_connections += 1
        return MAXCLIENTS_REPLY

    # -- the figures INFO reports, for the whole server -----------------------------
    # (The processes model overrides these: its clients are spread over several processes.)

    def total(self, name: str) -> int:
        """A server-wide count of `Stats`."""
        return getattr(self.stats, name)

    def tally(self, name: str) -> int:
        """A per-client count for the whole server: clients gone, plus clients here."""
        return getattr(self.stats, name) + sum(
            getattr(client, name) for client in list(self.clients.values()))

    def commands_processed(self) -> int:
        return self.stats.commands_of_closed_clients + sum(
            c.commands for c in list(self.clients.values()))

    def reset_stats(self) -> None:
        """CONFIG RESETSTAT: the counts Redis zeroes, and the pool's figures."""
        self.stats.rejected_connections = self.stats.deadlocks = 0
        self.ledger.reset_figures()

    def connected_clients(self) -> int:
        return len(self.clients)

    def blocked_clients(self) -> int:
        return sum(1 for c in list(self.clients.values()) if c.blocked)

    def commands_in_flight(self, asking: Client | None = None) -> int:
        """Commands running now; `asking` (the client running INFO) is not counted."""
        return sum(1 for c in list(self.clients.values()) if c.running and c is not asking)

    def client_lines(self) -> list[tuple[int, bytes]]:
        """CLIENT LIST's lines, each with its client's id."""
        return [(c.id, c.describe()) for c in list(self.clients.values())]

    def client_changed(self, client: Client) -> None:
        """A client's name or library changed: a model whose clients live in several
        processes tells the others here."""


@dataclass
class Transaction:
    """A client's MULTI: the commands EXEC will run, and whether one was refused.

    The session fills it (shared/session.py: every command but EXEC, DISCARD,
    MULTI, WATCH and QUIT is queued); EXEC or DISCARD ends it."""
    queued: list = field(default_factory=list)   # (Command, argv), in the order sent
    # A command was refused while queueing (unknown, wrong arity, may wait): Redis's
    # DIRTY_EXEC. EXEC answers EXECABORT and runs nothing; nothing more is kept.
    aborted: bool = False


@dataclass(eq=False)
class Client:
    server: ServerState
    id: int
    addr: str = ""
    laddr: str = ""
    name: bytes = b""
    lib_name: bytes = b""
    lib_ver: bytes = b""
    authenticated: bool = True
    blocked: bool = False       # in a blocking command right now (INFO blocked_clients)
    running: bool = False       # a command of its is in flight (INFO commands_in_flight)
    closing: bool = False       # QUIT or SHUTDOWN: close once the reply is sent
    sync: str = "lock"          # the sync mode the running command started in
    protocol: int = 2           # RESP2 until HELLO 3; the session encodes every reply in it
    # The keys it WATCHes (each also in keyspace.watchers); the session forgets them when
    # it leaves. Changed only under a guard over them (shared/commands/transactions.py).
    watching: set[bytes] = field(default_factory=set)
    transaction: Transaction | None = None   # between MULTI and EXEC or DISCARD
    commands: int = 0
    internal_errors: int = 0    # this client's share of the counts INFO sums (Stats, tally)
    preauth_refusals: int = 0
    work_refusals: int = 0
    last_command: bytes = b"NULL"
    created: float = field(default_factory=time.time)
    last_active: float = field(default_factory=time.time)

    @property
    def dirty(self) -> bool:
        """A key it WATCHes was written: its next EXEC is refused."""
        return bool(self.watching) and self.server.keyspace.is_dirty(self.id)

    def describe(self) -> bytes:
        """One line of CLIENT LIST, in Redis's field=value form."""
        now = time.time()
        fields = [
            ("id", self.id), ("addr", self.addr), ("laddr", self.laddr),
            ("name", self.name.decode("utf-8", "replace")),
            ("age", int(now - self.created)), ("idle", int(now - self.last_active)),
            ("flags", self.flags()), ("db", 0),
            ("cmd", self.last_command.decode("utf-8", "replace")), ("user", "default"),
            ("resp", self.protocol),
            ("lib-name", self.lib_name.decode("utf-8", "replace")),
            ("lib-ver", self.lib_ver.decode("utf-8", "replace")),
        ]
        return " ".join(f"{key}={value}" for key, value in fields).encode()

    def flags(self) -> str:
        """CLIENT LIST's flags, Redis's letters: x in MULTI, b blocked, d a watched key
        was written (its EXEC will fail), N none of these."""
        letters = (("x" if self.transaction is not None else "")
                   + ("b" if self.blocked else "") + ("d" if self.dirty else ""))
        return letters or "N"
