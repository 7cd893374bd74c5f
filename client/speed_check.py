"""Is the load client fast enough not to be the thing measured?

    python -m contend.client.speed_check [--requests 100000]

Against one real redis-server, redis-benchmark's PING at 50 clients, then
`contend load --scenario ping --clients 50` with each driver, the client on the
same CPU redis-benchmark had. The goal: the best driver reaches at least half
of redis-benchmark's throughput.
"""

from __future__ import annotations

import argparse
import os
import sys

from contend.client.load import run_load
from contend.client.loadgen import DRIVERS, Plan
from contend.client.redis_baseline import redis_benchmark
from contend.client.scenarios import Ping
from contend.client.servers import client_on_cpu, on_cpu, raise_open_files_limit, start_redis

CLIENTS = 50


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m contend.client.speed_check",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000, help="requests in all, per run")
    options = parser.parse_args(argv)
    raise_open_files_limit()
    pin = (os.cpu_count() or 1) >= 2
    rows = []
    with start_redis(preexec_fn=on_cpu(1 if pin else None)) as redis:
        row = redis_benchmark(redis.host, redis.port, options.requests,
                              ["-c", str(CLIENTS), "-t", "ping_mbulk"], cpu=0 if pin else None)[0]
        baseline = float(row["rps"])
        rows.append(("redis-benchmark", baseline, float(row["p99_latency_ms"])))
        with client_on_cpu(0 if pin else None):   # the CPU redis-benchmark had
            for driver in DRIVERS:
                plan = Plan(redis.host, redis.port, Ping(CLIENTS), CLIENTS,
                            requests=options.requests // CLIENTS)
                result = run_load(plan, driver)
                rows.append((f"contend load --driver {driver}", result.ops_per_sec,
                             result.latency_ms["p99"]))
    print(f"PING, {CLIENTS} clients, {options.requests} requests, against redis-server"
          f"{' on CPU 1, clients on CPU 0' if pin else ''}\n")
    print("| client | requests/s | x redis-benchmark | p99 ms |\n|---|---:|---:|---:|")
    for name, rate, p99 in rows:
        print(f"| {name} | {rate:,.0f} | {rate / baseline:.2f} | {p99:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
