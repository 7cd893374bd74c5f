"""The real Redis clients work unchanged, at today's versions and with their default settings.

- redis-py 8 says HELLO 3 first and speaks RESP3 from then on: sync and asyncio,
  `pipeline()` (a MULTI/EXEC transaction by default), `pipeline(transaction=False)`,
  and `transaction()`, which WATCHes, reads, and retries until EXEC goes through.
- valkey-py, the fork, with its own defaults (RESP2).
- redis-py 7 (RESP2): it cannot be installed beside 8, so it is installed once per
  test session into a folder of its own and runs the same checks in a subprocess.
- redis-cli (piped, one-shot, RESP2 and RESP3) and redis-benchmark.

The checks that hold for any Redis run against every model and against a real
redis-server, the reference: a check wrong about Redis fails there first.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading

import pytest
import redis
import redis.asyncio
import valkey

from tests.helpers import wait_until
from tests.servers import ROOT

needs_redis_tools = pytest.mark.skipif(shutil.which("redis-cli") is None,
                                       reason="redis-tools is not installed")

LIBRARIES = {"redis-py": redis, "valkey-py": valkey}


@pytest.fixture
def any_server(target):
    """Each model's shared server (emptied, the default guard) and redis-server."""
    with target.raw() as client:
        client.call("FLUSHALL")
        if target.name != "redis":
            client.call("CONFIG", "SET", "sync", "lock", "race-window-us", "0")
    return target


def connect(library, server):
    """A client with the library's default settings: only where the server is."""
    return library.Redis(host=server.host, port=server.port)


def protocol_spoken(client) -> int:
    """The RESP version of the client's connection: the server's answer to HELLO, or 2
    when the client never said HELLO (every connection starts in RESP2)."""
    pool = client.connection_pool
    try:
        connection = pool.get_connection()
    except TypeError:   # valkey-py and older redis-py still want a command name
        connection = pool.get_connection("PING")
    try:
        agreed = getattr(connection, "handshake_metadata", None)
        return int(agreed[b"proto"]) if agreed else int(getattr(connection, "protocol", 2) or 2)
    finally:
        pool.release(connection)


# -- the checks every library runs (redis-py 7 too, in its subprocess) ---------------

def check_commands(r, library) -> None:
    assert r.ping() is True
    assert r.set("name", "contend") is True and r.get("name") == b"contend"
    assert r.incr("n") == 1 and r.incrby("n", 41) == 42 and r.decr("n") == 41
    assert r.rpush("q", "a", "b") == 2 and r.lrange("q", 0, -1) == [b"a", b"b"]
    assert r.blpop(["q"], timeout=1) == (b"q", b"a")
    assert r.blpop(["empty"], timeout=0.05) is None
    assert r.mget("name", "missing") == [b"contend", None]
    assert r.exists("name", "n") == 2 and r.delete("name") == 1
    assert r.dbsize() == 2
    assert r.client_setname("py") is True and r.client_getname() == "py"
    assert isinstance(r.client_id(), int)
    with pytest.raises(library.ResponseError, match="wrong kind of value"):
        r.incr("q")


def check_pipelines(r, library) -> None:
    """`pipeline()` wraps its commands in MULTI/EXEC; `transaction=False` only batches."""
    pipe = r.pipeline()
    for _ in range(100):
        pipe.incr("in-multi")
    assert pipe.execute() == list(range(1, 101))
    pipe = r.pipeline(transaction=False)
    for _ in range(100):
        pipe.incr("piped")
    assert pipe.execute()[-1] == 100
    # A command that fails inside EXEC fails alone: Redis runs the rest, rolls nothing back.
    pipe = r.pipeline()
    pipe.set("word", "text").incr("word").get("word")
    with pytest.raises(library.ResponseError, match=r"Command # 2 \(INCRBY word 1\).*integer"):
        pipe.execute()
    pipe.set("word", "again").incr("word").get("word")
    failed = pipe.execute(raise_on_error=False)
    assert failed[0] is True and failed[2] == b"again"
    assert isinstance(failed[1], library.ResponseError)
    assert r.get("word") == b"again"


def check_watch(r, other, library) -> None:
    """WATCH, a write by another client, and EXEC refuses; `transaction()` goes round
    again until nobody wrote in between; two clients' increments are never lost."""
    with r.pipeline() as pipe:
        pipe.watch("seats")
        assert pipe.get("seats") is None   # after WATCH the pipeline runs commands at once
        other.set("seats", 99)
        pipe.multi()
        pipe.set("seats", 1)
        with pytest.raises(library.WatchError):
            pipe.execute()
    assert r.get("seats") == b"99"

    seen = []

    def add_one(pipe):
        value = int(pipe.get("counter") or 0)
        seen.append(value)
        if len(seen) == 1:
            other.set("counter", 10)   # lands between our WATCH and our EXEC
        pipe.multi()
        pipe.set("counter", value + 1)

    assert r.transaction(add_one, "counter") == [True]
    assert seen == [0, 10] and r.get("counter") == b"11"

    def increment(pipe) -> None:
        value = int(pipe.get("shared") or 0)
        pipe.multi()
        pipe.set("shared", value + 1)

    def increments(client) -> None:
        for _ in range(30):
            client.transaction(increment, "shared")

    racer = threading.Thread(target=increments, args=(other,))
    racer.start()
    increments(r)
    racer.join(60)
    assert r.get("shared") == b"60"


def check_all(r, other, library) -> None:
    check_commands(r, library)
    check_pipelines(r, library)
    check_watch(r, other, library)


# -- redis-py 8 and valkey-py, here -------------------------------------------------

def test_redis_py_is_8_or_later_and_speaks_resp3_by_default(any_server):
    r = connect(redis, any_server)
    assert int(redis.__version__.split(".")[0]) >= 8
    assert r.ping() is True and protocol_spoken(r) == 3
    r.close()


def test_valkey_py_keeps_resp2_by_default(any_server):
    v = connect(valkey, any_server)
    assert v.ping() is True and protocol_spoken(v) == 2
    v.close()


@pytest.mark.parametrize("name", LIBRARIES)
def test_commands_with_default_settings(any_server, name):
    r = connect(LIBRARIES[name], any_server)
    check_commands(r, LIBRARIES[name])
    r.close()


@pytest.mark.parametrize("name", LIBRARIES)
def test_pipelines_with_and_without_multi_exec(any_server, name):
    r = connect(LIBRARIES[name], any_server)
    check_pipelines(r, LIBRARIES[name])
    r.close()


@pytest.mark.parametrize("name", LIBRARIES)
def test_watch_and_the_transaction_helper(any_server, name):
    r, other = connect(LIBRARIES[name], any_server), connect(LIBRARIES[name], any_server)
    check_watch(r, other, LIBRARIES[name])
    r.close()
    other.close()


def test_redis_py_expiry(any_server):
    r = connect(redis, any_server)
    assert r.set("session", "s", ex=100) is True and 98 <= r.ttl("session") <= 100
    assert r.set("short", "s", px=50_000) is True and 40_000 < r.pttl("short") <= 50_000
    assert r.ttl("missing") == -2
    assert r.set("kept", "k") is True and r.ttl("kept") == -1
    assert r.expire("kept", 100) is True and r.ttl("kept") > 0
    assert r.persist("kept") is True and r.ttl("kept") == -1
    assert r.pexpire("kept", 1) is True
    wait_until(lambda: r.exists("kept") == 0, message="the key to expire")
    assert r.get("kept") is None and r.ttl("kept") == -2
    assert r.set("session", "new", get=True) == b"s" and r.ttl("session") == -1
    r.close()


def test_redis_py_playground_commands_over_resp3(server):
    r = connect(redis, server)
    assert r.config_get("sync") == {"sync": "lock"}
    assert r.info("playground")["pool_size"] == 4
    assert r.execute_command("BANK.DEPOSIT", "acct", 10) == 10
    assert r.execute_command("POOL.STATUS")[b"size"] == 4   # field/value pairs: a RESP3 map
    assert r.execute_command("EVENT.SET", "go") == 0
    assert r.execute_command("EVENT.WAIT", "go", 1) == 1
    r.close()


def test_redis_py_asyncio_client(any_server):
    async def talk():
        r = redis.asyncio.Redis(host=any_server.host, port=any_server.port)
        other = redis.asyncio.Redis(host=any_server.host, port=any_server.port)
        try:
            assert await r.ping() is True
            results = await asyncio.gather(*(r.incr("async-hits") for _ in range(50)))
            assert sorted(results) == list(range(1, 51))
            async with r.pipeline() as pipe:
                assert await pipe.incr("a").incr("a").get("a").execute() == [1, 2, b"2"]
            async with r.pipeline(transaction=False) as pipe:
                assert await pipe.incr("b").incr("b").execute() == [1, 2]
            seen = []

            async def add_one(pipe):
                value = int(await pipe.get("counter") or 0)
                seen.append(value)
                if len(seen) == 1:
                    await other.set("counter", 10)
                pipe.multi()
                pipe.set("counter", value + 1)

            assert await r.transaction(add_one, "counter") == [True]
            assert seen == [0, 10] and await r.get("counter") == b"11"
        finally:
            await r.aclose()
            await other.aclose()
    asyncio.run(talk())


# -- redis-py 7, apart ------------------------------------------------------------------

REDIS_PY_7 = "redis>=7,<8"
# Run by the subprocess with redis-py 7 first on its path: the checks above, unchanged.
SCRIPT_7 = """
import sys
import redis
from tests import test_real_clients as checks

assert redis.__version__.startswith("7."), redis.__version__
host, port = sys.argv[1], int(sys.argv[2])
r, other = redis.Redis(host=host, port=port), redis.Redis(host=host, port=port)
checks.check_all(r, other, redis)
print(redis.__version__, "RESP", checks.protocol_spoken(r))
"""


@pytest.fixture(scope="session")
def redis_py_7(request, tmp_path_factory):
    """A folder holding redis-py 7 alone, installed once (kept in pytest's cache)."""
    cache = getattr(request.config, "cache", None)
    folder = (cache.mkdir("redis-py-7") if cache is not None
              else tmp_path_factory.mktemp("redis-py-7"))
    if not list(folder.glob("redis-7.*.dist-info")):
        shutil.rmtree(folder)   # a half-finished install, or another version
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                               "--disable-pip-version-check", "--no-input",
                               "--target", str(folder), REDIS_PY_7],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"pip could not install {REDIS_PY_7}:\n{done.stderr}"
    return folder


def test_redis_py_7_with_resp2(any_server, redis_py_7):
    done = subprocess.run([sys.executable, "-c", SCRIPT_7, any_server.host, str(any_server.port)],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(redis_py_7)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("7.") and done.stdout.split()[1:] == ["RESP", "2"]


# -- redis-cli and redis-benchmark ---------------------------------------------------------

@needs_redis_tools
def test_redis_cli_piped(server):
    script = ("SET greeting hello\nGET greeting\nINCR visits\nINCR visits\n"
              "RPUSH q one two\nLRANGE q 0 -1\nBANK.DEPOSIT acct 100\nPOOL.ACQUIRE\n"
              "NOSUCH command\n")
    done = subprocess.run(["redis-cli", "-h", server.host, "-p", str(server.port)],
                          input=script, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert lines[:8] == ["OK", "hello", "1", "2", "2", "one", "two", "100"]
    assert lines[8].isdigit()   # a lease id
    assert "ERR unknown command 'NOSUCH'" in done.stdout


@needs_redis_tools
@pytest.mark.parametrize("protocol", ["-2", "-3"])
def test_redis_cli_transaction(any_server, protocol):
    script = ("SET n 5\nMULTI\nINCR n\nINCR n\nEXEC\n"
              "WATCH n\nMULTI\nGET n\nDISCARD\nUNWATCH\nGET n\n")
    done = subprocess.run(["redis-cli", protocol, "-h", any_server.host,
                           "-p", str(any_server.port)],
                          input=script, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:-1] == ["OK", "OK", "QUEUED", "QUEUED", "6", "7",
                                            "OK", "OK", "QUEUED", "OK", "OK", "7"]


@needs_redis_tools
def test_redis_cli_one_shot_commands(server):
    def cli(*args):
        return subprocess.run(["redis-cli", "-h", server.host, "-p", str(server.port), *args],
                              capture_output=True, text=True, timeout=30).stdout.strip()
    assert cli("PING") == "PONG"
    assert cli("SET", "k", "with space") == "OK"
    assert cli("GET", "k") == "with space"
    assert cli("POOL.STATUS").split("\n")[:2] == ["size", "4"]
    assert "# Playground" in cli("INFO", "playground")


@needs_redis_tools
def test_redis_benchmark_completes_without_errors(server):
    tests = "ping_inline,ping_mbulk,set,get,incr,lpush,rpush,lpop,rpop,lrange_100,mset"
    done = subprocess.run(["redis-benchmark", "-h", server.host, "-p", str(server.port),
                           "-t", tests, "-n", "2000", "-c", "20", "-q"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "WARNING" not in output and "Error" not in output and "ERR" not in output
    for name in ("PING_INLINE", "PING_MBULK", "SET", "GET", "INCR", "LPUSH", "RPUSH", "LPOP",
                 "RPOP", "LRANGE_100", "MSET"):
        assert f"{name}" in output, f"{name} missing from redis-benchmark's output:\n{output}"
    assert output.count("requests per second") >= 11
