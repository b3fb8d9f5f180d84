"""A small VHDX writer for tests: differencing disks, partial blocks and non-empty logs.

qemu-img makes fixed and dynamic VHDX but neither differencing disks nor files with a pending
log, so tests build those here, following [MS-VHDX] directly (not vhdtool's code). The layout is
plain: header area, log, metadata region, BAT, then payload and sector bitmap blocks in BAT order.
"""

from __future__ import annotations

import os
import struct
import uuid
from dataclasses import dataclass, field

import crc32c

from vhdtool.extents import MiB

KiB = 1024
BAT_GUID = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA_GUID = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
VIRTUAL_DISK_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
PAGE83 = uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
LOGICAL_SECTOR = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
PHYSICAL_SECTOR = uuid.UUID("CDA348C7-445D-4471-9CC9-E9885251C556")
PARENT_LOCATOR = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
VHDX_LOCATOR_TYPE = uuid.UUID("B04AEFB7-D19E-4A81-B789-25B8E9445913")

NOT_PRESENT, UNDEFINED, ZERO, UNMAPPED, FULLY_PRESENT, PARTIALLY_PRESENT = 0, 1, 2, 3, 6, 7
SB_PRESENT = 6


@dataclass
class Block:
    """One payload block: its state, the bytes stored in the file, and for partial blocks a
    per-sector presence list (True = the sector is in this file)."""

    state: int
    data: bytes = b""
    present: list[bool] | None = None


@dataclass
class Built:
    """Where the builder put things, for tests that patch or log-update the file."""

    path: str
    virtual_size: int
    block_size: int
    logical_sector_size: int
    chunk_ratio: int
    bat_offset: int
    bat_length: int
    metadata_offset: int
    log_offset: int
    log_length: int
    end: int  # first free, 1 MiB aligned offset after everything written (the file size)
    data_write_guid: uuid.UUID
    file_write_guid: uuid.UUID
    block_offsets: dict[int, int] = field(default_factory=dict)
    bitmap_offsets: dict[int, int] = field(default_factory=dict)

    def bat_index(self, block: int) -> int:
        return block + block // self.chunk_ratio

    def bat_entry_offset(self, block: int) -> int:
        return self.bat_offset + 8 * self.bat_index(block)


def crc(data: bytes, checksum_at: int) -> int:
    return crc32c.crc32c(data[:checksum_at] + b"\0\0\0\0" + data[checksum_at + 4:])


def header_bytes(sequence: int, file_write: uuid.UUID, data_write: uuid.UUID, log_guid: uuid.UUID,
                 log_offset: int, log_length: int, version: int = 1) -> bytes:
    body = struct.pack("<4sIQ16s16s16sHHIQ", b"head", 0, sequence, file_write.bytes_le, data_write.bytes_le,
                       log_guid.bytes_le, 0, version, log_length, log_offset)
    raw = body.ljust(4 * KiB, b"\0")
    return raw[:4] + struct.pack("<I", crc(raw, 4)) + raw[8:]


def region_table_bytes(entries: list[tuple[uuid.UUID, int, int, bool]]) -> bytes:
    raw = struct.pack("<4sIII", b"regi", 0, len(entries), 0)
    for guid, offset, length, required in entries:
        raw += struct.pack("<16sQII", guid.bytes_le, offset, length, int(required))
    raw = raw.ljust(64 * KiB, b"\0")
    return raw[:4] + struct.pack("<I", crc(raw, 4)) + raw[8:]


def locator_bytes(pairs: dict[str, str]) -> bytes:
    head = struct.pack("<16sHH", VHDX_LOCATOR_TYPE.bytes_le, 0, len(pairs))
    table = b""
    strings = b""
    base = 20 + 12 * len(pairs)
    for key, value in pairs.items():
        k, v = key.encode("utf-16-le"), value.encode("utf-16-le")
        table += struct.pack("<IIHH", base + len(strings), base + len(strings) + len(k), len(k), len(v))
        strings += k + v
    return head + table + strings


NULL_GUID = uuid.UUID(int=0)


def write_headers(path: str, built: Built, log_guid: uuid.UUID = NULL_GUID,
                  sequences: tuple[int, int] = (1, 2)) -> None:
    """(Re)write both headers; the one with the higher sequence number is current."""
    with open(path, "r+b") as f:
        for i, seq in enumerate(sequences):
            f.seek(64 * KiB * (i + 1))
            f.write(header_bytes(seq, built.file_write_guid, built.data_write_guid, log_guid,
                                 built.log_offset, built.log_length))


def build_vhdx(path: str | os.PathLike[str], virtual_size: int, *, block_size: int = 1 * MiB,
               logical_sector_size: int = 512, physical_sector_size: int = 512,
               blocks: dict[int, Block] | None = None, parent_locator: dict[str, str] | None = None,
               leave_blocks_allocated: bool = False, data_write_guid: uuid.UUID | None = None,
               log_length: int = 1 * MiB, extra_items: list[tuple[uuid.UUID, int, bytes]] | None = None,
               extra_regions: list[tuple[uuid.UUID, int, int, bool]] | None = None,
               spare: int = 0, truncate_last: bool = False) -> Built:
    """Write a VHDX file. ``blocks`` maps payload block numbers to their state and content;
    with ``parent_locator`` the file is a differencing disk. ``spare`` bytes of free space are
    left after the payload (tests put replayed-log blocks there). With ``truncate_last`` the file
    ends where the virtual disk does inside its last payload block, which must be present and
    laid out last (as qemu-img writes a fixed disk of an unaligned size)."""
    path = os.fspath(path)
    blocks = blocks or {}
    has_parent = parent_locator is not None
    chunk_ratio = (1 << 23) * logical_sector_size // block_size
    payload_blocks = -(-virtual_size // block_size)
    bitmap_blocks = -(-payload_blocks // chunk_ratio)
    entries = (bitmap_blocks * (chunk_ratio + 1) if has_parent
               else payload_blocks + (payload_blocks - 1) // chunk_ratio)
    log_offset = 1 * MiB
    metadata_offset = log_offset + log_length
    bat_offset = metadata_offset + 1 * MiB
    bat_length = -(-entries * 8 // MiB) * MiB
    position = bat_offset + bat_length
    built = Built(path=path, virtual_size=virtual_size, block_size=block_size,
                  logical_sector_size=logical_sector_size, chunk_ratio=chunk_ratio, bat_offset=bat_offset,
                  bat_length=bat_length, metadata_offset=metadata_offset, log_offset=log_offset,
                  log_length=log_length, end=0, data_write_guid=data_write_guid or uuid.uuid4(),
                  file_write_guid=uuid.uuid4())
    bat = bytearray(bat_length)
    writes: list[tuple[int, bytes]] = []
    sectors_per_block = block_size // logical_sector_size
    bitmaps: dict[int, bytearray] = {}
    for number in sorted(blocks):
        spec = blocks[number]
        entry = spec.state
        if spec.state in (FULLY_PRESENT, PARTIALLY_PRESENT):
            built.block_offsets[number] = position
            entry |= position
            if spec.data:
                writes.append((position, spec.data))
            position += block_size
        if spec.state == PARTIALLY_PRESENT:
            chunk = number // chunk_ratio
            bits = bitmaps.setdefault(chunk, bytearray(MiB))
            first = (number % chunk_ratio) * sectors_per_block
            for i, present in enumerate(spec.present or []):
                if present:
                    bit = first + i
                    bits[bit // 8] |= 1 << (bit % 8)
        struct.pack_into("<Q", bat, 8 * built.bat_index(number), entry)
    for chunk in sorted(bitmaps):
        built.bitmap_offsets[chunk] = position
        writes.append((position, bytes(bitmaps[chunk])))
        struct.pack_into("<Q", bat, 8 * (chunk * (chunk_ratio + 1) + chunk_ratio), SB_PRESENT | position)
        position += MiB
    built.end = position + -(-spare // MiB) * MiB
    if truncate_last:
        last = payload_blocks - 1
        assert not bitmaps and not spare and built.block_offsets and max(built.block_offsets) == last, \
            "truncate_last needs the disk's last block present, laid out last"
        built.end = built.block_offsets[last] + virtual_size - last * block_size
        writes = [(at, data[:built.end - at]) for at, data in writes]

    items: list[tuple[uuid.UUID, int, bytes]] = [
        (FILE_PARAMETERS, 4, struct.pack("<II", block_size,
                                         int(leave_blocks_allocated) | (2 if has_parent else 0))),
        (VIRTUAL_DISK_SIZE, 6, struct.pack("<Q", virtual_size)),
        (PAGE83, 6, uuid.uuid4().bytes_le),
        (LOGICAL_SECTOR, 6, struct.pack("<I", logical_sector_size)),
        (PHYSICAL_SECTOR, 6, struct.pack("<I", physical_sector_size)),
    ]
    if parent_locator is not None:
        items.append((PARENT_LOCATOR, 4, locator_bytes(parent_locator)))
    items += extra_items or []
    table = struct.pack("<8sHH20s", b"metadata", 0, len(items), b"")
    item_data = b""
    for guid, flags, data in items:
        table += struct.pack("<16sIIII", guid.bytes_le, 64 * KiB + len(item_data), len(data), flags, 0)
        item_data += data.ljust(-(-len(data) // 8) * 8, b"\0")
    metadata = table.ljust(64 * KiB, b"\0") + item_data

    regions = [(BAT_GUID, bat_offset, bat_length, True), (METADATA_GUID, metadata_offset, MiB, True)]
    regions += extra_regions or []
    rt = region_table_bytes(regions)
    with open(path, "wb") as f:
        f.truncate(built.end)
        for offset, data in [(0, b"vhdxfile" + "vhdtool test builder".encode("utf-16-le")),
                             (192 * KiB, rt), (256 * KiB, rt), (metadata_offset, metadata),
                             (bat_offset, bytes(bat)), *writes]:
            f.seek(offset)
            f.write(data)
    write_headers(path, built)
    return built


def current_data_write_guid(path: str | os.PathLike[str]) -> uuid.UUID:
    """DataWriteGuid of the current header of any VHDX (e.g. one qemu-img made), for a child's
    ``parent_linkage``: the valid header with the higher sequence number (2.2.2)."""
    best: tuple[int, uuid.UUID] | None = None
    with open(path, "rb") as f:
        for offset in (64 * KiB, 128 * KiB):
            f.seek(offset)
            raw = f.read(4 * KiB)
            signature, checksum, sequence = struct.unpack_from("<4sIQ", raw)
            if signature == b"head" and checksum == crc(raw, 4) and (best is None or sequence > best[0]):
                best = (sequence, uuid.UUID(bytes_le=raw[32:48]))
    assert best is not None, f"{path}: no valid VHDX header"
    return best[1]


# --- the log (2.3) ---------------------------------------------------------------------------


@dataclass
class LogWrite:
    """A data write (``data`` is one 4 KiB sector) or, with ``zero_length``, a zero descriptor."""

    file_offset: int
    data: bytes = b""
    zero_length: int = 0


def log_entry_bytes(sequence: int, writes: list[LogWrite], log_guid: uuid.UUID, tail: int,
                    flushed_file_offset: int, last_file_offset: int) -> bytes:
    count = len(writes)
    descriptor_sectors = -(-(64 + 32 * count) // (4 * KiB))
    data_sectors = [w for w in writes if not w.zero_length]
    length = (descriptor_sectors + len(data_sectors)) * 4 * KiB
    head = struct.pack("<4sIIIQII16sQQ", b"loge", 0, length, tail, sequence, count, 0, log_guid.bytes_le,
                       flushed_file_offset, last_file_offset)
    descs = b""
    sectors = b""
    for w in writes:
        if w.zero_length:
            descs += struct.pack("<4sIQQQ", b"zero", 0, w.zero_length, w.file_offset, sequence)
        else:
            assert len(w.data) == 4 * KiB
            descs += struct.pack("<4s4s8sQQ", b"desc", w.data[-4:], w.data[:8], w.file_offset, sequence)
            sectors += struct.pack("<4sI", b"data", sequence >> 32) + w.data[8:-4] + struct.pack(
                "<I", sequence & 0xFFFFFFFF)
    raw = (head + descs).ljust(descriptor_sectors * 4 * KiB, b"\0") + sectors
    return raw[:4] + struct.pack("<I", crc(raw, 4)) + raw[8:]


def write_log(built: Built, entries: list[list[LogWrite]], *, start: int = 0, first_sequence: int = 10,
              log_guid: uuid.UUID | None = None, header_log_guid: uuid.UUID | None = None,
              last_file_offset: int | None = None, corrupt: set[int] | None = None,
              tail: int | None = None) -> uuid.UUID:
    """Write a sequence of log entries at ``start`` in the (circular) log and point the headers
    at it. Entries listed in ``corrupt`` get a wrong checksum. Returns the LogGuid."""
    guid = log_guid or uuid.uuid4()
    size = os.path.getsize(built.path)
    position = start
    first = start if tail is None else tail
    with open(built.path, "r+b") as f:
        for i, writes in enumerate(entries):
            raw = bytearray(log_entry_bytes(first_sequence + i, writes, guid, first, size,
                                            last_file_offset if last_file_offset is not None else size))
            if corrupt and i in corrupt:
                raw[4] ^= 0xFF
            done = 0
            while done < len(raw):  # wrap around the circular log
                at = position % built.log_length
                n = min(len(raw) - done, built.log_length - at)
                f.seek(built.log_offset + at)
                f.write(raw[done:done + n])
                done += n
                position += n
    write_headers(built.path, built, header_log_guid or guid, sequences=(5, 6))
    return guid


def bat_sector_update(built: Built, changes: dict[int, int]) -> list[LogWrite]:
    """Log writes that set the BAT entries of payload blocks ``changes`` (block -> 64-bit entry),
    as whole 4 KiB sectors built from the current file contents."""
    sectors: dict[int, bytearray] = {}
    with open(built.path, "rb") as f:
        for block, entry in changes.items():
            at = built.bat_entry_offset(block)
            base = at - at % (4 * KiB)
            if base not in sectors:
                f.seek(base)
                sectors[base] = bytearray(f.read(4 * KiB))
            struct.pack_into("<Q", sectors[base], at - base, entry)
    return [LogWrite(base, bytes(data)) for base, data in sorted(sectors.items())]
