"""MBR and GPT partition tables, read with our own parsers and checked (CRCs, backup header).

A disk with no table (a filesystem starting at byte 0) gives scheme ``"none"`` and one
pseudo-partition covering the whole disk, so the filesystem probe runs there too.
"""

from __future__ import annotations

import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

from construct import ConstructError

from vhdtool.disk.base import VirtualDisk
from vhdtool.errors import ImageError
from vhdtool.inspect.partitions_layout import (
    GPT_ENTRY_MIN_SIZE,
    GPT_HEADER_MIN_SIZE,
    GPT_SIGNATURE,
    MBR_ACTIVE,
    MBR_EXTENDED_TYPES,
    MBR_SIGNATURE,
    MBR_TYPE_GPT_PROTECTIVE,
    GptEntry,
    GptHeader,
    Mbr,
)

# Type GUIDs (UEFI §5.3.3 Table 5-7, Microsoft and the Discoverable Partitions Specification).
ESP_GUID = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
BIOS_BOOT_GUID = "21686148-6449-6e6f-744e-656564454649"
MS_BASIC_DATA_GUID = "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"
MS_RESERVED_GUID = "e3c9e316-0b5c-4db8-817d-f92df00215ae"
WINDOWS_RECOVERY_GUID = "de94bba4-06d1-4d40-a16a-bfd50179d6ac"
LINUX_FS_GUID = "0fc63daf-8483-4772-8e79-3d69d8477de4"
LINUX_SWAP_GUID = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f"
LINUX_LVM_GUID = "e6d6d379-f507-44c2-a23c-238f2a3df928"

GPT_TYPE_NAMES = {
    ESP_GUID: "EFI System",
    BIOS_BOOT_GUID: "BIOS boot",
    MS_BASIC_DATA_GUID: "Microsoft basic data",
    MS_RESERVED_GUID: "Microsoft reserved",
    WINDOWS_RECOVERY_GUID: "Windows recovery",
    "5808c8aa-7e8f-42e0-85d2-e1e90434cfb3": "Windows LDM metadata",
    "af9b60a0-1431-4f62-bc68-3311714a69ad": "Windows LDM data",
    LINUX_FS_GUID: "Linux filesystem",
    LINUX_SWAP_GUID: "Linux swap",
    LINUX_LVM_GUID: "Linux LVM",
    "4f68bce3-e8cd-4db1-96e7-fbcaf984b709": "Linux root (x86-64)",
    "b921b045-1df0-41c3-af44-4c6f280d3fae": "Linux root (ARM64)",
    "bc13c2ff-59e6-4262-a352-b275fd6f7172": "Linux extended boot",
    "933ac7e1-2eb4-4f13-b844-0e14e2aef915": "Linux home",
    "a19d880f-05fc-4d3b-a006-743f0f84911e": "Linux RAID",
    "ca7d7ccb-63ed-4c53-861c-1742536059cc": "Linux LUKS",
}

MBR_TYPE_NAMES = {
    0x01: "FAT12",
    0x04: "FAT16 <32M",
    0x05: "Extended",
    0x06: "FAT16",
    0x07: "HPFS/NTFS/exFAT",
    0x0B: "W95 FAT32",
    0x0C: "W95 FAT32 (LBA)",
    0x0E: "W95 FAT16 (LBA)",
    0x0F: "W95 extended (LBA)",
    0x27: "Windows recovery",
    0x82: "Linux swap",
    0x83: "Linux",
    0x85: "Linux extended",
    0x8E: "Linux LVM",
    0xEE: "GPT protective",
    0xEF: "EFI System",
    0xFD: "Linux RAID",
}
MBR_ESP_TYPE = 0xEF
MBR_SWAP_TYPE = 0x82
MBR_LVM_TYPE = 0x8E

# An untrusted entry count times entry size is bounded before anything is allocated (UEFI requires
# at least 16 KiB; real tables use exactly that).
MAX_GPT_ENTRY_ARRAY = 1 << 20
MAX_LOGICAL_PARTITIONS = 128


@dataclass(frozen=True)
class Partition:
    """One partition: where it is in bytes and what its table says it is."""

    number: int  # 1-based, as Linux numbers them (MBR logical partitions from 5)
    offset: int
    length: int
    type_id: str  # "0x83" for MBR, a lower-case GUID for GPT, "" for the whole-disk pseudo-partition
    type_name: str
    bootable: bool = False  # MBR active flag
    name: str | None = None  # GPT partition name
    guid: str | None = None  # GPT unique partition GUID
    attributes: int = 0

    @property
    def is_esp(self) -> bool:
        return self.type_id in (ESP_GUID, f"0x{MBR_ESP_TYPE:02x}")

    @property
    def is_swap(self) -> bool:
        return self.type_id in (LINUX_SWAP_GUID, f"0x{MBR_SWAP_TYPE:02x}")

    @property
    def is_bios_boot(self) -> bool:
        return self.type_id == BIOS_BOOT_GUID

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "offset": self.offset,
            "length": self.length,
            "type": self.type_id,
            "type_name": self.type_name,
            "bootable": self.bootable,
            "name": self.name,
            "guid": self.guid,
        }


@dataclass(frozen=True)
class PartitionTable:
    """The disk's partition table: scheme, partitions in table order, and what was wrong with it."""

    scheme: str  # "gpt" | "mbr" | "none"
    partitions: tuple[Partition, ...]
    disk_guid: str | None = None
    hybrid_mbr: bool = False  # a GPT disk whose MBR also lists real partitions
    mbr_boot_code: bool = False  # the MBR holds boot code (not all zero)
    problems: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "disk_guid": self.disk_guid,
            "hybrid_mbr": self.hybrid_mbr,
            "mbr_boot_code": self.mbr_boot_code,
            "problems": list(self.problems),
            "partitions": [p.to_json() for p in self.partitions],
        }


def guid_str(raw: bytes) -> str:
    """A GPT GUID (mixed-endian, UEFI Appendix A) as its lower-case text form."""
    return str(uuid.UUID(bytes_le=raw))


def _read(disk: VirtualDisk, offset: int, length: int, structure: str) -> bytes:
    if offset < 0 or offset + length > disk.virtual_size:
        raise ImageError(
            disk.path, structure, offset, f"needs {length} bytes beyond the disk's end ({disk.virtual_size})"
        )
    return disk.read(offset, length)


def read_partition_table(disk: VirtualDisk) -> PartitionTable:
    """Parse the disk's partition table (GPT first when a protective MBR says so, else MBR)."""
    sector = disk.logical_sector_size
    if disk.virtual_size < 512:
        return PartitionTable("none", (), problems=("disk smaller than one sector",))
    mbr_raw = _read(disk, 0, 512, "MBR")
    if mbr_raw[510:512] != MBR_SIGNATURE:
        return _no_table(disk)
    mbr = Mbr.parse(mbr_raw)
    records = [r for r in mbr.partitions if r.os_type != 0 and r.size_in_lba != 0]
    boot_code = mbr.boot_code != bytes(440)
    protective = [r for r in records if r.os_type == MBR_TYPE_GPT_PROTECTIVE]
    if protective or _read(disk, sector, 8, "GPT header") == GPT_SIGNATURE:
        gpt = _read_gpt(disk, sector)
        if gpt is not None:
            hybrid = bool(protective) and len(records) > len(protective)
            return PartitionTable("gpt", gpt[0], gpt[1], hybrid, boot_code, gpt[2])
    if protective:
        return PartitionTable(
            "mbr", (), None, False, boot_code, ("protective MBR but no valid GPT header (primary or backup)",)
        )
    if not records:
        # A VBR (NTFS, FAT) also ends in 55 AA; an empty "table" on it means no table at all.
        return _no_table(disk)
    if all(r.boot_indicator not in (0, MBR_ACTIVE) for r in records) or _looks_like_vbr(mbr_raw):
        return _no_table(disk)
    return _read_mbr(disk, mbr.partitions, boot_code)


def _looks_like_vbr(raw: bytes) -> bool:
    """A filesystem boot sector at LBA 0 (partitionless disk) whose bytes happen to look like records."""
    return (
        raw[3:11] in (b"NTFS    ", b"-FVE-FS-", b"EXFAT   ")
        or raw[54:58] == b"FAT1"
        or raw[82:87] == b"FAT32"
    )


def _no_table(disk: VirtualDisk) -> PartitionTable:
    whole = Partition(0, 0, disk.virtual_size, "", "whole disk")
    return PartitionTable("none", (whole,))


def _read_mbr(disk: VirtualDisk, records: Any, boot_code: bool) -> PartitionTable:
    sector = disk.logical_sector_size
    parts: list[Partition] = []
    problems: list[str] = []
    for number, rec in enumerate(records, start=1):
        if rec.os_type == 0 or rec.size_in_lba == 0:
            continue
        offset, length = rec.starting_lba * sector, rec.size_in_lba * sector
        if offset + length > disk.virtual_size:
            problems.append(f"partition {number} ends at byte {offset + length}, past the disk's end")
        parts.append(
            Partition(
                number,
                offset,
                length,
                f"0x{rec.os_type:02x}",
                MBR_TYPE_NAMES.get(rec.os_type, "unknown"),
                bootable=rec.boot_indicator == MBR_ACTIVE,
            )
        )
        if rec.os_type in MBR_EXTENDED_TYPES:
            parts.extend(_read_logical(disk, rec.starting_lba, problems))
    return PartitionTable("mbr", tuple(parts), None, False, boot_code, tuple(problems))


def _read_logical(disk: VirtualDisk, extended_lba: int, problems: list[str]) -> list[Partition]:
    """Follow the EBR chain of an extended partition (bounded; a loop ends it)."""
    sector = disk.logical_sector_size
    parts: list[Partition] = []
    ebr_lba = extended_lba
    seen: set[int] = set()
    number = 5
    while ebr_lba not in seen and len(parts) < MAX_LOGICAL_PARTITIONS:
        seen.add(ebr_lba)
        if (ebr_lba + 1) * sector > disk.virtual_size:
            problems.append(f"extended boot record at LBA {ebr_lba} is past the disk's end")
            break
        raw = _read(disk, ebr_lba * sector, 512, "extended boot record")
        if raw[510:512] != MBR_SIGNATURE:
            problems.append(f"extended boot record at LBA {ebr_lba} has no 55AA signature")
            break
        first, link = Mbr.parse(raw).partitions[0], Mbr.parse(raw).partitions[1]
        if first.os_type and first.size_in_lba:
            offset = (ebr_lba + first.starting_lba) * sector
            parts.append(
                Partition(
                    number,
                    offset,
                    first.size_in_lba * sector,
                    f"0x{first.os_type:02x}",
                    MBR_TYPE_NAMES.get(first.os_type, "unknown"),
                    bootable=first.boot_indicator == MBR_ACTIVE,
                )
            )
            number += 1
        if link.os_type not in MBR_EXTENDED_TYPES or link.size_in_lba == 0:
            break
        ebr_lba = extended_lba + link.starting_lba
    return parts


@dataclass(frozen=True)
class _GptHeaderInfo:
    my_lba: int
    alternate_lba: int
    disk_guid: str
    entry_lba: int
    entry_count: int
    entry_size: int
    entries_crc32: int


def _parse_gpt_header(disk: VirtualDisk, lba: int, sector: int) -> tuple[_GptHeaderInfo | None, str | None]:
    """One GPT header at ``lba``, verified (UEFI §5.3.2 "Validating a GPT header"); or why not."""
    where = f"GPT header at LBA {lba} (byte {lba * sector})"
    if lba <= 0 or (lba + 1) * sector > disk.virtual_size:
        return None, f"{where} is outside the disk"
    raw = _read(disk, lba * sector, sector, "GPT header")
    try:
        hdr = GptHeader.parse(raw)
    except ConstructError:
        return None, f"{where}: no 'EFI PART' signature"
    if not GPT_HEADER_MIN_SIZE <= hdr.header_size <= sector:
        return None, f"{where}: header size {hdr.header_size} out of range"
    body = bytearray(raw[: hdr.header_size])
    body[16:20] = b"\0\0\0\0"
    if zlib.crc32(body) != hdr.header_crc32:
        return None, f"{where}: header CRC32 mismatch"
    if hdr.my_lba != lba:
        return None, f"{where}: MyLBA says {hdr.my_lba}"
    if hdr.size_of_partition_entry < GPT_ENTRY_MIN_SIZE or hdr.size_of_partition_entry % 8:
        return None, f"{where}: bad partition entry size {hdr.size_of_partition_entry}"
    array = hdr.number_of_partition_entries * hdr.size_of_partition_entry
    if array > MAX_GPT_ENTRY_ARRAY:
        return None, f"{where}: partition entry array of {array} bytes is implausibly large"
    if hdr.partition_entry_lba * sector + array > disk.virtual_size:
        return None, f"{where}: partition entry array runs past the disk's end"
    info = _GptHeaderInfo(
        hdr.my_lba,
        hdr.alternate_lba,
        guid_str(hdr.disk_guid),
        hdr.partition_entry_lba,
        hdr.number_of_partition_entries,
        hdr.size_of_partition_entry,
        hdr.partition_entry_array_crc32,
    )
    entries = _read(disk, info.entry_lba * sector, array, "GPT partition entry array")
    if zlib.crc32(entries) != info.entries_crc32:
        return None, f"{where}: partition entry array CRC32 mismatch"
    return info, None


def _read_gpt(disk: VirtualDisk, sector: int) -> tuple[tuple[Partition, ...], str, tuple[str, ...]] | None:
    """Partitions from the primary GPT, or from the backup if the primary is damaged."""
    problems: list[str] = []
    last_lba = disk.virtual_size // sector - 1
    primary, why = _parse_gpt_header(disk, 1, sector)
    if primary is None:
        problems.append(f"primary {why}")
        backup, why_backup = _parse_gpt_header(disk, last_lba, sector)
        if backup is None:
            return None
        problems.append("using the backup GPT header")
        header = backup
    else:
        header = primary
        if primary.alternate_lba != last_lba:
            problems.append(
                f"backup GPT header expected at the last LBA {last_lba} but the primary says "
                f"{primary.alternate_lba} (disk resized without moving it? `sgdisk -e` fixes it)"
            )
        backup, why_backup = _parse_gpt_header(disk, primary.alternate_lba, sector)
        if backup is None:
            problems.append(f"backup {why_backup}")
    raw = _read(
        disk, header.entry_lba * sector, header.entry_count * header.entry_size, "GPT partition entry array"
    )
    parts: list[Partition] = []
    for index in range(header.entry_count):
        chunk = raw[index * header.entry_size : index * header.entry_size + GPT_ENTRY_MIN_SIZE]
        if chunk[:16] == bytes(16):
            continue  # unused entry (UEFI §5.3.3)
        entry = GptEntry.parse(chunk)
        type_guid = guid_str(entry.partition_type_guid)
        offset = entry.starting_lba * sector
        length = (entry.ending_lba - entry.starting_lba + 1) * sector  # EndingLBA is inclusive
        if entry.ending_lba < entry.starting_lba or offset + length > disk.virtual_size:
            problems.append(
                f"partition {index + 1} spans LBAs {entry.starting_lba}-{entry.ending_lba}, outside the disk"
            )
            continue
        name = entry.partition_name.decode("utf-16-le", "replace").split("\0", 1)[0]
        parts.append(
            Partition(
                index + 1,
                offset,
                length,
                type_guid,
                GPT_TYPE_NAMES.get(type_guid, "unknown"),
                name=name or None,
                guid=guid_str(entry.unique_partition_guid),
                attributes=entry.attributes,
            )
        )
    return tuple(parts), header.disk_guid, tuple(problems)
