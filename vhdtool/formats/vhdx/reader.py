"""Hyper-V VHDX images ([MS-VHDX]): fixed, dynamic and differencing, with in-memory log replay.

Opening reads the two headers (2.2.2), replays a dirty log into an overlay (2.3.3, never
written back), then reads the region table (2.2.3), the metadata items (2.6) and the BAT (2.5)
through that overlay, so everything after the headers sees the replayed state. The BAT is kept
as numpy arrays of its non-empty entries only: an empty 64 TiB disk costs a scan at C speed
and no per-entry Python work.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np
from construct import Construct, ConstructError

from vhdtool.disk.base import ByteSource, Placement, VirtualDisk
from vhdtool.errors import ImageError, ParentError, UnsupportedImageError
from vhdtool.extents import Extent, allocated_ranges, extents_from_ranges, merge_ranges, subtract_ranges
from vhdtool.formats.blocks import (
    IntArray,
    ReadPlan,
    Segment,
    Source,
    consecutive_runs,
    first_inside,
    first_overlap,
    first_past,
    holes_in_blocks,
    read_segments,
    segment_placements,
)
from vhdtool.formats.parent import Locator, OpenOptions, resolve_parent
from vhdtool.formats.vhdx.crc import crc32c
from vhdtool.formats.vhdx.layout import (
    BAT_ENTRY_SIZE,
    BAT_REGION_GUID,
    FILE_PARAMETERS_GUID,
    FILE_SIGNATURE,
    HEADER1_OFFSET,
    HEADER2_OFFSET,
    HEADER_AREA_SIZE,
    HEADER_CHECKSUM_OFFSET,
    HEADER_SIGNATURE,
    HEADER_SIZE,
    LOGICAL_SECTOR_SIZE_GUID,
    MAX_TABLE_ENTRIES,
    METADATA_REGION_GUID,
    METADATA_SIGNATURE,
    METADATA_TABLE_SIZE,
    PAGE83_DATA_GUID,
    PARENT_LOCATOR_GUID,
    PHYSICAL_SECTOR_SIZE_GUID,
    REGION_CHECKSUM_OFFSET,
    REGION_SIGNATURE,
    REGION_TABLE1_OFFSET,
    REGION_TABLE2_OFFSET,
    REGION_TABLE_SIZE,
    VHDX_PARENT_LOCATOR_TYPE,
    VIRTUAL_DISK_SIZE_GUID,
    FileParameters,
    Header,
    MetadataTableEntry,
    MetadataTableHeader,
    ParentLocatorEntry,
    ParentLocatorHeader,
    RegionTableEntry,
    RegionTableHeader,
)
from vhdtool.formats.vhdx.log import LogSequence, ReplayedFile, find_active_sequence
from vhdtool.units import SECTOR_SIZE, MiB, TiB


class PayloadState(IntEnum):
    """2.5.1.1 Payload BAT entry states."""

    NOT_PRESENT = 0
    UNDEFINED = 1
    ZERO = 2
    UNMAPPED = 3
    FULLY_PRESENT = 6
    PARTIALLY_PRESENT = 7


class BitmapState(IntEnum):
    """2.5.1.2 Sector bitmap BAT entry states."""

    NOT_PRESENT = 0
    PRESENT = 6


# 2.6.2.1 / 2.6.2.2 / 2.6.2.4 limits.
MIN_BLOCK_SIZE = 1 * MiB
MAX_BLOCK_SIZE = 256 * MiB
MAX_VIRTUAL_SIZE = 64 * TiB
SECTOR_SIZES = (SECTOR_SIZE, 4096)
SECTOR_BITMAP_BLOCK_SIZE = 1 * MiB
MAX_METADATA_ITEM_SIZE = 1 * MiB
SECTORS_PER_BITMAP_BLOCK = 1 << 23  # 2.5: one bit per sector, 1 MiB of bits
_BAT_READ_CHUNK = 2 * MiB

_KNOWN_REGIONS = {BAT_REGION_GUID: "BAT", METADATA_REGION_GUID: "metadata"}
_KNOWN_ITEMS = {FILE_PARAMETERS_GUID: "file parameters", VIRTUAL_DISK_SIZE_GUID: "virtual disk size",
                PAGE83_DATA_GUID: "page 83 data", LOGICAL_SECTOR_SIZE_GUID: "logical sector size",
                PHYSICAL_SECTOR_SIZE_GUID: "physical sector size", PARENT_LOCATOR_GUID: "parent locator"}
NULL_GUID = uuid.UUID(int=0)


@dataclass(frozen=True)
class VhdxHeader:
    """The current header (2.2.2); ``index`` is 1 or 2, the copy it was read from."""

    index: int
    sequence_number: int
    file_write_guid: uuid.UUID
    data_write_guid: uuid.UUID
    log_guid: uuid.UUID
    log_version: int
    version: int
    log_length: int
    log_offset: int


@dataclass(frozen=True)
class Region:
    """A region table entry (2.2.3.2)."""

    guid: uuid.UUID
    file_offset: int
    length: int
    required: bool


@dataclass(frozen=True)
class VhdxMetadata:
    """The system metadata items (2.6.2) this reader uses."""

    block_size: int
    leave_blocks_allocated: bool
    has_parent: bool
    virtual_size: int
    page83: uuid.UUID
    logical_sector_size: int
    physical_sector_size: int
    parent_locator: dict[str, str] | None


@dataclass(frozen=True)
class BatMap:
    """The BAT (2.5) in a compact form, sorted by payload block number.

    ``present_*`` list the FULLY_PRESENT and PARTIALLY_PRESENT blocks with their file offsets;
    ``run_*`` hold half-open block runs in the UNDEFINED, ZERO or UNMAPPED state (qemu marks a
    whole new disk ZERO, so these come as a few long runs); every other block is NOT_PRESENT.
    ``bitmaps`` maps a chunk number to the file offset of its present sector bitmap block.
    """

    chunk_ratio: int
    entry_count: int
    present_blocks: IntArray
    present_states: IntArray
    present_offsets: IntArray
    run_starts: IntArray
    run_ends: IntArray
    run_states: IntArray
    bitmaps: dict[int, int]

    def lookup(self, block: int) -> tuple[int, int]:
        """``(state, file_offset)`` of payload block ``block``."""
        i = int(np.searchsorted(self.present_blocks, block))
        if i < len(self.present_blocks) and int(self.present_blocks[i]) == block:
            return int(self.present_states[i]), int(self.present_offsets[i])
        j = int(np.searchsorted(self.run_starts, block, side="right")) - 1
        if j >= 0 and block < int(self.run_ends[j]):
            return int(self.run_states[j]), 0
        return PayloadState.NOT_PRESENT, 0

    def block_ranges(self, state: PayloadState, block_size: int) -> list[tuple[int, int]]:
        """Merged byte ranges of the blocks in ``state`` (not NOT_PRESENT)."""
        if state in (PayloadState.FULLY_PRESENT, PayloadState.PARTIALLY_PRESENT):
            starts, ends, _ = consecutive_runs(self.present_blocks[self.present_states == state])
            return [(s * block_size, e * block_size) for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]
        pick = self.run_states == state
        return merge_ranges((int(a) * block_size, int(b) * block_size)
                            for a, b in zip(self.run_starts[pick], self.run_ends[pick], strict=True))

    def blocks_in(self, state: PayloadState) -> IntArray:
        """Sorted numbers of the present blocks in ``state`` (FULLY or PARTIALLY_PRESENT)."""
        result: IntArray = self.present_blocks[self.present_states == state]
        return result


def _guid(raw: bytes) -> uuid.UUID:
    return uuid.UUID(bytes_le=raw)


def _parse(layout: Construct, data: bytes, path: str, structure: str, offset: int) -> Any:
    """Parse ``data`` with ``layout``; construct errors become :class:`ImageError` at ``offset``."""
    try:
        return layout.parse(data)
    except ConstructError as err:
        raise ImageError(path, structure, offset, f"cannot be parsed: {err}") from err


def _checksum_ok(block: bytes, checksum_offset: int, stored: int) -> bool:
    """CRC-32C over ``block`` with its checksum field zeroed (2.2.2, 2.2.3)."""
    zeroed = block[:checksum_offset] + b"\0\0\0\0" + block[checksum_offset + 4:]
    return crc32c(zeroed) == stored


# ---------------------------------------------------------------------------------------------
# Headers (2.2.2)


def _read_header_copy(image: ByteSource, index: int) -> tuple[VhdxHeader | None, str]:
    offset = HEADER1_OFFSET if index == 1 else HEADER2_OFFSET
    if image.size < offset + HEADER_SIZE:
        return None, "beyond the end of the file"
    raw = image.pread(offset, HEADER_SIZE, f"VHDX header {index}")
    hdr = _parse(Header, raw, image.path, f"VHDX header {index}", offset)
    if hdr.signature != HEADER_SIGNATURE:
        return None, f"bad signature {hdr.signature!r}"
    if not _checksum_ok(raw, HEADER_CHECKSUM_OFFSET, hdr.checksum):
        return None, "CRC-32C mismatch"
    return VhdxHeader(index=index, sequence_number=hdr.sequence_number,
                      file_write_guid=_guid(hdr.file_write_guid), data_write_guid=_guid(hdr.data_write_guid),
                      log_guid=_guid(hdr.log_guid), log_version=hdr.log_version, version=hdr.version,
                      log_length=hdr.log_length, log_offset=hdr.log_offset), ""


def read_current_header(image: ByteSource, warnings: list[str]) -> VhdxHeader:
    """The current header: the valid copy with the higher SequenceNumber (2.2.2)."""
    first, why1 = _read_header_copy(image, 1)
    second, why2 = _read_header_copy(image, 2)
    if first is None and second is None:
        raise ImageError(image.path, "VHDX header 1", HEADER1_OFFSET,
                         f"{why1}; header 2 at byte {HEADER2_OFFSET}: {why2}; no valid header")
    if first is None:
        warnings.append(f"VHDX header 1 is invalid ({why1}); using header 2")
    if second is None:
        warnings.append(f"VHDX header 2 is invalid ({why2}); using header 1")
    # Equal numbers happen with some tools (Disk2VHD writes two identical headers): take header 1.
    current = max((h for h in (first, second) if h is not None), key=lambda h: (h.sequence_number, -h.index))
    offset = HEADER1_OFFSET if current.index == 1 else HEADER2_OFFSET
    if current.version != 1:
        raise UnsupportedImageError(f"{image.path}: VHDX header {current.index} at byte {offset}: "
                                    f"version {current.version} is not supported (only 1)")
    return current


# ---------------------------------------------------------------------------------------------
# Region table (2.2.3)


def _read_region_table_copy(view: ReplayedFile, offset: int) -> tuple[list[Region] | None, str]:
    raw = view.pread(offset, REGION_TABLE_SIZE, "VHDX region table")
    hdr = _parse(RegionTableHeader, raw[:16], view.path, "VHDX region table", offset)
    if hdr.signature != REGION_SIGNATURE:
        return None, f"bad signature {hdr.signature!r}"
    if not _checksum_ok(raw, REGION_CHECKSUM_OFFSET, hdr.checksum):
        return None, "CRC-32C mismatch"
    if hdr.entry_count > MAX_TABLE_ENTRIES:
        return None, f"{hdr.entry_count} entries (at most {MAX_TABLE_ENTRIES})"
    regions = []
    for i in range(hdr.entry_count):
        start = 16 + i * 32
        entry = _parse(RegionTableEntry, raw[start:start + 32], view.path, "VHDX region table entry",
                       offset + start)
        regions.append(Region(_guid(entry.guid), entry.file_offset, entry.length, bool(entry.flags & 1)))
    return regions, ""


def read_regions(view: ReplayedFile, warnings: list[str]) -> dict[uuid.UUID, Region]:
    """The region table (2.2.3): the first valid copy, validated; unknown required regions refused."""
    regions, why1 = _read_region_table_copy(view, REGION_TABLE1_OFFSET)
    if regions is None:
        regions, why2 = _read_region_table_copy(view, REGION_TABLE2_OFFSET)
        if regions is None:
            raise ImageError(view.path, "VHDX region table", REGION_TABLE1_OFFSET,
                             f"{why1}; second copy at byte {REGION_TABLE2_OFFSET}: {why2}")
        warnings.append(f"VHDX region table 1 is invalid ({why1}); using the second copy")
    table_offset = REGION_TABLE1_OFFSET
    found: dict[uuid.UUID, Region] = {}
    for region in regions:
        name = _KNOWN_REGIONS.get(region.guid)
        if name is None:
            if region.required:
                raise UnsupportedImageError(
                    f"{view.path}: VHDX region table at byte {table_offset}: required region "
                    f"{region.guid} is unknown to vhdtool; the image cannot be read safely")
            continue
        if region.guid in found:
            raise ImageError(view.path, "VHDX region table", table_offset, f"{name} region listed twice")
        if (region.length == 0 or region.file_offset < HEADER_AREA_SIZE
                or region.file_offset + region.length > view.size):
            raise ImageError(view.path, f"VHDX {name} region", region.file_offset,
                             f"length {region.length} is not a range after the header area inside the file "
                             f"of {view.size} bytes")
        if region.file_offset % MiB or region.length % MiB:
            # 2.2.3.2 asks for 1 MiB multiples; the region is read where it is all the same (as
            # qemu-img and libvhdi do): only space outside the file or shared would misread.
            warnings.append(f"VHDX {name} region at byte {region.file_offset}, length {region.length}, "
                            "is not aligned to 1 MiB")
        found[region.guid] = region
    for guid, name in _KNOWN_REGIONS.items():
        if guid not in found:
            raise ImageError(view.path, "VHDX region table", table_offset, f"no {name} region")
    ordered = sorted(found.values(), key=lambda r: r.file_offset)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if a.file_offset + a.length > b.file_offset:
            raise ImageError(view.path, "VHDX region table", table_offset,
                             f"{_KNOWN_REGIONS[a.guid]} and {_KNOWN_REGIONS[b.guid]} regions overlap")
    return found


# ---------------------------------------------------------------------------------------------
# Metadata (2.6)


def _item_u32(raw: bytes) -> int:
    return int.from_bytes(raw[:4], "little")


def _parse_parent_locator(raw: bytes, path: str, offset: int) -> dict[str, str]:
    structure = "VHDX parent locator"
    if len(raw) < 20:
        raise ImageError(path, structure, offset, f"only {len(raw)} bytes")
    hdr = _parse(ParentLocatorHeader, raw[:20], path, structure, offset)
    if _guid(hdr.locator_type) != VHDX_PARENT_LOCATOR_TYPE:
        raise UnsupportedImageError(f"{path}: {structure} at byte {offset}: locator type "
                                    f"{_guid(hdr.locator_type)} is not the VHDX parent locator")
    if 20 + hdr.key_value_count * 12 > len(raw):
        raise ImageError(path, structure, offset, f"{hdr.key_value_count} entries do not fit in the item")
    result: dict[str, str] = {}
    for i in range(hdr.key_value_count):
        start = 20 + i * 12
        entry = _parse(ParentLocatorEntry, raw[start:start + 12], path, structure, offset + start)
        for o, n in ((entry.key_offset, entry.key_length), (entry.value_offset, entry.value_length)):
            if o + n > len(raw) or n % 2:
                raise ImageError(path, structure, offset + start,
                                 f"entry {i} points outside the item ({o}+{n} > {len(raw)})")
        try:
            key = raw[entry.key_offset:entry.key_offset + entry.key_length].decode("utf-16-le")
            value = raw[entry.value_offset:entry.value_offset + entry.value_length].decode("utf-16-le")
        except UnicodeDecodeError as err:
            raise ImageError(path, structure, offset + start, f"entry {i} is not UTF-16LE") from err
        result[key] = value
    return result


@dataclass(frozen=True)
class _MetadataItems:
    """The known system items of the metadata table (2.6.1): their bytes and file offsets, by item id."""

    path: str
    table_offset: int
    items: dict[uuid.UUID, tuple[bytes, int]]

    def need(self, item_id: uuid.UUID, size: int) -> tuple[bytes, int]:
        """The bytes and file offset of a required item of at least ``size`` bytes."""
        name = _KNOWN_ITEMS[item_id]
        if item_id not in self.items:
            raise ImageError(self.path, "VHDX metadata table", self.table_offset, f"no {name} item")
        data, at = self.items[item_id]
        if len(data) < size:
            raise ImageError(self.path, f"VHDX metadata item {name}", at, f"{len(data)} bytes, needs {size}")
        return data, at


def read_metadata(view: ReplayedFile, region: Region, warnings: list[str]) -> VhdxMetadata:
    """The metadata table and its system items (2.6), validated; unknown required items refused."""
    items = _read_metadata_items(view, region)
    path = view.path
    data, at = items.need(FILE_PARAMETERS_GUID, 8)
    params = _parse(FileParameters, data[:8], path, "VHDX file parameters", at)
    block_size = params.block_size
    if not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE or block_size & (block_size - 1):
        raise ImageError(path, "VHDX file parameters", at,
                         f"block size {block_size} is not a power of two from 1 MiB to 256 MiB")
    has_parent = bool(params.flags & 2)
    logical, physical = _sector_sizes(items, warnings)
    data, at = items.need(VIRTUAL_DISK_SIZE_GUID, 8)
    virtual_size = int.from_bytes(data[:8], "little")
    if not 0 < virtual_size <= MAX_VIRTUAL_SIZE or virtual_size % logical:
        raise ImageError(path, "VHDX virtual disk size", at,
                         f"{virtual_size} is not a multiple of the {logical}-byte sector up to 64 TiB")
    data, at = items.need(PAGE83_DATA_GUID, 16)
    page83 = _guid(data[:16])
    locator: dict[str, str] | None = None
    if has_parent:
        data, at = items.need(PARENT_LOCATOR_GUID, 20)
        locator = _parse_parent_locator(data, path, at)
        if "parent_linkage" not in locator:
            raise ImageError(path, "VHDX parent locator", at, "no parent_linkage entry")
    return VhdxMetadata(block_size=block_size, leave_blocks_allocated=bool(params.flags & 1),
                        has_parent=has_parent, virtual_size=virtual_size, page83=page83,
                        logical_sector_size=logical, physical_sector_size=physical, parent_locator=locator)


def _read_metadata_items(view: ReplayedFile, region: Region) -> _MetadataItems:
    """Read the metadata table and the known system items it lists, each checked to lie in the region."""
    path = view.path
    base = region.file_offset
    if region.length < METADATA_TABLE_SIZE:
        raise ImageError(path, "VHDX metadata region", base, "smaller than its 64 KiB table")
    raw = view.pread(base, METADATA_TABLE_SIZE, "VHDX metadata table")
    hdr = _parse(MetadataTableHeader, raw[:32], path, "VHDX metadata table", base)
    if hdr.signature != METADATA_SIGNATURE:
        raise ImageError(path, "VHDX metadata table", base, f"bad signature {hdr.signature!r}")
    if hdr.entry_count > MAX_TABLE_ENTRIES:
        raise ImageError(path, "VHDX metadata table", base, f"{hdr.entry_count} entries (at most 2047)")
    items: dict[uuid.UUID, tuple[bytes, int]] = {}
    for i in range(hdr.entry_count):
        start = 32 + i * 32
        entry = _parse(MetadataTableEntry, raw[start:start + 32], path, "VHDX metadata table entry",
                       base + start)
        item_id = _guid(entry.item_id)
        name = _wanted_item(path, entry, item_id, base + start)
        if name is None:
            continue
        if entry.length > MAX_METADATA_ITEM_SIZE:  # 2.6.1.2: "Length MUST be less than or equal to 1 MB"
            raise ImageError(path, f"VHDX metadata item {name}", base + start,
                             f"length {entry.length} is more than the 1 MiB an item may have")
        if entry.offset < METADATA_TABLE_SIZE or entry.offset + entry.length > region.length:
            raise ImageError(path, f"VHDX metadata item {name}", base + start,
                             f"offset {entry.offset} length {entry.length} is outside the metadata region")
        if item_id in items:
            raise ImageError(path, f"VHDX metadata item {name}", base + start, "listed twice")
        items[item_id] = (view.pread(base + entry.offset, entry.length, f"VHDX metadata item {name}"),
                          base + entry.offset)
    return _MetadataItems(path, base, items)


def _wanted_item(path: str, entry: Any, item_id: uuid.UUID, entry_offset: int) -> str | None:
    """The name of a system item this reader reads; ``None`` for user items, unknown optional ones
    and empty ones; an unknown required item is refused."""
    if entry.flags & 1:  # IsUser: user metadata is never needed to read the disk
        return None
    name = _KNOWN_ITEMS.get(item_id)
    if name is None:
        if entry.flags & 4:  # IsRequired
            raise UnsupportedImageError(f"{path}: VHDX metadata table entry at byte {entry_offset}: "
                                        f"required item {item_id} is unknown to vhdtool")
        return None
    if entry.length == 0 and entry.offset == 0:
        return None  # 2.6.1.2: a zero-length item is present but empty
    return name


def _sector_sizes(items: _MetadataItems, warnings: list[str]) -> tuple[int, int]:
    """``(logical, physical)`` sector sizes (2.6.2.4, 2.6.2.5); only the logical one shapes reads."""
    data, at = items.need(LOGICAL_SECTOR_SIZE_GUID, 4)
    logical = _item_u32(data)
    if logical not in SECTOR_SIZES:
        raise ImageError(items.path, "VHDX logical sector size", at, f"{logical} is neither 512 nor 4096")
    data, at = items.need(PHYSICAL_SECTOR_SIZE_GUID, 4)
    physical = _item_u32(data)
    if physical not in SECTOR_SIZES:
        # A hint to the guest (2.6.2.5) that no read depends on: qemu-img reads such a disk too.
        warnings.append(f"VHDX physical sector size at byte {at} is {physical}, neither 512 nor 4096; "
                        "it does not change how the disk reads")
    return logical, physical


# ---------------------------------------------------------------------------------------------
# BAT (2.5)


@dataclass(frozen=True)
class BatGeometry:
    """How the BAT of a disk is shaped (2.5): a sector bitmap entry after every ``chunk_ratio`` payload ones."""

    chunk_ratio: int
    payload_blocks: int
    entries: int

    @property
    def group(self) -> int:
        """Entries per chunk: its payload entries and its sector bitmap entry."""
        return self.chunk_ratio + 1


def bat_geometry(meta: VhdxMetadata) -> BatGeometry:
    """The BAT geometry of the disk (2.5)."""
    chunk_ratio = (SECTORS_PER_BITMAP_BLOCK * meta.logical_sector_size) // meta.block_size
    payload_blocks = -(-meta.virtual_size // meta.block_size)
    bitmap_blocks = -(-payload_blocks // chunk_ratio)
    if meta.has_parent:
        entries = bitmap_blocks * (chunk_ratio + 1)
    else:
        entries = payload_blocks + (payload_blocks - 1) // chunk_ratio
    return BatGeometry(chunk_ratio, payload_blocks, entries)


def read_bat(view: ReplayedFile, region: Region, meta: VhdxMetadata,
             reserved: list[tuple[int, int, str]], warnings: list[str]) -> BatMap:
    """Read and validate the BAT, a bounded chunk at a time, keeping it compact (:class:`BatMap`).

    Validation: known states only; present blocks inside the file, outside the header area,
    log, BAT and metadata (``reserved``), and not overlapping one another. Errors name the BAT
    index and the byte offset of its entry.
    """
    geometry = bat_geometry(meta)
    if geometry.entries * BAT_ENTRY_SIZE > region.length:
        raise ImageError(view.path, "VHDX BAT region", region.file_offset,
                         f"{region.length} bytes cannot hold the {geometry.entries} entries a "
                         f"{meta.virtual_size}-byte disk needs")
    scan = _BatScan(_EntryErrors(view.path, region), geometry, meta, warnings)
    for first_row, table in _bat_chunks(view, region, geometry):
        scan.add_payload(first_row, table[:, :geometry.chunk_ratio])
        scan.add_bitmaps(first_row, table[:, geometry.chunk_ratio])
    bat = scan.build()
    _check_stored_blocks(bat, geometry, meta, view.size, reserved, scan.fail)
    return bat


@dataclass(frozen=True)
class _EntryErrors:
    """Errors about one BAT entry, named by its index and the byte offset of the entry."""

    path: str
    region: Region

    def __call__(self, bat_index: int, problem: str) -> ImageError:
        return ImageError(self.path, f"VHDX BAT entry {bat_index}",
                          self.region.file_offset + bat_index * BAT_ENTRY_SIZE, problem)


U64Array = np.ndarray[Any, np.dtype[np.uint64]]


def _bat_chunks(view: ReplayedFile, region: Region, geometry: BatGeometry) -> Iterator[tuple[int, U64Array]]:
    """``(first row, table)`` for each read of whole chunks that holds a non-zero entry.

    Each table is 2-D: one row per chunk, payload entries in the first columns, the sector bitmap
    entry in the last; entries past the table's end read as NOT_PRESENT. The table lives in one
    buffer reused by every read (a 64 TiB disk of 1 MiB blocks has a 512 MiB BAT, mostly zeros,
    and copying each chunk or testing it byte by byte would cost more than reading it), so it is
    valid until the next one is asked for.
    """
    group, entries = geometry.group, geometry.entries
    rows_per_read = max(1, _BAT_READ_CHUNK // BAT_ENTRY_SIZE // group)
    total_rows = -(-entries // group)
    buffer = bytearray(rows_per_read * group * BAT_ENTRY_SIZE)
    for first_row in range(0, total_rows, rows_per_read):
        rows = min(rows_per_read, total_rows - first_row)
        first = first_row * group
        count = min(rows * group, entries - first)
        view.preadinto(region.file_offset + first * BAT_ENTRY_SIZE,
                       memoryview(buffer)[:count * BAT_ENTRY_SIZE], "VHDX BAT")
        words = np.frombuffer(buffer, dtype="<u8", count=rows * group)
        if not words[:count].any():
            continue  # all NOT_PRESENT: skipped at C speed
        if count < rows * group:
            words[count:] = 0
        yield first_row, words.reshape(rows, group)


def _state(values: U64Array) -> IntArray:
    result: IntArray = (values & np.uint64(7)).astype(np.int64)
    return result


def _file_offset(values: U64Array) -> IntArray:
    """FileOffsetMB of BAT entries, in bytes (2.5.1: bits 20-63)."""
    result: IntArray = ((values >> np.uint64(20)) << np.uint64(20)).astype(np.int64)
    return result


def _concat(parts: list[IntArray]) -> IntArray:
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


_RUN_STATES = (PayloadState.UNDEFINED, PayloadState.ZERO, PayloadState.UNMAPPED)
_STATES_WITHOUT_PARENT = np.array([PayloadState.NOT_PRESENT, *_RUN_STATES, PayloadState.FULLY_PRESENT], np.int64)
_STATES_WITH_PARENT = np.array([*_STATES_WITHOUT_PARENT, PayloadState.PARTIALLY_PRESENT], np.int64)
_BITMAP_STATES = np.array([BitmapState.NOT_PRESENT, BitmapState.PRESENT], np.int64)


class _BatScan:
    """The BAT's non-empty entries gathered a read at a time, each checked for a known state."""

    def __init__(self, fail: _EntryErrors, geometry: BatGeometry, meta: VhdxMetadata,
                 warnings: list[str]) -> None:
        self.fail = fail
        self.geometry = geometry
        self.has_parent = meta.has_parent
        self.allowed = _STATES_WITH_PARENT if meta.has_parent else _STATES_WITHOUT_PARENT
        self.warnings = warnings
        self.present: list[tuple[IntArray, IntArray, IntArray]] = []  # block, state, offset
        self.runs: list[tuple[IntArray, IntArray, IntArray]] = []  # start, end, state
        self.bitmaps: list[tuple[IntArray, IntArray]] = []  # index, offset

    def add_payload(self, first_row: int, payload: U64Array) -> None:
        chunk_ratio, payload_blocks = self.geometry.chunk_ratio, self.geometry.payload_blocks
        rows = payload.shape[0]
        first_block = first_row * chunk_ratio
        value0 = payload[0, 0]
        state0 = int(value0 & np.uint64(7))
        uniform = bool((payload == value0).all())
        if uniform and state0 in _RUN_STATES:
            # A uniform stretch (qemu marks every block of a new disk ZERO): one run, no per-entry work.
            last_block = min(first_block + rows * chunk_ratio, payload_blocks)
            self.runs.append((np.array([first_block], np.int64), np.array([last_block], np.int64),
                              np.array([state0], np.int64)))
            return
        if uniform and state0 == PayloadState.NOT_PRESENT:
            return
        values = payload.ravel()
        blocks = np.arange(first_block, first_block + rows * chunk_ratio, dtype=np.int64)
        states = _state(values)
        in_disk = blocks < payload_blocks  # padding and a differencing disk's spare entries
        bad = np.flatnonzero(~np.isin(states, self.allowed) & in_disk)
        if bad.size:
            block = int(blocks[bad[0]])
            suffix = "" if self.has_parent else " for a disk without parent"
            raise self.fail(block + block // chunk_ratio,
                            f"payload block {block} has invalid state {int(states[bad[0]])}{suffix}")
        present = (states >= PayloadState.FULLY_PRESENT) & in_disk
        if present.any():
            picked = blocks[present]
            self.present.append((picked, states[present], _file_offset(values[present])))
        other = (states != PayloadState.NOT_PRESENT) & ~present & in_disk
        if other.any():
            starts, ends, firsts = consecutive_runs(blocks[other], states[other])
            self.runs.append((starts, ends, states[other][firsts]))

    def add_bitmaps(self, first_row: int, values: U64Array) -> None:
        if not values.any():
            return
        group = self.geometry.group
        indexes = (np.arange(first_row, first_row + values.shape[0], dtype=np.int64) + 1) * group - 1
        states = _state(values)
        if not self.has_parent:
            if np.any(states == BitmapState.PRESENT) and not any("sector bitmap" in w for w in self.warnings):
                self.warnings.append("sector bitmap blocks are allocated in a disk without parent; ignored")
            return
        bad = np.flatnonzero(~np.isin(states, _BITMAP_STATES))
        if bad.size:
            i = int(bad[0])
            raise self.fail(int(indexes[i]), f"sector bitmap entry has invalid state {int(states[i])}")
        keep = states == BitmapState.PRESENT
        self.bitmaps.append((indexes[keep], _file_offset(values[keep])))

    def build(self) -> BatMap:
        group = self.geometry.group
        bitmaps = {int(i) // group: int(o) for i, o in zip(_concat([b[0] for b in self.bitmaps]),
                                                           _concat([b[1] for b in self.bitmaps]), strict=True)}
        return BatMap(chunk_ratio=self.geometry.chunk_ratio, entry_count=self.geometry.entries,
                      present_blocks=_concat([p[0] for p in self.present]),
                      present_states=_concat([p[1] for p in self.present]),
                      present_offsets=_concat([p[2] for p in self.present]),
                      run_starts=_concat([r[0] for r in self.runs]), run_ends=_concat([r[1] for r in self.runs]),
                      run_states=_concat([r[2] for r in self.runs]), bitmaps=bitmaps)


def _check_stored_blocks(bat: BatMap, geometry: BatGeometry, meta: VhdxMetadata, file_size: int,
                         reserved: list[tuple[int, int, str]], fail: _EntryErrors) -> None:
    """Every present block must hold, inside the file and clear of everything else, the bytes a
    read takes from it: a whole block, but the last one only up to the virtual size (qemu writes
    a fixed disk of an unaligned size exactly that long), and a sector bitmap block 1 MiB, the
    last chunk's only the bits of the blocks it has."""
    chunk_ratio, group = geometry.chunk_ratio, geometry.group
    payload_end = bat.present_offsets + np.minimum(meta.block_size,
                                                   meta.virtual_size - bat.present_blocks * meta.block_size)
    chunks = np.array(sorted(bat.bitmaps), np.int64)
    bitmap_start = np.array([bat.bitmaps[c] for c in chunks.tolist()], np.int64)
    sectors_per_block = meta.block_size // meta.logical_sector_size
    chunk_blocks = np.minimum(chunk_ratio, geometry.payload_blocks - chunks * chunk_ratio)
    bitmap_end = bitmap_start + np.minimum(SECTOR_BITMAP_BLOCK_SIZE, chunk_blocks * sectors_per_block // 8)
    index = np.concatenate([bat.present_blocks + bat.present_blocks // chunk_ratio, (chunks + 1) * group - 1])
    start = np.concatenate([bat.present_offsets, bitmap_start])
    end = np.concatenate([payload_end, bitmap_end])
    at_zero = np.flatnonzero(start == 0)
    if at_zero.size:
        raise fail(int(index[at_zero[0]]), "block is present but its file offset is 0")
    past = first_past(end, file_size)
    if past is not None:
        raise fail(int(index[past]), f"block at file offset {int(start[past])} needs the bytes up to "
                   f"{int(end[past])}, past the end of the file ({file_size} bytes)")
    for lo, hi, what in reserved:
        inside = first_inside(start, end, lo, hi)
        if inside is not None:
            raise fail(int(index[inside]), f"block at file offset {int(start[inside])} overlaps the {what}")
    clash = first_overlap(start, end)
    if clash is not None:
        later, earlier = clash
        raise fail(int(index[later]), f"block at file offset {int(start[later])} overlaps the block of "
                   f"BAT entry {int(index[earlier])}")
    for block in bat.blocks_in(PayloadState.PARTIALLY_PRESENT).tolist():
        if block // chunk_ratio not in bat.bitmaps:
            raise fail(block + block // chunk_ratio, f"payload block {block} is partially present but its "
                       "chunk has no sector bitmap block")


# ---------------------------------------------------------------------------------------------
# The disk


class VhdxDisk(VirtualDisk):
    """A VHDX image (after in-memory log replay), with its parent chain when differencing."""

    format = "vhdx"

    def __init__(self, image: ByteSource, view: ReplayedFile, header: VhdxHeader, meta: VhdxMetadata,
                 bat: BatMap, log_dirty: bool, warnings: list[str]) -> None:
        super().__init__()
        self.warnings.extend(warnings)
        self.image = image
        self.view = view
        self.path = image.path
        self.header = header
        self.meta = meta
        self.bat = bat
        self.log_dirty = log_dirty
        self.virtual_size = meta.virtual_size
        self.logical_sector_size = meta.logical_sector_size
        self.physical_sector_size = meta.physical_sector_size
        if meta.has_parent:
            self.disk_type = "differencing"
        elif meta.leave_blocks_allocated:
            self.disk_type = "fixed"
        else:
            self.disk_type = "dynamic"
        # ``info`` reports a block size for dynamic and differencing disks only; a fixed VHDX has
        # one too (its BAT still maps blocks), shown in the ``vhdx`` details.
        self.block_size = None if self.disk_type == "fixed" else meta.block_size
        self._parent: VirtualDisk | None = None
        self._parent_path: str | None = None
        self._parent_linkage: uuid.UUID | None = None
        self._lock = threading.Lock()
        self._bitmap_runs: dict[int, list[tuple[int, int, bool]]] = {}
        self._extents: list[Extent] | None = None

    @property
    def data_write_guid(self) -> uuid.UUID:
        """DataWriteGuid of the current header: what a child's parent_linkage must name (2.2.2)."""
        return self.header.data_write_guid

    @property
    def source_id(self) -> uuid.UUID:
        return self.header.data_write_guid

    @property
    def parent(self) -> VirtualDisk | None:
        return self._parent

    @property
    def log_state(self) -> str:
        return "dirty" if self.log_dirty else "clean"

    def attach_parent(self, parent: VirtualDisk, path: str, linkage: uuid.UUID) -> None:
        """Set the opened and verified parent disk (its warnings become this disk's, as for VHD)."""
        self._parent = parent
        self._parent_path = path
        self._parent_linkage = linkage
        self.warnings.extend(f"parent {path}: {w}" for w in parent.warnings)

    # --- sector bitmaps (2.5) ---

    def _sector_runs(self, block: int) -> list[tuple[int, int, bool]]:
        """``(start, end, present)`` byte runs inside a PARTIALLY_PRESENT block, from its bitmap."""
        runs = self._bitmap_runs.get(block)
        if runs is not None:
            return runs
        lss = self.meta.logical_sector_size
        sectors = self.meta.block_size // lss
        chunk = block // self.bat.chunk_ratio
        first_bit = (block % self.bat.chunk_ratio) * sectors
        raw = self.view.pread(self.bat.bitmaps[chunk] + first_bit // 8, sectors // 8, "VHDX sector bitmap")
        bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")  # 2.5: bit 0 first
        changes = np.flatnonzero(np.diff(bits)) + 1
        bounds = [0, *(int(c) for c in changes), sectors]
        runs = [(bounds[i] * lss, bounds[i + 1] * lss, bool(bits[bounds[i]])) for i in range(len(bounds) - 1)]
        with self._lock:
            self._bitmap_runs[block] = runs
        return runs

    # --- VirtualDisk ---

    def extents(self) -> list[Extent]:
        with self._lock:
            if self._extents is not None:
                return self._extents
        bs = self.meta.block_size
        ranges = subtract_ranges(self.bat.block_ranges(PayloadState.FULLY_PRESENT, bs), self._payload_holes())
        if self.meta.has_parent:
            child = merge_ranges(ranges + self._present_sector_ranges())
            zero = self.bat.block_ranges(PayloadState.ZERO, bs)
            parent_ranges = [] if self._parent is None else allocated_ranges(self._parent.extents())
            ranges = child + subtract_ranges(parent_ranges, zero)
        result = extents_from_ranges(ranges, self.virtual_size)
        with self._lock:
            self._extents = result
        return result

    def owned_ranges(self) -> list[tuple[int, int]]:
        """The ranges this file decides itself: present blocks and sectors, and ZERO blocks of a
        differencing disk (zeros over the parent's bytes); a patch upload's unit."""
        bs = self.meta.block_size
        ranges = list(self.bat.block_ranges(PayloadState.FULLY_PRESENT, bs))
        if self.meta.has_parent:
            ranges += self._present_sector_ranges()
            ranges += self.bat.block_ranges(PayloadState.ZERO, bs)
        return merge_ranges((a, min(b, self.virtual_size)) for a, b in ranges)

    def _present_sector_ranges(self) -> list[tuple[int, int]]:
        """Disk ranges of the present sectors of PARTIALLY_PRESENT blocks, from their bitmaps."""
        bs = self.meta.block_size
        ranges: list[tuple[int, int]] = []
        for block in self.bat.blocks_in(PayloadState.PARTIALLY_PRESENT).tolist():
            base = block * bs
            ranges.extend((base + s, base + e) for s, e, present in self._sector_runs(block) if present)
        return ranges

    def _payload_holes(self) -> list[tuple[int, int]]:
        """Disk ranges of FULLY_PRESENT blocks that are holes in the (sparse) image file.

        Skipped when the log replay overlays writes, which may land in such holes.
        """
        if self.view.replayed:
            return []
        full = self.bat.present_states == PayloadState.FULLY_PRESENT
        return holes_in_blocks(self.image.holes(), self.bat.present_blocks[full],
                               self.bat.present_offsets[full], self.meta.block_size)

    def _plan(self, offset: int, end: int) -> list[Segment]:
        """The segments of ``[offset, end)``, a block at a time, through the bitmap for partial blocks."""
        bs = self.meta.block_size
        # Unwritten blocks of a differencing disk show the parent's bytes; of any other disk, zeros.
        absent = Source.PARENT if self.meta.has_parent else Source.ZERO
        plan = ReadPlan()
        position = offset
        while position < end:
            block, within = divmod(position, bs)
            n = min(bs - within, end - position)
            state, file_offset = self.bat.lookup(block)
            if state == PayloadState.FULLY_PRESENT:
                plan.add(Source.FILE, position, position + n, file_offset + within)
            elif state == PayloadState.PARTIALLY_PRESENT:
                for start, stop, present in self._sector_runs(block):
                    lo, hi = max(start, within), min(stop, within + n)
                    plan.add(Source.FILE if present else Source.PARENT, position + lo - within,
                             position + hi - within, file_offset + lo)
            elif state == PayloadState.ZERO:
                plan.add(Source.ZERO, position, position + n)
            else:  # NOT_PRESENT, UNDEFINED, UNMAPPED
                plan.add(absent, position, position + n)
            position += n
        return plan.segments

    def readinto(self, offset: int, view: memoryview) -> None:
        self.check_range(offset, len(view))
        read_segments(self._plan(offset, offset + len(view)), offset, view, self.view, self._parent,
                      "VHDX payload block")

    def placements(self, offset: int, length: int) -> list[Placement]:
        self.check_range(offset, length)
        # A replayed log overlays writes on the file: then the file's bytes are not the disk's.
        stored = None if self.view.replayed else self.image
        return segment_placements(self._plan(offset, offset + length), stored, self._parent)

    def details(self) -> dict[str, Any]:
        h = self.header
        return {"vhdx": {
            "header_sequence_number": h.sequence_number,
            "active_header": h.index,
            "file_write_guid": str(h.file_write_guid),
            "data_write_guid": str(h.data_write_guid),
            "log_guid": str(h.log_guid),
            "log_length": h.log_length,
            "block_size": self.meta.block_size,
            "leave_blocks_allocated": self.meta.leave_blocks_allocated,
            "has_parent": self.meta.has_parent,
            "page83": str(self.meta.page83),
            "chunk_ratio": self.bat.chunk_ratio,
            "bat_entries": self.bat.entry_count,
            "parent_locator": None if self.meta.parent_locator is None else dict(self.meta.parent_locator),
        }}

    def parent_info(self) -> dict[str, Any] | None:
        if self._parent is None:
            return None
        return {"path": self._parent_path, "id": str(self._parent_linkage), "format": self._parent.format,
                "parent": self._parent.parent_info()}

    def close(self) -> None:
        if self._parent is not None:
            self._parent.close()
        self.image.close()


# ---------------------------------------------------------------------------------------------
# Opening


def _parent_locators(locator: dict[str, str]) -> list[Locator]:
    """The path entries of a VHDX parent locator, in the order 2.6.2.6.2 tries them."""
    result = []
    for key, relative in (("relative_path", True), ("volume_path", False), ("absolute_win32_path", False)):
        value = locator.get(key)
        if value:
            result.append(Locator(key, value, relative))
    return result


def _open_parent(disk: VhdxDisk, image: ByteSource, options: OpenOptions) -> None:
    locator = disk.meta.parent_locator or {}
    linkages = []
    for key in ("parent_linkage", "parent_linkage2"):
        if locator.get(key):
            try:
                linkages.append(uuid.UUID(locator[key]))
            except ValueError as err:
                raise ImageError(image.path, "VHDX parent locator", None,
                                 f"{key} {locator[key]!r} is not a GUID") from err
    options = dataclasses.replace(options, seen=options.seen | {image.identity})
    opened, parent_path = resolve_parent(image.path, _parent_locators(locator), options)
    if not isinstance(opened, VirtualDisk):
        raise ParentError(f"{image.path}: parent {parent_path} could not be opened as a disk")
    parent: VirtualDisk = opened
    try:
        if not isinstance(parent, VhdxDisk):
            raise ParentError(f"{image.path}: parent {parent_path} is a {parent.format} image; a VHDX "
                              "differencing disk needs a VHDX parent ([MS-VHDX] 2.6.2.6)")
        if parent.data_write_guid not in linkages:
            raise ParentError(f"{image.path}: parent {parent_path} has DataWriteGuid "
                              f"{parent.data_write_guid}, "
                              f"but the child expects {' or '.join(str(g) for g in linkages)} "
                              "(the parent changed after the child was made, or it is the wrong file)")
        if parent.virtual_size != disk.virtual_size:
            raise ParentError(f"{image.path}: parent {parent_path} is {parent.virtual_size} bytes, the child "
                              f"{disk.virtual_size}")
        # Only the logical sector size shapes the block map (2.6.2.4); the physical one is a hint
        # that Hyper-V lets differ along a chain (New-VHD -Differencing -PhysicalSectorSizeBytes).
        if parent.logical_sector_size != disk.logical_sector_size:
            raise ParentError(f"{image.path}: parent {parent_path} has {parent.logical_sector_size}-byte "
                              f"logical sectors, the child {disk.logical_sector_size}-byte ones")
    except BaseException:
        parent.close()
        raise
    disk.attach_parent(parent, parent_path, parent.data_write_guid)


def open_vhdx(image: ByteSource, options: OpenOptions) -> VirtualDisk:
    """Open a VHDX image read-only: headers, log replay in memory, regions, metadata, BAT, parent."""
    signature = image.pread(0, 8, "VHDX file identifier")
    if signature != FILE_SIGNATURE:
        raise ImageError(image.path, "VHDX file identifier", 0, f"bad signature {signature!r}")
    warnings: list[str] = []
    header = read_current_header(image, warnings)
    reserved: list[tuple[int, int, str]] = [(0, HEADER_AREA_SIZE, "header area")]
    log_length = _checked_log_length(image, header, warnings)
    if log_length:
        reserved.append((header.log_offset, header.log_offset + log_length, "log"))
    sequence = _active_log(image, header, warnings)
    view = ReplayedFile(image, sequence)
    regions = read_regions(view, warnings)
    for region in regions.values():
        if log_length and (region.file_offset < header.log_offset + log_length
                           and header.log_offset < region.file_offset + region.length):
            raise ImageError(image.path, f"VHDX {_KNOWN_REGIONS[region.guid]} region", region.file_offset,
                             "overlaps the log")
        reserved.append((region.file_offset, region.file_offset + region.length,
                         f"{_KNOWN_REGIONS[region.guid]} region"))
    meta = read_metadata(view, regions[METADATA_REGION_GUID], warnings)
    bat = read_bat(view, regions[BAT_REGION_GUID], meta, reserved, warnings)
    disk = VhdxDisk(image, view, header, meta, bat, sequence is not None, warnings)
    if meta.has_parent:
        _open_parent(disk, image, options)
    return disk


def _checked_log_length(image: ByteSource, header: VhdxHeader, warnings: list[str]) -> int:
    """The log's length for the layout checks (0 when there is none, or a clean one lies outside the file)."""
    if not (header.log_length or header.log_guid != NULL_GUID):
        return header.log_length
    header_offset = HEADER1_OFFSET if header.index == 1 else HEADER2_OFFSET
    log_length = header.log_length
    # 2.2.2: LogOffset and LogLength are 1 MiB multiples, the log lies after the header area.
    if (header.log_offset % MiB or header.log_length % MiB or header.log_offset < HEADER_AREA_SIZE
            or header.log_offset + header.log_length > image.size):
        problem = (f"log at {header.log_offset} length {header.log_length} is not a 1 MiB aligned "
                   f"range inside the file of {image.size} bytes")
        if header.log_guid != NULL_GUID:
            raise ImageError(image.path, f"VHDX header {header.index}", header_offset, problem)
        # A clean log (LogGuid zero) is never read, so its range cannot make a read wrong.
        warnings.append(f"VHDX header {header.index}: {problem}; the log is clean, so it is ignored")
        log_length = 0
    if header.log_version != 0:
        raise UnsupportedImageError(f"{image.path}: VHDX header {header.index} at byte {header_offset}: "
                                    f"log version {header.log_version} is not supported (only 0)")
    return log_length


def _active_log(image: ByteSource, header: VhdxHeader, warnings: list[str]) -> LogSequence | None:
    """The log sequence to replay (2.3.3), or ``None`` when the header names no log or it holds none."""
    if header.log_guid == NULL_GUID:
        return None
    if header.log_length == 0:
        warnings.append("the header names a log (LogGuid set) but its length is 0; nothing to replay")
        return None
    sequence = find_active_sequence(image, header.log_offset, header.log_length, header.log_guid)
    if sequence is None:
        warnings.append("the header names a log (LogGuid set) but the log holds no valid "
                        "entries; nothing replayed")
        return None
    flushed = max(e.flushed_file_offset for e in sequence.entries)
    if image.size < flushed:
        raise ImageError(image.path, "VHDX log", header.log_offset,
                         f"the log says the file was at least {flushed} bytes, but it is "
                         f"{image.size} bytes: truncated")
    return sequence
