"""`contend`: one command, a subcommand per job.

    contend serve   run one server model (imports server/ only when asked)
    contend load    many clients against one server, latency table and verdict
    contend race    every model with sync off and lock, one table
    contend demo    the tour: every model, the race, a comparison
    contend bench   models x client counts x scenarios: a table, CSV/JSON, charts
    contend ping    one PING (exit 0 on PONG): the compose healthchecks
    contend top     a live dashboard of one or more servers, from INFO
    contend grade   staged checks of any RESP server (your own too): a report card
    contend step    you are the scheduler: park, list and release commands one by one

Exit status, every subcommand: 0 done (and the lesson held), 1 an invariant broke,
2 a usage error, 3 cannot connect or cannot listen, 130 interrupted (Ctrl-C). Each
error is one line on stderr, `contend SUBCOMMAND: ...`, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from contend.shared.config import Config, Parser, add_serve_arguments, at_least
from contend.shared.state import VERSION

INTERRUPTED = 130   # 128 + SIGINT, as a shell reports a command Ctrl-C stopped


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="contend",
        description="A multi-client socket playground for learning and measuring thread safety.")
    parser.add_argument("--version", action="version", version=f"contend {VERSION}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser("serve", help="run a server (speaks Redis's RESP2 and RESP3)")
    add_serve_arguments(serve)

    load = commands.add_parser("load", help="many clients against one server, with a verdict")
    from contend.client.load import add_load_arguments
    add_load_arguments(load)

    race = commands.add_parser("race", help="each model with sync off and on, one table")
    from contend.client.race import add_race_arguments
    add_race_arguments(race)

    bench = commands.add_parser("bench", help="models x clients x scenarios: table, CSV, charts")
    from contend.client.bench import add_bench_arguments
    add_bench_arguments(bench)

    demo = commands.add_parser("demo", help="the tour: every model, the race, a comparison")
    demo.add_argument("--clients", type=at_least(1), default=16,
                      help="racing clients (default: 16)")
    demo.add_argument("--requests", type=at_least(1), default=25,
                      help="requests per client per race scenario (default: 25)")
    demo.add_argument("--race-window-us", dest="race_window_us", type=at_least(0), default=2000,
                      help="gap between read and write with sync off (default: 2000)")
    demo.add_argument("--seconds", type=float, default=1.0,
                      help="seconds per comparison cell (default: 1)")
    ping = commands.add_parser("ping", help="PING a server: exit 0 on PONG, 1 otherwise")
    from contend.client.ping import add_ping_arguments
    add_ping_arguments(ping)
    top = commands.add_parser("top", help="a live dashboard of one or more servers (INFO)")
    from contend.client.top import add_top_arguments
    add_top_arguments(top)
    grade = commands.add_parser("grade", help="staged checks of any RESP server: a report card")
    from contend.client.grade import add_grade_arguments
    add_grade_arguments(grade)
    step = commands.add_parser("step", help="you are the scheduler: release parked commands "
                                            "one at a time (a server in step mode)")
    from contend.client.step import add_step_arguments
    add_step_arguments(step)
    return parser


def serve_parser() -> argparse.ArgumentParser:
    """`contend serve` alone: the other commands' modules import C extensions (hdrhistogram)
    that would turn a free-threaded interpreter's GIL back on for the server."""
    parser = Parser(prog="contend serve", description="run a server")
    add_serve_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["serve"]:
        options = serve_parser().parse_args(args[1:])
        options.command = "serve"
    else:
        # The clients may run with the GIL: on a free-threaded interpreter, importing
        # hdrhistogram turns it back on for this process (never a server's), and says so.
        warnings.filterwarnings("ignore", category=RuntimeWarning,
                                message="The global interpreter lock")
        options = build_parser().parse_args(args)
    try:
        return run(options)
    except BaseException as problem:
        if not interrupted(problem):
            raise
        # Ctrl-C: the `with` blocks on the way out have stopped any server this run started.
        print(f"contend {options.command}: interrupted", file=sys.stderr, flush=True)
        return INTERRUPTED


def interrupted(problem: BaseException) -> bool:
    """Ctrl-C, raised as it is, or inside the exception group of a trio nursery
    (the trio load driver's)."""
    if isinstance(problem, BaseExceptionGroup):
        return problem.subgroup(KeyboardInterrupt) is not None
    return isinstance(problem, KeyboardInterrupt)


def run(options: argparse.Namespace) -> int:
    if options.command == "serve":
        from contend import server  # the CLI imports a server only to run one
        return server.serve(Config.from_options(options))
    if options.command == "load":
        from contend.client.load import main as load_main
        return load_main(options)
    if options.command == "race":
        from contend.client.race import main as race_main
        return race_main(options)
    if options.command == "bench":
        from contend.client.bench import main as bench_main
        return bench_main(options)
    if options.command == "demo":
        from contend.client.demo import run_demo
        return run_demo(options)
    if options.command == "ping":
        from contend.client.ping import main as ping_main
        return ping_main(options)
    if options.command == "top":
        from contend.client.top import main as top_main
        return top_main(options)
    if options.command == "grade":
        from contend.client.grade import main as grade_main
        return grade_main(options)
    if options.command == "step":
        from contend.client.step import main as step_main
        return step_main(options)
    return 2


if __name__ == "__main__":
    sys.exit(main())
