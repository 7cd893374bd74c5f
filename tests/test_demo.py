"""`contend demo`, the README's first command: every model races, then a comparison, exit 0."""

from __future__ import annotations

import subprocess

from contend.server import MODEL_MODULES
from tests.servers import CONTEND, ROOT


def test_demo_races_every_model_then_compares_them():
    done = subprocess.run([*CONTEND, "demo", "--clients", "8", "--requests", "10",
                           "--seconds", "0.3"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    cells = [[cell.strip() for cell in line.split("│")[1:-1]]
             for line in done.stdout.splitlines() if line.count("│") >= 6]
    race = {(cell[0], cell[1]): cell for cell in cells if cell[1] in ("off", "lock")}
    compared = {cell[0] for cell in cells if cell[1] not in ("off", "lock")}
    for model in MODEL_MODULES:
        assert race[model, "off"][-1] == "races" and int(race[model, "off"][3]) > 0
        assert race[model, "lock"][-1] == "exact" and race[model, "lock"][3] == "0"
        assert model in compared
    assert "Try next" in done.stdout and "redis-cli" in done.stdout
