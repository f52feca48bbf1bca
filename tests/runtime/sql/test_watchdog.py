"""The watchdog cancels a statement at its deadline, and never after the statement has finished."""

from __future__ import annotations

import threading
import time

from runtime.sql.watchdog import Watchdog


def test_cancel_runs_at_the_deadline_and_is_reported() -> None:
    dog = Watchdog("t")
    cancelled = threading.Event()
    try:
        started = time.monotonic()
        with dog.guard(0.1, cancelled.set) as deadline:
            assert cancelled.wait(2)
        assert deadline.fired and 0.09 <= time.monotonic() - started < 1.0
    finally:
        dog.close()


def test_no_cancel_after_the_block_exits_even_when_the_deadline_passes_later() -> None:
    dog = Watchdog("t")
    calls: list[str] = []
    try:
        with dog.guard(0.05, lambda: calls.append("late")) as deadline:
            pass
        with dog.guard(0.2, lambda: calls.append("second")):
            time.sleep(0.1)  # the first deadline passes while this block runs
        assert calls == [] and not deadline.fired
    finally:
        dog.close()


def test_earliest_deadline_fires_first_and_a_failing_cancel_does_not_stop_the_thread() -> None:
    dog = Watchdog("t")
    order: list[str] = []
    done = threading.Event()

    def boom() -> None:
        order.append("boom")
        raise RuntimeError("cancel failed")

    try:
        with dog.guard(0.3, lambda: (order.append("late"), done.set())), dog.guard(0.05, boom):
            assert done.wait(2)
        assert order == ["boom", "late"]
    finally:
        dog.close()
