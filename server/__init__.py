"""contend's servers: one module per concurrency model, each a thin adapter around shared/.

    threads.py        thread per connection; threading.RLock, Condition, Semaphore,
                      Barrier and Event guard and wait (threads_sync.py holds the helpers)
    trio_server.py    a trio task per connection; trio.Lock, Condition, CapacityLimiter, and a
                      Barrier and clearable Event built from trio.Event (trio_sync.py)
    selector_loop.py  one thread, one selector; waiting commands are parked generators, woken
                      by the loop; hand-made reentrant locks, queues and timers (selector_sync.py)
    asyncio_server.py an asyncio.Protocol per connection, a task only while its command waits;
                      asyncio.Lock, Condition, Semaphore, Barrier and Event; asyncio's loop or
                      uvloop's (asyncio_sync.py holds the helpers)
    processes.py      N worker processes, each the threads model on multiprocessing's locks,
                      Condition and Semaphore; the keyspace in a manager process they all
                      call (processes_sync.py holds the shared pieces)

Each model module has a `Server(config)` with `listen()`, `serve_forever()` and
a `stop()` that any thread or signal handler may call.
"""

from __future__ import annotations

import errno
import gc
import importlib
import ipaddress
import os
import signal
import socket
import sys
import threading

from contend.shared.config import Config, Parser, add_serve_arguments
from contend.shared.info import gil

MODEL_MODULES = {"threads": "contend.server.threads",
                 "trio": "contend.server.trio_server",
                 "selectors": "contend.server.selector_loop",
                 "asyncio": "contend.server.asyncio_server",
                 "processes": "contend.server.processes"}


def create(config: Config):
    """The Server object of the configured model (imported only when asked for)."""
    if config.model not in MODEL_MODULES:
        raise SystemExit(f"contend: the '{config.model}' model is not built yet; "
                         f"choose from {', '.join(MODEL_MODULES)}")
    module = importlib.import_module(MODEL_MODULES[config.model])
    return module.Server(config)


class CannotListen(Exception):
    """The address cannot be listened on: in use, not this machine's, or a name that
    does not resolve. `contend serve` says so in one line and exits 3."""


def open_listener(config: Config, stop) -> socket.socket:
    """The listening socket every model accepts on; port 0 picks a free one.

    SIGINT and SIGTERM call `stop` from here on, before the banner is printed,
    so a signal that follows the banner at once is a graceful stop too (a model
    may install its own way later, as trio does with its signal receiver)."""
    try:
        listener = socket.create_server((config.host, config.port), reuse_port=False,
                                        backlog=1024)
    except OSError as problem:
        raise CannotListen(f"cannot listen on {config.host}:{config.port}: "
                           f"{_why_not(problem, config.host)}") from None
    config.port = listener.getsockname()[1]
    if threading.current_thread() is threading.main_thread():
        stop_on_signals(stop)
    return listener


def _why_not(problem: OSError, host: str) -> str:
    """A bind failure in words (create_server's own message repeats the address)."""
    if problem.errno == errno.EADDRINUSE:
        return "address already in use (another server? --port 0 picks a free port)"
    if problem.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine"
    if problem.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    if problem.errno is not None and problem.errno < 0:   # getaddrinfo's codes: EAI_*
        return f"{host!r} does not resolve to an IPv4 address"
    return os.strerror(problem.errno) if problem.errno else str(problem)


def announce(config: Config) -> None:
    """The one line a person (and the test fixtures) read to find the server."""
    print(f"contend {config.model} server listening on {config.host}:{config.port} "
          f"(sync={config.sync}, pool-size={config.pool_size}, gil={gil()})", flush=True)


def warn_if_exposed(config: Config) -> None:
    """One line on stderr when protected mode will refuse most of the clients this bind
    invites: listening beyond loopback with no password (Redis warns at start-up too)."""
    if config.protected_mode != "yes" or config.requirepass or _is_loopback(config.host):
        return
    print(f"contend: warning: bound to {config.host} with protected mode on and no "
          "password: only clients on this machine will be served (set --requirepass, "
          "or --protected-mode no)", file=sys.stderr, flush=True)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False   # a host name: it may well be reachable from elsewhere


def stop_on_signals(stop) -> None:
    """SIGINT and SIGTERM ask for a graceful stop instead of killing the process."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop())


def serve(config: Config) -> int:
    """Run until stopped: 0. Exit status 3, with one line on stderr, when the address
    cannot be listened on."""
    server = create(config)
    try:
        server.listen()
    except CannotListen as problem:
        print(f"contend serve: {problem}", file=sys.stderr, flush=True)
        return 3
    # Everything alive now (modules, the command table, the listener) lives as
    # long as the server; freezing it spares every full garbage collection a
    # walk over all of it, which otherwise shows up as latency spikes.
    gc.freeze()
    warn_if_exposed(config)
    announce(config)
    server.serve_forever()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m contend.server",
                                     description="Run a contend server.")
    add_serve_arguments(parser)
    return serve(Config.from_options(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
