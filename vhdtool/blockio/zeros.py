"""Zeros at memory speed: finding all-zero stretches in a buffer (so empty space is neither written
nor sent), and filling a buffer with zeros from one shared buffer.

CPython compares a memoryview with ``==`` item by item (about 0.5 GB/s measured here), so large
buffers go through numpy's reductions over 64-bit words instead (about 30 GB/s).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from vhdtool.units import MiB

_SMALL = 4096
# One shared buffer of zeros: filling from it is a memcpy, with no allocation per read.
ZERO_MiB = memoryview(bytes(MiB))


def zero_pieces(length: int) -> Iterator[memoryview]:
    """``length`` zero bytes as consecutive views of at most a MiB (for hashing zeros without allocating)."""
    while length > 0:
        step = min(length, MiB)
        yield ZERO_MiB[:step]
        length -= step


def fill_zeros(view: memoryview) -> None:
    """Set every byte of ``view`` (a writable byte view) to zero, a MiB at a time."""
    position, n = 0, len(view)
    while position < n:
        step = min(n - position, MiB)
        view[position:position + step] = ZERO_MiB[:step]
        position += step


def is_zero(view: memoryview | bytes | bytearray) -> bool:
    """Whether every byte of ``view`` is zero."""
    n = len(view)
    if n <= _SMALL or n % 8:
        return not bytes(view).strip(b"\0")
    return not np.frombuffer(view, dtype=np.uint64).any()


def nonzero_runs(view: memoryview | bytes | bytearray, granularity: int) -> list[tuple[int, int]]:
    """Half-open ``(start, end)`` byte runs of ``view`` made of granules that hold a non-zero byte.

    ``granularity`` (a multiple of 8, e.g. 512 for page blobs or 4096 for file holes) is the unit
    of the decision; a trailing partial granule counts as one. Adjacent non-zero granules merge.
    """
    if granularity <= 0 or granularity % 8:
        raise ValueError("granularity must be a positive multiple of 8")
    n = len(view)
    full = n - n % granularity
    runs: list[tuple[int, int]] = []
    if full:
        words = np.frombuffer(view, dtype=np.uint64, count=full // 8).reshape(-1, granularity // 8)
        flags = words.max(axis=1) != 0
        if flags.any():
            # Run boundaries are where the flag changes; pad with False on both sides.
            padded = np.concatenate(([False], flags, [False]))
            edges = np.flatnonzero(padded[1:] != padded[:-1]).tolist()
            runs = [(a * granularity, b * granularity) for a, b in zip(edges[::2], edges[1::2], strict=True)]
    if full < n and not is_zero(memoryview(view)[full:]):
        if runs and runs[-1][1] == full:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((full, n))
    return runs


def nonzero_runs_at(view: memoryview | bytes | bytearray, offset: int, granularity: int) -> list[tuple[int, int]]:
    """Like :func:`nonzero_runs` for ``view`` holding the bytes at ``offset`` of a file, with granules
    aligned to the file (multiples of ``granularity``), not to the view: a hole is left exactly where
    whole filesystem blocks hold zeros. Runs are relative to ``view``."""
    view = memoryview(view)
    head = min(len(view), (-offset) % granularity)
    runs: list[tuple[int, int]] = []
    if head and not is_zero(view[:head]):
        runs.append((0, head))
    for start, end in nonzero_runs(view[head:], granularity):
        if runs and runs[-1][1] == start + head:
            runs[-1] = (runs[-1][0], end + head)
        else:
            runs.append((start + head, end + head))
    return runs
