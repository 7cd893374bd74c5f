"""The GIL lab: WORK (CPU-bound) and SLEEP (waiting), to compare across models."""

from __future__ import annotations

from contend.shared.args import parse_int
from contend.shared.commands.pool import parse_ms
from contend.shared.commands.table import command
from contend.shared.effects import Sleep
from contend.shared.resp import ReplyError

ITERATIONS_PER_UNIT = 1000
MAX_UNITS = 1_000_000


def work(units: int) -> int:
    """Fixed pure-Python CPU work; the checksum proves it was all done."""
    checksum = 0
    for i in range(units * ITERATIONS_PER_UNIT):
        checksum = (checksum * 31 + i) & 0xFFFFFFFF
    return checksum


@command("work", 2, "gil")
def work_(client, argv):
    units = parse_int(argv[1])
    if not 0 <= units <= MAX_UNITS:
        raise ReplyError(f"ERR units must be between 0 and {MAX_UNITS}")
    return work(units)


@command("sleep", 2, "gil", flags=("blocking",))
def sleep(client, argv):
    return _sleep(parse_ms(argv[1]))


def _sleep(seconds: float):
    yield Sleep(seconds)
    return "OK"
