"""Raw images: the file's bytes are the disk; extents come from the file's holes."""

from __future__ import annotations

import errno
import os
from typing import Any

from ..disk import ImageFile, VirtualDisk
from ..extents import Extent, extents_from_ranges


def data_ranges(fd: int, size: int) -> list[tuple[int, int]]:
    """The ``(start, end)`` ranges holding data, from ``SEEK_DATA``/``SEEK_HOLE``.

    Where the platform or filesystem cannot tell, the whole file counts as data.
    """
    seek_data = getattr(os, "SEEK_DATA", None)
    seek_hole = getattr(os, "SEEK_HOLE", None)
    if seek_data is None or seek_hole is None or size == 0:
        return [(0, size)] if size else []
    ranges: list[tuple[int, int]] = []
    position = 0
    try:
        while position < size:
            try:
                start = os.lseek(fd, position, seek_data)
            except OSError as err:
                if err.errno == errno.ENXIO:  # no data after position
                    break
                raise
            end = min(os.lseek(fd, start, seek_hole), size)
            ranges.append((start, end))
            position = end
    except OSError:
        return [(0, size)]
    return ranges


def file_holes(fd: int, size: int) -> list[tuple[int, int]]:
    """The ``(start, end)`` ranges of a file that are holes (read as zeros, no storage)."""
    holes: list[tuple[int, int]] = []
    position = 0
    for start, end in data_ranges(fd, size):
        if start > position:
            holes.append((position, start))
        position = end
    if position < size:
        holes.append((position, size))
    return holes


class RawDisk(VirtualDisk):
    """A raw image file (or block device), read as it is."""

    format = "raw"
    disk_type = "fixed"

    def __init__(self, image: ImageFile, virtual_size: int | None = None) -> None:
        super().__init__()
        self.image = image
        self.path = image.path
        self.virtual_size = image.size if virtual_size is None else virtual_size
        self._extents: list[Extent] | None = None

    def extents(self) -> list[Extent]:
        if self._extents is None:
            ranges = data_ranges(self.image.fd, self.image.size)
            # Holes are reported in filesystem blocks; align out to 512-byte sectors.
            aligned = [(s - s % 512, -(-e // 512) * 512) for s, e in ranges]
            self._extents = extents_from_ranges(aligned, self.virtual_size)
        return self._extents

    def readinto(self, offset: int, view: memoryview) -> None:
        self.check_range(offset, len(view))
        self.image.preadinto(offset, view, "raw data")

    def details(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.image.close()
