"""Server commands: CONFIG, INFO, DBSIZE, FLUSHALL, FLUSHDB, SHUTDOWN."""

from __future__ import annotations

from contend.shared.args import wrong_arity
from contend.shared.commands.connection import unknown_subcommand
from contend.shared.commands.table import command
from contend.shared.effects import ALL_KEYS, Guard, ModelInfo, Reconfigure, Shutdown
from contend.shared.info import render_info
from contend.shared.resp import NO_REPLY, ReplyError, Verbatim


@command("config", -2, "server")
def config(client, argv):
    sub = argv[1].lower()
    settings = client.server.config
    if sub == b"get":
        if len(argv) < 3:
            raise wrong_arity("config|get")
        # A map (RESP2: name, value, name, value), as Redis 7.0 builds it: each setting
        # once, however many patterns match it, and named as asked when asked by name.
        found: dict[bytes, tuple[bytes, bytes]] = {}
        for pattern in argv[2:]:
            flat = settings.get(pattern)
            by_name = not any(c in pattern for c in b"*?[")
            for name, value in zip(flat[::2], flat[1::2], strict=True):
                found.setdefault(name, (pattern if by_name else name, value))
        return dict(found.values())
    if sub == b"set":
        if len(argv) < 4 or len(argv) % 2:
            raise wrong_arity("config|set")
        pairs = list(zip(argv[2::2], argv[3::2], strict=True))
        return _apply(settings.set(pairs))
    if sub == b"resetstat":
        client.server.reset_stats()
        return "OK"
    raise unknown_subcommand(argv)


def _apply(changed: tuple[str, ...]):
    yield Reconfigure(changed)
    return "OK"


@command("info", -1, "server")
def info(client, argv):
    extra = yield ModelInfo()
    sections = [a.decode("utf-8", "replace").lower() for a in argv[1:]]
    # Text for a person: a verbatim string in RESP3, a bulk string in RESP2, as in Redis.
    return Verbatim(render_info(client.server, extra, sections, asking=client))


def _flush_option(argv: list[bytes]) -> None:
    if len(argv) > 2 or (len(argv) == 2 and argv[1].lower() not in (b"async", b"sync")):
        raise ReplyError("ERR syntax error")


@command("dbsize", 1, "server")
def dbsize(client, argv):
    yield Guard(ALL_KEYS)
    return client.server.keyspace.size()


@command("flushall", -1, "server")
def flushall(client, argv):
    _flush_option(argv)
    return _flush(client)


@command("flushdb", -1, "server")
def flushdb(client, argv):
    _flush_option(argv)
    return _flush(client)


def _flush(client):
    yield Guard(ALL_KEYS)
    client.server.keyspace.flush()
    return "OK"


@command("shutdown", -1, "server")
def shutdown(client, argv):
    for option in argv[1:]:
        if option.lower() not in (b"nosave", b"save", b"now", b"force"):
            raise ReplyError("ERR syntax error")
    yield Shutdown()
    client.closing = True
    return NO_REPLY
