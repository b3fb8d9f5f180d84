"""run_windowed: a bounded window ahead, every item once, the first failure raised and the rest not started."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from vhdtool.stream.window import run_windowed


def test_every_item_runs_once_and_the_window_holds() -> None:
    lock = threading.Lock()
    done: list[int] = []
    submitted = 0
    most_ahead = 0

    def one(item: int) -> None:
        time.sleep(0.001)
        with lock:
            done.append(item)

    def after_submit() -> None:
        nonlocal submitted, most_ahead
        submitted += 1
        with lock:
            most_ahead = max(most_ahead, submitted - len(done))

    run_windowed(range(500), one, threads=3, name="test-window", stop=lambda: None, after_submit=after_submit)
    assert sorted(done) == list(range(500)) and submitted == 500
    assert 3 <= most_ahead <= 6  # at most 2 x threads submitted and not finished


def test_the_first_failure_stops_the_rest_and_is_raised() -> None:
    stopped = threading.Event()
    started: list[int] = []
    stops = 0

    def stop() -> None:
        nonlocal stops
        stops += 1
        stopped.set()

    def one(item: int) -> None:
        started.append(item)
        if item == 10:
            raise OSError(f"item {item} failed")
        stopped.wait(0.01)  # the calls still running see the stop

    with pytest.raises(OSError, match="item 10 failed"):
        run_windowed(range(100_000), one, threads=2, name="test-window", stop=stop)
    assert stops == 1 and stopped.is_set()
    assert len(started) < 40  # the window stopped the submitting; not the 100,000 items


def test_an_interrupt_in_the_submitting_thread_stops_and_propagates() -> None:
    stops: list[bool] = []

    def items() -> Iterator[int]:
        yield from range(5)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_windowed(items(), lambda item: None, threads=2, name="test-window",
                     stop=lambda: stops.append(True))
    assert stops == [True]
