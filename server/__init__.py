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

import argparse
import gc
import importlib
import ipaddress
import signal
import socket
import sys
import threading

from contend.shared.config import Config, add_serve_arguments
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


def open_listener(config: Config, stop) -> socket.socket:
    """The listening socket every model accepts on; port 0 picks a free one.

    SIGINT and SIGTERM call `stop` from here on, before the banner is printed,
    so a signal that follows the banner at once is a graceful stop too (a model
    may install its own way later, as trio does with its signal receiver)."""
    listener = socket.create_server((config.host, config.port), reuse_port=False, backlog=1024)
    config.port = listener.getsockname()[1]
    if threading.current_thread() is threading.main_thread():
        stop_on_signals(stop)
    return listener


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
    server = create(config)
    server.listen()
    # Everything alive now (modules, the command table, the listener) lives as
    # long as the server; freezing it spares every full garbage collection a
    # walk over all of it, which otherwise shows up as latency spikes.
    gc.freeze()
    warn_if_exposed(config)
    announce(config)
    server.serve_forever()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m contend.server",
                                     description="Run a contend server.")
    add_serve_arguments(parser)
    return serve(Config.from_options(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
