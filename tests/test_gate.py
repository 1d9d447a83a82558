"""The gate between the catalog's writer and its readers (:mod:`mmstore.storage.gate`):
readers hold it together, a writer alone and only once the readers in flight have left, a
waiting writer keeps new readers out, each side is reentrant, and the writer lock lets the
gate go at its outermost release.

Bad inputs tried: a reader that tries to publish (RuntimeError, not a deadlock), a release
by a thread that does not hold the gate."""

from __future__ import annotations

import threading
import time

import pytest

from mmstore.storage.gate import Gate, WriterLock


def hold_shared(gate: Gate, entered: threading.Event, leave: threading.Event) -> None:
    with gate.shared():
        entered.set()
        leave.wait(5)


def test_readers_hold_the_gate_together() -> None:
    gate, leave = Gate(), threading.Event()
    entered = [threading.Event() for _ in range(3)]
    threads = [threading.Thread(target=hold_shared, args=(gate, e, leave)) for e in entered]
    for t in threads:
        t.start()
    assert all(e.wait(5) for e in entered)  # all three inside at once
    leave.set()
    for t in threads:
        t.join(5)


def test_a_writer_waits_for_readers_in_flight_and_keeps_new_ones_out() -> None:
    gate, leave, inside = Gate(), threading.Event(), threading.Event()
    first = threading.Thread(target=hold_shared, args=(gate, inside, leave))
    first.start()
    assert inside.wait(5)
    order: list[str] = []

    def write() -> None:
        with gate.exclusive():
            order.append("writer")

    def late_read() -> None:
        with gate.shared():
            order.append("late reader")

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(0.1)  # the writer now waits for the first reader
    late = threading.Thread(target=late_read)
    late.start()
    time.sleep(0.1)
    assert order == []  # neither the writer nor the late reader got in
    leave.set()
    for t in (first, writer, late):
        t.join(5)
    assert order == ["writer", "late reader"]


def test_both_sides_are_reentrant_and_the_writer_may_read() -> None:
    gate = Gate()
    with gate.shared(), gate.shared():
        pass
    with gate.exclusive(), gate.exclusive():
        assert gate.held
        with gate.shared():
            assert gate.held
    assert not gate.held


def test_a_reader_cannot_publish_and_a_stranger_cannot_release() -> None:
    gate = Gate()
    with gate.shared(), pytest.raises(RuntimeError, match="cannot publish"):
        gate.acquire()
    with pytest.raises(RuntimeError, match="not held"):
        gate.release()
    with gate.exclusive():  # neither refusal left the gate held or counted
        pass


def test_the_writer_lock_lets_the_gate_go_at_its_outermost_release() -> None:
    gate = Gate()
    lock = WriterLock(gate)
    with lock:
        with lock:
            gate.acquire()  # as a transaction does just before its commit
        assert gate.held and lock.mine
    assert not gate.held and not lock.mine
    assert lock.acquire(blocking=False)
    lock.release()
