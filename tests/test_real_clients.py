"""The real Redis clients work unchanged: redis-py (sync and asyncio), redis-cli and
redis-benchmark."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import pytest
import redis
import redis.asyncio

needs_redis_tools = pytest.mark.skipif(shutil.which("redis-cli") is None,
                                       reason="redis-tools is not installed")


def test_redis_py_sync_client(server):
    r = server.redis()
    assert r.ping() is True
    assert r.set("name", "contend") is True
    assert r.get("name") == b"contend"
    assert r.incr("n") == 1 and r.incrby("n", 41) == 42 and r.decr("n") == 41
    assert r.rpush("q", "a", "b") == 2 and r.lrange("q", 0, -1) == [b"a", b"b"]
    assert r.blpop(["q"], timeout=1) == (b"q", b"a")
    assert r.mget("name", "missing") == [b"contend", None]
    assert r.exists("name", "n") == 2 and r.delete("name") == 1
    assert r.dbsize() == 2
    assert r.config_get("sync") == {"sync": "lock"}
    assert r.info("playground")["pool_size"] == 4
    assert r.client_setname("py") is True and r.client_getname() == "py"
    assert isinstance(r.client_id(), int)
    assert r.execute_command("BANK.DEPOSIT", "acct", 10) == 10
    assert r.execute_command("POOL.STATUS")[:2] == [b"size", 4]
    with pytest.raises(redis.ResponseError, match="wrong kind of value"):
        r.incr("q")
    pipe = r.pipeline(transaction=False)
    for _ in range(100):
        pipe.incr("piped")
    assert pipe.execute()[-1] == 100
    r.close()


def test_redis_py_asyncio_client(server):
    async def talk():
        r = redis.asyncio.Redis(host=server.host, port=server.port)
        try:
            assert await r.ping() is True
            results = await asyncio.gather(*(r.incr("async-hits") for _ in range(50)))
            assert sorted(results) == list(range(1, 51))
            assert await r.execute_command("EVENT.SET", "go") == 0
            assert await r.execute_command("EVENT.WAIT", "go", 1) == 1
        finally:
            await r.aclose()
    asyncio.run(talk())


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
