"""The one way the commands make a tqdm bar: bytes in binary units on stderr, sized for any terminal."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any


def byte_bar(total: int, *, desc: str | None = None, disable: bool | None = False) -> Any:
    """A tqdm bar over ``total`` bytes on stderr (``disable=None``: shown only on a terminal).

    A terminal that reports no size (a pseudo-terminal nobody sized, as in some CI runners and
    ``docker run -t``) makes tqdm draw nothing at all, so it gets 80 columns instead.
    """
    from tqdm import tqdm

    try:
        shape = os.get_terminal_size(sys.stderr.fileno())
        sized = shape.columns > 0 and shape.lines > 0
    except (OSError, ValueError):
        sized = False
    fixed: dict[str, int] = {} if sized else {"ncols": 80, "nrows": 24}
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, desc=desc,
                disable=disable, leave=False, dynamic_ncols=sized, **fixed)


class WorkerBar:
    """A byte bar that transfer threads update: each update takes a lock (tqdm's own does not cover
    the postfix and the count together). ``show=None``: shown only when stderr is a terminal."""

    def __init__(self, total: int, desc: str, show: bool | None) -> None:
        self._lock = threading.Lock()
        self._sent = 0
        self._skipped = 0
        self._bar: Any = byte_bar(total, desc=desc, disable=None if show is None else not show)

    def add(self, n: int) -> None:
        """``n`` more bytes done."""
        with self._lock:
            self._bar.update(n)

    def add_sent_skipped(self, sent: int, skipped: int) -> None:
        """Bytes sent and bytes skipped as empty, both shown, so a user sees that empty space is free."""
        with self._lock:
            self._sent += sent
            self._skipped += skipped
            self._bar.set_postfix_str(f"sent {self._sent >> 20} MiB, empty {self._skipped >> 20} MiB",
                                      refresh=False)
            self._bar.update(sent + skipped)

    def add_of(self, n: int, total: int) -> None:
        """``n`` more bytes done of a total known only once the work is planned."""
        with self._lock:
            if self._bar.total != total:
                self._bar.total = total
            self._bar.update(n)

    def close(self) -> None:
        with self._lock:
            self._bar.close()
