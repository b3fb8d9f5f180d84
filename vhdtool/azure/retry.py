"""Retrying one Azure Storage call: the only retry layer (the SDK, urllib3 and the direct transport never retry).

Which failures are worth another try is :mod:`vhdtool.azure.failures`' decision (a
:class:`~vhdtool.azure.failures.RetryableError`); how long to wait before it is this module's.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from vhdtool.azure.failures import RetryableError
from vhdtool.errors import TransferError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, or the server's ``Retry-After`` when it gives one."""

    attempts: int = 8
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 300.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


class Retrier:
    """Runs one service call with :class:`RetryPolicy`; counts retries; stops when ``abort`` is set."""

    def __init__(self, policy: RetryPolicy, abort: threading.Event) -> None:
        self.policy = policy
        self.abort = abort
        self.retries = 0
        self._lock = threading.Lock()

    def call(self, call: Callable[[], T]) -> T:
        attempt = 1
        while True:
            try:
                return call()
            except RetryableError as err:
                if attempt >= self.policy.attempts:
                    raise TransferError(f"{err} (gave up after {attempt} attempts)") from None
                with self._lock:
                    self.retries += 1
                if self.abort.wait(self.policy.delay(attempt, err.retry_after)):
                    raise TransferError(f"{err} (upload stopped)") from None
                attempt += 1
