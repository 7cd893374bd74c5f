"""The race lab, in every model: sync off loses updates, the guards make it exact.

The race window (race-window-us) holds each read-modify-write open long
enough that, with 16 clients starting together at a Barrier, overlapping
is certain rather than likely: every client reads, then all of them wait
the window out before writing, so at least the first round overlaps.
"""

from __future__ import annotations

import threading

import pytest

from tests.helpers import info_field, run_together

CLIENTS = 16
ROUNDS = 5
WINDOW_US = "3000"


def hammer_incr(server, key: str, rounds: int = ROUNDS) -> int:
    def work(_):
        with server.raw() as client:
            for _ in range(rounds):
                assert isinstance(client.call("INCR", key), int)
    run_together(CLIENTS, work)
    with server.raw() as client:
        return int(client.call("GET", key))


def configure(server, **settings):
    with server.raw() as client:
        for name, value in settings.items():
            assert client.call("CONFIG", "SET", name.replace("_", "-"), value) == "OK"


def test_sync_off_with_a_race_window_loses_updates(server):
    configure(server, sync="off", race_window_us=WINDOW_US)
    counted = hammer_incr(server, "hits")
    lost = CLIENTS * ROUNDS - counted
    assert lost > 0, "16 clients overlapping read-modify-writes must lose updates"


@pytest.mark.parametrize("mode", ["lock", "striped", "unordered"])
def test_guarded_modes_are_exact_whatever_the_window(server, mode):
    configure(server, sync=mode, race_window_us="1000")
    assert hammer_incr(server, "hits", rounds=3) == CLIENTS * 3


def transfer_storm(server, accounts=("alice", "bob", "carol"), rounds=4):
    """Every client moves money around the accounts; returns the replies."""
    def work(i):
        replies = []
        with server.raw() as client:
            for r in range(rounds):
                source = accounts[(i + r) % len(accounts)]
                target = accounts[(i + r + 1) % len(accounts)]
                replies.append(client.call("BANK.TRANSFER", source, target, "7"))
        return replies
    return run_together(CLIENTS, work)


def withdraw_together(server, amount: int = 10) -> int:
    """All clients withdraw at once from an account holding 100; returns the money paid out."""
    def work(_):
        with server.raw() as client:
            return client.call("BANK.WITHDRAW", "vault", str(amount))
    replies = run_together(CLIENTS, work)
    return amount * sum(isinstance(reply, int) for reply in replies)


def test_sync_off_pays_out_money_the_bank_does_not_have(server):
    """Check-then-act: every withdrawal reads 100, passes the check, then writes 90."""
    with server.raw() as client:
        client.call("BANK.DEPOSIT", "vault", "100")
    configure(server, sync="off", race_window_us=WINDOW_US)
    paid_out = withdraw_together(server)
    with server.raw() as client:
        left = int(client.call("GET", "vault"))
    assert paid_out > 100 and left + paid_out > 100, "money was created"


@pytest.mark.parametrize("mode", ["lock", "striped", "unordered"])
def test_guarded_withdrawals_never_overdraw(server, mode):
    with server.raw() as client:
        client.call("BANK.DEPOSIT", "vault", "100")
    configure(server, sync=mode, race_window_us="1000")
    paid_out = withdraw_together(server)
    with server.raw() as client:
        assert paid_out == 100 and client.call("GET", "vault") == b"0"


@pytest.mark.parametrize("mode", ["lock", "striped"])
def test_guarded_transfers_conserve_money(server, mode):
    with server.raw() as client:
        for account in ("alice", "bob", "carol"):
            client.call("BANK.DEPOSIT", account, "1000")
    configure(server, sync=mode, race_window_us="500")
    replies = transfer_storm(server)
    assert all(isinstance(r, list) for rs in replies for r in rs)
    with server.raw() as client:
        assert client.call("BANK.AUDIT", "alice", "bob", "carol") == 3000


def test_unordered_crossing_transfers_report_deadlock_and_conserve_money(server):
    """alice->bob and bob->alice each take their first lock, then wait for the other's."""
    with server.raw() as client:
        client.call("BANK.DEPOSIT", "alice", "100")
        client.call("BANK.DEPOSIT", "bob", "100")
        deadlocks_before = info_field(client, "deadlocks")
    # The window (held between the first and the second lock) is longer than
    # the time both need to take their first lock, so they always cross.
    configure(server, sync="unordered", race_window_us="200000", deadlock_timeout_ms="300")

    def work(i):
        with server.raw() as client:
            source, target = ("alice", "bob") if i == 0 else ("bob", "alice")
            return client.call("BANK.TRANSFER", source, target, "10")

    replies = run_together(2, work)
    deadlocked = [r for r in replies if str(r).startswith("DEADLOCK")]
    assert deadlocked, f"crossing transfers should deadlock, got {replies!r}"
    with server.raw() as client:
        assert client.call("BANK.AUDIT", "alice", "bob") == 200
        assert info_field(client, "deadlocks") >= deadlocks_before + 1
        assert client.call("PING") == "PONG"


def test_withdraw_refuses_to_overdraw_and_changes_nothing(server):
    with server.raw() as client:
        client.call("BANK.DEPOSIT", "acct", "50")
        assert str(client.call("BANK.WITHDRAW", "acct", "80")) == "ERR insufficient funds"
        assert str(client.call("BANK.TRANSFER", "acct", "other", "80")) == "ERR insufficient funds"
        assert client.call("BANK.AUDIT", "acct", "other") == 50
        assert client.call("BANK.WITHDRAW", "acct", "20") == 30
        assert client.call("BANK.TRANSFER", "acct", "other", "30") == [0, 30]
        assert client.call("GET", "other") == b"30"   # balances are ordinary integer keys
        assert client.call("INCRBY", "other", "5") == 35
        assert str(client.call("BANK.DEPOSIT", "acct", "0")) == "ERR amount must be positive"
        assert str(client.call("BANK.DEPOSIT", "acct", "x")) == \
            "ERR value is not an integer or out of range"
        client.call("SET", "notanumber", "abc")
        assert str(client.call("BANK.AUDIT", "notanumber")) == \
            "ERR value is not an integer or out of range"
        client.call("RPUSH", "alist", "x")
        assert str(client.call("BANK.DEPOSIT", "alist", "1")).startswith("WRONGTYPE")


def test_transfer_that_would_overflow_changes_nothing(server):
    with server.raw() as client:
        client.call("SET", "rich", "9223372036854775800")
        client.call("BANK.DEPOSIT", "poor", "100")
        assert str(client.call("BANK.TRANSFER", "poor", "rich", "50")) == \
            "ERR increment or decrement would overflow"
        assert client.call("GET", "poor") == b"100"


def test_sync_mode_can_be_read_and_changed_at_run_time(server):
    with server.raw() as client:
        assert client.call("CONFIG", "GET", "sync") == [b"sync", b"lock"]
        assert client.call("CONFIG", "SET", "sync", "striped") == "OK"
        assert info_field(client, "sync") == "striped"
        assert str(client.call("CONFIG", "SET", "sync", "sometimes")).startswith(
            "ERR CONFIG SET failed (possibly related to argument 'sync')")


def test_switching_sync_modes_under_load_never_deadlocks(server):
    """Each command keeps the mode it started in, so flipping modes mid-flight cannot
    deadlock. (While two modes overlap, a command under the keyspace lock and one under
    key locks do not exclude each other, so the totals are exact only once it settles.)"""
    with server.raw() as client:
        for account in ("alice", "bob", "carol"):
            client.call("BANK.DEPOSIT", account, "1000")
        client.call("CONFIG", "SET", "race-window-us", "300")
    done = threading.Event()

    def flip():
        with server.raw() as client:
            modes = ["lock", "striped"]
            while not done.is_set():
                client.call("CONFIG", "SET", "sync", modes[0])
                modes.reverse()

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        replies = transfer_storm(server, rounds=6)   # hangs here if a switch deadlocks
    finally:
        done.set()
        flipper.join()
    assert all(isinstance(r, list) or "insufficient" in str(r) for rs in replies for r in rs)
    with server.raw() as client:
        settled = client.call("BANK.AUDIT", "alice", "bob", "carol")
        client.call("CONFIG", "SET", "sync", "striped")
    transfer_storm(server)
    with server.raw() as client:
        assert client.call("BANK.AUDIT", "alice", "bob", "carol") == settled
