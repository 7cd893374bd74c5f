"""Every Redis-named command answers exactly as a real redis-server does.

Each case is a script of commands; it runs on a real redis-server and on each
contend model, and the replies must be identical, byte for byte after parsing.
"""

from __future__ import annotations

import pytest

from tests.raw import RawClient

# name -> list of commands (tuples). A command whose first item is "sorted"
# compares its array reply as a set (KEYS has no defined order).
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
    "info keyspace": [("INFO", "keyspace"), ("SET", "a", "1"), ("INFO", "keyspace"),
                      ("INFO", "nosuchsection")],
    "command": [("COMMAND", "NOSUCH"), ("COMMAND", "INFO", "nosuchcommand")],
    "quit": [("QUIT",)],
}


def run_script(client: RawClient, script) -> list:
    replies = []
    for command in script:
        as_set = command[0] == "sorted"
        if as_set:
            command = command[1:]
        reply = client.call(*command)
        if isinstance(reply, Exception):
            reply = ("error", str(reply))
        replies.append(sorted(reply) if as_set else reply)
    return replies


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_replies_match_redis(case, server, redis_server):
    with redis_server.raw() as client:
        client.call("FLUSHALL")
        expected = run_script(client, CASES[case])
    with server.raw() as client:
        client.call("FLUSHALL")
        got = run_script(client, CASES[case])
    for command, want, have in zip(CASES[case], expected, got, strict=True):
        assert have == want, f"{command}: redis says {want!r}, {server.name} says {have!r}"
