"""A small, independent writer of dynamic and differencing VHDs for tests.

qemu-img cannot create differencing VHDs and never writes partial sector bitmaps, so the tests build
those images here. This module deliberately shares no code with ``vhdtool.formats``: it packs the
structures itself with :mod:`struct` from the VHD specification, so a misreading of the spec in the
reader is not silently mirrored by the writer. libvhdi (``pyvhdi``) checks its output in
``tests/test_vhd_builder.py``.

The disk content is given as sectors: ``{sector_number: 512 bytes}``. A sector listed is present in
the image (its bitmap bit is set); every other sector of an allocated block is filled with
``GARBAGE`` so that a reader ignoring the bitmap is caught.
"""

from __future__ import annotations

import os
import struct
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

SECTOR = 512
UNUSED = 0xFFFFFFFF
GARBAGE = 0xEE
VHD_EPOCH = 946684800

_FOOTER = struct.Struct(">8sIIQI4sI4sQQHBBII16sB427x")
_HEADER = struct.Struct(">8sQQIIII16sII512s")
_LOCATOR = struct.Struct(">4sIIIQ")
assert _FOOTER.size == 512 and _HEADER.size + 8 * _LOCATOR.size + 256 == 1024


def ones_complement_checksum(raw: bytes | bytearray, field_at: int) -> int:
    """The spec's checksum: ones' complement of the byte sum, the 4-byte checksum field counted as 0."""
    return (~(sum(raw) - sum(raw[field_at:field_at + 4]))) & 0xFFFFFFFF


def footer_bytes(*, size: int, disk_type: int, data_offset: int, unique_id: bytes,
                 timestamp: int = 0, creator: bytes = b"vtst", saved_state: int = 0,
                 geometry: tuple[int, int, int] | None = None, host_os: bytes = b"Wi2k",
                 creator_version: int = 0x00010000) -> bytes:
    """A 512-byte hard disk footer with a correct checksum (spec: "Hard Disk Footer Format").

    ``geometry`` is (cylinders, heads, sectors per track); the default is 16 heads of 63 sectors,
    whose product falls short of most sizes, as real footers' geometry does.
    """
    if geometry is None:
        sectors = size // SECTOR
        geometry = (min(65535, sectors // (16 * 63)), 16, 63)
    cylinders, heads, spt = geometry
    raw = bytearray(_FOOTER.pack(b"conectix", 2, 0x00010000, data_offset, timestamp, creator, creator_version,
                                 host_os, size, size, cylinders, heads, spt, disk_type, 0, unique_id,
                                 saved_state))
    raw[64:68] = ones_complement_checksum(raw, 64).to_bytes(4, "big")
    return bytes(raw)


@dataclass
class Layout:
    """Where the builder put things, so tests can damage exactly one structure."""

    file_size: int
    header_offset: int
    bat_offset: int
    bitmap_size: int
    block_offsets: dict[int, int] = field(default_factory=dict)  # block index -> byte offset of its bitmap
    locator_entry_offsets: list[int] = field(default_factory=list)  # byte offset of each locator entry
    footer_offset: int = 0
    unique_id: bytes = b""


def utf16le(text: str) -> bytes:
    return text.encode("utf-16-le")


def build_vhd(path: str | os.PathLike[str], size: int, sectors: Mapping[int, bytes], *,
              block_size: int = 4096, disk_type: int = 3, unique_id: bytes | None = None,
              parent_id: bytes = bytes(16), parent_name: str = "",
              locators: Iterable[tuple[bytes, bytes]] = (), empty_blocks: Iterable[int] = (),
              block_order: Iterable[int] | None = None, max_table_entries: int | None = None,
              fill: int = GARBAGE, footer_copy: bool = True, truncate_last: bool = False,
              creator: bytes = b"vtst") -> Layout:
    """Write a dynamic (3) or differencing (4) VHD of ``size`` bytes holding ``sectors``.

    ``empty_blocks`` are allocated with an all-clear bitmap; ``block_order`` is the order blocks are
    laid out in the file (default ascending); ``locators`` are ``(platform_code, data)`` pairs.
    ``fill`` is the byte stored under clear bitmap bits (libvhdi reads it on dynamic disks, where
    vhdtool, like Hyper-V, reads zeros: use ``fill=0`` when libvhdi is the oracle).
    Without ``footer_copy`` the first 512 bytes stay zero; with ``truncate_last`` the block laid
    out last, which must be the disk's last block, stops at the disk's end and the footer follows.
    """
    uid = uuid.uuid4().bytes if unique_id is None else unique_id
    blocks = -(-size // block_size)
    entries = blocks if max_table_entries is None else max_table_entries
    per_block = block_size // SECTOR
    bitmap_bytes = -(-per_block // 8)
    bitmap_size = -(-bitmap_bytes // SECTOR) * SECTOR
    used = sorted({s // per_block for s in sectors} | set(empty_blocks))
    order = list(used if block_order is None else block_order)
    assert sorted(order) == used, "block_order must list exactly the allocated blocks"

    header_offset = SECTOR
    position = header_offset + 1024
    locator_list = list(locators)
    locator_data: list[tuple[bytes, int, bytes]] = []
    for code, data in locator_list:
        locator_data.append((code, position, data))
        position += -(-max(len(data), 1) // SECTOR) * SECTOR
    bat_offset = position
    position += -(-entries * 4 // SECTOR) * SECTOR
    block_offsets: dict[int, int] = {}
    for index in order:
        block_offsets[index] = position
        position += bitmap_size + block_size
    if truncate_last:
        assert order and order[-1] == blocks - 1, "truncate_last needs the disk's last block laid out last"
        position -= blocks * block_size - size
    footer_offset = position

    footer = footer_bytes(size=size, disk_type=disk_type, data_offset=header_offset, unique_id=uid,
                          creator=creator)
    header = bytearray(_HEADER.pack(b"cxsparse", 0xFFFFFFFFFFFFFFFF, bat_offset, 0x00010000, entries,
                                    block_size, 0, parent_id, 0, 0,
                                    parent_name.encode("utf-16-be")[:512]))
    entry_offsets = []
    for i in range(8):
        if i < len(locator_data):
            code, offset, data = locator_data[i]
            space = -(-max(len(data), 1) // SECTOR) * SECTOR  # Windows writes bytes here, not sectors
            header += _LOCATOR.pack(code, space, len(data), 0, offset)
        else:
            header += bytes(_LOCATOR.size)
        entry_offsets.append(header_offset + _HEADER.size + i * _LOCATOR.size)
    header += bytes(256)
    header[36:40] = ones_complement_checksum(header, 36).to_bytes(4, "big")

    bat = [UNUSED] * entries
    for index, offset in block_offsets.items():
        bat[index] = offset // SECTOR
    with open(path, "wb") as f:
        f.write(footer if footer_copy else bytes(SECTOR))
        f.write(header)
        for _code, offset, data in locator_data:
            f.seek(offset)
            f.write(data)
        f.seek(bat_offset)
        f.write(struct.pack(f">{entries}I", *bat))
        for index, offset in block_offsets.items():
            bitmap = bytearray(bitmap_size)
            content = bytearray([fill]) * block_size
            for k in range(per_block):
                present = sectors.get(index * per_block + k)
                if present is not None:
                    bitmap[k // 8] |= 0x80 >> (k % 8)  # most significant bit = first sector
                    content[k * SECTOR:(k + 1) * SECTOR] = present
            f.seek(offset)
            f.write(bitmap)
            f.write(content[:footer_offset - offset - bitmap_size])
        f.seek(footer_offset)
        f.write(footer)
    return Layout(footer_offset + SECTOR, header_offset, bat_offset, bitmap_size, block_offsets,
                  entry_offsets, footer_offset, uid)


def build_fixed_vhd(path: str | os.PathLike[str], size: int, writes: Iterable[tuple[int, bytes]] = (), *,
                    creator: bytes = b"win ", geometry: tuple[int, int, int] | None = None,
                    host_os: bytes = b"Wi2k", creator_version: int = 0x000A0000,
                    unique_id: bytes | None = None) -> bytes:
    """Write a fixed VHD of ``size`` bytes (sparse, ``writes`` are ``(offset, data)``) and a footer
    naming ``creator``; returns the disk's bytes."""
    disk = bytearray(size)
    for offset, data in writes:
        disk[offset:offset + len(data)] = data
    footer = footer_bytes(size=size, disk_type=2, data_offset=0xFFFFFFFFFFFFFFFF,
                          unique_id=uuid.uuid4().bytes if unique_id is None else unique_id, creator=creator,
                          geometry=geometry, host_os=host_os, creator_version=creator_version)
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in writes:
            f.seek(offset)
            f.write(data)
        f.seek(size)
        f.write(footer)
    return bytes(disk)


def read_identity(path: str | os.PathLike[str]) -> tuple[bytes, int]:
    """``(unique_id, current_size)`` from a VHD's end footer, read with plain struct."""
    with open(path, "rb") as f:
        f.seek(-SECTOR, os.SEEK_END)
        raw = f.read(SECTOR)
    fields = _FOOTER.unpack(raw)
    return fields[15], fields[9]


def locators_for(child: str | os.PathLike[str], parent: str | os.PathLike[str],
                 kinds: Iterable[str] = ("W2ru", "W2ku")) -> list[tuple[bytes, bytes]]:
    """Locator entries naming ``parent`` as Hyper-V (W2ru/W2ku) or Mac OS X (MacX) would."""
    parent_abs = os.path.abspath(parent)
    rel = os.path.relpath(parent_abs, os.path.dirname(os.path.abspath(child)))
    out: list[tuple[bytes, bytes]] = []
    for kind in kinds:
        if kind == "W2ru":
            out.append((b"W2ru", utf16le(".\\" + rel.replace("/", "\\"))))
        elif kind == "W2ku":
            out.append((b"W2ku", utf16le(parent_abs)))
        elif kind == "Wi2r":
            out.append((b"Wi2r", rel.encode()))
        elif kind == "Wi2k":
            out.append((b"Wi2k", parent_abs.encode()))
        elif kind == "MacX":
            from urllib.parse import quote
            out.append((b"MacX", ("file://localhost" + quote(parent_abs)).encode()))
        else:
            raise ValueError(kind)
    return out


def build_child(path: str | os.PathLike[str], parent: str | os.PathLike[str], sectors: Mapping[int, bytes],
                *, kinds: Iterable[str] = ("W2ru", "W2ku"), block_size: int = 4096,
                parent_id: bytes | None = None, **kwargs: object) -> Layout:
    """A differencing VHD over ``parent`` (same size, the parent's id, locators of ``kinds``)."""
    pid, size = read_identity(parent)
    return build_vhd(path, size, sectors, block_size=block_size, disk_type=4,
                     parent_id=pid if parent_id is None else parent_id,
                     parent_name=os.path.basename(parent), locators=locators_for(path, parent, kinds),
                     **kwargs)  # type: ignore[arg-type]


def sectors_from_writes(writes: Iterable[tuple[int, bytes]]) -> dict[int, bytes]:
    """Sector map from ``(offset, data)`` writes at sector-aligned offsets (later writes win)."""
    out: dict[int, bytes] = {}
    for offset, data in writes:
        assert offset % SECTOR == 0 and len(data) % SECTOR == 0
        for k in range(len(data) // SECTOR):
            out[offset // SECTOR + k] = data[k * SECTOR:(k + 1) * SECTOR]
    return out


def model_bytes(size: int, sectors: Mapping[int, bytes], base: bytes | None = None) -> bytes:
    """The logical disk: ``sectors`` over ``base`` (a parent's bytes) or over zeros."""
    out = bytearray(base if base is not None else bytes(size))
    for s, data in sectors.items():
        lo = s * SECTOR
        if lo < size:
            out[lo:min(size, lo + SECTOR)] = data[:size - lo]
    return bytes(out)
