"""DEBUG.STEP: list the commands parked in step mode, and let them go one at a time.

    DEBUG.STEP LIST             one line per parked command, CLIENT LIST's shape
    DEBUG.STEP RELEASE id       that one goes on: +OK, or an error if none has the id
    DEBUG.STEP RELEASE ALL      every parked command goes on: how many

shared/stepping.py says how parking works; here are the replies.
"""

from __future__ import annotations

from contend.shared.args import parse_int
from contend.shared.commands.table import command
from contend.shared.effects import EventSet
from contend.shared.resp import ReplyError
from contend.shared.stepping import step_event

USAGE = ("ERR unknown subcommand or wrong number of arguments for 'DEBUG.STEP': "
         "try DEBUG.STEP LIST, DEBUG.STEP RELEASE id, DEBUG.STEP RELEASE ALL")


@command("debug.step", -2, "server")
def debug_step(client, argv):
    stepper = client.server.stepper
    subcommand = argv[1].lower()
    if subcommand == b"list" and len(argv) == 2:
        return "".join(parked.line() + "\n" for parked in stepper.parked()).encode()
    if subcommand == b"release" and len(argv) == 3:
        if argv[2].lower() == b"all":
            return _release(stepper, stepper.ids(), everyone=True)
        step_id = parse_int(argv[2], "ERR the id of a parked command is an integer")
        return _release(stepper, [step_id], everyone=False)
    raise ReplyError(USAGE)


def _release(stepper, ids: list[int], everyone: bool):
    released = 0
    for step_id in ids:
        # Off the book first, then its event: a command whose client left meanwhile has
        # taken itself off already, and is not set free twice.
        if stepper.release(step_id):
            yield EventSet(step_event(step_id))
            released += 1
    if everyone:
        return released
    if not released:
        raise ReplyError(f"ERR no command is parked with id {ids[0]} (DEBUG.STEP LIST)")
    return "OK"
