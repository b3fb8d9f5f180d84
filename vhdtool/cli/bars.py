"""The one way the commands make a tqdm bar: bytes in binary units on stderr, sized for any terminal."""

from __future__ import annotations

import os
import sys
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
