"""Finding all-zero stretches in a buffer at C speed, so empty space is neither written nor sent."""

from __future__ import annotations

import numpy as np

_ZERO = bytes(4 * 1024 * 1024)


def is_zero(view: memoryview | bytes | bytearray) -> bool:
    """Whether every byte of ``view`` is zero (a memcmp, no Python loop)."""
    n = len(view)
    if n <= len(_ZERO):
        return view == _ZERO[:n]
    return bool(view == bytes(n))


def nonzero_runs(view: memoryview, granularity: int) -> list[tuple[int, int]]:
    """Half-open ``(start, end)`` byte runs of ``view`` made of granules that hold a non-zero byte.

    ``granularity`` (a multiple of 8, e.g. 512 for page blobs or 4096 for file holes) is the unit
    of the decision; a trailing partial granule counts as one. Adjacent non-zero granules merge.
    """
    n = len(view)
    if n == 0 or is_zero(view):
        return []
    if granularity % 8:
        raise ValueError("granularity must be a multiple of 8")
    full = n - n % granularity
    runs: list[tuple[int, int]] = []
    if full:
        words = np.frombuffer(view[:full], dtype=np.uint64).reshape(-1, granularity // 8)
        flags = words.any(axis=1)
        # Run boundaries are where the flag changes; pad with False on both sides.
        padded = np.concatenate(([False], flags, [False]))
        edges = np.flatnonzero(padded[1:] != padded[:-1])
        runs = [(int(a) * granularity, int(b) * granularity) for a, b in zip(edges[::2], edges[1::2], strict=False)]
    if full < n and not is_zero(view[full:]):
        if runs and runs[-1][1] == full:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((full, n))
    return runs
