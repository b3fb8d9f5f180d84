"""Raw images: the file's bytes are the disk; extents come from the file's holes."""

from __future__ import annotations

from typing import Any

from vhdtool.blockio.fileio import data_ranges, file_holes
from vhdtool.disk.base import ByteSource, Placement, VirtualDisk, stored_placement
from vhdtool.extents import Extent, align_down, align_up, extents_from_ranges
from vhdtool.units import SECTOR_SIZE

__all__ = ["RawDisk", "data_ranges", "file_extents", "file_holes"]


def file_extents(image: ByteSource, limit: int, size: int) -> list[Extent]:
    """Extents of a disk of ``size`` bytes stored as it is in ``image`` from offset 0, from the file's
    data ranges up to ``limit``: holes are reported in filesystem blocks, aligned out to sectors here."""
    ranges = image.data_ranges(limit)
    return extents_from_ranges([(align_down(s, SECTOR_SIZE), align_up(e, SECTOR_SIZE)) for s, e in ranges], size)


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
            self._extents = file_extents(self.image, self.image.size, self.virtual_size)
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
