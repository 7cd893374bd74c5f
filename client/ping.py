"""`contend ping`: is a server up and answering? The compose healthchecks ask this.

    contend ping --target threads:7070 --password "$CONTEND_PASSWORD"

Exit status 0 when the server answers PONG, 1 otherwise, with one line that
says why (refused, timed out, wrong password). Works against redis-server too.
"""

from __future__ import annotations

import argparse
import sys

from contend.client.connection import Connection
from contend.client.load import parse_target
from contend.shared.resp import ReplyError


def add_ping_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", type=parse_target, default=("127.0.0.1", 7070),
                        metavar="HOST:PORT", help="the server (default: 127.0.0.1:7070)")
    parser.add_argument("--password", default="",
                        help="AUTH with this password first (empty: no AUTH)")
    parser.add_argument("--timeout", type=float, default=2.0,
                        help="seconds to wait for the connection and each reply (default: 2)")


def ping(host: str, port: int, password: str = "", timeout: float = 2.0) -> str | None:
    """None when the server answered PONG; otherwise what went wrong, in words."""
    try:
        with Connection(host, port, timeout) as connection:
            if password:
                reply = connection.call("AUTH", password)
                if isinstance(reply, ReplyError):
                    return f"AUTH refused: {reply.text}"
            reply = connection.call("PING")
    except TimeoutError:
        return f"no reply within {timeout:g} s"
    except (OSError, ConnectionError) as problem:
        return str(problem) or type(problem).__name__
    if reply != "PONG":
        return f"answered {reply.text if isinstance(reply, ReplyError) else reply!r}, not PONG"
    return None


def main(options) -> int:
    host, port = options.target
    problem = ping(host, port, options.password, options.timeout)
    if problem is None:
        print(f"PONG from {host}:{port}")
        return 0
    print(f"contend ping: {host}:{port}: {problem}", file=sys.stderr)
    return 1
