"""What only the threaded model has: its readers-writer lock, and how its threads hold it.

The lock is tested in-process with real threads. Every wait is a handshake
(an Event, a Barrier, a state polled for), never a fixed sleep, so a correct
lock always passes and a slow machine only makes the tests slower.
"""

from __future__ import annotations

import threading

from contend.server.threads_sync import ReadersWriterLock
from tests.helpers import blocked_clients, info_field, wait_until

PATIENCE = 10   # seconds a handshake may take before the test fails instead of hanging


def in_thread(work) -> threading.Thread:
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_two_readers_hold_it_at_once():
    lock = ReadersWriterLock()
    both_inside = threading.Barrier(2, timeout=PATIENCE)   # broken unless both are in together

    def reader():
        with lock.shared():
            both_inside.wait()

    other = in_thread(reader)
    reader()
    other.join(PATIENCE)
    assert not both_inside.broken


def test_a_writer_excludes_readers_and_readers_exclude_a_writer():
    lock = ReadersWriterLock()
    with lock.exclusive():
        assert not lock.acquire_shared(timeout=0)
        assert not lock.acquire_exclusive(timeout=0)
    with lock.shared():
        assert not lock.acquire_exclusive(timeout=0)


def test_a_reader_waiting_for_a_writer_gets_in_once_it_leaves():
    lock = ReadersWriterLock()
    reader_in = threading.Event()

    def reader():
        with lock.shared():
            reader_in.set()

    with lock.exclusive():
        thread = in_thread(reader)
        assert not lock.acquire_shared(timeout=0)   # what the reader meets while we hold it
    assert reader_in.wait(PATIENCE)
    thread.join(PATIENCE)


def test_a_waiting_writer_keeps_new_readers_out():
    lock = ReadersWriterLock()
    lock.acquire_shared()   # a reader is in: the writer must wait for it
    writer_in, writer_may_leave = threading.Event(), threading.Event()

    def writer():
        with lock.exclusive():
            writer_in.set()
            writer_may_leave.wait(PATIENCE)

    thread = in_thread(writer)

    def newcomer_refused() -> bool:
        if lock.acquire_shared(timeout=0):   # the writer is not waiting yet
            lock.release_shared()
            return False
        return True

    # Refused although only readers hold it: the waiting writer goes first.
    wait_until(newcomer_refused, timeout=PATIENCE, message="a new reader to be held back")
    assert not writer_in.is_set()
    lock.release_shared()
    assert writer_in.wait(PATIENCE)
    writer_may_leave.set()
    thread.join(PATIENCE)
    assert lock.acquire_shared(timeout=0)   # the writer gone, readers are let in again


def test_a_writer_that_gives_up_lets_the_readers_it_held_back_in():
    lock = ReadersWriterLock()
    with lock.shared():
        assert not lock.acquire_exclusive(timeout=0)
        assert lock.acquire_shared(timeout=0)   # no writer left waiting
        lock.release_shared()


def in_flight(server) -> tuple[int, int]:
    with server.raw() as probe:
        return info_field(probe, "commands_in_flight"), info_field(probe, "key_locks")


def test_striped_flushall_waits_for_an_incr_in_its_race_window(serve):
    server = serve("threads", "--sync", "striped", "--race-window-us", "300000")
    with server.raw() as writer, server.raw() as flusher:
        assert writer.call("SET", "k", "5") == "OK"
        writer.send_command("INCR", "k")
        # In flight and holding its key's lock, so past the shared keyspace lock too.
        wait_until(lambda: in_flight(server) == (1, 1), message="the INCR in its race window")
        assert flusher.call("FLUSHALL") == "OK"
        incr = writer.read()
        final = flusher.call("GET", "k")
    # Never (6, b"6"): an INCR that read before the flush writing its value back after it.
    assert (incr, final) == (6, None)


def test_a_blpop_waiting_in_striped_mode_holds_no_lock(serve):
    """Its waiter is registered under the locks, then it gives every one up: a FLUSHALL
    (the keyspace lock, exclusive) and a push (the key's lock) both go through."""
    server = serve("threads", "--sync", "striped")
    with server.raw() as waiter, server.raw() as other:
        waiter.send_command("BLPOP", "q", "0")
        wait_until(lambda: blocked_clients(server) == 1, message="the BLPOP to wait")
        assert info_field(other, "key_locks") == 0
        assert other.call("FLUSHALL") == "OK"
        assert other.call("RPUSH", "q", "job") == 1
        assert waiter.read() == [b"q", b"job"]


def test_a_blpop_served_under_an_idle_timeout_gets_its_item(serve):
    """When a wait ends the thread asks its socket whether the client left; with an idle
    timeout on the socket that question must not wait out the timeout (and then take the
    timeout for a hang-up, sending the item back instead of to the client)."""
    server = serve("threads", "--timeout", "30")
    with server.raw(timeout=5) as waiter, server.raw() as pusher:
        waiter.send_command("BLPOP", "q", "0")
        wait_until(lambda: blocked_clients(server) == 1, message="the BLPOP to wait")
        assert pusher.call("RPUSH", "q", "job") == 1
        assert waiter.read() == [b"q", b"job"]
        assert pusher.call("LLEN", "q") == 0
