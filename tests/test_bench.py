"""`contend bench` on a tiny matrix (one model, one client count, one scenario): the table,
CSV and JSON it writes, the charts when matplotlib is there, and what it says when not."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import subprocess
import sys

import pytest

from contend.client import bench
from contend.client.cli import main as contend_main
from tests.servers import CONTEND, ROOT

TINY = ["--models", "threads", "--clients", "3", "--scenarios", "ping", "--requests", "20"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The CLI with matplotlib made unimportable, as on a machine without the charts extra.
WITHOUT_MATPLOTLIB = ("import sys; sys.modules['matplotlib'] = None; "
                      "from client.cli import main; sys.exit(main(sys.argv[1:]))")


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)


def read_csv(path) -> dict[str, dict]:
    with open(path, newline="") as stream:
        return {row["server"]: row for row in csv.DictReader(stream)}


def test_tiny_matrix_writes_table_csv_json_and_charts(tmp_path):
    done = run(*CONTEND, "bench", *TINY, "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "contend bench" in done.stdout and "holds" in done.stdout

    rows = read_csv(tmp_path / "bench.csv")
    ours = rows["threads"]
    assert (ours["scenario"], ours["clients"]) == ("ping", "3")
    assert ours["driver"] == bench.DEFAULT_DRIVER
    assert int(ours["ops"]) == 60 and int(ours["errors"]) == 0
    assert float(ours["ops_per_sec"]) > 0 and float(ours["p99_ms"]) >= float(ours["p50_ms"]) > 0
    assert ours["invariant_holds"] == "True" and ours["problem"] == ""

    if shutil.which("redis-server"):   # redis-server is a row for the Redis-named scenarios
        assert rows["redis"]["x_redis"] == "1.0" and float(ours["x_redis"]) > 0
    if shutil.which("redis-benchmark"):
        assert float(ours["redis_benchmark_rps"]) > 0 and float(ours["redis_benchmark_p99_ms"]) > 0

    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["about"]["command"].startswith("contend bench --models threads --clients 3")
    assert [c["server"] for c in report["cells"]] == list(rows)
    assert report["cells"][0]["ops"] == 60
    assert "| ping | 3 | threads |" in (tmp_path / "bench.md").read_text()

    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib is not installed (pip install '.[charts]')")
    for chart in ("throughput.png", "p99.png"):
        assert (tmp_path / chart).read_bytes().startswith(PNG_SIGNATURE)


def test_without_matplotlib_it_says_how_to_install_and_writes_the_rest(tmp_path):
    done = run(sys.executable, "-c", WITHOUT_MATPLOTLIB, "bench", *TINY, "--no-redis",
               "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pip install '.[charts]'" in " ".join(done.stderr.split())
    assert (tmp_path / "bench.csv").exists() and (tmp_path / "bench.json").exists()
    assert not list(tmp_path.glob("*.png"))
    assert set(read_csv(tmp_path / "bench.csv")) == {"threads"}


def test_import_pyplot_is_none_when_matplotlib_cannot_be_imported(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert bench.import_pyplot() is None


def test_unknown_model_or_scenario_is_a_usage_error(tmp_path, capsys):
    assert contend_main(["bench", "--models", "fibers", "--out", str(tmp_path)]) == 2
    assert contend_main(["bench", "--scenarios", "ping,juggle", "--out", str(tmp_path)]) == 2
    assert contend_main(["bench", "--scenarios", "barrier", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown model fibers" in err and "unknown scenario juggle" in err
    assert "needs --requests" in err
    assert not list(tmp_path.iterdir())   # nothing ran, nothing written


def test_x_redis_compares_the_same_scenario_and_client_count():
    cells = [bench.Cell("ping", 10, "threads", "threads", ops_per_sec=500.0),
             bench.Cell("ping", 10, "redis", "threads", ops_per_sec=1000.0),
             bench.Cell("ping", 100, "threads", "threads", ops_per_sec=300.0),
             bench.Cell("work", 10, "threads", "threads", ops_per_sec=100.0)]
    bench.compare_with_redis(cells)
    assert [c.x_redis for c in cells] == [0.5, 1.0, None, None]


def test_a_failed_cell_keeps_its_row_and_says_why():
    cells = [bench.Cell("ping", 10, "threads", "threads", ops_per_sec=500.0, p99_ms=1.5,
                        invariant_holds=True),
             bench.Cell("ping", 10, "trio", "threads", problem="server did not start: boom")]
    assert "| ping | 10 | 500 (1.5) | failed |" in bench.glance_markdown(cells)
    assert "failed: server did not start: boom" in bench.markdown(cells)
    assert cells[0].ok and not cells[1].ok
