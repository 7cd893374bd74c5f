"""`contend race --python` and `contend bench --python`: the servers on other interpreters,
a row per interpreter, each named by its label ("3.11", "3.13t") and its GIL; an
interpreter that cannot run a server is a usage error, not a traceback.

A second interpreter here is this one again, behind a script of another name: enough to
see the rows and labels without a free-threaded build on the machine.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pytest
from rich.console import Console

from contend.client import race
from contend.client.servers import find_interpreters, this_interpreter
from tests.servers import CONTEND, ROOT

THIS = this_interpreter()
# On a build with the GIL, the servers' GIL is on; on a free-threaded one it may be either.
GILS = {"on", "off"} if THIS.free_threaded else {"on"}


def run(*args: str) -> subprocess.CompletedProcess:
    # Wide enough that a label is never folded over two lines of a table.
    return subprocess.run([*CONTEND, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "200"})


def script(folder, name: str, line: str) -> str:
    """An executable shell script, `name`, in folder: its path."""
    path = folder / name
    path.write_text(f"#!/bin/sh\n{line}\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def python_again(tmp_path) -> str:
    """This interpreter under another name."""
    return script(tmp_path, "python-again", f'exec "{sys.executable}" "$@"')


def told_apart(path: str) -> str:
    return f"{THIS.label} ({os.path.basename(path)})"


@pytest.mark.slow
def test_race_shows_each_model_on_each_interpreter(tmp_path, python_again):
    out = tmp_path / "race.json"
    done = run("race", "--models", "threads", "--clients", "8", "--requests", "10",
               "--python", sys.executable, "--python", python_again, "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(out.read_text())
    assert [(row["model"], row["python"], row["sync"]) for row in rows] == [
        ("threads", told_apart(sys.executable), "off"),
        ("threads", told_apart(sys.executable), "lock"),
        ("threads", told_apart(python_again), "off"),
        ("threads", told_apart(python_again), "lock")]
    assert {row["gil"] for row in rows} <= GILS
    assert all(row["holds"] for row in rows if row["sync"] == "lock")
    lines = done.stdout.splitlines()
    header = next(line for line in lines if "model" in line)
    assert "python" in header and "gil" in header
    assert sum(told_apart(python_again) in line for line in lines) == 2


@pytest.mark.slow
def test_bench_runs_each_cell_on_each_interpreter(tmp_path, python_again):
    done = run("bench", "--models", "threads", "--clients", "2", "--scenarios", "ping",
               "--requests", "10", "--no-redis", "--no-charts", "--out", str(tmp_path / "out"),
               "--python", sys.executable, "--python", python_again)
    assert done.returncode == 0, done.stdout + done.stderr
    with open(tmp_path / "out" / "bench.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [(row["server"], row["python"]) for row in rows] == [
        ("threads", told_apart(sys.executable)), ("threads", told_apart(python_again))]
    assert {row["gil"] for row in rows} <= GILS
    assert all(row["invariant_holds"] == "True" and row["ops"] == "20" for row in rows)

    about = json.loads((tmp_path / "out" / "bench.json").read_text())["about"]
    assert about["servers_python"][told_apart(python_again)] == python_again
    assert about["command"].endswith(f"--python {sys.executable} --python {python_again}")
    assert f"threads {told_apart(python_again)}" in (tmp_path / "out" / "bench.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["race", "bench"])
@pytest.mark.parametrize("kind", ["missing", "not-a-python", "without-contend"])
def test_an_interpreter_that_cannot_run_a_server_is_a_usage_error(tmp_path, command, kind):
    python = {
        "missing": lambda: str(tmp_path / "no-such-python"),
        "not-a-python": lambda: script(tmp_path, "silent", "exit 0"),
        # -I -S: no site-packages, no current folder, so no contend to import.
        "without-contend": lambda: script(tmp_path, "bare-python",
                                          f'exec "{sys.executable}" -I -S "$@"'),
    }[kind]()
    out = tmp_path / "out"
    done = run(command, "--models", "threads", "--python", python,
               *(["--out", str(out)] if command == "bench" else []))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert f"contend {command}: --python {python}" in done.stderr
    if kind == "without-contend":
        assert "cannot import contend.server" in done.stderr and "pip install" in done.stderr
    assert not out.exists()   # nothing ran, nothing written


@pytest.mark.slow
def test_the_same_path_twice_is_one_interpreter_asked_who_it_is():
    assert find_interpreters([sys.executable, sys.executable]) == [THIS]
    assert find_interpreters(None) == [THIS]   # no --python: this one, asked nothing


def race_table(python: str) -> str:
    console = Console(file=io.StringIO(), width=200)
    race.render([race.RaceRow(model="threads", python=python, gil="on", sync="lock", ops=10,
                              lost_updates=0, money_delta=0, holds=True)], console, 0)
    return console.file.getvalue()


def test_race_names_no_interpreter_when_every_server_ran_on_this_one():
    header = next(line for line in race_table(THIS.label).splitlines() if "model" in line)
    assert "python" not in header and "gil" not in header
    another = "3.99t" if THIS.label != "3.99t" else "3.98"   # any label but this one's
    other = race_table(another)
    assert "python" in other and another in other
