"""The blocking commands, in every model: BLPOP/BRPOP, POOL.*, BARRIER.*, EVENT.*, SLEEP.

These are where the models differ by design (a Condition, a parked
continuation, an await), so each rule of docs/design.md is pinned here, the
disconnect cases included: a client that leaves loses nothing and leaks nothing.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from contend.shared.resp import NULL_ARRAY, ReplyError
from tests.helpers import as_dict, blocked_clients, info_field, wait_until


def start_blocked(server, *command, expected_blocked: int = 1):
    """Open a client, send a blocking command, return once the server counts it blocked."""
    client = server.raw()
    client.send_command(*command)
    wait_until(lambda: blocked_clients(server) >= expected_blocked, message=f"{command} to block")
    return client


# -- lists: BLPOP / BRPOP on a Condition -------------------------------------

def test_blpop_is_woken_by_a_push_from_another_connection(server):
    waiter = start_blocked(server, "BLPOP", "queue", "0")
    with server.raw() as pusher:
        assert pusher.call("RPUSH", "queue", "job") == 1   # the reply counts the item handed over
        assert pusher.call("LLEN", "queue") == 0
    assert waiter.read() == [b"queue", b"job"]
    waiter.close()


def test_blpop_waiters_are_served_first_come_first_served(server):
    waiters = []
    for n in range(3):
        waiters.append(start_blocked(server, "BLPOP", "fifo", "0", expected_blocked=n + 1))
    with server.raw() as pusher:
        pusher.call("RPUSH", "fifo", "first", "second", "third")
    assert [w.read() for w in waiters] == [[b"fifo", b"first"], [b"fifo", b"second"],
                                          [b"fifo", b"third"]]
    for w in waiters:
        w.close()


def test_brpop_takes_from_the_right_and_watches_several_keys(server):
    waiter = start_blocked(server, "BRPOP", "a", "b", "0")
    with server.raw() as pusher:
        pusher.call("RPUSH", "b", "x", "y")
        assert waiter.read() == [b"b", b"y"]
        assert pusher.call("LRANGE", "b", "0", "-1") == [b"x"]
    waiter.close()


def test_blpop_times_out_with_a_null_array(server):
    with server.raw() as client:
        assert client.call("BLPOP", "nothing", "0.1") is NULL_ARRAY
        assert client.call("PING") == "PONG"


def test_blpop_waiter_that_disconnects_loses_nothing(server):
    waiter = start_blocked(server, "BLPOP", "precious", "0")
    waiter.close()
    wait_until(lambda: blocked_clients(server) == 0, message="the waiter to be removed")
    with server.raw() as client:
        assert info_field(client, "list_waiters") == 0
        client.call("RPUSH", "precious", "item")
        assert client.call("LPOP", "precious") == b"item"


def test_replies_before_a_blocking_command_are_sent_first(server):
    with server.raw() as client:
        client.send(b"PING\r\nBLPOP later 0\r\n")
        assert client.read() == "PONG"   # arrives while BLPOP still waits
        with server.raw() as pusher:
            pusher.call("RPUSH", "later", "v")
        assert client.read() == [b"later", b"v"]


# -- pool: a Semaphore of pool-size leases -----------------------------------

def pool_status(client) -> dict:
    return as_dict(client.call("POOL.STATUS"))


def test_pool_never_lends_more_than_its_size(server):
    with server.raw() as client:
        client.call("CONFIG", "SET", "pool-size", "2")
        first, second = client.call("POOL.ACQUIRE"), client.call("POOL.ACQUIRE")
        assert isinstance(first, int) and isinstance(second, int) and first != second
        assert client.call("POOL.ACQUIRE", "0.1") is None   # null on timeout
        status = pool_status(client)
        assert status["size"] == 2 and status["in-use"] == 2 and status["timeouts"] >= 1
        assert client.call("POOL.RELEASE", first) == 1
        assert client.call("POOL.RELEASE", first) == 0   # not held any more
        assert pool_status(client)["in-use"] == 1
        client.call("POOL.RELEASE", second)


def test_only_the_holder_can_release_a_lease(server):
    with server.raw() as holder, server.raw() as other:
        lease = holder.call("POOL.ACQUIRE")
        assert other.call("POOL.RELEASE", lease) == 0
        assert other.call("POOL.RELEASE", "999999") == 0
        assert holder.call("POOL.RELEASE", lease) == 1


def test_lease_released_when_client_disconnects(server):
    holder = server.raw()
    leases = [holder.call("POOL.ACQUIRE") for _ in range(4)]
    assert all(isinstance(lease, int) for lease in leases)
    waiter = start_blocked(server, "POOL.ACQUIRE", "0")
    holder.close()
    assert isinstance(waiter.read(), int)   # a lease came back when its holder left
    waiter.close()
    with server.raw() as client:
        wait_until(lambda: pool_status(client)["in-use"] == 0, message="leases returned")


def test_pool_waiter_that_disconnects_is_forgotten(server):
    with server.raw() as holder:
        for _ in range(4):
            holder.call("POOL.ACQUIRE")
        waiter = start_blocked(server, "POOL.ACQUIRE", "0")
        waiter.close()
        wait_until(lambda: pool_status(holder)["waiting"] == 0, message="the waiter to leave")
        wait_until(lambda: blocked_clients(server) == 0, message="no blocked clients")
        assert pool_status(holder)["in-use"] == 4   # nothing was granted to the departed waiter


def test_pool_use_holds_a_lease_for_a_while_and_peak_stays_at_size(server):
    with server.raw() as client:
        client.call("CONFIG", "SET", "pool-size", "3")
        before = pool_status(client)["acquired-total"]

    def use(_):
        with server.raw() as c:
            return c.call("POOL.USE", "30")

    with ThreadPoolExecutor(8) as pool:
        leases = list(pool.map(use, range(8)))
    assert all(isinstance(lease, int) for lease in leases) and len(set(leases)) == 8
    with server.raw() as client:
        status = pool_status(client)
        assert status["peak-in-use"] <= 3 and status["in-use"] == 0
        assert status["acquired-total"] == before + 8


def test_pool_use_times_out_when_every_lease_is_held(server):
    with server.raw() as holder, server.raw() as client:
        for _ in range(4):
            holder.call("POOL.ACQUIRE")
        assert client.call("POOL.USE", "10", "0.05") is None


def test_pool_size_can_grow_and_shrink_at_run_time(server):
    with server.raw() as client:
        held = [client.call("POOL.ACQUIRE") for _ in range(4)]
        client.call("CONFIG", "SET", "pool-size", "2")
        for lease in held:
            client.call("POOL.RELEASE", lease)
        kept = [client.call("POOL.ACQUIRE", "0.05") for _ in range(3)]
        assert sum(isinstance(lease, int) for lease in kept) == 2
        client.call("CONFIG", "SET", "pool-size", "3")
        assert isinstance(client.call("POOL.ACQUIRE", "0.05"), int)


def test_pool_bad_arguments(server):
    with server.raw() as client:
        assert (str(client.call("POOL.ACQUIRE", "abc"))
                == "ERR timeout is not a float or out of range")
        assert (str(client.call("POOL.RELEASE", "x"))
                == "ERR value is not an integer or out of range")
        assert str(client.call("POOL.USE", "-1")) == "ERR milliseconds must not be negative"
        assert "wrong number of arguments" in str(client.call("POOL.STATUS", "x"))


# -- barrier: threading.Barrier semantics ------------------------------------

def test_barrier_gives_each_party_a_distinct_index(server):
    waiters = [start_blocked(server, "BARRIER.WAIT", "start", "3", expected_blocked=n + 1)
               for n in range(2)]
    with server.raw() as last:
        indices = {last.call("BARRIER.WAIT", "start", "3")}
        indices |= {w.read() for w in waiters}
        assert indices == {0, 1, 2}
        status = as_dict(last.call("BARRIER.STATUS", "start"))
        assert status == {"parties": 3, "waiting": 0, "broken": 0, "generation": 1}
    for w in waiters:
        w.close()


def test_barrier_timeout_breaks_it_for_everyone_until_reset(server):
    waiter = start_blocked(server, "BARRIER.WAIT", "b", "3")
    with server.raw() as client:
        assert str(client.call("BARRIER.WAIT", "b", "3", "0.1")) == "BROKEN barrier 'b' is broken"
        assert str(waiter.read()) == "BROKEN barrier 'b' is broken"
        assert str(client.call("BARRIER.WAIT", "b", "3")) == "BROKEN barrier 'b' is broken"
        assert as_dict(client.call("BARRIER.STATUS", "b"))["broken"] == 1
        assert client.call("BARRIER.RESET", "b") == 1
        assert client.call("BARRIER.WAIT", "b", "1") == 0   # whole again, afresh
    waiter.close()


def test_barrier_reset_breaks_the_waiters(server):
    waiter = start_blocked(server, "BARRIER.WAIT", "r", "2")
    with server.raw() as client:
        assert client.call("BARRIER.RESET", "r") == 1
        assert str(waiter.read()) == "BROKEN barrier 'r' is broken"
        assert client.call("BARRIER.RESET", "never-made") == 0
    waiter.close()


def test_barrier_breaks_when_a_waiting_party_disconnects(server):
    leaver = start_blocked(server, "BARRIER.WAIT", "d", "3")
    stayer = start_blocked(server, "BARRIER.WAIT", "d", "3", expected_blocked=2)
    leaver.close()
    assert str(stayer.read()) == "BROKEN barrier 'd' is broken"
    stayer.close()
    wait_until(lambda: blocked_clients(server) == 0, message="no blocked clients")


def test_barrier_parties_must_match_and_status_of_unknown_is_null(server):
    waiter = start_blocked(server, "BARRIER.WAIT", "m", "2")
    with server.raw() as client:
        assert str(client.call("BARRIER.WAIT", "m", "5")) == \
            "ERR barrier 'm' has 2 parties, not 5; BARRIER.RESET it first"
        assert client.call("BARRIER.STATUS", "unknown") is NULL_ARRAY
        assert str(client.call("BARRIER.WAIT", "m", "0")) == "ERR parties must be positive"
        assert client.call("BARRIER.WAIT", "m", "2") in (0, 1)
    assert waiter.read() in (0, 1)
    waiter.close()


# -- event: threading.Event semantics ----------------------------------------

def test_event_set_releases_every_waiter_and_counts_them(server):
    waiters = [start_blocked(server, "EVENT.WAIT", "open", "0", expected_blocked=n + 1)
               for n in range(2)]
    with server.raw() as client:
        assert client.call("EVENT.ISSET", "open") == 0
        assert client.call("EVENT.SET", "open") == 2
        assert [w.read() for w in waiters] == [1, 1]
        assert client.call("EVENT.ISSET", "open") == 1
        assert client.call("EVENT.WAIT", "open") == 1          # already set: no wait
        assert client.call("EVENT.SET", "open") == 0           # nobody was waiting
        assert client.call("EVENT.CLEAR", "open") == "OK"
        assert client.call("EVENT.WAIT", "open", "0.05") == 0  # timeout
    for w in waiters:
        w.close()


def test_event_waiter_that_disconnects_is_not_counted(server):
    waiter = start_blocked(server, "EVENT.WAIT", "gone", "0")
    waiter.close()
    wait_until(lambda: blocked_clients(server) == 0, message="the waiter to leave")
    with server.raw() as client:
        assert client.call("EVENT.SET", "gone") == 0


# -- SLEEP and WORK ------------------------------------------------------------

def test_sleep_replies_ok_and_work_returns_its_checksum(server):
    from contend.shared.commands.gil import work
    with server.raw() as client:
        assert client.call("SLEEP", "20") == "OK"
        assert client.call("WORK", "3") == work(3)
        assert client.call("WORK", "0") == 0
        assert isinstance(client.call("WORK", "-1"), ReplyError)
        assert isinstance(client.call("SLEEP", "x"), ReplyError)


def test_blocked_sleeper_that_disconnects_frees_its_slot(server):
    sleeper = start_blocked(server, "SLEEP", "60000")
    sleeper.close()
    wait_until(lambda: blocked_clients(server) == 0, message="the sleeper to be dropped")


@pytest.mark.parametrize("command", [("BLPOP", "k", "x"), ("EVENT.WAIT", "e", "-1"),
                                     ("BARRIER.WAIT", "b", "2", "nan")])
def test_bad_timeouts_are_refused(server, command):
    with server.raw() as client:
        assert str(client.call(*command)).startswith("ERR timeout is")
