"""`contend`: one command, a subcommand per job.

    contend serve   run one server model (imports server/ only when asked)
    contend load    many clients against one server, latency table and verdict
    contend race    every model with sync off and lock, one table
    contend demo    the tour: every model, the race, a comparison
    contend bench   models x client counts x scenarios: a table, CSV/JSON, charts
    contend ping    one PING (exit 0 on PONG): the compose healthchecks
"""

from __future__ import annotations

import argparse
import sys
import warnings

from contend.shared.config import Config, add_serve_arguments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="contend",
        description="A multi-client socket playground for learning and measuring thread safety.")
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
    demo.add_argument("--clients", type=int, default=16, help="racing clients (default: 16)")
    demo.add_argument("--requests", type=int, default=25,
                      help="requests per client per race scenario (default: 25)")
    demo.add_argument("--race-window-us", dest="race_window_us", type=int, default=2000,
                      help="gap between read and write with sync off (default: 2000)")
    demo.add_argument("--seconds", type=float, default=1.0,
                      help="seconds per comparison cell (default: 1)")
    ping = commands.add_parser("ping", help="PING a server: exit 0 on PONG, 1 otherwise")
    from contend.client.ping import add_ping_arguments
    add_ping_arguments(ping)
    return parser


def serve_parser() -> argparse.ArgumentParser:
    """`contend serve` alone: the other commands' modules import C extensions (hdrhistogram)
    that would turn a free-threaded interpreter's GIL back on for the server."""
    parser = argparse.ArgumentParser(prog="contend serve", description="run a server")
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
    return 2


if __name__ == "__main__":
    sys.exit(main())
