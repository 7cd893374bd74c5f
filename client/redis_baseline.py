"""redis-benchmark against a real redis-server and against contend's models, in one run.

    python -m contend.client.redis_baseline [--models threads,...] [--requests 100000] [--markdown]

Each server is started fresh on a free loopback port, measured with the same
redis-benchmark command lines, and stopped. Throughput is reported as a ratio
to redis-server's from this same run, so the numbers mean the same on any machine.

With two or more CPUs every server runs on CPU 1 and redis-benchmark on CPU 0
(`--no-pin` to let the scheduler choose): redis-server uses one core anyway,
and a threaded Python server whose threads hop between cores spends its time
handing the GIL across them rather than serving (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass

from contend.client.servers import on_cpu, raise_open_files_limit, start_contend, start_redis

RUNS = [  # (label, redis-benchmark arguments)
    ("-c 50", ["-c", "50", "-t", "ping_mbulk,incr"]),
    ("-c 50 -P 16", ["-c", "50", "-P", "16", "-t", "ping_mbulk,incr"]),
    ("-c 1000", ["-c", "1000", "-t", "ping_mbulk,incr"]),
]


@dataclass
class Figure:
    server: str
    run: str
    test: str
    rps: float
    p50_ms: float
    p99_ms: float


def redis_benchmark(host: str, port: int, requests: int, arguments: list[str],
                    cpu: int | None = None, timeout: float = 600) -> list[dict]:
    """One `redis-benchmark --csv` run: a row per test (test, rps, p50_latency_ms,
    p99_latency_ms, ...). Raises RuntimeError when it fails or the server answers errors."""
    done = subprocess.run(
        ["redis-benchmark", "-h", host, "-p", str(port), "-n", str(requests), "--csv", *arguments],
        capture_output=True, text=True, timeout=timeout, preexec_fn=on_cpu(cpu))
    if done.returncode != 0 or "ERR" in done.stdout + done.stderr:
        raise RuntimeError(f"redis-benchmark {' '.join(arguments)} failed: "
                           f"{(done.stderr or done.stdout).strip()[:200]}")
    return list(csv.DictReader(io.StringIO(done.stdout)))


def measure(server: str, requests: int, pin: bool) -> list[Figure]:
    place = on_cpu(1 if pin else None)
    started = (start_redis("--maxclients", "10000", preexec_fn=place) if server == "redis"
               else start_contend(server, preexec_fn=place))
    figures = []
    with started:
        for label, arguments in RUNS:
            for row in redis_benchmark(started.host, started.port, requests, arguments,
                                       cpu=0 if pin else None):
                figures.append(Figure(server, label, row["test"], float(row["rps"]),
                                      float(row["p50_latency_ms"]), float(row["p99_latency_ms"])))
    return figures


def markdown(figures: list[Figure]) -> str:
    baseline = {(f.run, f.test): f for f in figures if f.server == "redis"}
    lines = ["| server | redis-benchmark | test | requests/s | x redis | p50 ms | p99 ms | "
             "p99 / redis p99 |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for f in figures:
        base = baseline[(f.run, f.test)]
        lines.append(f"| {f.server} | `{f.run}` | {f.test} | {f.rps:,.0f} | "
                     f"{f.rps / base.rps:.2f} | {f.p50_ms:.3f} | {f.p99_ms:.3f} | "
                     f"{f.p99_ms / base.p99_ms:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m contend.client.redis_baseline",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="threads", help="comma-separated contend models")
    parser.add_argument("--requests", type=int, default=100_000, help="requests per test")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="don't pin servers to CPU 1 and redis-benchmark to CPU 0")
    options = parser.parse_args(argv)
    options.pin = options.pin and (os.cpu_count() or 1) >= 2
    if not (shutil.which("redis-server") and shutil.which("redis-benchmark")):
        print("redis-server and redis-benchmark are needed (apt-get install redis-server "
              "redis-tools)", file=sys.stderr)
        return 2
    raise_open_files_limit()
    figures = []
    for server in ["redis", *options.models.split(",")]:
        print(f"measuring {server} ...", file=sys.stderr, flush=True)
        figures += measure(server, options.requests, options.pin)
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
    print(f"Python {platform.python_version()}, {version.stdout.split()[2]}, "
          f"{platform.machine()}, {__import__('os').cpu_count()} cores, "
          f"-n {options.requests}, open files {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}, "
          f"{'server on CPU 1, redis-benchmark on CPU 0' if options.pin else 'not pinned'}\n")
    print(markdown(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
