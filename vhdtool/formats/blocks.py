"""What block-mapped formats share: the read plan of a byte range and the layout checks of stored blocks.

A sparse VHD and a VHDX both map a virtual disk range onto runs that come from the image file, read
as zeros, or come from the parent disk. A reader cuts a range into such :class:`Segment` runs with a
:class:`ReadPlan` (which merges neighbours, so one read or one placement serves a long run), and
:func:`read_segments` / :func:`segment_placements` carry them out the same way for both formats.

:func:`holes_in_blocks` finds the stored bytes that are holes in a sparse image file. The
``first_*`` checks find the first stored block that lies outside the file, over a reserved
structure, or over another block, on numpy arrays of file ranges (a BAT can hold millions of
blocks); each reader words its own error, naming its own structures.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from vhdtool.blockio.zeros import fill_zeros
from vhdtool.disk.base import ByteSource, Placement, VirtualDisk, append_placement, stored_placement
from vhdtool.extents import merge_ranges

IntArray = np.ndarray[Any, np.dtype[np.int64]]


class Source(IntEnum):
    """Where the bytes of a segment come from."""

    FILE = 0  # stored in the image file at ``file_offset``
    ZERO = 1  # read as zeros
    PARENT = 2  # the parent disk's bytes at the same disk offset


class Segment(NamedTuple):
    """Disk bytes ``[start, end)`` from ``source``; ``file_offset`` is where a FILE run starts in the file."""

    source: Source
    start: int
    end: int
    file_offset: int


class ReadPlan:
    """The segments of one read, in disk order, neighbours of one source merged.

    FILE runs merge only where they are contiguous in the file too, so each stays one read.
    """

    __slots__ = ("segments",)

    def __init__(self) -> None:
        self.segments: list[Segment] = []

    def add(self, source: Source, start: int, end: int, file_offset: int = 0) -> None:
        if end <= start:
            return
        segments = self.segments
        if segments:
            last = segments[-1]
            if last.source is source and last.end == start and (
                    source is not Source.FILE or last.file_offset + (last.end - last.start) == file_offset):
                segments[-1] = Segment(source, last.start, end, last.file_offset)
                return
        segments.append(Segment(source, start, end, file_offset))


class PositionalFile(Protocol):
    """What a plan's FILE runs are read from: the image file, or a log-replayed view of it."""

    def preadinto(self, offset: int, view: memoryview, structure: str) -> None: ...


def read_segments(segments: list[Segment], offset: int, view: memoryview, file: PositionalFile,
                  parent: VirtualDisk | None, structure: str) -> None:
    """Fill ``view`` (the disk bytes at ``offset``) from its plan; PARENT runs read as zeros without a parent."""
    for source, start, end, file_offset in segments:
        part = view[start - offset:end - offset]
        if source is Source.FILE:
            file.preadinto(file_offset, part, structure)
        elif source is Source.PARENT and parent is not None:
            parent.readinto(start, part)
        else:
            fill_zeros(part)


def segment_placements(segments: list[Segment], stored: ByteSource | None,
                       parent: VirtualDisk | None) -> list[Placement]:
    """The placements of a plan: FILE runs stored as they are in ``stored`` (``None`` when the file's
    bytes are not the disk's, e.g. under a replayed log: then ``"read"``), zeros, the parent's own."""
    result: list[Placement] = []
    for source, start, end, file_offset in segments:
        length = end - start
        if source is Source.FILE:
            if stored is not None and file_offset + length <= stored.size:
                append_placement(result, stored_placement(start, length, stored, file_offset))
            else:
                append_placement(result, Placement(start, length, "read"))
        elif source is Source.PARENT and parent is not None:
            for piece in parent.placements(start, length):
                append_placement(result, piece)
        else:
            append_placement(result, Placement(start, length, "zero"))
    return result


def first_past(ends: IntArray, limit: int) -> int | None:
    """The position of the first block that ends past byte ``limit``, or ``None``."""
    past = np.flatnonzero(ends > limit)
    return int(past[0]) if past.size else None


def first_inside(starts: IntArray, ends: IntArray, lo: int, hi: int) -> int | None:
    """The position of the first block that shares a byte with ``[lo, hi)``, or ``None``."""
    inside = np.flatnonzero((starts < hi) & (ends > lo))
    return int(inside[0]) if inside.size else None


def first_overlap(starts: IntArray, ends: IntArray) -> tuple[int, int] | None:
    """``(later, earlier)`` positions of the first two blocks (in file order) that share a byte, or ``None``.

    Blocks are sorted by start (stably, so equal starts keep their order); as long as no two
    overlap, each one starts at or after the end of the one before it, so the first block that
    starts before its predecessor's end is the first overlap, and the predecessor is its partner.
    """
    if starts.size < 2:
        return None
    order = np.argsort(starts, kind="stable")
    sorted_starts, sorted_ends = starts[order], ends[order]
    clash = np.flatnonzero(sorted_starts[1:] < sorted_ends[:-1])
    if not clash.size:
        return None
    j = int(clash[0]) + 1
    return int(order[j]), int(order[j - 1])


def consecutive_runs(blocks: IntArray, states: IntArray | None = None) -> tuple[IntArray, IntArray, IntArray]:
    """``(starts, ends, firsts)``: half-open runs of consecutive numbers in sorted ``blocks``, broken
    where ``states`` (one per block) changes too; ``firsts`` is the position of each run's first block."""
    if not blocks.size:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    step = np.diff(blocks) != 1
    if states is not None:
        step |= np.diff(states) != 0
    breaks = np.flatnonzero(step)
    firsts = np.concatenate([np.zeros(1, np.int64), breaks + 1])
    lasts = np.concatenate([breaks, np.array([blocks.size - 1], np.int64)])
    return blocks[firsts], blocks[lasts] + 1, firsts


def holes_in_blocks(holes: list[tuple[int, int]], blocks: npt.NDArray[Any], file_offsets: npt.NDArray[Any],
                    block_size: int) -> list[tuple[int, int]]:
    """Disk byte ranges of stored blocks whose bytes are holes in the image file.

    ``blocks[i]`` (a block number) is stored at ``file_offsets[i]``. A block's never-written bytes are
    often a hole in a sparse VHD/VHDX (qemu, ``cp --sparse``) or unwritten pages of a page blob: they
    read as zeros, so convert and upload need not touch them. ``holes`` come from the byte source's
    metadata (``SEEK_HOLE``, Get Page Ranges), no data read.
    """
    if not holes or not len(blocks):
        return []
    order = np.argsort(file_offsets, kind="stable")
    blocks, offsets = blocks[order], file_offsets[order]
    result: list[tuple[int, int]] = []
    for hole_start, hole_end in holes:
        i = max(0, int(np.searchsorted(offsets, hole_start, side="right")) - 1)
        while i < len(offsets) and int(offsets[i]) < hole_end:
            block_file = int(offsets[i])
            lo, hi = max(hole_start, block_file), min(hole_end, block_file + block_size)
            if lo < hi:
                base = int(blocks[i]) * block_size - block_file
                result.append((base + lo, base + hi))
            i += 1
    return merge_ranges(result)
