"""`contend demo`, the README's first command, tells the race story and exits 0."""

from __future__ import annotations

import subprocess

from tests.servers import ROOT


def test_demo_shows_lost_updates_then_an_exact_count():
    done = subprocess.run(["contend", "demo", "--clients", "8", "--requests", "10"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line.split("│")[1].strip(): line for line in done.stdout.splitlines()
            if line.count("│") > 3 and line.split("│")[1].strip() in ("off", "lock")}
    assert "updates lost" in rows["off"]
    assert "exact" in rows["lock"] and "80 │" in rows["lock"]
    assert "redis-cli" in done.stdout   # it ends by saying what to try next
