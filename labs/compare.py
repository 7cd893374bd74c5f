"""Put `contend load --json` results side by side: throughput, latency, and how each compares.

    python3 labs/compare.py work-1.json work-8.json

One line per file: scenario, clients, ops/s, p50 and max latency, and the
ops/s as a multiple of the first file's (the speedup the GIL lab asks about).
"""

from __future__ import annotations

import json
import sys


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    results = []
    for path in paths:
        with open(path) as file:
            results.append(json.load(file))
    first = results[0]["ops_per_sec"]
    width = max(len(path) for path in paths)
    for path, result in zip(paths, results, strict=True):
        latency = result["latency_ms"]
        line = (f"{path:<{width}}  {result['scenario']:<6} {result['clients']:>4} clients "
                f"{result['ops_per_sec']:>9,.0f} ops/s  p50 {latency['p50']:8.2f} ms  "
                f"max {latency['max']:8.2f} ms")
        if path != paths[0]:
            line += f"  {result['ops_per_sec'] / first:.1f}x the first"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
