"""Step mode: the student is the scheduler. A command parks in its race window until
DEBUG.STEP RELEASE; in-process on the fake clock here, and on every real model below."""

from __future__ import annotations

import socket

from contend.shared.resp import ReplyError
from contend.shared.stepping import Parked, Stepper, describe
from tests.helpers import wait_until
from tests.inprocess import InProcess
from tests.raw import RawClient


def parked(model: InProcess) -> list[str]:
    return model.connect().call("DEBUG.STEP", "LIST").decode().splitlines()


def step_ids(lines: list[str]) -> list[str]:
    return [line.split()[0].removeprefix("id=") for line in lines]


def test_two_incrs_both_read_5_and_the_student_makes_the_lost_update():
    model = InProcess(sync="off", race_window_mode="step")
    a, b, admin = model.connect("a"), model.connect("b"), model.connect("admin")
    assert admin.call("SET", "k", "5") == "OK"
    a.send("INCR", "k")
    b.send("INCR", "k")
    model.settle()   # no clock moves them on: both wait for the student
    lines = parked(model)
    assert [line.split(" read=")[1] for line in lines] == ["5 holds=nothing"] * 2
    assert 'command="incr k"' in lines[0] and model.info("parked_steps") == 2
    first, second = step_ids(lines)
    assert admin.call("DEBUG.STEP", "RELEASE", first) == "OK"
    assert a.replies() == [6] and b.replies() == []
    assert admin.call("DEBUG.STEP", "RELEASE", second) == "OK"
    assert b.replies() == [6]
    assert admin.call("GET", "k") == b"6"   # two INCRs, one lost
    assert parked(model) == [] and model.info("parked_steps") == 0


def test_under_lock_the_second_incr_cannot_reach_its_window_until_the_first_is_released():
    model = InProcess(sync="lock", race_window_mode="step")
    a, b, admin = model.connect("a"), model.connect("b"), model.connect("admin")
    a.send("INCR", "k")
    b.send("INCR", "k")
    model.settle()
    lines = parked(model)
    assert len(lines) == 1 and "holds=keyspace" in lines[0] and "read=-" not in lines[0]
    assert admin.call("DEBUG.STEP", "RELEASE", step_ids(lines)[0]) == "OK"
    assert a.replies() == [1]
    lines = parked(model)
    assert len(lines) == 1 and "read=1" in lines[0]   # it read the first one's write
    assert admin.call("DEBUG.STEP", "RELEASE", "ALL") == 1
    assert b.replies() == [2] and admin.call("GET", "k") == b"2"


def test_crossing_transfers_stepped_by_hand_each_hold_one_lock_then_deadlock():
    model = InProcess(sync="unordered", race_window_mode="step", deadlock_timeout_ms=1000)
    a, b, admin = model.connect("a"), model.connect("b"), model.connect("admin")
    assert admin.call("SET", "x", "100") == "OK" and admin.call("SET", "y", "100") == "OK"
    a.send("BANK.TRANSFER", "x", "y", "10")
    b.send("BANK.TRANSFER", "y", "x", "10")
    model.settle()
    lines = parked(model)
    assert sorted(line.split(" holds=")[1] for line in lines) == ["key:x", "key:y"]
    assert admin.call("DEBUG.STEP", "RELEASE", "ALL") == 2
    model.advance(1.0)   # each waits for the other's lock: deadlock-timeout-ms, then DEADLOCK
    replies = a.replies() + b.replies()
    assert any(isinstance(r, ReplyError) and r.text.startswith("DEADLOCK") for r in replies)


def test_a_client_that_leaves_while_parked_is_taken_off_the_book_and_changes_nothing():
    model = InProcess(sync="lock", race_window_mode="step")
    a, b, admin = model.connect("a"), model.connect("b"), model.connect("admin")
    a.send("INCR", "k")
    model.settle()
    assert len(parked(model)) == 1
    a.hang_up()
    model.run()
    assert parked(model) == [] and model.info("parked_steps") == 0
    b.send("INCR", "k")   # the keyspace lock was given back: b reaches its own window
    model.settle()
    assert len(parked(model)) == 1
    admin.call("DEBUG.STEP", "RELEASE", "ALL")
    assert b.replies() == [1]


def test_config_set_race_window_switches_step_mode_on_and_off():
    model = InProcess(sync="off")
    admin, a = model.connect("admin"), model.connect("a")
    assert admin.call("CONFIG", "SET", "race-window", "step") == "OK"
    assert admin.call("CONFIG", "GET", "race-window") == [b"race-window", b"step"]
    a.send("INCR", "k")
    model.settle()
    assert len(parked(model)) == 1 and model.info("race_window") == "step"
    assert admin.call("CONFIG", "SET", "race-window", "timed") == "OK"
    admin.call("DEBUG.STEP", "RELEASE", "ALL")   # switching back frees no one by itself
    assert a.replies() == [1]
    error = admin.call("CONFIG", "SET", "race-window", "sometimes")
    assert isinstance(error, ReplyError) and "timed, step" in error.text


def test_the_book_takes_each_command_off_once():
    stepper = Stepper()
    first = stepper.park(3, "incr k", "5", "nothing")
    second = stepper.park(4, "incr k", "5", "nothing", worker=1)
    assert stepper.ids() == [first, second]
    assert stepper.release(first) and not stepper.release(first)
    stepper.leave(first)   # its own leaving after the release: nothing left to take
    assert stepper.left_with(1) == [second] and stepper.parked() == []
    assert Parked(7, 3, "incr k", "", "keyspace").line() == \
        'id=7 client=3 command="incr k" read=- holds=keyspace'
    assert describe([b"INCR", b"k"]) == "incr k"
    assert describe([b"SET", b"k", b"v" * 100]).endswith("...")


# -- on every real model ----------------------------------------------------------------

def list_parked(server) -> list[str]:
    with server.raw() as client:
        return client.call("DEBUG.STEP", "LIST").decode().splitlines()


def wait_for_parked(server, count: int) -> list[str]:
    """DEBUG.STEP LIST once `count` commands are parked there (10 s at most)."""
    wait_until(lambda: len(list_parked(server)) == count, message=f"{count} parked commands")
    return list_parked(server)


def test_lost_update_by_hand_on_every_model(server):
    with server.raw() as admin:
        assert admin.call("CONFIG", "SET", "sync", "off") == "OK"
        assert admin.call("SET", "k", "5") == "OK"
        assert admin.call("CONFIG", "SET", "race-window", "step") == "OK"
        a, b = RawClient(server.host, server.port), RawClient(server.host, server.port)
        try:
            a.send_command("INCR", "k")
            wait_for_parked(server, 1)
            b.send_command("INCR", "k")
            lines = wait_for_parked(server, 2)
            assert all("read=5" in line for line in lines)
            first, second = step_ids(lines)
            assert admin.call("DEBUG.STEP", "RELEASE", first) == "OK"
            assert a.read() == 6
            assert admin.call("DEBUG.STEP", "RELEASE", second) == "OK"
            assert b.read() == 6
            assert admin.call("GET", "k") == b"6"
            # A client that leaves while parked is taken off the book.
            a.send_command("INCR", "k")
            wait_for_parked(server, 1)
            a.sock.shutdown(socket.SHUT_RDWR)
            a.close()
            wait_for_parked(server, 0)
        finally:
            admin.call("CONFIG", "SET", "race-window", "timed")
            admin.call("DEBUG.STEP", "RELEASE", "ALL")
            a.close()
            b.close()
