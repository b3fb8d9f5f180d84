"""Pure planning for page-blob uploads: which 512-byte pages to send, in which Put Page requests.

The page blob protocol (Put Page, REST API "Put Page") writes 512-byte aligned ranges of at most
4 MiB; pages never written read as zeros. So an upload sends only the pages holding a non-zero
byte, coalesced into as few requests as the 4 MiB limit allows. Everything here is arithmetic on
half-open ``(start, end)`` byte ranges, with no I/O, so it is tested with hypothesis properties.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

from vhdtool.blockio.zeros import nonzero_runs
from vhdtool.extents import Extent, align_down, align_up, extents_from_ranges, merge_ranges

PAGE_SIZE = 512  # Put Page: "the start offset must be a modulus of 512 and the length a modulus of 512"
MAX_PUT_PAGE = 4 * 1024 * 1024  # Put Page: "the maximum size for a page write is 4 MiB"
MAX_PAGE_BLOB = 8 * 1024 ** 4  # a page blob holds at most 8 TiB

Range = tuple[int, int]


def align_extents(extents: Iterable[Extent], size: int, page: int = PAGE_SIZE) -> list[Extent]:
    """Extents widened outward to whole pages, so no page is shared by two reads.

    An allocated extent that starts or ends inside a page takes the whole page (the rest of it
    reads as zeros, or as data of a neighbour it now merges with). ``size`` must be a multiple of
    ``page``; the result covers ``[0, size)`` in order.
    """
    if size % page:
        raise ValueError(f"size {size} is not a multiple of {page}")
    return extents_from_ranges(((align_down(e.offset, page), align_up(e.end, page))
                                for e in extents if e.allocated), size)


def page_runs(offset: int, view: memoryview, page: int = PAGE_SIZE) -> list[Range]:
    """Absolute ``(start, end)`` runs of the pages of ``view`` (read at ``offset``) holding a non-zero byte.

    ``offset`` and ``len(view)`` must be multiples of ``page``: :func:`align_extents` guarantees it.
    """
    if offset % page or len(view) % page:
        raise ValueError(f"unaligned piece [{offset}, {offset + len(view)}) for {page}-byte pages")
    return [(offset + a, offset + b) for a, b in nonzero_runs(view, page)]


def split_ranges(ranges: Iterable[Range], max_length: int = MAX_PUT_PAGE) -> Iterator[Range]:
    """Cut each range into consecutive pieces of at most ``max_length`` bytes."""
    if max_length <= 0:
        raise ValueError("max_length must be positive")
    for start, end in ranges:
        while start < end:
            piece = min(end, start + max_length)
            yield start, piece
            start = piece


def total(ranges: Iterable[Range]) -> int:
    """Sum of the lengths of ``ranges`` (assumed disjoint)."""
    return sum(b - a for a, b in ranges)


class RangeSet:
    """An immutable, merged set of byte ranges with fast "what is missing from it" queries.

    Used for resume: the pages the service already lists (Get Page Ranges) are not sent again.
    """

    def __init__(self, ranges: Iterable[Range] = ()) -> None:
        self.ranges = merge_ranges(ranges)
        self._starts = [a for a, _ in self.ranges]

    def __len__(self) -> int:
        return len(self.ranges)

    def __bool__(self) -> bool:
        return bool(self.ranges)

    @property
    def size(self) -> int:
        return total(self.ranges)

    def missing(self, start: int, end: int) -> list[Range]:
        """The parts of ``[start, end)`` not in the set."""
        if not self.ranges:
            return [(start, end)] if start < end else []
        i = max(0, bisect.bisect_right(self._starts, start) - 1)
        gaps: list[Range] = []
        position = start
        while i < len(self.ranges) and position < end:
            a, b = self.ranges[i]
            if a >= end:
                break
            if b > position:
                if a > position:
                    gaps.append((position, a))
                position = max(position, b)
            i += 1
        if position < end:
            gaps.append((position, end))
        return gaps


class RunList:
    """An append-only list of increasing ranges, merging touching ones; kept compact for verification.

    Memory grows with the number of separate data runs (16 bytes each as Python ints in tuples,
    a few hundred thousand runs for a very fragmented multi-terabyte disk), not with the disk size.
    """

    def __init__(self) -> None:
        self.ranges: list[Range] = []

    def add(self, start: int, end: int) -> None:
        if start >= end:
            return
        if self.ranges and start <= self.ranges[-1][1]:
            if start < self.ranges[-1][0]:
                raise ValueError("ranges must be added in increasing order")
            last = self.ranges[-1]
            self.ranges[-1] = (last[0], max(last[1], end))
        else:
            self.ranges.append((start, end))
