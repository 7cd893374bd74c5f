"""Every Redis-named command answers exactly as a real redis-server does, in RESP2 and RESP3.

Each case is a script of commands; it runs on a real redis-server and on each
contend model, once on a RESP2 connection and once on one that sent HELLO 3
first, and the replies must be identical after parsing, types included (a
verbatim string is not a bulk string, a double is not an integer, even where
Python would call them equal). A RESP2 connection must never receive a RESP3
type, from either server.
"""

from __future__ import annotations

import contextlib

import pytest

from contend.shared.resp import NULL_ARRAY, Verbatim
from tests.raw import RESP3_TYPES, RawClient, reply_types


def as_map(reply):
    """A map reply as a dict, whichever protocol carried it (RESP2: a flat array)."""
    return reply if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2], strict=True))


def hello_fields(reply):
    """HELLO's map, less what cannot match: the connection id and the exact version."""
    return {key: type(value).__name__ if key in (b"id", b"version") else value
            for key, value in as_map(reply).items()}


def kind_only(reply):
    """Text whose content differs by design (INFO, CLIENT LIST): only its type is compared."""
    return typed(reply)[0]


# A command may start with one of these: its reply is compared after this function.
MARKERS = {
    "sorted": sorted,      # an array in no defined order (KEYS)
    "map": as_map,         # a map: RESP2's flat array in Redis's own hash order
    "hello": hello_fields,
    "kind": kind_only,
}

# name -> list of commands (tuples), each optionally starting with a MARKERS name.
CASES = {
    "ping and echo": [("PING",), ("PING", "hello"), ("PING", "a", "b"), ("ECHO", "x"), ("ECHO",),
                      ("ping",), ("PiNg", "mixed case")],
    "select": [("SELECT", "0"), ("SELECT", "16"), ("SELECT", "x"), ("SELECT",)],
    "unknown command and arity": [("FOO",), ("FOO", "a", "b"), ("FOO", "x" * 200),
                                  ("GET",), ("SET", "k"), ("INCR", "a", "b"), ("DEL",)],
    "get and set": [("SET", "k", "v"), ("GET", "k"), ("GET", "missing"), ("SET", "k", "w", "NX"),
                    ("GET", "k"), ("SET", "k2", "v", "XX"), ("GET", "k2"), ("SET", "k", "x", "XX"),
                    ("GET", "k"), ("SET", "k", "v", "NX", "XX"), ("SET", "k", "v", "FOO"),
                    ("SET", "new", "v", "nx"), ("SET", "empty", ""), ("GET", "empty"),
                    ("SET", "bin", b"\x00\r\n\xff"), ("GET", "bin")],
    "del exists type": [("MSET", "a", "1", "b", "2", "c", "3"), ("DEL", "a", "missing", "a"),
                        ("EXISTS", "a", "b", "b", "c"), ("TYPE", "b"), ("TYPE", "missing"),
                        ("RPUSH", "l", "x"), ("TYPE", "l"), ("DEL", "l"), ("EXISTS", "l")],
    "keys": [("MSET", "user:1", "a", "user:2", "b", "other", "c", "u[x]", "d"),
             ("sorted", "KEYS", "*"), ("sorted", "KEYS", "user:*"), ("sorted", "KEYS", "user:?"),
             ("sorted", "KEYS", "*[12]"), ("sorted", "KEYS", "*[^1]"),
             ("sorted", "KEYS", "u\\[x\\]"),
             ("sorted", "KEYS", "nothing*"), ("sorted", "KEYS", "USER:*")],
    "mget and mset": [("MSET", "a", "1", "b", "2"), ("RPUSH", "l", "x"),
                      ("MGET", "a", "l", "missing", "b"), ("MSET", "a"), ("MSET", "a", "1", "b")],
    "incr family": [("INCR", "n"), ("INCRBY", "n", "10"), ("DECR", "n"), ("DECRBY", "n", "5"),
                    ("GET", "n"), ("INCRBY", "n", "-100"), ("INCRBY", "n", "abc"),
                    ("INCRBY", "n", "1.5"), ("INCRBY", "n", "+1"), ("INCRBY", "n", " 1"),
                    ("INCRBY", "n", "01"), ("INCRBY", "n", "-0"),
                    ("SET", "s", "abc"), ("INCR", "s"), ("SET", "lead", "012"), ("INCR", "lead"),
                    ("SET", "big", "9223372036854775807"), ("INCR", "big"), ("DECR", "big"),
                    ("SET", "small", "-9223372036854775808"), ("DECR", "small"),
                    ("INCRBY", "x", "9223372036854775808"), ("DECRBY", "x", "-9223372036854775808"),
                    ("RPUSH", "l", "a"), ("INCR", "l"), ("DECRBY", "n", "9223372036854775807")],
    "lists": [("RPUSH", "l", "a", "b", "c"), ("LPUSH", "l", "z", "y"), ("LRANGE", "l", "0", "-1"),
              ("LRANGE", "l", "1", "2"), ("LRANGE", "l", "-2", "-1"), ("LRANGE", "l", "5", "10"),
              ("LRANGE", "l", "-100", "100"), ("LRANGE", "l", "3", "1"), ("LRANGE", "l", "a", "1"),
              ("LLEN", "l"), ("LPOP", "l"), ("RPOP", "l"), ("LPOP", "l", "2"), ("LPOP", "l", "0"),
              ("LPOP", "missing"), ("LPOP", "missing", "2"), ("RPOP", "l", "-1"),
              ("RPOP", "l", "x"), ("LPOP", "l", "1", "2"), ("RPOP", "l", "10"), ("EXISTS", "l"),
              ("LLEN", "missing"), ("SET", "s", "v"), ("LPUSH", "s", "x"), ("LLEN", "s"),
              ("RPUSH", "l2", "q"), ("GET", "l2"), ("LRANGE", "missing", "0", "-1")],
    "blocking pops that need not wait": [
        ("RPUSH", "q", "a", "b"), ("BLPOP", "empty", "q", "0"), ("BRPOP", "q", "1"),
        ("BLPOP", "empty", "0.05"), ("BRPOP", "empty", "0.01"), ("BLPOP", "q", "abc"),
        ("BLPOP", "q", "-1"), ("BLPOP", "q"), ("SET", "s", "v"), ("BLPOP", "s", "0.01")],
    "config": [("CONFIG", "GET", "save"), ("CONFIG", "GET", "appendonly"),
               ("CONFIG", "GET", "timeout"), ("CONFIG", "SET", "timeout", "abc"),
               ("CONFIG", "SET", "nosuch", "1"), ("CONFIG", "GET"), ("CONFIG", "SET", "timeout"),
               ("CONFIG", "NOSUCH"), ("CONFIG", "SET", "timeout", "0"),
               ("CONFIG", "GET", "nosuch*"), ("CONFIG", "SET", "save", "")],
    "dbsize and flush": [("DBSIZE",), ("MSET", "a", "1", "b", "2"), ("DBSIZE",),
                         ("FLUSHDB", "SYNC"), ("DBSIZE",), ("SET", "a", "1"), ("FLUSHALL", "ASYNC"),
                         ("DBSIZE",), ("FLUSHALL", "bad"), ("FLUSHALL", "a", "b"), ("DBSIZE", "x")],
    "client": [("CLIENT", "SETNAME", "worker-1"), ("CLIENT", "GETNAME"),
               ("CLIENT", "SETNAME", "a b"), ("CLIENT", "SETNAME", "a\nb"),
               ("CLIENT", "GETNAME"), ("CLIENT", "NOSUCH"), ("CLIENT",),
               ("CLIENT", "SETNAME"), ("CLIENT", "GETNAME", "x")],
    "auth without a password configured": [("AUTH", "x"), ("AUTH", "default", "x"),
                                           ("AUTH", "a", "b", "c")],
    "hello": [("HELLO", "4"), ("HELLO", "abc"), ("HELLO", "2", "FOO"),
              ("HELLO", "2", "AUTH", "default")],
    "hello switches protocol": [
        ("hello", "HELLO"), ("hello", "HELLO", "3"), ("GET", "missing"), ("hello", "HELLO"),
        ("hello", "HELLO", "2"), ("GET", "missing"), ("hello", "HELLO", "3"),
        ("HELLO", "1"), ("HELLO", "-1"), ("HELLO", "03"), ("HELLO", "2", "FOO"),
        ("GET", "missing"), ("HELLO", "2", "SETNAME"), ("HELLO", "3", "AUTH", "default"),
        ("HELLO", "AUTH", "default", "x"), ("GET", "missing")],
    "hello options": [
        ("hello", "HELLO", "3", "SETNAME", "first"), ("CLIENT", "GETNAME"),
        ("HELLO", "2", "SETNAME", "second", "NOSUCH"), ("CLIENT", "GETNAME"), ("GET", "missing"),
        ("HELLO", "2", "SETNAME", "a b"), ("CLIENT", "GETNAME"),
        ("hello", "HELLO", "2", "AUTH", "default", "any", "SETNAME", "third"),
        ("CLIENT", "GETNAME"), ("HELLO", "3", "AUTH", "bob", "x"), ("GET", "missing"),
        ("hello", "hello", "3", "auth", "default", "x", "setname", "fourth"),
        ("CLIENT", "GETNAME")],
    "nulls": [("GET", "missing"), ("MGET", "a", "missing"), ("LPOP", "missing"),
              ("LPOP", "missing", "2"), ("BLPOP", "missing", "0.01"), ("CLIENT", "GETNAME"),
              ("COMMAND", "INFO", "nosuchcommand"), ("SET", "k", "v", "NX"),
              ("SET", "k", "v", "NX"), ("LRANGE", "missing", "0", "-1")],
    "config get is a map": [
        ("CONFIG", "GET", "timeout"), ("CONFIG", "GET", "timeout", "timeout"),
        ("map", "CONFIG", "GET", "maxclients", "timeout"), ("CONFIG", "GET", "nosuch"),
        ("map", "CONFIG", "GET", "appendonly", "save", "TIMEOUT"), ("CONFIG", "GET", "appendonl?"),
        ("CONFIG", "GET", "Timeout", "timeout"), ("CONFIG", "GET", "time*", "TIMEOUT")],
    "text for people is verbatim": [
        ("INFO", "keyspace"), ("INFO", "nosuchsection"), ("kind", "INFO"),
        ("kind", "INFO", "server"), ("kind", "CLIENT", "LIST"), ("kind", "CLIENT", "INFO")],
    "command docs is a map": [("COMMAND", "DOCS", "nosuchcommand")],
    "info keyspace": [("INFO", "keyspace"), ("SET", "a", "1"), ("INFO", "keyspace"),
                      ("INFO", "nosuchsection")],
    "command": [("COMMAND", "NOSUCH"), ("COMMAND", "INFO", "nosuchcommand")],
    "quit": [("QUIT",)],
}


def typed(reply):
    """A reply with its RESP type kept: Python finds True == 1 == 1.0 and a
    Verbatim equal to its bytes, but a client that asked for RESP3 does not."""
    if isinstance(reply, Verbatim):
        return ("verbatim", reply.format, bytes(reply))
    if isinstance(reply, bool | float):
        return (type(reply).__name__, reply)
    if reply is NULL_ARRAY:
        return ("null array",)
    if isinstance(reply, list):
        return ("array", [typed(item) for item in reply])
    if isinstance(reply, dict):
        return ("map", {key: typed(value) for key, value in reply.items()})
    if isinstance(reply, set | frozenset):
        return ("set", reply)
    return (type(reply).__name__, reply)


def unmarked(command: tuple) -> tuple:
    """The command a script line sends, without its marker."""
    return command[1:] if command[0] in MARKERS else command


def run_script(client: RawClient, script) -> list:
    replies = []
    for command in script:
        normalise = MARKERS.get(command[0])
        reply = client.call(*unmarked(command))
        if isinstance(reply, Exception):
            replies.append(("error", str(reply)))
        else:
            replies.append(typed(normalise(reply) if normalise else reply))
    return replies


def asks_for_resp3(script) -> bool:
    return any(unmarked(command)[:2] in (("HELLO", "3"), ("hello", "3")) for command in script)


def run_case(server, script, protocol: int) -> tuple[list, RawClient]:
    with server.raw() as client:
        client.call("FLUSHALL")
        hello = [hello_fields(client.hello(3))] if protocol == 3 else []
        return hello + run_script(client, script), client


def assert_same_replies(script, protocol, expected, got, name):
    commands = [("HELLO", "3")] * (protocol == 3) + list(script)
    for command, want, have in zip(commands, expected, got, strict=True):
        assert have == want, f"{command}: redis says {want!r}, {name} says {have!r}"


@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_replies_match_redis(case, protocol, server, redis_server):
    expected, redis_client = run_case(redis_server, CASES[case], protocol)
    got, client = run_case(server, CASES[case], protocol)
    assert_same_replies(CASES[case], protocol, expected, got, server.name)
    if protocol == 2 and not asks_for_resp3(CASES[case]):
        # A RESP2 client never sees a RESP3 type (and the check is checked on Redis).
        assert not reply_types(redis_client.transcript) & RESP3_TYPES
        assert not reply_types(client.transcript) & RESP3_TYPES, bytes(client.transcript)


# Before AUTH: what HELLO checks first, and what it has already done when it refuses.
BEFORE_AUTH = [
    ("HELLO",), ("HELLO", "3"), ("HELLO", "4"), ("HELLO", "x"), ("GET", "k"),
    ("HELLO", "3", "SETNAME", "early"), ("HELLO", "3", "FOO"),
    ("HELLO", "3", "AUTH", "default", "wrong"), ("HELLO", "3", "AUTH", "bob", "s3cret"),
    ("HELLO", "3", "SETNAME", "a b", "AUTH", "default", "s3cret"), ("GET", "k"),
    ("AUTH", "s3cret"), ("CLIENT", "GETNAME"), ("GET", "k"),
    ("hello", "HELLO", "3", "AUTH", "default", "s3cret", "SETNAME", "late"),
    ("CLIENT", "GETNAME"), ("GET", "k"), ("HELLO", "2", "AUTH", "default", "wrong"),
    ("GET", "k"), ("hello", "HELLO", "2", "AUTH", "default", "s3cret"), ("GET", "k")]


@contextlib.contextmanager
def password_required(server):
    """requirepass on a shared server, for new connections; reset however the test ends
    (the connection that sets it was made before, so it stays authenticated)."""
    with server.raw() as admin:
        assert admin.call("CONFIG", "SET", "requirepass", "s3cret") == "OK"
        try:
            yield
        finally:
            admin.call("CONFIG", "SET", "requirepass", "")


def test_hello_before_auth_matches_redis(server, redis_server):
    results = []
    for target in (redis_server, server):
        with password_required(target), target.raw() as client:
            results.append(run_script(client, BEFORE_AUTH))
    assert_same_replies(BEFORE_AUTH, 2, *results, server.name)
