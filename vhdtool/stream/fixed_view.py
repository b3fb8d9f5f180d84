"""Any virtual disk seen as the fixed VHD Azure accepts: its bytes, zero padding to a MiB, a footer.

This view is what both ``convert`` and ``upload`` walk, so an upload of a VHDX or dynamic VHD needs
no temporary fixed copy: the padding is an unallocated extent and the footer a 512-byte allocated one.
"""

from __future__ import annotations

from dataclasses import dataclass

from vhdtool.blockio.zeros import fill_zeros
from vhdtool.disk.base import Placement, VirtualDisk, append_placement
from vhdtool.errors import UsageError
from vhdtool.extents import Extent, align_up, check_cover
from vhdtool.formats.vhd.footer import VhdFooter, build_footer, fixed_footer
from vhdtool.formats.vhd.layout import FOOTER_SIZE
from vhdtool.units import MiB


def azure_virtual_size(size: int, requested: int | None = None, alignment: int = MiB) -> int:
    """The fixed disk's virtual size: ``requested`` (or ``size``) rounded up to ``alignment``.

    A ``requested`` size below the data is refused: shrinking would drop bytes.
    """
    if requested is not None and requested < size:
        raise UsageError(f"--size {requested} is smaller than the disk's {size} bytes; shrinking is not supported")
    return align_up(size if requested is None else requested, alignment)


@dataclass(frozen=True)
class FixedVhdLayout:
    """Where the parts of the fixed VHD lie: data ``[0, data_size)``, zeros, footer at ``virtual_size``."""

    data_size: int
    virtual_size: int

    @property
    def file_size(self) -> int:
        return self.virtual_size + FOOTER_SIZE


class FixedVhdView:
    """A read-only, positional view of ``disk`` as a fixed VHD file of ``virtual_size + 512`` bytes."""

    def __init__(self, disk: VirtualDisk, *, size: int | None = None, alignment: int = MiB,
                 unique_id: bytes | None = None, timestamp: int | None = None) -> None:
        self.disk = disk
        self.layout = FixedVhdLayout(disk.virtual_size, azure_virtual_size(disk.virtual_size, size, alignment))
        self.footer: VhdFooter = fixed_footer(self.layout.virtual_size, unique_id, timestamp)
        self.footer_bytes = build_footer(self.footer)
        self.size = self.layout.file_size

    @property
    def virtual_size(self) -> int:
        return self.layout.virtual_size

    def extents(self) -> list[Extent]:
        """The source's extents, the padding as zeros, and the footer as the last allocated extent."""
        result = list(self.disk.extents())
        padding = self.layout.virtual_size - self.layout.data_size
        if padding:
            if result and not result[-1].allocated:
                last = result.pop()
                result.append(Extent(last.offset, last.length + padding, False))
            else:
                result.append(Extent(self.layout.data_size, padding, False))
        result.append(Extent(self.layout.virtual_size, FOOTER_SIZE, True))
        check_cover(result, self.size)
        return result

    def readinto(self, offset: int, view: memoryview) -> None:
        """Fill ``view`` with the fixed VHD's bytes at ``offset`` (thread-safe)."""
        end = offset + len(view)
        if offset < 0 or end > self.size:
            raise ValueError(f"read [{offset}, {end}) outside fixed VHD of {self.size} bytes")
        data_end = self.layout.data_size
        footer_start = self.layout.virtual_size
        position = offset
        if position < data_end:
            n = min(end, data_end) - position
            self.disk.readinto(position, view[:n])
            position += n
        if position < end and position < footer_start:
            n = min(end, footer_start) - position
            start = position - offset
            fill_zeros(view[start:start + n])
            position += n
        if position < end:
            start = position - offset
            fo = position - footer_start
            view[start:] = self.footer_bytes[fo:fo + (end - position)]

    def placements(self, offset: int, length: int) -> list[Placement]:
        """Where ``[offset, offset + length)`` of the fixed VHD comes from: the disk's own placements,
        zeros for the padding, and the footer (made here, so ``"read"``)."""
        end = offset + length
        if offset < 0 or length < 0 or end > self.size:
            raise ValueError(f"range [{offset}, {end}) outside fixed VHD of {self.size} bytes")
        result: list[Placement] = []
        data_end = self.layout.data_size
        footer_start = self.layout.virtual_size
        if offset < data_end:
            for piece in self.disk.placements(offset, min(end, data_end) - offset):
                append_placement(result, piece)
        lo, hi = max(offset, data_end), min(end, footer_start)
        if lo < hi:
            append_placement(result, Placement(lo, hi - lo, "zero"))
        lo = max(offset, footer_start)
        if lo < end:
            append_placement(result, Placement(lo, end - lo, "read"))
        return result
