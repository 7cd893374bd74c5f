"""`python -m contend.client.redis_baseline`: the arithmetic of its table (medians of the
rounds' ratios, their range, the goals' verdicts) on figures given here, the section it
writes between two markers of docs/benchmarks.md, and one small round against a real
redis-server. Speed is never asserted: only that figures were taken and put in place."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from contend.client import redis_baseline
from contend.client.redis_baseline import (
    BEGIN,
    END,
    LOAD_CLIENT,
    REDIS,
    Figure,
    Goal,
    judge,
    markers_problem,
    replace_section,
    summarise,
)
from tests.servers import ROOT

DOC = ROOT / "docs" / "benchmarks.md"
PROSE_BEFORE = "# Benchmarks\n\nHand-written words before the tables.\n\n"
PROSE_AFTER = "\n\n## Later\n\nHand-written words after them.\n"


def incr(server: str, rps_by_round: list[float], p99_by_round: list[float],
         run: str = "-c 50") -> list[Figure]:
    return [Figure(server, run, "INCR", rps, p50_ms=0.1, p99_ms=p99, round=number)
            for number, (rps, p99) in enumerate(zip(rps_by_round, p99_by_round, strict=True), 1)]


def cell(cells, server: str, run: str = "-c 50", test: str = "INCR"):
    return next(c for c in cells if (c.server, c.run, c.test) == (server, run, test))


# -- the arithmetic ----------------------------------------------------------------

def test_a_cell_is_the_median_of_its_rounds_ratios_to_their_own_redis():
    # redis moved from 100 to 110 to 90; selectors made 0.8x, 0.7x and 1.1x of it.
    figures = (incr(REDIS, [100, 110, 90], [1.0, 1.0, 2.0])
               + incr("selectors", [80, 77, 99], [3.0, 5.0, 2.0]))
    selectors = cell(summarise(figures), "selectors")
    assert selectors.rounds == 3
    assert selectors.x_redis == pytest.approx(0.8)
    assert (selectors.x_redis_low, selectors.x_redis_high) == (pytest.approx(0.7),
                                                               pytest.approx(1.1))
    assert selectors.rps == 80                       # the median of requests/s too
    assert selectors.p99_ms == 3.0
    assert selectors.p99_x_redis == pytest.approx(3.0)   # of 3.0, 5.0 and 1.0
    assert (selectors.p99_x_redis_low, selectors.p99_x_redis_high) == (pytest.approx(1.0),
                                                                       pytest.approx(5.0))
    redis = cell(summarise(figures), REDIS)
    assert (redis.x_redis, redis.x_redis_low, redis.x_redis_high) == (1.0, 1.0, 1.0)


def test_cells_keep_the_order_they_were_measured_in():
    figures = (incr(REDIS, [100], [1.0]) + incr("trio", [40], [2.0])
               + incr(REDIS, [100], [1.0], run="-c 1000") + incr("trio", [30], [9.0], "-c 1000"))
    assert [(c.server, c.run) for c in summarise(figures)] == [
        (REDIS, "-c 50"), ("trio", "-c 50"), (REDIS, "-c 1000"), ("trio", "-c 1000")]


def test_a_goal_is_judged_by_the_median_whatever_one_round_said():
    figures = (incr(REDIS, [100, 100, 100], [1.0, 1.0, 1.0])
               + incr("selectors", [70, 85, 90], [2.0, 2.0, 2.0])    # one round below 0.8
               + incr("threads", [60, 40, 55], [4.0, 7.0, 6.0]))     # two rounds over 5x
    verdicts = {(v.goal.server, v.goal.measure): v for v in judge(summarise(figures))}
    assert verdicts["selectors", "x redis"].met
    assert (verdicts["selectors", "x redis"].low, verdicts["selectors", "x redis"].high) == (
        pytest.approx(0.7), pytest.approx(0.9))
    assert verdicts["threads", "x redis"].met                 # 0.55 >= 0.5
    p99 = verdicts["threads", "p99"]
    assert p99.median == pytest.approx(6.0) and not p99.met   # p99 within 5x: not met


def test_a_bound_reached_exactly_is_met():
    figures = incr(REDIS, [100], [1.0]) + incr("trio", [45], [5.0])
    assert judge(summarise(figures), [Goal("trio", "-c 50", "INCR", 0.45)])[0].met
    assert judge(summarise(figures), [Goal("trio", "-c 50", "INCR", 5, measure="p99")])[0].met


def test_goals_of_models_not_measured_are_left_out():
    figures = incr(REDIS, [100], [1.0]) + incr("trio", [50], [2.0])
    assert [v.goal.server for v in judge(summarise(figures))] == ["trio"]


def test_the_load_client_is_compared_with_redis_benchmarks_ping_of_its_own_round():
    figures = []
    for number, (theirs, ours) in enumerate([(100_000, 40_000), (50_000, 30_000)], 1):
        figures.append(Figure(REDIS, "-c 50", "PING_MBULK", theirs, 0.2, 0.5, number))
        figures.append(Figure(LOAD_CLIENT, "-c 50", "PING_MBULK", ours, 1.0, 3.0, number,
                              driver="threads", client_cpu={
                                  "cores": 0.8 + number / 10, "waiting": 0.0, "ceiling": 1,
                                  "share": 0.8 + number / 10, "saturated": number == 2}))
    cells = summarise(figures)
    ours = cell(cells, LOAD_CLIENT, test="PING_MBULK")
    assert ours.x_redis == pytest.approx(0.5)               # the median of 0.4 and 0.6
    assert ours.driver == "threads" and len(ours.client_cpu) == 2
    (verdict,) = judge(cells)
    assert verdict.goal.server == LOAD_CLIENT and verdict.met
    table = redis_baseline.load_client_table(cells)
    assert "| contend load (threads driver) | 35,000 | 0.50 | 0.40–0.60 |" in table
    assert "busy 0.95 of 1 CPU, share 0.95, **the bottleneck** in 1 of 2 rounds |" in table
    assert LOAD_CLIENT not in redis_baseline.figures_table(cells)   # a table of its own


def test_the_section_names_the_command_the_machine_and_how_busy_it_was():
    figures = incr(REDIS, [100], [1.0]) + incr("threads", [50], [9.0])
    rounds = [redis_baseline.Round(1, "2026-11-26T05:00:00Z", (0.25, 0.5, 0.75),
                                   (1.25, 0.75, 0.5), 42.0, 0.05)]
    about = {"command": "python -m contend.client.redis_baseline --rounds 1", "date": "today",
             "wall_s": 50, "python": "3.11.7", "redis_server": "7.0.15", "machine": "x86_64",
             "cpus": 2, "pinning": "not pinned", "requests": 100_000, "open_files": 65536,
             "rounds": 1, "load_client": "contend load --scenario ping --clients 50"}
    text = redis_baseline.section(about, rounds, summarise(figures))
    assert "`python -m contend.client.redis_baseline --rounds 1`" in text
    assert "redis-server 7.0.15" in text and "2 CPUs" in text and "not pinned" in text
    assert "| 1 | 2026-11-26 05:00:00 | 5% | 0.25 0.50 0.75 | 1.25 0.75 0.50 | 42 s |" in text
    assert "| threads | `-c 50` | INCR | 50 | 0.50 | 0.50–0.50 |" in text
    assert "p99 within 5x redis-server's | 9.0 | 9.0–9.0 | **not met** |" in text
    assert "busy machine" not in text
    rounds.append(redis_baseline.Round(2, "2026-11-26T05:01:00Z", (3.5, 2.0, 1.0),
                                       (3.0, 2.0, 1.0), 40.0, 0.6))
    busy = redis_baseline.section({**about, "rounds": 2}, rounds, summarise(
        figures + [Figure(f.server, f.run, f.test, f.rps, f.p50_ms, f.p99_ms, 2)
                   for f in figures]))
    assert "**A busy machine**: other work used 60% of the 2 CPUs just before a round" in busy


# -- the section in the file ---------------------------------------------------------------

def test_the_section_is_replaced_between_the_markers_and_nothing_else(tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text(f"{PROSE_BEFORE}{BEGIN}\nthe old tables\n{END}{PROSE_AFTER}")
    redis_baseline.write_section(str(path), "### Latest run\n\n| a | b |\n")
    once = path.read_text()
    assert once == f"{PROSE_BEFORE}{BEGIN}\n### Latest run\n\n| a | b |\n{END}{PROSE_AFTER}"
    redis_baseline.write_section(str(path), "### Latest run\n\n| a | b |\n")
    assert path.read_text() == once                          # twice: the same file
    redis_baseline.write_section(str(path), "new figures")
    assert path.read_text() == f"{PROSE_BEFORE}{BEGIN}\nnew figures\n{END}{PROSE_AFTER}"
    assert [p.name for p in tmp_path.iterdir()] == ["benchmarks.md"]   # no scratch file left


@pytest.mark.parametrize("text", ["no markers at all", f"{BEGIN}\nonly the first\n",
                                  f"{END}\n{BEGIN}\n", f"{BEGIN}\n{END}\n{BEGIN}\n{END}\n"])
def test_a_text_without_one_pair_of_markers_in_order_is_refused(text):
    assert markers_problem(text)
    with pytest.raises(ValueError):
        replace_section(text, "tables")


def test_docs_benchmarks_has_one_pair_of_markers():
    assert markers_problem(DOC.read_text()) is None


# -- the command's errors, before any server starts ------------------------------------------

@pytest.fixture
def no_servers(monkeypatch):
    """Any attempt to start a server fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a server was started")
    monkeypatch.setattr(redis_baseline, "start_redis", refuse)
    monkeypatch.setattr(redis_baseline, "start_contend", refuse)


def test_a_write_file_without_the_markers_is_a_usage_error(tmp_path, capsys, no_servers):
    path = tmp_path / "notes.md"
    path.write_text("# Notes\n\nno markers here\n")
    assert redis_baseline.main(["--models", "threads", "--write", str(path)]) == 2
    problem = capsys.readouterr().err.strip()
    assert len(problem.splitlines()) == 1 and BEGIN in problem and str(path) in problem
    assert path.read_text() == "# Notes\n\nno markers here\n"


def test_an_unknown_model_is_a_usage_error(capsys, no_servers):
    with pytest.raises(SystemExit) as stopped:
        redis_baseline.main(["--models", "threads,fibres"])
    assert stopped.value.code == 2
    problem = capsys.readouterr().err.strip()
    assert len(problem.splitlines()) == 1 and "fibres" in problem


def test_a_server_that_does_not_start_is_one_line_and_status_3(monkeypatch, capsys, tmp_path):
    def fails(*args, **kwargs):
        raise RuntimeError("redis-server did not start")
    monkeypatch.setattr(redis_baseline, "missing_tools", lambda: [])
    monkeypatch.setattr(redis_baseline, "start_redis", fails)
    report = tmp_path / "baseline.json"
    assert redis_baseline.main(["--models", "threads", "--json", str(report)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("redis did not start: redis-server did not start")
    assert not any("Traceback" in line for line in err) and not report.exists()


# -- for real --------------------------------------------------------------------------------

def test_a_client_past_its_timeout_is_killed_with_what_it_started(tmp_path):
    started = tmp_path / "child.pid"
    with pytest.raises(subprocess.TimeoutExpired):
        redis_baseline.run_bounded(["sh", "-c", f"sleep 60 & echo $! > {started}; wait"], 0.5)
    child = int(started.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{child}/stat") as stat:
                if stat.read().split(")")[-1].split()[0] == "Z":   # dead, not yet reaped
                    break
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the client's child {child} still runs")


@pytest.mark.skipif(not (shutil.which("redis-server") and shutil.which("redis-benchmark")),
                    reason="needs redis-server and redis-benchmark (apt-get install "
                           "redis-server redis-tools)")
def test_one_small_round_writes_its_section_into_the_doc_and_json(tmp_path):
    copy = tmp_path / "benchmarks.md"
    shutil.copy(DOC, copy)
    original = DOC.read_text()
    report = tmp_path / "baseline.json"
    done = subprocess.run(
        [sys.executable, "-m", "contend.client.redis_baseline", "--models", "selectors",
         "--rounds", "1", "--requests", "2000", "--timeout", "30", "--write", str(copy),
         "--json", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stdout + done.stderr

    written = copy.read_text()
    assert written.split(BEGIN)[0] == original.split(BEGIN)[0]    # the prose is untouched
    assert written.split(END)[1] == original.split(END)[1]
    generated = written.split(BEGIN)[1].split(END)[0]
    assert generated.strip() == done.stdout.strip()             # what it printed
    assert "--models selectors --rounds 1 --requests 2000 --timeout 30" in generated
    for row in ["| redis | `-c 50` | INCR | ", "| selectors | `-c 50 -P 16` | INCR | ",
                "| selectors | `-c 1000` | PING_MBULK | ", "| contend load ("]:
        assert row in generated
    assert "selectors, INCR `-c 50`: at least 0.80x" in generated
    assert "the load client, PING at 50 clients" in generated
    assert "threads" not in generated.split("The goals")[1].split("The load client")[0]

    figures = json.loads(report.read_text())
    assert figures["about"]["rounds"] == 1 and figures["about"]["cpus"] == os.cpu_count()
    (only,) = figures["rounds"]
    assert len(only["load_before"]) == len(only["load_after"]) == 3
    assert 0 <= only["busy_before"] <= 1
    servers = [(f["server"], f["run"], f["test"]) for f in figures["figures"]]
    assert len(servers) == 13 and len(set(servers)) == 13   # 6 each, and the load client
    assert all(f["rps"] > 0 and f["p99_ms"] >= f["p50_ms"] > 0 for f in figures["figures"])
    assert {g["server"] for g in figures["goals"]} == {"selectors", LOAD_CLIENT}


def test_others_busy_is_a_share_of_the_cpus():
    assert 0.0 <= redis_baseline.others_busy(0.05) <= 1.0
