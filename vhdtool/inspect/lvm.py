"""LVM2 physical volumes on a disk: their text metadata and the logical volumes they hold.

Reads the PV label and the newest metadata text of each PV (LVM2 ``lib/format_text``), parses the
metadata's config syntax, and maps each visible logical volume whose segments are linear (``striped``
with one stripe) onto the disk. A logical volume becomes a :class:`LogicalVolumeDisk`, a
:class:`~vhdtool.disk.base.VirtualDisk` the filesystem probe and readers work on like any other.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import Any

from construct import ConstructError

from vhdtool.disk.base import VirtualDisk
from vhdtool.extents import Extent
from vhdtool.inspect.lvm_layout import (
    INITIAL_CRC,
    LABEL_ID,
    LABEL_SCAN_SECTORS,
    LABEL_TYPE,
    MDA_HEADER_SIZE,
    MDA_MAGIC,
    DiskLocn,
    LabelHeader,
    MdaHeaderStart,
    PvHeaderStart,
    RawLocn,
)

SECTOR = 512
MAX_METADATA = 4 << 20  # LVM keeps metadata text well under this
MAX_LOCNS = 16
MAX_SEGMENTS = 4096


def lvm_crc(data: bytes, initial: int = INITIAL_CRC) -> int:
    """LVM2's ``calc_crc``: CRC-32 (reflected 0xEDB88320) with its own start value and no final XOR."""
    return zlib.crc32(data, initial ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


@dataclass(frozen=True)
class PhysicalVolume:
    """One PV found on the disk: where it starts, its id, and its newest metadata text."""

    offset: int  # byte offset of the PV (its partition) on the disk
    length: int
    uuid: str  # 32 characters, no dashes
    metadata: str | None
    problems: tuple[str, ...]


@dataclass(frozen=True)
class LogicalVolume:
    """A logical volume mapped onto the disk by linear segments ``(lv_offset, length, disk_offset)``."""

    vg: str
    name: str
    size: int
    segments: tuple[tuple[int, int, int], ...]


def read_pv(disk: VirtualDisk, offset: int, length: int) -> PhysicalVolume | None:
    """The PV at ``offset`` (a partition), or ``None`` if no LVM2 label is there."""
    head = disk.read(offset, min(length, LABEL_SCAN_SECTORS * SECTOR))
    for sector in range(LABEL_SCAN_SECTORS):
        raw = head[sector * SECTOR : (sector + 1) * SECTOR]
        if len(raw) == SECTOR and raw[:8] == LABEL_ID and raw[24:32] == LABEL_TYPE:
            return _parse_pv(disk, offset, length, sector, raw)
    return None


def _parse_pv(disk: VirtualDisk, offset: int, length: int, sector: int, raw: bytes) -> PhysicalVolume:
    problems: list[str] = []
    label = LabelHeader.parse(raw)
    if lvm_crc(raw[20:]) != label.crc_xl:
        problems.append(f"LVM2 label at byte {offset + sector * SECTOR}: CRC mismatch")
    at = label.offset_xl
    if not 32 <= at <= SECTOR - 40 - 16:
        return PhysicalVolume(offset, length, "", None, (*problems, "pv_header offset out of range"))
    pv = PvHeaderStart.parse(raw[at:])
    at += 40
    lists: list[list[tuple[int, int]]] = [[], []]  # data areas, then metadata areas
    for area in lists:
        while at + 16 <= SECTOR and len(area) < MAX_LOCNS:
            locn = DiskLocn.parse(raw[at : at + 16])
            at += 16
            if locn.offset == 0 and locn.size == 0:
                break
            area.append((locn.offset, locn.size))
    metadata = None
    for mda_offset, mda_size in lists[1]:
        text, why = _read_mda(disk, offset, length, mda_offset, mda_size)
        if why:
            problems.append(why)
        if text is not None:
            metadata = text
            break
    uuid = pv.pv_uuid.decode("ascii", "replace")
    return PhysicalVolume(offset, length, uuid, metadata, tuple(problems))


def _read_mda(
    disk: VirtualDisk, pv_offset: int, pv_length: int, mda_offset: int, mda_size: int
) -> tuple[str | None, str | None]:
    """The newest metadata text of one metadata area (a circular buffer after a 512-byte header)."""
    where = f"LVM2 metadata area at byte {pv_offset + mda_offset}"
    if mda_size < MDA_HEADER_SIZE or mda_offset + mda_size > pv_length:
        return None, f"{where}: outside the physical volume"
    header = disk.read(pv_offset + mda_offset, MDA_HEADER_SIZE)
    try:
        start = MdaHeaderStart.parse(header)
    except ConstructError:
        return None, f"{where}: unreadable header"
    if start.magic != MDA_MAGIC:
        return None, f"{where}: bad magic"
    if lvm_crc(header[4:]) != start.checksum_xl:
        return None, f"{where}: header checksum mismatch"
    locn = RawLocn.parse(header[40:64])
    if locn.size == 0 or locn.size > MAX_METADATA or locn.offset >= mda_size or locn.offset < MDA_HEADER_SIZE:
        return None, f"{where}: no usable metadata location"
    first = min(locn.size, mda_size - locn.offset)
    text = disk.read(pv_offset + mda_offset + locn.offset, first)
    if first < locn.size:  # wrapped round the circular buffer, continuing after the header
        text += disk.read(pv_offset + mda_offset + MDA_HEADER_SIZE, locn.size - first)
    if lvm_crc(text) != locn.checksum:
        return None, f"{where}: metadata text checksum mismatch"
    return text.rstrip(b"\0").decode("utf-8", "replace"), None


_TOKEN = re.compile(r'\s*(?:#[^\n]*\n?|("(?:[^"\\]|\\.)*")|([{}\[\]=,])|([^\s{}\[\]=,"#]+))')


def parse_config(text: str) -> dict[str, Any]:
    """LVM2's config syntax: ``name { ... }`` sections, ``key = value``, strings, numbers and lists."""
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            break
        pos = match.end()
        token = match.group(1) or match.group(2) or match.group(3)
        if token:
            tokens.append(token)
    index = 0

    def value() -> Any:
        nonlocal index
        token = tokens[index]
        index += 1
        if token == "[":
            items = []
            while index < len(tokens) and tokens[index] != "]":
                if tokens[index] == ",":
                    index += 1
                    continue
                items.append(value())
            index += 1
            return items
        if token.startswith('"'):
            return token[1:-1].replace('\\"', '"')
        try:
            return int(token)
        except ValueError:
            return token

    def section(depth: int) -> dict[str, Any]:
        nonlocal index
        result: dict[str, Any] = {}
        while index < len(tokens):
            name = tokens[index]
            if name == "}":
                index += 1
                return result
            if index + 1 >= len(tokens):
                break
            if tokens[index + 1] == "{" and depth < 16:
                index += 2
                result[name] = section(depth + 1)
            elif tokens[index + 1] == "=" and index + 2 < len(tokens):
                index += 2
                result[name] = value()
            else:
                index += 1
        return result

    return section(0)


def logical_volumes(pvs: list[PhysicalVolume]) -> tuple[list[LogicalVolume], list[str]]:
    """The visible, linearly mapped LVs of the volume groups whose PVs are all on this disk."""
    by_uuid = {pv.uuid: pv for pv in pvs}
    found: list[LogicalVolume] = []
    problems: list[str] = []
    seen: set[str] = set()
    for pv in pvs:
        if pv.metadata is None:
            continue
        config = parse_config(pv.metadata)
        for vg_name, vg in config.items():
            if not isinstance(vg, dict) or "physical_volumes" not in vg or vg_name in seen:
                continue
            seen.add(vg_name)
            extent = int(vg.get("extent_size", 0)) * SECTOR
            pv_map: dict[str, tuple[int, int]] = {}  # pv name -> (disk offset of its first extent, pe_count)
            for pv_name, entry in vg["physical_volumes"].items():
                if not isinstance(entry, dict):
                    continue
                member = by_uuid.get(str(entry.get("id", "")).replace("-", ""))
                if member is not None:
                    pv_map[pv_name] = (
                        member.offset + int(entry.get("pe_start", 0)) * SECTOR,
                        int(entry.get("pe_count", 0)),
                    )
            for lv_name, lv in (vg.get("logical_volumes") or {}).items():
                if not isinstance(lv, dict) or "VISIBLE" not in lv.get("status", []):
                    continue
                mapped = _map_lv(vg_name, lv_name, lv, extent, pv_map, problems)
                if mapped is not None:
                    found.append(mapped)
    return found, problems


def _map_lv(
    vg: str,
    name: str,
    lv: dict[str, Any],
    extent: int,
    pv_map: dict[str, tuple[int, int]],
    problems: list[str],
) -> LogicalVolume | None:
    segments: list[tuple[int, int, int]] = []
    for key, seg in lv.items():
        if not key.startswith("segment") or not isinstance(seg, dict):
            continue
        stripes = seg.get("stripes", [])
        if seg.get("type") != "striped" or seg.get("stripe_count") != 1 or len(stripes) != 2:
            problems.append(f"LV {vg}/{name}: segment type {seg.get('type')!r} is not read (linear only)")
            return None
        pv_name, first_pe = stripes[0], int(stripes[1])
        count = int(seg.get("extent_count", 0))
        if pv_name not in pv_map or first_pe + count > pv_map[pv_name][1]:
            problems.append(f"LV {vg}/{name}: its physical volume {pv_name} is not on this disk")
            return None
        segments.append(
            (int(seg.get("start_extent", 0)) * extent, count * extent, pv_map[pv_name][0] + first_pe * extent)
        )
        if len(segments) > MAX_SEGMENTS:
            return None
    segments.sort()
    position = 0
    for lv_offset, length, _ in segments:
        if lv_offset != position:
            problems.append(f"LV {vg}/{name}: segments leave a gap")
            return None
        position += length
    if not segments:
        return None
    return LogicalVolume(vg, name, position, tuple(segments))


class LogicalVolumeDisk(VirtualDisk):
    """A logical volume seen as a disk of its own, read through its segments from the parent disk."""

    format = "lvm"
    disk_type = "fixed"

    def __init__(self, parent: VirtualDisk, lv: LogicalVolume) -> None:
        super().__init__()
        self.parent_disk = parent
        self.lv = lv
        self.path = f"{parent.path}:{lv.vg}/{lv.name}"
        self.virtual_size = lv.size

    def extents(self) -> list[Extent]:
        return [Extent(0, self.virtual_size, True)]

    def readinto(self, offset: int, view: memoryview) -> None:
        self.check_range(offset, len(view))
        done = 0
        for lv_offset, length, disk_offset in self.lv.segments:
            if done >= len(view):
                break
            position = offset + done
            if not lv_offset <= position < lv_offset + length:
                continue
            n = min(len(view) - done, lv_offset + length - position)
            self.parent_disk.readinto(disk_offset + position - lv_offset, view[done : done + n])
            done += n

    def details(self) -> dict[str, Any]:
        return {"vg": self.lv.vg, "lv": self.lv.name}
