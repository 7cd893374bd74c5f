"""`contend demo`: the race lesson in a few seconds, with nothing but Python.

It starts a threaded server in this process, lets 16 clients INCR one counter
together with the guard off and the race window open, then again with the
lock on, and shows what each run counted.
"""

from __future__ import annotations

import threading
import time

from rich.console import Console
from rich.table import Table

from client.connection import Connection
from shared.config import Config


def start_server(config: Config):
    """A threaded server on a free loopback port, serving from a background thread."""
    from server.threads import Server   # the CLI imports a server only to run one
    server = Server(config)
    server.listen()
    thread = threading.Thread(target=server.serve_forever, name="demo-server", daemon=True)
    thread.start()
    return server, thread


def incr_together(host: str, port: int, clients: int, requests: int) -> tuple[int, float]:
    """Every client connects, all start at one Barrier, each INCRs `requests` times."""
    connections = [Connection(host, port) for _ in range(clients)]
    connections[0].call("DEL", "counter")
    start_line = threading.Barrier(clients + 1)

    def run(connection):
        start_line.wait()
        for _ in range(requests):
            connection.call("INCR", "counter")

    threads = [threading.Thread(target=run, args=(c,)) for c in connections]
    for thread in threads:
        thread.start()
    start_line.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - began
    counted = int(connections[0].call("GET", "counter"))
    for connection in connections:
        connection.close()
    return counted, took


def run_demo(options) -> int:
    console = Console()
    config = Config(port=0, sync="off", race_window_us=options.race_window_us)
    server, thread = start_server(config)
    console.print(f"[bold]contend demo[/]: a threaded server on {config.host}:{config.port}, "
                  f"{options.clients} clients x {options.requests} INCR on one counter, "
                  f"race window {options.race_window_us} us\n")
    table = Table(title="Lost updates: read, (window), write")
    for column in ("sync", "expected", "counted", "lost", "seconds", "verdict"):
        table.add_column(column, justify="right" if column != "verdict" else "left")
    expected = options.clients * options.requests
    outcomes = []
    with Connection(config.host, config.port) as admin:
        for sync in ("off", "lock"):
            admin.call("CONFIG", "SET", "sync", sync)
            with console.status(f"sync {sync}: {options.clients} clients incrementing..."):
                counted, took = incr_together(config.host, config.port, options.clients,
                                              options.requests)
            lost = expected - counted
            outcomes.append(lost)
            verdict = (f"[red]{lost} updates lost[/]" if lost else "[green]exact[/]")
            table.add_row(sync, str(expected), str(counted), str(lost), f"{took:.2f}", verdict)
    console.print(table)
    console.print(
        "\nWith [bold]sync off[/] each INCR reads the counter, waits out the race window, then "
        "writes its own result over whatever the others wrote meanwhile. With [bold]sync lock[/] "
        "an RLock makes read-and-write one step: exact, and slower, since the clients now queue.\n"
        "\nTry next:\n"
        "  contend serve --sync off --race-window-us 2000   # then, in another terminal:\n"
        "  redis-cli -p 7070 INCR counter\n"
        "  redis-benchmark -p 7070 -t incr -n 10000 -c 16 && redis-cli -p 7070 GET counter:__rand_int__\n")
    server.stop()
    thread.join(5)
    # The lesson holds only if the unguarded run lost updates and the locked one didn't.
    return 0 if outcomes[0] > 0 and outcomes[1] == 0 else 1
