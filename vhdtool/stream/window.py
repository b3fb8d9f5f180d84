"""Run one call per item on a thread pool, a bounded window of items ahead, stopping at the first failure.

Why a window: submitting every granule of a 127 GiB disk at once would hold one future (and, in the
callers, one buffer) per granule; at most ``2 × threads`` are submitted ahead, so memory stays flat
whatever the disk size. Why stop at the first failure: the rest of the work is lost anyway, and
``stop`` lets the calls still running give up early (the callers set their source's abort event).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def run_windowed(items: Iterable[T], one: Callable[[T], None], *, threads: int, name: str,
                 stop: Callable[[], None], after_submit: Callable[[], None] | None = None) -> None:
    """Call ``one(item)`` for every item on ``threads`` worker threads named ``name``.

    The first exception a call raises stops the submitting and calls ``stop``; it is raised here once
    the calls already running have ended. An exception in the submitting thread itself (Ctrl-C)
    calls ``stop``, cancels what has not started and is raised at once. ``after_submit`` runs in
    the submitting thread after each submission (a caller saves its resume record there).
    """
    slots = threading.BoundedSemaphore(2 * threads)
    failed = threading.Event()
    errors: list[BaseException] = []
    lock = threading.Lock()

    def finished(future: Future[None]) -> None:
        slots.release()
        err = None if future.cancelled() else future.exception()
        if err is not None:
            with lock:
                first = not errors
                errors.append(err)
            if first:
                failed.set()
                stop()

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name) as pool:
        try:
            for item in items:
                while not slots.acquire(timeout=0.5):
                    if failed.is_set():
                        break
                if failed.is_set():
                    break
                pool.submit(one, item).add_done_callback(finished)
                if after_submit is not None:
                    after_submit()
        except BaseException:
            stop()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    if errors:
        raise errors[0]
