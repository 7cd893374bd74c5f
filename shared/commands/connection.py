"""Connection commands: PING, ECHO, QUIT, SELECT, AUTH, HELLO, CLIENT, COMMAND."""

from __future__ import annotations

import re

from contend.shared.args import parse_int, wrong_arity
from contend.shared.commands.table import COMMANDS, NO_AUTH, command
from contend.shared.resp import ReplyError, Verbatim
from contend.shared.state import REDIS_VERSION

WRONGPASS = "WRONGPASS invalid username-password pair or user is disabled."


def unknown_subcommand(argv: list[bytes]) -> ReplyError:
    sub = argv[1].decode("utf-8", "replace")
    return ReplyError(f"ERR unknown subcommand '{sub}'. "
                      f"Try {argv[0].decode('utf-8', 'replace').upper()} HELP.")


@command("ping", -1, "connection")
def ping(client, argv):
    if len(argv) > 2:
        raise wrong_arity("ping")
    return "PONG" if len(argv) == 1 else argv[1]


@command("echo", 2, "connection")
def echo(client, argv):
    return argv[1]


@command("quit", -1, "connection", flags=(NO_AUTH,))
def quit_(client, argv):
    client.closing = True
    return "OK"


@command("select", 2, "connection")
def select(client, argv):
    if parse_int(argv[1]) != 0:
        raise ReplyError("ERR DB index is out of range")
    return "OK"


def _check_password(client, user: bytes, password: bytes) -> None:
    wanted = client.server.config.requirepass
    # With no requirepass the default user has no password: any password passes.
    if user != b"default" or (wanted and password != wanted.encode()):
        raise ReplyError(WRONGPASS)
    client.authenticated = True


@command("auth", -2, "connection", flags=(NO_AUTH,))
def auth(client, argv):
    if len(argv) > 3:
        raise ReplyError("ERR syntax error")
    if len(argv) == 2 and not client.server.config.requirepass:
        raise ReplyError("ERR AUTH <password> called without any password configured for "
                         "the default user. Are you sure your configuration is correct?")
    user, password = (b"default", argv[1]) if len(argv) == 2 else (argv[1], argv[2])
    _check_password(client, user, password)
    return "OK"


NOAUTH_HELLO = ("NOAUTH HELLO must be called with the client already authenticated, otherwise "
                "the HELLO AUTH <user> <pass> option can be used to authenticate the client "
                "and select the RESP protocol version at the same time")


@command("hello", -1, "connection", flags=(NO_AUTH,))
def hello(client, argv):
    """HELLO [2|3 [AUTH user pass] [SETNAME name]]: Redis 7.0's checks, in its order.

    The version first; then each option, applied as it is read (a SETNAME
    before a bad option still names the client, as in Redis 7.0); then
    authentication. Only then does the connection switch protocol, so the
    reply, a map of who answers, is already written in the new one.
    """
    version = client.protocol
    if len(argv) > 1:
        version = parse_int(argv[1], "ERR Protocol version is not an integer or out of range")
        if version not in (2, 3):
            raise ReplyError("NOPROTO unsupported protocol version")
    options, i = argv[2:], 0
    while i < len(options):
        option = options[i].lower()
        if option == b"auth" and i + 2 < len(options):
            _check_password(client, options[i + 1], options[i + 2])
            i += 3
        elif option == b"setname" and i + 1 < len(options):
            client_setname(client, options[i + 1])
            i += 2
        else:
            raise ReplyError(f"ERR Syntax error in HELLO option "
                             f"'{options[i].decode('utf-8', 'replace')}'")
    if not client.authenticated:
        raise ReplyError(NOAUTH_HELLO)
    client.protocol = version   # the session encodes this reply, and every later one, in it
    return {b"server": b"redis", b"version": REDIS_VERSION.encode(), b"proto": version,
            b"id": client.id, b"mode": b"standalone", b"role": b"master", b"modules": []}


_NAME_OK = re.compile(rb"[!-~]*")   # printable ASCII, no spaces: Redis's rule for names


def client_setname(client, name: bytes) -> None:
    if not _NAME_OK.fullmatch(name):
        raise ReplyError("ERR Client names cannot contain spaces, newlines or special characters.")
    client.name = name
    client.server.client_changed(client)


@command("client", -2, "connection")
def client_(client, argv):
    sub = argv[1].lower()
    expected = {b"id": 2, b"getname": 2, b"info": 2, b"list": -2, b"setname": 3, b"setinfo": 4,
                b"help": 2}
    if sub not in expected:
        raise unknown_subcommand(argv)
    arity = expected[sub]
    if (arity > 0 and len(argv) != arity) or (arity < 0 and len(argv) < -arity):
        raise wrong_arity(f"client|{sub.decode()}")
    if sub == b"id":
        return client.id
    if sub == b"getname":
        return client.name or None
    if sub == b"setname":
        client_setname(client, argv[2])
        return "OK"
    if sub == b"setinfo":
        attribute, value = argv[2].lower(), argv[3]
        if attribute not in (b"lib-name", b"lib-ver"):
            raise ReplyError(f"ERR Unrecognized option '{argv[2].decode('utf-8', 'replace')}'")
        if not _NAME_OK.fullmatch(value):
            raise ReplyError(f"ERR {attribute.decode()} cannot contain spaces, newlines or "
                             "special characters.")
        setattr(client, "lib_name" if attribute == b"lib-name" else "lib_ver", value)
        client.server.client_changed(client)
        return "OK"
    # Text for a person: a verbatim string in RESP3, a bulk string in RESP2, as in Redis.
    if sub == b"info":
        return Verbatim(client.describe() + b"\n")
    if sub == b"list":
        lines = sorted(client.server.client_lines())
        return Verbatim(b"".join(line + b"\n" for _, line in lines))
    return [b"CLIENT <subcommand> [<arg> ...]. Subcommands are:",
            b"ID", b"GETNAME", b"INFO", b"SETNAME <name>", b"SETINFO <LIB-NAME|LIB-VER> <value>",
            b"LIST", b"HELP"]


@command("command", -1, "connection")
def command_(client, argv):
    if len(argv) == 1:
        return [c.info() for c in COMMANDS.values()]
    sub = argv[1].lower()
    if sub == b"count":
        if len(argv) != 2:
            raise wrong_arity("command|count")
        return len(COMMANDS)
    if sub == b"docs":
        return {}   # a map of name -> docs; contend ships none, so redis-cli shows no hints
    if sub == b"info":
        names = argv[2:] or list(COMMANDS)
        return [COMMANDS[n.lower()].info() if n.lower() in COMMANDS else None for n in names]
    raise unknown_subcommand(argv)
