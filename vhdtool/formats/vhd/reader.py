"""VHD images: fixed, dynamic and differencing disks (Virtual Hard Disk Image Format Specification 1.0).

A fixed disk is its data followed by a footer. A dynamic or differencing disk is a footer copy, a
dynamic disk header, a block allocation table (BAT) and blocks, each block a sector bitmap followed by
data, then the footer. Every offset taken from the file is checked against the file before it is used,
so a damaged or hostile image raises :class:`ImageError` instead of reading garbage or allocating
memory it does not hold.
"""

from __future__ import annotations

import dataclasses
import threading
import urllib.parse
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np
import numpy.typing as npt
from construct import ConstructError

from vhdtool.disk.base import ByteSource, Placement, VirtualDisk, stored_placement
from vhdtool.errors import ImageError, ParentError
from vhdtool.extents import Extent, align_up, allocated_ranges, extents_from_ranges, merge_ranges, subtract_ranges
from vhdtool.formats.blocks import (
    IntArray,
    ReadPlan,
    Segment,
    Source,
    first_inside,
    first_overlap,
    first_past,
    holes_in_blocks,
    read_segments,
    segment_placements,
)
from vhdtool.formats.parent import Locator, OpenOptions, resolve_parent
from vhdtool.formats.raw import file_extents
from vhdtool.formats.vhd.footer import (
    DISK_TYPE_DIFFERENCING,
    DISK_TYPE_DYNAMIC,
    DISK_TYPE_FIXED,
    FILE_FORMAT_VERSION,
    VhdFooter,
    footer_checksum,
    parse_footer,
)
from vhdtool.formats.vhd.layout import (
    BAT_ENTRY_UNUSED,
    DYNAMIC_HEADER_COOKIE,
    DYNAMIC_HEADER_SIZE,
    DYNAMIC_HEADER_VERSION,
    FOOTER_SIZE,
    VHD_COOKIE,
    DynamicHeader,
)
from vhdtool.units import SECTOR_SIZE, MiB

MIN_BLOCK_SIZE = SECTOR_SIZE
MAX_BLOCK_SIZE = 256 * MiB  # the spec's default is 2 MiB; larger is not seen in practice
# A Windows path is at most 32,767 UTF-16 characters; anything longer is not a path.
MAX_LOCATOR_LENGTH = 65536
_CHECKSUM_FIELD = slice(36, 40)  # dynamic header checksum field (spec: "Checksum")
_LOCATOR_TABLE_OFFSET = 576  # offset of the first parent locator entry in the dynamic header

# Platform codes of parent locators (spec: "Parent Locator Entries"): code -> (encoding, relative).
PLATFORM_W2RU = b"W2ru"  # Windows relative path, UTF-16LE
PLATFORM_W2KU = b"W2ku"  # Windows absolute path, UTF-16LE
PLATFORM_WI2R = b"Wi2r"  # deprecated Windows relative path
PLATFORM_WI2K = b"Wi2k"  # deprecated Windows absolute path
PLATFORM_MACX = b"MacX"  # Mac OS X file:// URL, UTF-8
PLATFORM_MAC = b"Mac "  # Mac OS alias blob: not a path, not followed
PLATFORM_NONE = b"\0\0\0\0"
_RELATIVE_CODES = {PLATFORM_W2RU, PLATFORM_WI2R}



class _BlockState(IntEnum):
    """What an allocated block's sector bitmap says, cached per BAT entry once learnt."""

    UNKNOWN = 0  # the bitmap is not read yet
    FULL = 1  # every sector is in the file
    EMPTY = 2  # no sector is
    PARTIAL = 3


_BITS_CACHE_BLOCKS = 256


@dataclass(frozen=True)
class VhdParentLocator:
    """One parent locator entry of a differencing disk, with its path decoded where it is a path."""

    index: int
    platform_code: bytes
    data_space: int
    data_length: int
    data_offset: int
    path: str | None

    @property
    def kind(self) -> str:
        return self.platform_code.decode("latin-1")

    @property
    def relative(self) -> bool:
        return self.platform_code in _RELATIVE_CODES

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "data_offset": self.data_offset,
                "data_length": self.data_length}


@dataclass(frozen=True)
class VhdDynamicHeader:
    """The dynamic disk header (``cxsparse``) of a dynamic or differencing disk."""

    offset: int
    data_offset: int
    table_offset: int
    header_version: int
    max_table_entries: int
    block_size: int
    checksum: int
    checksum_valid: bool
    parent_unique_id: bytes
    parent_timestamp: int
    parent_name: str
    locators: tuple[VhdParentLocator, ...]
    warnings: tuple[str, ...] = ()

    @property
    def bitmap_size(self) -> int:
        """Bytes of the sector bitmap in front of each block, padded to a sector (spec: "Block Format")."""
        return align_up(-(-self.block_size // SECTOR_SIZE // 8), SECTOR_SIZE)

    def to_json(self, differencing: bool) -> dict[str, Any]:
        result: dict[str, Any] = {
            "offset": self.offset,
            "table_offset": self.table_offset,
            "header_version": f"{self.header_version >> 16}.{self.header_version & 0xFFFF}",
            "max_table_entries": self.max_table_entries,
            "block_size": self.block_size,
            "checksum": f"0x{self.checksum:08x}",
            "checksum_valid": self.checksum_valid,
        }
        if differencing:
            result.update({
                "parent_unique_id": str(uuid.UUID(bytes=self.parent_unique_id)),
                "parent_timestamp": self.parent_timestamp,
                "parent_name": self.parent_name,
                "parent_locators": [loc.to_json() for loc in self.locators],
            })
        return result


def dynamic_header_checksum(raw: bytes) -> int:
    """Ones' complement of the byte sum of the 1024-byte header with its checksum field zeroed."""
    total = sum(raw[:_CHECKSUM_FIELD.start]) + sum(raw[_CHECKSUM_FIELD.stop:DYNAMIC_HEADER_SIZE])
    return (~total) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------------
# Footer


@dataclass(frozen=True)
class FooterChoice:
    """The footer vhdtool trusts, where it came from, and where the data area of the file ends."""

    footer: VhdFooter
    source: str  # "end" | "copy at offset 0"
    data_end: int
    warnings: tuple[str, ...]


def _checksum_note(raw: bytes, footer: VhdFooter) -> str:
    computed = footer_checksum(raw.ljust(FOOTER_SIZE, b"\0"))
    return f"stored 0x{footer.checksum:08x}, computed 0x{computed:08x}"


def read_footer(image: ByteSource) -> FooterChoice:
    """Find the footer: at the end (512 or, from old tools, 511 bytes), else the copy at offset 0.

    Dynamic and differencing disks keep a copy of the footer at offset 0 so that a damaged end
    footer can be recovered (spec: "Dynamic Disk Header Format"); a fixed disk has only the end one.
    """
    warnings: list[str] = []
    end: VhdFooter | None = None
    end_raw = b""
    end_offset = image.size
    for length in (FOOTER_SIZE, FOOTER_SIZE - 1):
        offset = image.size - length
        if offset < 0:
            continue
        raw = image.pread(offset, length, "VHD footer")
        if raw.startswith(VHD_COOKIE):
            end, end_raw, end_offset = parse_footer(raw, image.path, offset), raw, offset
            if length != FOOTER_SIZE:
                warnings.append("the footer is 511 bytes long (written by an old tool)")
            break
    copy: VhdFooter | None = None
    copy_raw = b""
    if image.size >= FOOTER_SIZE and end_offset != 0:
        raw = image.pread(0, FOOTER_SIZE, "VHD footer copy")
        if raw.startswith(VHD_COOKIE):
            copy, copy_raw = parse_footer(raw, image.path, 0), raw
    copy_ok = copy is not None and copy.checksum_valid and copy.disk_type in (DISK_TYPE_DYNAMIC,
                                                                              DISK_TYPE_DIFFERENCING)
    if end is not None and end.checksum_valid:
        if end.disk_type in (DISK_TYPE_DYNAMIC, DISK_TYPE_DIFFERENCING):
            if not copy_ok:
                warnings.append("the footer copy at offset 0 is missing or damaged")
            elif copy_raw != end_raw.ljust(FOOTER_SIZE, b"\0"):
                warnings.append("the footer copy at offset 0 differs from the footer at the end")
        return FooterChoice(end, "end", end_offset, tuple(warnings))
    if copy is not None and copy_ok:
        problem = ("has a wrong checksum (" + _checksum_note(end_raw, end) + ")" if end is not None
                   else "is missing")
        warnings.append(f"the footer at the end of the file {problem}; using the copy at offset 0")
        return FooterChoice(copy, "copy at offset 0", end_offset, tuple(warnings))
    if end is not None:
        if end.disk_type == DISK_TYPE_FIXED:
            # Still readable; Azure refuses it and ``check`` flags it, so report rather than refuse.
            warnings.append(f"the footer checksum is wrong ({_checksum_note(end_raw, end)})")
            return FooterChoice(end, "end", end_offset, tuple(warnings))
        raise ImageError(image.path, "VHD footer", end_offset,
                         f"checksum is wrong ({_checksum_note(end_raw, end)}) and the copy at offset 0 "
                         "is missing or damaged too")
    raise ImageError(image.path, "VHD footer", max(0, image.size - FOOTER_SIZE),
                     "no footer (cookie 'conectix') at the end of the file and no valid copy at offset 0")


# ---------------------------------------------------------------------------------------------------
# Dynamic header, locators and the block allocation table


def _decode_locator(code: bytes, data: bytes) -> str | None:
    """The path a locator holds, or ``None`` for platform codes that do not hold a path."""
    if code in (PLATFORM_W2RU, PLATFORM_W2KU):
        text = data.decode("utf-16-le", errors="replace")
    elif code in (PLATFORM_WI2R, PLATFORM_WI2K):
        # Deprecated codes: old tools wrote the system code page; some wrote UTF-16LE anyway.
        if len(data) >= 2 and data[1] == 0 and data[0] != 0:
            text = data.decode("utf-16-le", errors="replace")
        else:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = data.decode("latin-1")
    elif code == PLATFORM_MACX:
        url = data.split(b"\0", 1)[0].decode("utf-8", errors="replace")
        parsed = urllib.parse.urlparse(url)
        text = urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else url
    else:
        return None
    return text.split("\0", 1)[0]


def read_dynamic_header(image: ByteSource, footer: VhdFooter, data_end: int) -> VhdDynamicHeader:
    """Read and validate the dynamic disk header at the footer's data offset (spec: "Dynamic Disk Header")."""
    offset = footer.data_offset
    if offset + DYNAMIC_HEADER_SIZE > data_end:
        raise ImageError(image.path, "VHD dynamic header", offset,
                         f"lies outside the file (the data area ends at byte {data_end})")
    raw = image.pread(offset, DYNAMIC_HEADER_SIZE, "VHD dynamic header")
    try:
        c = DynamicHeader.parse(raw)
    except ConstructError as err:
        raise ImageError(image.path, "VHD dynamic header", offset, f"cannot be parsed ({err})") from err
    if c.cookie != DYNAMIC_HEADER_COOKIE:
        raise ImageError(image.path, "VHD dynamic header", offset,
                         f"cookie is {bytes(c.cookie)!r}, expected b'cxsparse'")
    computed = dynamic_header_checksum(raw)
    if computed != c.checksum:
        raise ImageError(image.path, "VHD dynamic header", offset,
                         f"checksum is wrong (stored 0x{c.checksum:08x}, computed 0x{computed:08x})")
    if c.header_version != DYNAMIC_HEADER_VERSION:
        raise ImageError(image.path, "VHD dynamic header", offset,
                         f"header version 0x{c.header_version:08x} is not 1.0")
    block_size = c.block_size
    if not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE or block_size & (block_size - 1):
        raise ImageError(image.path, "VHD dynamic header", offset,
                         f"block size {block_size} is not a power of two between {MIN_BLOCK_SIZE} "
                         f"and {MAX_BLOCK_SIZE} bytes")
    locators: list[VhdParentLocator] = []
    warnings: list[str] = []
    if footer.disk_type == DISK_TYPE_DIFFERENCING:
        # Dynamic disks leave these entries unused; only a differencing disk's are read.
        locators = _read_locators(image, c.parent_locators, offset, data_end, warnings)
    name = bytes(c.parent_unicode_name).decode("utf-16-be", errors="replace").split("\0", 1)[0]
    return VhdDynamicHeader(
        offset=offset,
        data_offset=c.data_offset,
        table_offset=c.table_offset,
        header_version=c.header_version,
        max_table_entries=c.max_table_entries,
        block_size=block_size,
        checksum=c.checksum,
        checksum_valid=True,
        parent_unique_id=bytes(c.parent_unique_id),
        parent_timestamp=c.parent_timestamp,
        parent_name=name,
        locators=tuple(locators),
        warnings=tuple(warnings),
    )


def _read_locators(image: ByteSource, entries: Any, header_offset: int, data_end: int,
                   warnings: list[str]) -> list[VhdParentLocator]:
    """The parent locators of a differencing disk's header, their paths decoded.

    A locator only helps find the parent (the unique id proves it): a broken one is skipped, as
    qemu-img and libvhdi skip it, and the other locators, the parent's name or --parent still
    find the parent.
    """
    locators: list[VhdParentLocator] = []
    for index, entry in enumerate(entries):
        code = bytes(entry.platform_code)
        if code == PLATFORM_NONE:
            continue
        entry_offset = header_offset + _LOCATOR_TABLE_OFFSET + 24 * index
        structure = f"VHD parent locator {index} ({code.decode('latin-1')!r})"
        if entry.data_length > MAX_LOCATOR_LENGTH:
            warnings.append(f"{structure} at byte {entry_offset}: data length {entry.data_length} is "
                            "too long for a path; locator ignored")
            continue
        if entry.data_offset + entry.data_length > data_end:
            warnings.append(f"{structure} at byte {entry_offset}: data at byte {entry.data_offset} "
                            f"({entry.data_length} bytes) lies past the data area, which ends at byte "
                            f"{data_end}; locator ignored")
            continue
        data = image.pread(entry.data_offset, entry.data_length, structure) if entry.data_length else b""
        locators.append(VhdParentLocator(index, code, entry.data_space, entry.data_length,
                                         entry.data_offset, _decode_locator(code, data)))
    return locators


@dataclass(frozen=True)
class VhdBlockTable:
    """The allocated entries of a BAT, by ascending block number; unused entries are not stored.

    A BAT costs memory for the blocks the file holds, not for the blocks the disk could have: a
    2 TiB disk of 512-byte blocks has 2**32 entries, almost all of them unused.
    """

    blocks: int  # entries the disk uses (the rest of the table is ignored)
    used: npt.NDArray[np.uint32]  # block numbers of the allocated entries, ascending
    sectors: npt.NDArray[np.uint32]  # the file sector each of those blocks starts at

    def __len__(self) -> int:
        return len(self.used)


_BAT_CHUNK_ENTRIES = 1 << 18  # BAT entries read at a time: 1 MiB of table, a few MiB of temporaries
_BAT = "VHD block allocation table"


def read_block_table(image: ByteSource, footer: VhdFooter, header: VhdDynamicHeader,
                     data_end: int) -> VhdBlockTable:
    """Read the BAT entries the disk needs and check that every block lies alone inside the file.

    The table is checked against the file size before it is read and then read a bounded chunk at a
    time, so an absurd entry count (or a table that is a hole in a sparse file) costs nothing:
    memory grows only with the allocated entries, and those are checked as they are read.
    """
    blocks, table_bytes = _check_table_fits(image.path, footer, header, data_end)
    layout = _BlockLayout(image.path, header, footer.current_size, data_end,
                          _fixed_regions(image.path, header, table_bytes))
    used_parts: list[npt.NDArray[np.uint32]] = []
    sector_parts: list[npt.NDArray[np.uint32]] = []
    count = 0
    for numbers, entries in _allocated_entries(image, header.table_offset, blocks):
        count = layout.check_chunk(numbers, entries, count)
        used_parts.append(numbers.astype(np.uint32))
        sector_parts.append(entries.astype(np.uint32))
    used = np.concatenate(used_parts) if used_parts else np.zeros(0, np.uint32)
    sectors = np.concatenate(sector_parts) if sector_parts else np.zeros(0, np.uint32)
    layout.check_disjoint(used, sectors)
    return VhdBlockTable(blocks, used, sectors)


def _check_table_fits(path: str, footer: VhdFooter, header: VhdDynamicHeader, data_end: int) -> tuple[int, int]:
    """``(blocks, table_bytes)``: the entries the disk needs, which the table must hold inside the data area."""
    size, block_size, table = footer.current_size, header.block_size, header.table_offset
    blocks = -(-size // block_size)
    if blocks > header.max_table_entries:
        raise ImageError(path, _BAT, table,
                         f"has {header.max_table_entries} entries but a disk of {size} bytes in blocks of "
                         f"{block_size} bytes needs {blocks}")
    table_bytes = header.max_table_entries * 4
    if table + table_bytes > data_end:
        raise ImageError(path, _BAT, table,
                         f"{header.max_table_entries} entries ({table_bytes} bytes) extend past the data "
                         f"area, which ends at byte {data_end}")
    return blocks, table_bytes


def _fixed_regions(path: str, header: VhdDynamicHeader, table_bytes: int) -> list[tuple[str, int, int]]:
    """``(name, start, end)`` of what the file holds besides blocks, checked not to overlap one another."""
    table = header.table_offset
    regions = [("footer copy at offset 0", 0, FOOTER_SIZE),
               ("dynamic header", header.offset, header.offset + DYNAMIC_HEADER_SIZE),
               ("block allocation table", table, table + table_bytes)]
    regions += [(f"parent locator {loc.index} data", loc.data_offset, loc.data_offset + loc.data_length)
                for loc in header.locators if loc.data_length]
    regions.sort(key=lambda r: r[1])
    clash = first_overlap(np.array([r[1] for r in regions], np.int64), np.array([r[2] for r in regions], np.int64))
    if clash is not None:
        (name_b, start_b, _), (name_a, start_a, _) = regions[clash[0]], regions[clash[1]]
        raise ImageError(path, "VHD layout", start_b,
                         f"the {name_b} (byte {start_b}) overlaps the {name_a} (byte {start_a})")
    return regions


def _allocated_entries(image: ByteSource, table: int, blocks: int) -> Iterator[tuple[IntArray, IntArray]]:
    """``(block numbers, file sectors)`` of the allocated entries, one bounded chunk of the table at a time."""
    for first in range(0, blocks, _BAT_CHUNK_ENTRIES):
        n = min(_BAT_CHUNK_ENTRIES, blocks - first)
        entries = np.frombuffer(image.pread(table + 4 * first, 4 * n, _BAT), dtype=">u4")
        where = np.flatnonzero(entries != BAT_ENTRY_UNUSED)
        if where.size:
            yield (where + first).astype(np.int64), entries[where].astype(np.int64)


class _BlockLayout:
    """Where blocks may lie: each takes its bitmap and its data inside the data area, clear of the
    fixed regions and of every other block (the last block only up to the disk's size)."""

    def __init__(self, path: str, header: VhdDynamicHeader, size: int, data_end: int,
                 regions: list[tuple[str, int, int]]) -> None:
        self.path, self.size, self.data_end, self.regions = path, size, data_end, regions
        self.table = header.table_offset
        self.block_size = header.block_size
        self.bitmap_size = header.bitmap_size
        # Blocks that do not overlap each take a bitmap and a whole block of the data area (the last may be shorter).
        self.most = data_end // (self.bitmap_size + self.block_size) + 1

    def ends(self, numbers: IntArray, starts: IntArray) -> IntArray:
        # Only the part of the last block inside the disk must exist (spec: "Block Format").
        data: IntArray = np.minimum(self.block_size, self.size - numbers * self.block_size)
        return starts + self.bitmap_size + data

    def fail(self, block: int, problem: str) -> ImageError:
        return ImageError(self.path, _BAT, self.table + 4 * block, problem)

    def check_chunk(self, numbers: IntArray, sectors: IntArray, count: int) -> int:
        """Check one chunk of allocated entries (``count`` of them seen before); the new count."""
        starts = sectors * SECTOR_SIZE
        ends = self.ends(numbers, starts)
        past = first_past(ends, self.data_end)
        if past is not None:
            i = int(numbers[past])
            raise self.fail(i, f"entry {i} places block {i} at byte {int(starts[past])}, ending at byte "
                            f"{int(ends[past])}, past the data area, which ends at byte {self.data_end}")
        for name, lo, hi in self.regions:
            inside = first_inside(starts, ends, lo, hi)
            if inside is not None:
                i = int(numbers[inside])
                raise self.fail(i, f"block {i} (BAT entry {i}, byte {int(starts[inside])}) overlaps the {name} "
                                f"(byte {lo})")
        if count + numbers.size > self.most:
            i = int(numbers[self.most - count])
            raise self.fail(i, f"entry {i} is allocated block number {self.most + 1}, but no more than "
                            f"{self.most} blocks of {self.bitmap_size + self.block_size} bytes fit in the data "
                            f"area of {self.data_end} bytes without overlapping")
        return count + int(numbers.size)

    def check_disjoint(self, used: npt.NDArray[np.uint32], sectors: npt.NDArray[np.uint32]) -> None:
        numbers = used.astype(np.int64)
        starts = sectors.astype(np.int64) * SECTOR_SIZE
        clash = first_overlap(starts, self.ends(numbers, starts))
        if clash is not None:
            j, k = clash
            second, first_block = int(numbers[j]), int(numbers[k])
            raise self.fail(second, f"block {second} (BAT entry {second}, byte {int(starts[j])}) overlaps block "
                            f"{first_block} (BAT entry {first_block}, byte {int(starts[k])})")


# ---------------------------------------------------------------------------------------------------
# Disks


def _as_bytes_view(view: memoryview) -> memoryview:
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


class VhdDisk(VirtualDisk):
    """What every VHD shares: the footer it was opened with and the file."""

    format = "vhd"

    def __init__(self, image: ByteSource, choice: FooterChoice) -> None:
        super().__init__()
        self.image = image
        self.path = image.path
        self.footer = choice.footer
        self.footer_source = choice.source
        self.disk_type = choice.footer.disk_type_name
        self.virtual_size = choice.footer.current_size
        self.warnings.extend(choice.warnings)
        footer = choice.footer
        if footer.file_format_version != FILE_FORMAT_VERSION:
            self.warnings.append(f"footer file format version is 0x{footer.file_format_version:08x}, not 1.0")
        if footer.saved_state:
            self.warnings.append("the footer's saved-state flag is set (the disk was in a saved state)")
        if footer.current_size % SECTOR_SIZE:
            self.warnings.append(f"current size {footer.current_size} is not a multiple of 512 bytes")

    @property
    def unique_id(self) -> bytes:
        """The footer's unique id, which differencing children record as their parent's."""
        return self.footer.unique_id

    @property
    def source_id(self) -> uuid.UUID:
        return uuid.UUID(bytes=self.footer.unique_id)

    def details(self) -> dict[str, Any]:
        return {"footer": self.footer.to_json(), "footer_source": self.footer_source, "dynamic_header": None}

    def close(self) -> None:
        self.image.close()


class FixedVhd(VhdDisk):
    """A fixed VHD: the disk is the first ``current_size`` bytes of the file (spec: "Fixed Hard Disk")."""

    def __init__(self, image: ByteSource, choice: FooterChoice) -> None:
        super().__init__(image, choice)
        size = self.virtual_size
        if size > choice.data_end:
            raise ImageError(image.path, "VHD fixed disk data", choice.data_end,
                             f"the footer says the disk holds {size} bytes but the file has only "
                             f"{choice.data_end} bytes before the footer (truncated?)")
        if size < choice.data_end:
            self.warnings.append(f"{choice.data_end - size} bytes between the disk data and the footer "
                                 "are ignored")
        self._extents: list[Extent] | None = None

    def extents(self) -> list[Extent]:
        if self._extents is None:
            self._extents = file_extents(self.image, self.virtual_size, self.virtual_size)
        return self._extents

    def readinto(self, offset: int, view: memoryview) -> None:
        view = _as_bytes_view(view)
        self.check_range(offset, len(view))
        self.image.preadinto(offset, view, "VHD fixed disk data")

    def placements(self, offset: int, length: int) -> list[Placement]:
        self.check_range(offset, length)
        return [stored_placement(offset, length, self.image, offset)] if length else []


class SparseVhd(VhdDisk):
    """A dynamic or differencing VHD: blocks found through the BAT, sectors through the block bitmaps.

    A clear bitmap bit means "not here": zeros on a dynamic disk (as Hyper-V reads it), the parent's
    bytes on a differencing disk (spec: "Block Format", "Differencing Hard Disk").
    """

    def __init__(self, image: ByteSource, choice: FooterChoice, header: VhdDynamicHeader,
                 bat: VhdBlockTable, parent: VirtualDisk | None = None,
                 parent_path: str | None = None) -> None:
        super().__init__(image, choice)
        self.header = header
        self.block_size = header.block_size
        self._block_size = header.block_size
        self._bat = bat
        self._bitmap_size = header.bitmap_size
        self._parent = parent
        self.parent_path = parent_path
        self._absent = Source.PARENT if parent is not None else Source.ZERO
        self._state = np.zeros(len(bat), dtype=np.uint8)  # per allocated entry, as ``bat.used``
        self._bits: OrderedDict[int, npt.NDArray[np.uint8]] = OrderedDict()
        self._lock = threading.Lock()
        self._extents: list[Extent] | None = None
        self.warnings.extend(header.warnings)
        if parent is not None:
            self.warnings.extend(f"parent {parent_path}: {w}" for w in parent.warnings)

    @property
    def parent(self) -> VirtualDisk | None:
        return self._parent

    def parent_info(self) -> dict[str, Any] | None:
        if self._parent is None:
            return None
        pid = self._parent.unique_id if isinstance(self._parent, VhdDisk) else None
        return {"path": self.parent_path, "id": str(uuid.UUID(bytes=pid)) if pid else None,
                "format": self._parent.format, "parent": self._parent.parent_info()}

    def details(self) -> dict[str, Any]:
        result = super().details()
        result["dynamic_header"] = self.header.to_json(self.footer.disk_type == DISK_TYPE_DIFFERENCING)
        result["allocated_blocks"] = len(self._bat)
        return result

    # -- sector bitmaps -----------------------------------------------------------------------------

    def _block_sectors(self, index: int) -> int:
        return -(-min(self._block_size, self.virtual_size - index * self._block_size) // SECTOR_SIZE)

    def _read_bitmap(self, index: int, slot: int) -> bytes:
        return self.image.pread(int(self._bat.sectors[slot]) * SECTOR_SIZE, self._bitmap_size,
                                f"VHD sector bitmap of block {index}")

    def _block_state(self, index: int, slot: int) -> int:
        """FULL, EMPTY or PARTIAL for allocated block ``index`` (entry ``slot``), learnt once from its bitmap."""
        state = int(self._state[slot])
        if state != _BlockState.UNKNOWN:
            return state
        bitmap = self._read_bitmap(index, slot)
        sectors = self._block_sectors(index)
        whole, rest = divmod(sectors, 8)
        mask = (0xFF00 >> rest) & 0xFF  # the first ``rest`` bits; bit 7 is the first sector
        head, tail = bitmap[:whole], (bitmap[whole] & mask if rest else 0)
        if head.count(0xFF) == whole and tail == mask:
            state = _BlockState.FULL
        elif head.count(0) == whole and tail == 0:
            state = _BlockState.EMPTY
        else:
            state = _BlockState.PARTIAL
            self._remember_bits(index, self._unpack(bitmap, sectors))
        self._state[slot] = state
        return state

    @staticmethod
    def _unpack(bitmap: bytes, sectors: int) -> npt.NDArray[np.uint8]:
        # Most significant bit first: bit 7 of byte 0 is the block's first sector (spec: "Block Format").
        return np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8), count=sectors)

    def _remember_bits(self, index: int, bits: npt.NDArray[np.uint8]) -> None:
        with self._lock:
            self._bits[index] = bits
            self._bits.move_to_end(index)
            while len(self._bits) > _BITS_CACHE_BLOCKS:
                self._bits.popitem(last=False)

    def _block_bits(self, index: int, slot: int) -> npt.NDArray[np.uint8]:
        with self._lock:
            bits = self._bits.get(index)
            if bits is not None:
                self._bits.move_to_end(index)
                return bits
        bits = self._unpack(self._read_bitmap(index, slot), self._block_sectors(index))
        self._remember_bits(index, bits)
        return bits

    # -- extents ------------------------------------------------------------------------------------

    def _data_holes(self) -> list[tuple[int, int]]:
        """Disk ranges inside allocated blocks whose data is a hole in the (sparse) image file."""
        data_offsets = self._bat.sectors.astype(np.int64) * SECTOR_SIZE + self._bitmap_size
        return holes_in_blocks(self.image.holes(), self._bat.used.astype(np.int64), data_offsets,
                               self._block_size)

    def _set_ranges(self) -> list[tuple[int, int]]:
        """Merged disk ranges of the sectors whose bitmap bits are set (whole blocks, up to a block past the disk)."""
        ranges: list[tuple[int, int]] = []
        block_size = self._block_size
        for slot, index in enumerate(self._bat.used.tolist()):
            start = index * block_size
            state = self._block_state(index, slot)
            if state == _BlockState.FULL:
                ranges.append((start, start + block_size))
            elif state == _BlockState.PARTIAL:
                bits = self._block_bits(index, slot)
                edges = np.flatnonzero(np.diff(bits, prepend=np.uint8(0), append=np.uint8(0)))
                for a, b in zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True):
                    ranges.append((start + a * SECTOR_SIZE, start + b * SECTOR_SIZE))
        return merge_ranges(ranges)

    def extents(self) -> list[Extent]:
        if self._extents is not None:
            return self._extents
        ranges = subtract_ranges(self._set_ranges(), self._data_holes())
        if self._parent is not None:
            ranges.extend(allocated_ranges(self._parent.extents()))
        self._extents = extents_from_ranges(ranges, self.virtual_size)
        return self._extents

    def owned_ranges(self) -> list[tuple[int, int]]:
        """The ranges this file decides itself (set bitmap bits), zeros included: a patch upload's unit."""
        return merge_ranges((a, min(self.virtual_size, b)) for a, b in self._set_ranges())

    # -- reads --------------------------------------------------------------------------------------

    def _plan(self, start: int, end: int) -> list[Segment]:
        """The segments of ``[start, end)``: a block at a time, through the bitmap for partial blocks."""
        block_size = self._block_size
        used, sectors = self._bat.used, self._bat.sectors
        slot = int(np.searchsorted(used, start // block_size))  # the next allocated entry at or after
        plan = ReadPlan()
        position = start
        while position < end:
            index = position // block_size
            block_start = index * block_size
            stop = min(end, block_start + block_size)
            if slot < len(used) and int(used[slot]) == index:
                state = self._block_state(index, slot)
                data = int(sectors[slot]) * SECTOR_SIZE + self._bitmap_size - block_start  # + disk offset
                if state == _BlockState.FULL:
                    plan.add(Source.FILE, position, stop, data + position)
                elif state == _BlockState.EMPTY:
                    plan.add(self._absent, position, stop)
                else:
                    self._plan_partial(plan, index, slot, position, stop, data)
                slot += 1
            else:
                plan.add(self._absent, position, stop)
            position = stop
        return plan.segments

    def _plan_partial(self, plan: ReadPlan, index: int, slot: int, position: int, stop: int, data: int) -> None:
        """Runs of set bits (``data + disk offset`` in the file) and clear bits (absent) of ``[position, stop)``."""
        block_start = index * self._block_size
        first = (position - block_start) // SECTOR_SIZE
        last = -(-(stop - block_start) // SECTOR_SIZE)
        bits = self._block_bits(index, slot)[first:last]
        cuts = (np.flatnonzero(bits[1:] != bits[:-1]) + 1).tolist()
        for a, b in zip([0, *cuts], [*cuts, len(bits)], strict=True):
            lo = max(position, block_start + (first + a) * SECTOR_SIZE)
            hi = min(stop, block_start + (first + b) * SECTOR_SIZE)
            if bits[a]:
                plan.add(Source.FILE, lo, hi, data + lo)
            else:
                plan.add(self._absent, lo, hi)

    def readinto(self, offset: int, view: memoryview) -> None:
        view = _as_bytes_view(view)
        self.check_range(offset, len(view))
        read_segments(self._plan(offset, offset + len(view)), offset, view, self.image, self._parent,
                      "VHD data block")

    def placements(self, offset: int, length: int) -> list[Placement]:
        self.check_range(offset, length)
        return segment_placements(self._plan(offset, offset + length), self.image, self._parent)

    def close(self) -> None:
        try:
            if self._parent is not None:
                self._parent.close()
        finally:
            super().close()


# ---------------------------------------------------------------------------------------------------
# Opening


def _locators(header: VhdDynamicHeader) -> list[Locator]:
    """The header's locators (relative ones first is resolve_parent's job), then the parent's name."""
    result = [Locator(loc.kind, loc.path, loc.relative) for loc in header.locators if loc.path]
    name = header.parent_name
    if name:
        # The unicode name is usually a bare file name; with a folder or drive it is an absolute path.
        absolute = "\\" in name or "/" in name or ":" in name
        result.append(Locator("parent name", name, not absolute))
    return result


def _open_parent(image: ByteSource, footer: VhdFooter, header: VhdDynamicHeader,
                 options: OpenOptions) -> tuple[VirtualDisk, str]:
    """Resolve, open and verify a differencing disk's parent (its unique id and size must match)."""
    guarded = dataclasses.replace(options, seen=options.seen | {image.identity})
    opened, used = resolve_parent(image.path, _locators(header), guarded)
    if not isinstance(opened, VirtualDisk):
        raise TypeError("the parent opener must return a VirtualDisk")
    parent = opened
    try:
        expected = str(uuid.UUID(bytes=header.parent_unique_id))
        if not isinstance(parent, VhdDisk):
            raise ParentError(f"{image.path}: parent {used} is a {parent.format} image; the parent of a "
                              f"VHD differencing disk must be a VHD (expected id {expected})")
        found = str(uuid.UUID(bytes=parent.unique_id))
        if parent.unique_id != header.parent_unique_id:
            raise ParentError(f"{image.path}: parent {used} has id {found}, but the differencing disk "
                              f"expects parent id {expected}; pass --parent with the right file")
        if parent.virtual_size != footer.current_size:
            raise ParentError(f"{image.path}: parent {used} is {parent.virtual_size} bytes, but the "
                              f"differencing disk is {footer.current_size} bytes")
    except BaseException:
        parent.close()
        raise
    return parent, used


def open_vhd(image: ByteSource, options: OpenOptions) -> VirtualDisk:
    """Open a VHD of any type from ``image`` (which the returned disk then owns)."""
    choice = read_footer(image)
    footer = choice.footer
    if footer.disk_type == DISK_TYPE_FIXED:
        return FixedVhd(image, choice)
    if footer.disk_type not in (DISK_TYPE_DYNAMIC, DISK_TYPE_DIFFERENCING):
        offset = 0 if choice.source != "end" else choice.data_end
        raise ImageError(image.path, "VHD footer", offset,
                         f"disk type {footer.disk_type} is not fixed (2), dynamic (3) or differencing (4)")
    header = read_dynamic_header(image, footer, choice.data_end)
    bat = read_block_table(image, footer, header, choice.data_end)
    if footer.disk_type == DISK_TYPE_DYNAMIC:
        return SparseVhd(image, choice, header, bat)
    parent, used = _open_parent(image, footer, header, options)
    try:
        return SparseVhd(image, choice, header, bat, parent, used)
    except BaseException:
        parent.close()
        raise
