"""RESP3, negotiated per connection: the session's part, and what only contend has.

Redis's own commands are held to a real redis-server in both protocols by
test_conformance.py. Here: HELLO switching one connection and not another,
the playground's replies (POOL.STATUS, BARRIER.STATUS, ...) as maps, fast
through the in-process model; then real clients asking for RESP3 of every model.
"""

from __future__ import annotations

import subprocess

from contend.shared.resp import NULL_ARRAY, Verbatim
from tests.inprocess import InProcess

HELLO_FIELDS = [b"server", b"version", b"proto", b"id", b"mode", b"role", b"modules"]


def resp3(model: InProcess, name: str):
    client = model.connect(name)
    assert client.call("HELLO", "3")[b"proto"] == 3
    return client


# -- HELLO and the session --------------------------------------------------------

def test_hello_3_is_answered_in_resp3_with_exactly_redis_fields():
    model = InProcess()
    client = model.connect("a")
    reply = client.call("HELLO", "3")
    assert type(reply) is dict and list(reply) == HELLO_FIELDS
    assert reply[b"proto"] == 3 and reply[b"id"] == client.session.client.id
    assert reply[b"server"] == b"redis" and reply[b"modules"] == []


def test_hello_without_a_version_answers_in_the_protocol_already_spoken():
    model = InProcess()
    old, new = model.connect("old"), resp3(model, "new")
    flat = old.call("HELLO")
    assert type(flat) is list and flat[flat.index(b"proto") + 1] == 2
    assert new.call("HELLO")[b"proto"] == 3


def test_protocol_belongs_to_one_connection():
    model = InProcess()
    old, new = model.connect("old"), resp3(model, "new")
    assert new.call("CONFIG", "GET", "timeout") == {b"timeout": b"0"}
    assert old.call("CONFIG", "GET", "timeout") == [b"timeout", b"0"]
    assert new.call("HELLO", "2")[:2] == [b"server", b"redis"]   # back to RESP2, in RESP2
    assert new.call("CONFIG", "GET", "timeout") == [b"timeout", b"0"]


def test_client_list_says_which_protocol_each_connection_speaks():
    model = InProcess()
    old = model.connect("old")
    resp3(model, "new")
    lines = sorted(bytes(old.call("CLIENT", "LIST")).decode().splitlines())
    assert [line.split(" resp=")[1].split()[0] for line in lines] == ["2", "3"]


def test_a_refused_hello_leaves_the_protocol_as_it_was():
    model = InProcess(requirepass="s3cret")
    client = model.connect("a")
    for refused in (["HELLO", "3"], ["HELLO", "4"], ["HELLO", "3", "FOO"],
                    ["HELLO", "3", "AUTH", "default", "wrong"]):
        assert client.call(*refused).text.split()[0] in ("NOAUTH", "NOPROTO", "ERR", "WRONGPASS")
    assert client.call("AUTH", "s3cret") == "OK"
    assert client.call("CONFIG", "GET", "timeout") == [b"timeout", b"0"]


def test_text_for_people_is_verbatim_in_resp3_and_a_bulk_string_in_resp2():
    model = InProcess()
    old, new = model.connect("old"), resp3(model, "new")
    for command in (["INFO"], ["INFO", "playground"], ["CLIENT", "LIST"], ["CLIENT", "INFO"]):
        text = new.call(*command)
        assert type(text) is Verbatim and text.format == "txt", command
        assert type(old.call(*command)) is bytes, command
    mine = new.call("CLIENT", "INFO")
    assert mine.startswith(b"id=2 ") and mine.endswith(b"\n") and mine.count(b"\n") == 1


def test_nulls_are_resp3s_one_null():
    model = InProcess()
    old, new = model.connect("old"), resp3(model, "new")
    for command in (["BLPOP", "nothing", "0.01"], ["LPOP", "nothing", "2"],
                    ["BARRIER.STATUS", "nothing"]):
        new.send(*command)
        old.send(*command)
        model.advance(0.02)
        assert new.replies() == [None], command
        assert old.replies() == [NULL_ARRAY], command


# -- the playground's replies ---------------------------------------------------------

def test_pool_status_is_a_map_in_resp3_and_a_flat_array_in_resp2():
    model = InProcess(pool_size=3)
    old, new = model.connect("old"), resp3(model, "new")
    assert new.call("POOL.ACQUIRE") == 1
    status = {b"size": 3, b"in-use": 1, b"waiting": 0, b"peak-in-use": 1,
              b"acquired-total": 1, b"timeouts": 0}
    assert new.call("POOL.STATUS") == status
    assert old.call("POOL.STATUS") == [item for pair in status.items() for item in pair]


def test_pool_acquire_timeout_is_a_null_in_both():
    model = InProcess(pool_size=1)
    holder, new = model.connect("holder"), resp3(model, "new")
    holder.call("POOL.ACQUIRE")
    new.send("POOL.ACQUIRE", "0.25")
    model.advance(0.25)
    assert new.replies() == [None]


def test_barrier_status_is_a_map_in_resp3_and_a_flat_array_in_resp2():
    model = InProcess()
    old, new = model.connect("old"), resp3(model, "new")
    assert new.call("BARRIER.WAIT", "gate", "1") == 0
    status = {b"parties": 1, b"waiting": 0, b"broken": 0, b"generation": 1}
    assert new.call("BARRIER.STATUS", "gate") == status
    assert old.call("BARRIER.STATUS", "gate") == [item for pair in status.items() for item in pair]


def test_yes_or_no_answers_stay_integers_as_redis_s_do():
    model = InProcess()
    new = resp3(model, "new")
    assert new.call("EVENT.ISSET", "e") == 0 and type(new.call("EVENT.ISSET", "e")) is int
    assert new.call("EXISTS", "k") == 0 and type(new.call("EXISTS", "k")) is int


# -- real clients, real servers (the slow tier) -------------------------------------------

def test_redis_py_speaks_resp3_to_every_model(server):
    r = server.redis(protocol=3)
    assert r.ping() is True
    assert r.set("k", "v") is True and r.get("k") == b"v" and r.get("missing") is None
    assert r.config_get("timeout") == {"timeout": "0"}
    assert r.info("server")["redis_version"] == "7.0.0"
    assert r.client_info()["id"] == r.client_id()
    assert r.execute_command("POOL.STATUS")[b"size"] == 4
    assert r.execute_command("HELLO")[b"proto"] == 3   # HELLO alone answers in the protocol spoken


def test_a_resp3_connection_gets_a_map_on_the_wire_from_every_model(server):
    with server.raw() as client:
        assert client.hello(3)[b"proto"] == 3
        assert client.call("POOL.STATUS")[b"size"] == 4
        assert client.call("CONFIG", "GET", "timeout") == {b"timeout": b"0"}
        assert client.transcript.endswith(b"%1\r\n$7\r\ntimeout\r\n$1\r\n0\r\n")


def test_redis_cli_3_prints_the_same_as_for_redis(server, redis_server):
    script = "CONFIG GET maxclients\nGET missing\nINFO keyspace\nBLPOP q 0.01\nLPOP q 2\n"

    def cli(target) -> str:
        return subprocess.run(["redis-cli", "-3", "-p", str(target.port)], input=script,
                              capture_output=True, text=True, timeout=30, check=True).stdout

    with redis_server.raw() as client:
        client.call("FLUSHALL")
    assert cli(server) == cli(redis_server)
