"""`contend grade`: bring your own server, get a report card.

    contend grade --target 127.0.0.1:6379 --json grade.json

Runs staged checks (client/grade_cases.py) against any server that speaks RESP:
a student's own, a contend model, redis-server. Each stage passes, or shows its
first difference: the bytes sent, the reply Redis would send, the reply that
came. A failed stage does not stop the ones after it, so the card is complete.

Exit status: 0 every stage passed, 1 a stage failed, 2 a usage error, 3 the
server cannot be reached at all (one line says why).
"""

from __future__ import annotations

import argparse
import json
import secrets
import socket
import time
from dataclasses import asdict, dataclass, field

from rich.console import Console
from rich.table import Table
from rich.text import Text

from contend.client.grade_cases import (
    STAGES,
    Difference,
    Stage,
    Target,
    clip,
    connection_problem,
    tidy_up,
)
from contend.client.load import json_path_problem, parse_target
from contend.shared.config import at_least

PASSED, FAILED, CANNOT_CONNECT = 0, 1, 3


@dataclass
class StageResult:
    """One line of the report card, as the table shows it and the JSON keeps it."""
    number: int
    name: str
    title: str
    passed: bool
    detail: str            # what passed, or the first difference in a sentence
    seconds: float
    sent: str | None = None       # the request behind the first difference, as Python bytes
    expected: str | None = None   # what Redis would have answered
    got: str | None = None        # what came instead
    facts: dict = field(default_factory=dict)   # the stage's figures (INCR: lost_updates)

    def as_dict(self) -> dict:
        return {**asdict(self), "seconds": round(self.seconds, 3)}


def run_stage(number: int, stage: Stage, target: Target) -> StageResult:
    began = time.monotonic()
    try:
        passed = stage.check(target)
    except Difference as difference:
        return StageResult(number, stage.name, stage.title, False, difference.summary,
                           time.monotonic() - began,
                           None if difference.sent is None else clip(difference.sent),
                           difference.expected, difference.got, difference.facts)
    except OSError as problem:   # a socket call a stage did not expect to fail
        return StageResult(number, stage.name, stage.title, False,
                           f"the connection failed: {connection_problem(problem, target.wait)}",
                           time.monotonic() - began)
    return StageResult(number, stage.name, stage.title, True, passed.detail,
                       time.monotonic() - began, facts=passed.facts)


def grade(target: Target, stages: list[Stage] = STAGES, on_stage=None) -> list[StageResult]:
    """Every stage in order, whatever the ones before it found; `on_stage(number, stage)`
    is told as each begins (the progress line)."""
    results = []
    for number, stage in enumerate(stages, 1):
        if on_stage:
            on_stage(number, stage)
        results.append(run_stage(number, stage, target))
    tidy_up(target)   # the server is left as it was found, where it knows DEL
    return results


def unreachable(target: Target) -> str | None:
    """Why the server cannot be reached at all, or None when it takes a connection."""
    try:
        socket.create_connection((target.host, target.port), timeout=target.wait).close()
    except OSError as problem:
        return connection_problem(problem, target.wait)
    return None


def detail_of(result: StageResult) -> str:
    """The detail column: what passed, or the difference with what was sent and received."""
    lines = [result.detail]
    for label, value in (("sent", result.sent), ("expected", result.expected),
                         ("got", result.got)):
        if value is not None:
            lines.append(f"{label + ':':9} {value}")
    return "\n".join(lines)


def report(address: str, results: list[StageResult]) -> dict:
    """The report card as JSON keeps it."""
    return {"target": address,
            "passed": all(result.passed for result in results),
            "stages_passed": sum(result.passed for result in results),
            "stages": [result.as_dict() for result in results]}


def render(address: str, results: list[StageResult], console: Console) -> None:
    table = Table(title=f"contend grade: {address}", show_lines=True)
    table.add_column("stage", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("detail", overflow="fold")
    table.add_column("time", justify="right", no_wrap=True)
    for result in results:
        mark = Text("passed", style="green") if result.passed else Text("FAILED", style="bold red")
        # Text, not markup: a request like b'[1]' must show as sent, never as a style.
        table.add_row(Text(f"{result.number}. {result.title}"), mark, Text(detail_of(result)),
                      f"{result.seconds:.2f} s")
    console.print(table)
    passed = sum(result.passed for result in results)
    verdict = "[green]full marks[/]" if passed == len(results) else "[red]not yet[/]"
    console.print(f"{passed} of {len(results)} stages passed: {verdict}")


def positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a number of seconds") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0")
    return seconds


def add_grade_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", type=parse_target, default=("127.0.0.1", 7070),
                        metavar="HOST:PORT", help="the server to grade (default: 127.0.0.1:7070)")
    parser.add_argument("--timeout", type=positive_seconds, default=2.0, metavar="SECONDS",
                        help="seconds to wait for any one reply (default: 2)")
    parser.add_argument("--clients", type=at_least(1), default=50,
                        help="clients at once in the concurrency stages (default: 50)")
    parser.add_argument("--requests", type=at_least(1), default=200,
                        help="INCRs per client in the INCR stage (default: 200)")
    parser.add_argument("--json", metavar="PATH", help="also write the report card as JSON")


def main(options) -> int:
    console = Console()
    err = Console(stderr=True)
    host, port = options.target
    address = f"{host}:{port}"
    problem = json_path_problem(options.json)
    if problem:
        err.print(f"contend grade: {problem}", markup=False, highlight=False, soft_wrap=True)
        return 2
    # Its keys are named for this run, so a second grade of the same server starts clean.
    target = Target(host, port, options.timeout, options.clients, options.requests,
                    run=secrets.token_hex(4))
    problem = unreachable(target)
    if problem:
        err.print(f"contend grade: cannot connect to {address}: {problem}",
                  markup=False, highlight=False, soft_wrap=True)
        return CANNOT_CONNECT
    with err.status("grading") as status:
        results = grade(target, on_stage=lambda number, stage: status.update(
            f"stage {number} of {len(STAGES)}: {stage.title}"))
    render(address, results, console)
    card = report(address, results)
    if options.json:
        with open(options.json, "w") as out:
            json.dump(card, out, indent=2)
    return PASSED if card["passed"] else FAILED
