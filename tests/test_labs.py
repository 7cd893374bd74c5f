"""The lab sheets run as written: every shell block in labs/*.md, against real servers.

The conventions (labs/README.md):

- a ```` ```sh server ```` block holds servers to start, one a line, each naming
  its `--port`; the test starts them in the background on free loopback ports
  instead and waits until each answers PING;
- a ```` ```sh run ```` block holds commands, run one by one with `sh -c`, with
  every server port of the sheet rewritten to the free port chosen for it;
  each must exit 0, or with the status its trailing `# exit status N` comment
  names;
- `<!-- expect: REGEX -->` after a run block must match the block's output
  (stdout and stderr, every command), `<!-- expect-not: REGEX -->` must not;
- `<!-- needs: free-threaded-python -->` anywhere in a sheet: its commands and
  servers call a free-threaded CPython (PEP 703, no GIL) by the name
  `python3.13t`. The test finds one as tests/test_free_threaded.py does
  ($CONTEND_FREE_THREADED_PYTHON, python3.14t or python3.13t on PATH, the build
  scripts/free-threaded-python.sh caches in /opt/python3.13t), with this
  checkout's contend importable, and links it into a directory of its own at the
  front of PATH as `python3.13t` (the interpreter's own bin directory would bring
  its `python3` and `contend` along, shadowing the ones with a GIL the sheet
  compares it with). The sheet is skipped, saying why, when there is none, when
  this test runs on a free-threaded interpreter itself (its `contend` has no GIL
  to compare), or on one CPU (where no two threads ever run at once);
- `<!-- needs: gil -->`: the sheet shows what the GIL does (lab 9), and is
  skipped when the suite runs on a free-threaded interpreter.

A sheet's servers live until the end of the sheet, like the terminals a
student leaves open. Commands run in a fresh directory, so files they write
(--json) are the sheet's own; `labs/` in it points at the real labs, as it
does from the repository root where students run them.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from contend.client.ping import ping
from tests.helpers import free_threaded_python
from tests.servers import ROOT, free_port

LABS = ROOT / "labs"
SHEETS = sorted(LABS.glob("[0-9][0-9]-*.md"))
SECTIONS = ("## Goal", "## Run it", "## What to observe", "## Questions", "## For the instructor")
FENCE = re.compile(r"^```(\w*)[ \t]*(\w*)[ \t]*$")
EXPECT = re.compile(r"<!--\s*expect(-not)?:\s*(.*?)\s*-->")
EXIT_STATUS = re.compile(r"\s+#\s*exit status ([\d ,or]+)$")
SERVER_PORT = re.compile(r"--port\s+(\d+)")
# Commands that reach a server the sheet started: they must name its port.
CLIENTS = re.compile(r"\b(redis-cli|redis-benchmark|contend (?:load|ping|step|grade))\b")
NEEDS = re.compile(r"<!--\s*needs:\s*(.*?)\s*-->")
FREE_THREADED = "free-threaded-python"
GIL = "gil"   # the sheet's observations are the GIL's: left out of a free-threaded run
KNOWN_NEEDS = {FREE_THREADED, GIL}
FREE_THREADED_NAME = "python3.13t"   # what a sheet types, whichever one was found


@dataclass
class Block:
    kind: str                 # "server" or "run"
    line: int                 # where it starts in the sheet, for messages
    commands: list[str]
    expect: list[str] = field(default_factory=list)
    expect_not: list[str] = field(default_factory=list)


def parse_sheet(text: str) -> tuple[list[Block], list[tuple[int, str]]]:
    """The sheet's server and run blocks, and any other fenced blocks (line, info)."""
    blocks: list[Block] = []
    others: list[tuple[int, str]] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opened = FENCE.match(lines[index])
        if not lines[index].startswith("```"):
            if blocks and not others_after(others, blocks[-1]):
                for negated, pattern in EXPECT.findall(lines[index]):
                    (blocks[-1].expect_not if negated else blocks[-1].expect).append(pattern)
            index += 1
            continue
        start, body = index + 1, []
        index += 1
        while index < len(lines) and not lines[index].startswith("```"):
            body.append(lines[index])
            index += 1
        index += 1
        language, kind = opened.groups() if opened else ("", "")
        if language == "sh" and kind in ("server", "run"):
            blocks.append(Block(kind, start, join_commands(body)))
        else:
            others.append((start, f"{language} {kind}".strip()))
    return blocks, others


def others_after(others, block: Block) -> bool:
    """An expect comment belongs to the nearest run block above it, with no other block between."""
    return any(line > block.line for line, _ in others)


def join_commands(body: list[str]) -> list[str]:
    commands, pending = [], ""
    for line in body:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        command = (pending + line).strip()
        pending = ""
        if command and not command.startswith("#"):
            commands.append(command)
    return commands


def allowed_statuses(command: str) -> tuple[str, set[int]]:
    found = EXIT_STATUS.search(command)
    if not found:
        return command, {0}
    return command, {int(n) for n in re.findall(r"\d+", found.group(1))}


def cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Sheet:
    """One sheet's servers, on free ports, and the rewrite from its ports to theirs."""

    def __init__(self, path: Path, workdir: Path):
        self.path, self.workdir = path, workdir
        # Students run the sheets from the repository root; `labs/compare.py` resolves here too.
        (workdir / "labs").symlink_to(LABS)
        self.ports: dict[str, int] = {}
        self.processes: list[subprocess.Popen] = []
        self.commands: list[str] = []
        bindir = str(Path(sys.executable).parent)
        self.env = {**os.environ, "COLUMNS": "120",
                    "PATH": bindir + os.pathsep + os.environ["PATH"]}

    def provide(self, needs: list[str]) -> None:
        """What the sheet says it needs (<!-- needs: ... -->), or skip it, saying why."""
        if GIL in needs and sysconfig.get_config_var("Py_GIL_DISABLED"):
            pytest.skip(f"{self.path.name} shows what the GIL does; this run has none")
        if FREE_THREADED in needs:
            if sysconfig.get_config_var("Py_GIL_DISABLED"):
                pytest.skip(f"{self.path.name} compares `contend` with a GIL against "
                            f"{FREE_THREADED_NAME}; this run's interpreter is free-threaded itself")
            if cpus() < 2:
                pytest.skip(f"{self.path.name}: one CPU, so no two threads ever run at once")
            python, reason = free_threaded_python()
            if python is None:
                pytest.skip(f"{self.path.name}: {reason}")
            # Only the one name: the interpreter's own bin directory has a `python3` and a
            # `contend` too, which would take the place of the ones with a GIL.
            bindir = self.workdir / "free-threaded-bin"
            bindir.mkdir()
            (bindir / FREE_THREADED_NAME).symlink_to(python)
            self.env["PATH"] = str(bindir) + os.pathsep + self.env["PATH"]

    def localise(self, command: str) -> str:
        if not self.ports:
            return command
        pattern = r"\b(" + "|".join(map(re.escape, self.ports)) + r")\b"
        return re.sub(pattern, lambda found: str(self.ports[found.group(1)]), command)

    def start(self, block: Block) -> None:
        for command in block.commands:
            named = SERVER_PORT.search(command)
            assert named, f"{self.path.name}:{block.line}: a server names its --port: {command}"
            self.ports[named.group(1)] = free_port()
            argv = shlex.split(self.localise(command))
            log = open(  # noqa: SIM115 - the server writes to it for as long as it runs
                self.workdir / f"server-{len(self.processes)}.log", "w")
            self.processes.append(subprocess.Popen(argv, cwd=self.workdir, env=self.env,
                                                   stdout=log, stderr=subprocess.STDOUT))
            self.commands.append(command)
            log.close()   # the child has its own copy
            port = self.ports[named.group(1)]
            deadline = time.monotonic() + 20
            while ping("127.0.0.1", port, timeout=1) is not None:
                assert self.processes[-1].poll() is None, f"{self.path.name}: {command} exited"
                assert time.monotonic() < deadline, f"{self.path.name}: {command} never answered"
                time.sleep(0.05)

    def run(self, block: Block) -> str:
        output = []
        for written in block.commands:
            command, statuses = allowed_statuses(written)
            if CLIENTS.search(command):
                assert any(re.search(rf"\b{port}\b", command) for port in self.ports), \
                    f"{self.path.name}:{block.line}: name the server's port: {command}"
            done = subprocess.run(["sh", "-c", self.localise(command)], cwd=self.workdir,
                                  env=self.env, capture_output=True, text=True, timeout=60)
            output.append(f"$ {command}\n{done.stdout}{done.stderr}")
            assert done.returncode in statuses, (
                f"{self.path.name}:{block.line}: exit status {done.returncode}, "
                f"expected {sorted(statuses)}\n" + "".join(output) + self.casualties())
        text = "".join(output)
        for pattern in block.expect:
            assert re.search(pattern, text, re.MULTILINE), (
                f"{self.path.name}:{block.line}: expected /{pattern}/ in\n{text}"
                + self.casualties())
        for pattern in block.expect_not:
            assert not re.search(pattern, text, re.MULTILINE), (
                f"{self.path.name}:{block.line}: did not expect /{pattern}/ in\n{text}"
                + self.casualties())
        return text

    def casualties(self) -> str:
        """Servers that have exited, with the end of their output: why a command failed."""
        report = ""
        for n, (command, process) in enumerate(zip(self.commands, self.processes, strict=False)):
            if process.poll() is not None:
                log = (self.workdir / f"server-{n}.log").read_text()[-2000:]
                report += f"\n[server `{command}` exited {process.returncode}]\n{log}"
        return report

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_there_is_a_sheet_per_lesson_and_each_has_every_section():
    # Numbered from 01, each number once; a later lesson may keep its issue's number (13).
    numbers = [int(path.name[:2]) for path in SHEETS]
    assert numbers[:9] == list(range(1, 10)) and len(set(numbers)) == len(numbers), numbers
    for path in SHEETS:
        text = path.read_text()
        assert text.startswith(f"# Lab {int(path.name[:2])}: "), path.name
        missing = [section for section in SECTIONS if f"\n{section}\n" not in text]
        assert not missing, f"{path.name} lacks {missing}"
        blocks, others = parse_sheet(text)
        assert not others, f"{path.name}: a fenced block that is not run: {others}"
        runs = [block for block in blocks if block.kind == "run"]
        assert runs and all(block.expect for block in runs), \
            f"{path.name}: every run block states what it shows (<!-- expect: ... -->)"
        unknown = set(NEEDS.findall(text)) - KNOWN_NEEDS
        assert not unknown, f"{path.name}: needs what the test cannot provide: {unknown}"


def test_every_lab_links_to_code_that_exists():
    """A link names what it shows: [`Server.guard`](../server/threads.py) needs `def guard`."""
    for path in [*SHEETS, LABS / "README.md"]:
        for name, target in re.findall(r"\[(.*?)\]\((\.\./[^)#]+)", path.read_text()):
            linked = (LABS / target).resolve()
            assert linked.exists(), f"{path.name} links to missing {target}"
            named = re.fullmatch(r"`(?:\w+\.)?(\w+)`", name)
            if named and linked.suffix == ".py":
                name = named.group(1)
                defined = (rf"^\s*(?:async def|def|class) {name}\b"
                           rf"|^\s*(?:self\.)?{name}\b.*=")
                assert re.search(defined, linked.read_text(), re.MULTILINE), \
                    f"{path.name}: {target} no longer defines {name}"


def test_the_lab_index_lists_every_sheet():
    index = (LABS / "README.md").read_text()
    for path in SHEETS:
        assert f"]({path.name})" in index, path.name


@pytest.mark.parametrize("path", SHEETS, ids=[path.stem for path in SHEETS])
def test_lab_sheet_runs_as_written(path, tmp_path):
    text = path.read_text()
    blocks, _ = parse_sheet(text)
    sheet = Sheet(path, tmp_path)
    sheet.provide(NEEDS.findall(text))
    try:
        for block in blocks:
            if block.kind == "server":
                sheet.start(block)
            else:
                sheet.run(block)
    finally:
        sheet.stop()
