"""The one way the commands make a tqdm bar: bytes in binary units on stderr, sized for any terminal."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import click


def shown(show: bool | None) -> bool:
    """Whether a bar is drawn: ``show=None`` means only when stderr is a terminal (as tqdm decides)."""
    if show is not None:
        return show
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def byte_bar(total: int, *, desc: str | None = None) -> Any:
    """A drawn tqdm bar over ``total`` bytes on stderr.

    A terminal that reports no size (a pseudo-terminal nobody sized, as in some CI runners and
    ``docker run -t``) makes tqdm draw nothing at all, so it gets 80 columns instead. tqdm is
    imported here, not at the top: with ``multiprocessing`` it is about 17 ms of every command's
    start-up, which a run without a bar (``--quiet``, ``--json``, a pipe) need not pay.
    """
    from tqdm import tqdm

    try:
        shape = os.get_terminal_size(sys.stderr.fileno())
        sized = shape.columns > 0 and shape.lines > 0
    except (OSError, ValueError):
        sized = False
    fixed: dict[str, int] = {} if sized else {"ncols": 80, "nrows": 24}
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, desc=desc,
                leave=False, dynamic_ncols=sized, **fixed)


class BarProgress:
    """A tqdm byte bar as a :class:`~vhdtool.stream.progress.Progress`, the one every command uses.

    The bar counts data and skipped bytes together and shows both (``data 12 MiB, empty 900 MiB``,
    or ``sent`` for uploads), so a user sees that empty space is free. Jobs report from worker
    threads and tqdm's own lock does not cover the postfix and the count together, so every update
    takes a lock. ``show=None``: drawn only when stderr is a terminal; ``False``: never. With
    ``stage_lines``, a step that begins while no bar is drawn (and ``show`` is not ``False``) is
    said in one line on stderr (``[ 40%] convert  OS disk``); the step's verb is padded so that
    successive lines (and bar titles) line up.
    """

    def __init__(self, total: int, desc: str | None = None, show: bool | None = None, *,
                 data_label: str = "data", stage_lines: bool = False) -> None:
        self._lock = threading.Lock()
        self._data = 0
        self._skipped = 0
        self._label = data_label
        self._bar: Any = byte_bar(total, desc=desc) if shown(show) else None
        self._lines = stage_lines and show is not False and self._bar is None

    def data(self, nbytes: int) -> None:
        with self._lock:
            self._data += nbytes
            self._advance(nbytes)

    def skipped(self, nbytes: int) -> None:
        with self._lock:
            self._skipped += nbytes
            self._advance(nbytes)

    def stage(self, name: str, total: int) -> None:
        with self._lock:
            verb, _, rest = name.partition(" ")
            title = f"{verb:<8} {rest}" if rest else verb
            if self._lines:
                done = self._data + self._skipped
                click.echo(f"[{100 * done // total if total else 100:3d}%] {title}", err=True)
                return
            if self._bar is None:
                return
            self._bar.total = total
            self._bar.set_description(title, refresh=False)
            self._bar.refresh()

    def _advance(self, nbytes: int) -> None:
        if self._bar is None:
            return
        self._bar.set_postfix_str(f"{self._label} {self._data >> 20} MiB, empty {self._skipped >> 20} MiB",
                                  refresh=False)
        self._bar.update(nbytes)

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()

    def __enter__(self) -> BarProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
