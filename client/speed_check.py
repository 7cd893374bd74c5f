"""Is the load client fast enough not to be the thing measured?

    python -m client.speed_check [--requests 100000]

Against one real redis-server, redis-benchmark's PING at 50 clients, then
`contend load --scenario ping --clients 50` with each driver, the client on the
same CPU redis-benchmark had. The goal: the best driver reaches at least half
of redis-benchmark's throughput.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import subprocess
import sys

from client.load import run_load
from client.loadgen import DRIVERS, Plan
from client.scenarios import Ping
from client.servers import on_cpu, raise_open_files_limit, start_redis

CLIENTS = 50


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m client.speed_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000, help="requests in all, per run")
    options = parser.parse_args(argv)
    raise_open_files_limit()
    pin = (os.cpu_count() or 1) >= 2
    rows = []
    with start_redis(preexec_fn=on_cpu(1 if pin else None)) as redis:
        done = subprocess.run(["redis-benchmark", "-h", redis.host, "-p", str(redis.port),
                               "-c", str(CLIENTS), "-n", str(options.requests), "-t", "ping_mbulk",
                               "--csv"], capture_output=True, text=True, timeout=600,
                              preexec_fn=on_cpu(0 if pin else None))
        row = next(csv.DictReader(io.StringIO(done.stdout)))
        baseline = float(row["rps"])
        rows.append(("redis-benchmark", baseline, float(row["p99_latency_ms"])))
        mask = os.sched_getaffinity(0)
        if pin:
            os.sched_setaffinity(0, {0})   # the load client gets the CPU redis-benchmark had
        try:
            for driver in DRIVERS:
                plan = Plan(redis.host, redis.port, Ping(CLIENTS), CLIENTS,
                            requests=options.requests // CLIENTS)
                result = run_load(plan, driver)
                rows.append((f"contend load --driver {driver}", result.ops_per_sec,
                             result.latency_ms["p99"]))
        finally:
            os.sched_setaffinity(0, mask)
    print(f"PING, {CLIENTS} clients, {options.requests} requests, against redis-server"
          f"{' on CPU 1, clients on CPU 0' if pin else ''}\n")
    print("| client | requests/s | x redis-benchmark | p99 ms |\n|---|---:|---:|---:|")
    for name, rate, p99 in rows:
        print(f"| {name} | {rate:,.0f} | {rate / baseline:.2f} | {p99:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
