"""Extents: the ranges of a virtual disk that may hold data, known from metadata alone.

Every reader describes its disk as an ordered list of extents covering ``[0, virtual_size)``;
an unallocated extent is guaranteed to read as zeros, an allocated one may hold anything.
Every consumer (converter, uploader, hasher) walks this list, so empty space costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from vhdtool.units import MiB as MiB  # re-exported: the unit extents are usually counted in


@dataclass(frozen=True, slots=True)
class Extent:
    """A byte range of the virtual disk; ``allocated=False`` means it reads as zeros."""

    offset: int
    length: int
    allocated: bool

    @property
    def end(self) -> int:
        return self.offset + self.length


def align_up(value: int, alignment: int) -> int:
    """Round ``value`` up to a multiple of ``alignment``."""
    return -(-value // alignment) * alignment


def align_down(value: int, alignment: int) -> int:
    """Round ``value`` down to a multiple of ``alignment``."""
    return value - value % alignment


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort half-open ``(start, end)`` ranges and merge the ones that overlap or touch; drop empty ones."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def extents_from_ranges(allocated: Iterable[tuple[int, int]], size: int) -> list[Extent]:
    """Turn allocated ``(start, end)`` ranges into extents covering ``[0, size)`` exactly.

    Ranges are clipped to the disk; gaps become unallocated extents.
    """
    result: list[Extent] = []
    position = 0
    for start, end in merge_ranges((max(0, s), min(size, e)) for s, e in allocated):
        if start > position:
            result.append(Extent(position, start - position, False))
        result.append(Extent(start, end - start, True))
        position = end
    if position < size:
        result.append(Extent(position, size - position, False))
    return result


def subtract_ranges(ranges: list[tuple[int, int]], holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``ranges`` minus ``holes``; both sorted and merged, so is the result."""
    result: list[tuple[int, int]] = []
    j = 0
    for start, end in ranges:
        while j < len(holes) and holes[j][1] <= start:
            j += 1
        k = j
        position = start
        while k < len(holes) and holes[k][0] < end:
            if holes[k][0] > position:
                result.append((position, holes[k][0]))
            position = max(position, holes[k][1])
            k += 1
        if position < end:
            result.append((position, end))
    return result


def allocated_ranges(extents: Iterable[Extent]) -> list[tuple[int, int]]:
    """The ``(start, end)`` ranges of the allocated extents, merged."""
    return merge_ranges((e.offset, e.end) for e in extents if e.allocated)


def allocated_bytes(extents: Iterable[Extent]) -> int:
    """Total length of the allocated extents."""
    return sum(e.length for e in extents if e.allocated)


def total(ranges: Iterable[tuple[int, int]]) -> int:
    """Sum of the lengths of half-open ``(start, end)`` ranges (assumed disjoint)."""
    return sum(b - a for a, b in ranges)


def split_ranges(ranges: Iterable[tuple[int, int]], max_length: int) -> Iterator[tuple[int, int]]:
    """Cut each ``(start, end)`` range into consecutive pieces of at most ``max_length`` bytes."""
    if max_length <= 0:
        raise ValueError("max_length must be positive")
    for start, end in ranges:
        while start < end:
            piece = min(end, start + max_length)
            yield start, piece
            start = piece


def split(extents: Iterable[Extent], max_length: int) -> Iterator[Extent]:
    """Cut extents into pieces of at most ``max_length`` bytes, keeping order and flags."""
    if max_length <= 0:
        raise ValueError("max_length must be positive")
    for e in extents:
        for start, end in split_ranges(((e.offset, e.end),), max_length):
            yield Extent(start, end - start, e.allocated)


def check_cover(extents: list[Extent], size: int) -> None:
    """Raise ``ValueError`` unless ``extents`` cover ``[0, size)`` in order with no gap or overlap."""
    position = 0
    for e in extents:
        if e.offset != position or e.length <= 0:
            raise ValueError(f"extent {e} does not start at {position}")
        position = e.end
    if position != size:
        raise ValueError(f"extents end at {position}, disk size is {size}")
