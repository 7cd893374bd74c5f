"""The GIL lab: WORK (CPU-bound) and SLEEP (waiting), to compare across models."""

from __future__ import annotations

from contend.shared.args import parse_int, parse_milliseconds
from contend.shared.commands.table import command
from contend.shared.effects import Sleep
from contend.shared.resp import ReplyError

ITERATIONS_PER_UNIT = 1000
CHECKSUM_BITS = 32


def work(units: int) -> int:
    """Fixed pure-Python CPU work; the checksum proves it was all done."""
    # The mask is made here, not written as 0xFFFFFFFF: a constant that large is one object
    # every thread shares, and on free-threaded 3.13 each pass of each thread changes its
    # reference count, so two WORKs took turns with no GIL at all (lab 12).
    mask = (1 << CHECKSUM_BITS) - 1
    checksum = 0
    for i in range(units * ITERATIONS_PER_UNIT):
        checksum = (checksum * 31 + i) & mask
    return checksum


@command("work", 2, "gil")
def work_(client, argv):
    # The lesson is that a CPU-bound command stalls a single-threaded server for as
    # long as it runs; the cap (CONFIG work-max-units, default 10000: under a second)
    # keeps that lesson from becoming `WORK 1000000` freezing it for minutes.
    units = parse_int(argv[1])
    server = client.server
    limit = server.config.work_max_units
    if not 0 <= units <= limit:
        if units > limit:
            client.work_refusals += 1
        raise ReplyError(f"ERR units must be between 0 and {limit} "
                         "(CONFIG SET work-max-units to allow more)")
    return work(units)


@command("sleep", 2, "gil", flags=("blocking",))
def sleep(client, argv):
    return _sleep(parse_milliseconds(argv[1]))


def _sleep(seconds: float):
    yield Sleep(seconds)
    return "OK"
