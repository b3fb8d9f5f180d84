"""Raw images: the file's bytes are the disk; extents come from the file's holes."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from vhdtool.blockio.fileio import data_ranges, file_holes
from vhdtool.disk.base import ByteSource, Placement, VirtualDisk, stored_placement
from vhdtool.extents import Extent, extents_from_ranges, merge_ranges

__all__ = ["RawDisk", "data_ranges", "file_holes", "holes_in_blocks"]


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


class RawDisk(VirtualDisk):
    """A raw image file (or block device), read as it is."""

    format = "raw"
    disk_type = "fixed"

    def __init__(self, image: ByteSource, virtual_size: int | None = None) -> None:
        super().__init__()
        self.image = image
        self.path = image.path
        self.virtual_size = image.size if virtual_size is None else virtual_size
        self._extents: list[Extent] | None = None

    def extents(self) -> list[Extent]:
        if self._extents is None:
            ranges = self.image.data_ranges(self.image.size)
            # Holes are reported in filesystem blocks; align out to 512-byte sectors.
            aligned = [(s - s % 512, -(-e // 512) * 512) for s, e in ranges]
            self._extents = extents_from_ranges(aligned, self.virtual_size)
        return self._extents

    def readinto(self, offset: int, view: memoryview) -> None:
        self.check_range(offset, len(view))
        self.image.preadinto(offset, view, "raw data")

    def placements(self, offset: int, length: int) -> list[Placement]:
        self.check_range(offset, length)
        return [stored_placement(offset, length, self.image, offset)] if length else []

    def details(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.image.close()
