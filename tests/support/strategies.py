"""Hypothesis strategies for hostile images: valid structures built from the specs, then damaged.

Every strategy yields a :class:`Case`: how to build a valid image (VHD fixed/dynamic/differencing,
VHDX with log entries and parent locators, an MBR or GPT disk with real filesystems in it) and a list of
*abstract* mutations. An abstract mutation names a structure (``"footer"``, ``"bat"``, ``"log"``,
``"gpt_header"``...) and a field inside it; :meth:`Case.build` builds the image, looks the structures
up in the layout the builder reports, and turns the mutations into byte operations
(:mod:`fuzz.mutate`). Some mutations recompute the structure's checksum afterwards, so damage gets
past the checksum gate into the code behind it.
"""

from __future__ import annotations

import os
import random
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fuzz.mutate import Op, apply
from hypothesis import strategies as st

from support.vhd_builder import build_child, build_vhd, footer_bytes
from support.vhdx_builder import (
    FULLY_PRESENT,
    NOT_PRESENT,
    PARTIALLY_PRESENT,
    UNMAPPED,
    ZERO,
    Block,
    LogWrite,
    bat_sector_update,
    build_vhdx,
    write_log,
)
from vhdtool.extents import MiB

KiB = 1024
SECTOR = 512

# ---------------------------------------------------------------------------------------------------
# Values


def interesting_ints(width: int) -> st.SearchStrategy[Any]:
    """Field values as ``("abs", n)`` or ``("rel", delta)`` (file size + delta, resolved at build time)."""
    top = (1 << (8 * width)) - 1
    candidates = {0, 1, 2, 3, 7, 8, 255, 256, 511, 512, 513, 4096, 65535, 65536, MiB, 2 * MiB, 1 << 31,
                  (1 << 31) - 1, 1 << 32, (1 << 32) - 1, 1 << 40, 1 << 62, 1 << 63, top, top - 1, top // 2}
    specials = sorted(n for n in candidates if n <= top)
    return st.one_of(
        st.sampled_from(specials).map(lambda n: ("abs", n)),
        st.integers(0, top).map(lambda n: ("abs", n)),
        st.sampled_from([-1024, -513, -512, -511, -1, 0, 1, 511, 512, 4096, MiB]).map(lambda d: ("rel", d)),
        st.integers(0, 64).map(lambda k: ("abs", k * 512)),
        st.integers(0, 64).map(lambda k: ("abs", k * MiB)),
    )


# A field: (structure, offset inside it, width in bytes, byte order).
Field = tuple[str, int, int, str]


@dataclass(frozen=True)
class Case:
    """A valid image recipe plus abstract mutations; ``build`` writes it into a folder."""

    kind: str
    params: dict[str, Any]
    mutations: tuple[tuple[Any, ...], ...]
    builder: Callable[[Path, dict[str, Any]], tuple[Path, dict[str, int], dict[str, Op]]] = field(
        repr=False, compare=False, default=lambda d, p: (d, {}, {}))

    def build(self, folder: Path) -> Path:
        """Build the valid image in ``folder``, apply the mutations, return the image's path."""
        path, regions, checksums = self.builder(folder, self.params)
        apply(path, concrete_ops(self.mutations, regions, checksums, os.path.getsize(path)))
        return path


def concrete_ops(mutations: tuple[tuple[Any, ...], ...], regions: dict[str, int], checksums: dict[str, Op],
                 size: int) -> list[Op]:
    """Byte operations for ``mutations`` over an image whose structures start at ``regions``."""
    ops: list[Op] = []
    for m in mutations:
        kind = m[0]
        if kind == "field":
            _, region, rel, width, order, value = m
            if region not in regions:
                continue
            n = value[1] if value[0] == "abs" else max(0, size + value[1])
            n &= (1 << (8 * width)) - 1
            ops.append(("write", regions[region] + rel, n.to_bytes(width, "big" if order == ">" else "little")))
        elif kind == "bytes":
            _, region, rel, data = m
            if region in regions:
                ops.append(("write", regions[region] + rel, data))
        elif kind == "flip":
            _, region, rel, bit = m
            if region in regions:
                ops.append(("flip", regions[region] + rel, bit))
        elif kind == "fix":
            if m[1] in checksums:
                ops.append(checksums[m[1]])
        elif kind == "copy_region":
            # Put one structure's bytes where another one is (e.g. a BAT entry pointing at metadata).
            _, src, dst, length = m
            if src in regions and dst in regions:
                ops.append(("copy", regions[src], regions[dst], length))
        elif kind == "truncate":
            ops.append(("truncate", max(0, int(size * m[1]))))
        elif kind == "extend":
            ops.append(("extend", size + m[1]))
        else:
            raise ValueError(f"unknown mutation {m!r}")
    return ops


def field_mutation(fields: list[Field]) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.sampled_from(fields).flatmap(
        lambda f: interesting_ints(f[2]).map(lambda v: ("field", f[0], f[1], f[2], f[3], v)))


def byte_mutation(regions: list[str], span: int = 4096) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.one_of(
        st.tuples(st.just("bytes"), st.sampled_from(regions), st.integers(0, span - 1),
                  st.binary(min_size=1, max_size=16)),
        st.tuples(st.just("flip"), st.sampled_from(regions), st.integers(0, span - 1), st.integers(0, 7)),
    )


def mutations(fields: list[Field], regions: list[str], checksums: list[str],
              max_size: int = 4) -> st.SearchStrategy[tuple[tuple[Any, ...], ...]]:
    """Field and byte damage, with a checksum repair appended most of the time."""
    one = st.one_of(
        field_mutation(fields), field_mutation(fields), field_mutation(fields),
        byte_mutation(regions),
        st.tuples(st.just("truncate"), st.floats(0.0, 1.0)),
        st.tuples(st.just("extend"), st.sampled_from([1, 511, 512, 4096, MiB])),
    )
    return st.tuples(st.lists(one, min_size=0, max_size=max_size),
                     st.lists(st.sampled_from(checksums), max_size=len(checksums), unique=True)).map(
        lambda pair: tuple(pair[0]) + tuple(("fix", c) for c in pair[1]))


# ---------------------------------------------------------------------------------------------------
# VHD (Virtual Hard Disk Image Format Specification)

_VHD_FOOTER_FIELDS: list[tuple[int, int]] = [(0, 8), (8, 4), (12, 4), (16, 8), (40, 8), (48, 8), (56, 2), (58, 1),
                                             (59, 1), (60, 4), (64, 4), (68, 16), (84, 1)]
_VHD_HEADER_FIELDS: list[tuple[int, int]] = [(0, 8), (8, 8), (16, 8), (24, 4), (28, 4), (32, 4), (36, 4), (40, 16),
                                             (56, 4), (64, 2), (66, 2)]
_LOCATOR_FIELDS: list[tuple[int, int]] = [(0, 4), (4, 4), (8, 4), (16, 8)]

VHD_FIELDS: list[Field] = (
    [("footer", o, w, ">") for o, w in _VHD_FOOTER_FIELDS]
    + [("footer_copy", o, w, ">") for o, w in _VHD_FOOTER_FIELDS]
    + [("header", o, w, ">") for o, w in _VHD_HEADER_FIELDS]
    + [("header", 576 + 24 * i + o, w, ">") for i in range(3) for o, w in _LOCATOR_FIELDS]
    + [("bat", 4 * i, 4, ">") for i in range(8)]
)
VHD_REGIONS = ["footer", "footer_copy", "header", "bat", "block0", "block1", "locator0", "locator1"]
VHD_CHECKSUMS = ["footer", "footer_copy", "header"]
_PLATFORM_CODES = [b"W2ru", b"W2ku", b"Wi2r", b"Wi2k", b"MacX", b"Mac ", b"\0\0\0\0", b"zzzz"]
_HOSTILE_PATHS = ["/dev/zero", "/proc/self/mem", "/dev/stdin", "/etc/passwd", "..\\..\\..\\etc\\passwd",
                  "C:\\", "\\\\server\\share\\p.vhd", "", ".", "..", "parent.vhd\0junk", "a" * 5000,
                  "file:///dev/zero", "file://localhost/proc/self/fd/0", "child.vhd", "\udcff"]


def _vhd_regions(layout: Any, folder: Path) -> tuple[dict[str, int], dict[str, Op]]:
    regions = {"footer": layout.footer_offset, "footer_copy": 0, "header": layout.header_offset,
               "bat": layout.bat_offset}
    for i, (_index, offset) in enumerate(sorted(layout.block_offsets.items())[:2]):
        regions[f"block{i}"] = offset
    with open(folder / "child.vhd", "rb") as f:
        for i, entry in enumerate(layout.locator_entry_offsets[:2]):
            f.seek(entry + 16)
            regions[f"locator{i}"] = struct.unpack(">Q", f.read(8))[0]
    checksums: dict[str, Op] = {"footer": ("vhd_sum", layout.footer_offset, 512, 64),
                                "footer_copy": ("vhd_sum", 0, 512, 64),
                                "header": ("vhd_sum", layout.header_offset, 1024, 36)}
    return regions, checksums


def _sectors(seed: int, count: int, total: int) -> dict[int, bytes]:
    rng = random.Random(seed)
    out = {}
    for _ in range(count):
        s = rng.randrange(total)
        out[s] = bytes([rng.randrange(1, 256)]) * 8 + rng.randbytes(SECTOR - 8)
    return out


def _build_vhd(folder: Path, p: dict[str, Any]) -> tuple[Path, dict[str, int], dict[str, Op]]:
    size, block = p["size"], p["block_size"]
    sectors = _sectors(p["seed"], p["sectors"], -(-size // SECTOR))
    child = folder / "child.vhd"
    if p["type"] == "fixed":
        data = bytearray(size)
        for s, b in sectors.items():
            data[s * SECTOR:(s + 1) * SECTOR] = b[:max(0, size - s * SECTOR)]
        footer = footer_bytes(size=size, disk_type=2, data_offset=(1 << 64) - 1, unique_id=uuid.uuid4().bytes)
        child.write_bytes(bytes(data) + footer)
        return child, {"footer": size, "block0": 0}, {"footer": ("vhd_sum", size, 512, 64)}
    if p["type"] == "dynamic":
        empty = [e for e in p["empty"] if e * block < size]
        layout = build_vhd(child, size, sectors, block_size=block, empty_blocks=empty)
    else:
        parent = folder / "parent.vhd"
        build_vhd(parent, size, _sectors(p["seed"] + 1, p["sectors"], -(-size // SECTOR)), block_size=block)
        locators = [(code, _encode_locator(code, path)) for code, path in p["extra_locators"]]
        layout = build_child(child, parent, sectors, block_size=block, kinds=p["kinds"])
        if locators:
            # Rebuild with hostile locators placed before the honest ones (resolution must skip them).
            from support.vhd_builder import locators_for, read_identity

            pid, _ = read_identity(parent)
            layout = build_vhd(child, size, sectors, block_size=block, disk_type=4, parent_id=pid,
                               parent_name=p["parent_name"],
                               locators=locators + locators_for(child, parent, p["kinds"]))
    regions, checksums = _vhd_regions(layout, folder)
    return child, regions, checksums


def _encode_locator(code: bytes, path: str) -> bytes:
    if code in (b"W2ru", b"W2ku"):
        return path.encode("utf-16-le", errors="surrogatepass")
    return path.encode("utf-8", errors="surrogateescape")


@st.composite
def vhd_cases(draw: st.DrawFn, max_mutations: int = 4) -> Case:
    """A fixed, dynamic or differencing VHD with damaged footers, header, locators, BAT or bitmaps."""
    kind = draw(st.sampled_from(["fixed", "dynamic", "dynamic", "differencing", "differencing"]))
    block = draw(st.sampled_from([512, 4096, 16384, 65536, 2 * MiB]))
    blocks = draw(st.integers(1, 12 if block <= 65536 else 2))
    size = block * blocks - draw(st.sampled_from([0, 0, 0, 512, 1]))
    params: dict[str, Any] = {
        "type": kind, "size": max(512, size), "block_size": block, "seed": draw(st.integers(0, 1 << 16)),
        "sectors": draw(st.integers(0, 12)), "empty": draw(st.lists(st.integers(0, blocks - 1), max_size=1)),
        "kinds": tuple(draw(st.lists(st.sampled_from(["W2ru", "W2ku", "Wi2r", "MacX"]), min_size=1, max_size=3,
                                     unique=True))),
        "extra_locators": tuple(draw(st.lists(st.tuples(st.sampled_from(_PLATFORM_CODES),
                                                        st.sampled_from(_HOSTILE_PATHS)), max_size=2))),
        "parent_name": draw(st.sampled_from(["parent.vhd", "", "/dev/zero", "C:\\x\\parent.vhd", "../parent.vhd"])),
    }
    muts = draw(mutations(VHD_FIELDS, VHD_REGIONS, VHD_CHECKSUMS, max_mutations))
    return Case("vhd-" + kind, params, muts, _build_vhd)


# ---------------------------------------------------------------------------------------------------
# VHDX ([MS-VHDX])

_VHDX_HEADER_FIELDS = [(8, 8), (48, 16), (64, 2), (66, 2), (68, 4), (72, 8)]
_REGION_FIELDS = [(8, 4)] + [(16 + 32 * i + o, w) for i in range(2) for o, w in [(0, 16), (16, 8), (24, 4), (28, 4)]]
_METADATA_TABLE_FIELDS = [(10, 2)] + [(32 + 32 * i + o, w) for i in range(6) for o, w in
                                      [(0, 16), (16, 4), (20, 4), (24, 4)]]
# Item values in the order the builder writes them: file parameters, size, page 83, sector sizes, locator.
_METADATA_ITEM_FIELDS = [(0, 4), (4, 4), (8, 8), (32, 4), (40, 4), (48 + 18, 2)] + [
    (48 + 20 + 12 * k + o, w) for k in range(2) for o, w in [(0, 4), (4, 4), (8, 2), (10, 2)]]
_LOG_FIELDS = [(0, 4), (8, 4), (12, 4), (16, 8), (24, 4), (32, 16), (48, 8), (56, 8)] + [
    (64 + 32 * i + o, w) for i in range(2) for o, w in [(0, 4), (8, 8), (16, 8), (24, 8)]]

VHDX_FIELDS: list[Field] = (
    [(h, o, w, "<") for h in ("header1", "header2") for o, w in _VHDX_HEADER_FIELDS]
    + [(r, o, w, "<") for r in ("region1", "region2") for o, w in _REGION_FIELDS]
    + [("metadata", o, w, "<") for o, w in _METADATA_TABLE_FIELDS]
    + [("metadata_items", o, w, "<") for o, w in _METADATA_ITEM_FIELDS]
    + [("bat", 8 * i, 8, "<") for i in range(10)]
    + [("log", o, w, "<") for o, w in _LOG_FIELDS]
)
VHDX_REGIONS = ["header1", "header2", "region1", "region2", "metadata", "metadata_items", "bat", "log",
                "block0", "bitmap0"]
VHDX_CHECKSUMS = ["header1", "header2", "region1", "region2", "log"]


def _build_vhdx(folder: Path, p: dict[str, Any]) -> tuple[Path, dict[str, int], dict[str, Op]]:
    rng = random.Random(p["seed"])
    size, block, sector = p["size"], p["block_size"], p["sector"]
    per_block = block // sector
    blocks: dict[int, Block] = {}
    for number, state in p["blocks"]:
        if number * block >= size:
            continue
        if state == PARTIALLY_PRESENT and not p["parent"]:
            state = FULLY_PRESENT
        if state == FULLY_PRESENT:
            blocks[number] = Block(state, rng.randbytes(8192))
        elif state == PARTIALLY_PRESENT:
            blocks[number] = Block(state, rng.randbytes(8192), [rng.random() < 0.5 for _ in range(per_block)])
        else:
            blocks[number] = Block(state)
    locator = None
    if p["parent"]:
        base = build_vhdx(folder / "parent.vhdx", size, block_size=block, logical_sector_size=sector,
                          blocks={0: Block(FULLY_PRESENT, rng.randbytes(4096))})
        locator = {"parent_linkage": f"{{{base.data_write_guid}}}", "relative_path": p["relative"]}
        locator.update(dict(p["extra_keys"]))
    child = folder / "child.vhdx"
    built = build_vhdx(child, size, block_size=block, logical_sector_size=sector, blocks=blocks,
                       parent_locator=locator, spare=block if p["log"] else 0)
    regions = {"header1": 64 * KiB, "header2": 128 * KiB, "region1": 192 * KiB, "region2": 256 * KiB,
               "metadata": built.metadata_offset, "metadata_items": built.metadata_offset + 64 * KiB,
               "bat": built.bat_offset, "log": built.log_offset}
    if built.block_offsets:
        regions["block0"] = min(built.block_offsets.values())
    if built.bitmap_offsets:
        regions["bitmap0"] = min(built.bitmap_offsets.values())
    checksums: dict[str, Op] = {"header1": ("crc32c", 64 * KiB, 4 * KiB, 4),
                                "header2": ("crc32c", 128 * KiB, 4 * KiB, 4),
                                "region1": ("crc32c", 192 * KiB, 64 * KiB, 4),
                                "region2": ("crc32c", 256 * KiB, 64 * KiB, 4)}
    if p["log"]:
        spare = built.end - block
        with open(child, "r+b") as f:
            f.seek(spare)
            f.write(rng.randbytes(4 * KiB))
        target = min(1, max(0, size // block - 1))
        entries = [bat_sector_update(built, {target: FULLY_PRESENT | spare})]
        if p["log"] > 1:
            entries.append([LogWrite(built.metadata_offset + 64 * KiB - 4096, rng.randbytes(4096)),
                            LogWrite(spare + 4096, zero_length=2 * 4096)])
        write_log(built, entries)
        with open(child, "rb") as f:
            f.seek(built.log_offset + 8)
            length = struct.unpack("<I", f.read(4))[0]
        checksums["log"] = ("crc32c", built.log_offset, length, 4)
    return child, regions, checksums


@st.composite
def vhdx_cases(draw: st.DrawFn, max_mutations: int = 4) -> Case:
    """A VHDX (dynamic or differencing, optionally with a pending log) with damaged structures."""
    block = draw(st.sampled_from([1 * MiB, 2 * MiB]))
    sector = draw(st.sampled_from([512, 4096]))
    size = draw(st.integers(1, 6)) * block - draw(st.sampled_from([0, 0, sector]))
    states = st.sampled_from([NOT_PRESENT, ZERO, UNMAPPED, FULLY_PRESENT, FULLY_PRESENT, PARTIALLY_PRESENT])
    params: dict[str, Any] = {
        "size": size, "block_size": block, "sector": sector, "seed": draw(st.integers(0, 1 << 16)),
        "blocks": tuple(draw(st.lists(st.tuples(st.integers(0, 5), states), max_size=4))),
        "parent": draw(st.booleans()), "log": draw(st.sampled_from([0, 0, 1, 2])),
        "relative": draw(st.sampled_from([".\\parent.vhdx", "parent.vhdx", "..\\x\\parent.vhdx", "/dev/zero",
                                          "\\\\?\\C:\\parent.vhdx", "/proc/self/fd/0", ""])),
        "extra_keys": tuple(draw(st.lists(st.tuples(
            st.sampled_from(["absolute_win32_path", "volume_path", "parent_linkage2", "bogus"]),
            st.sampled_from(_HOSTILE_PATHS[:10])), max_size=2, unique_by=lambda kv: kv[0]))),
    }
    muts = draw(mutations(VHDX_FIELDS, VHDX_REGIONS, VHDX_CHECKSUMS, max_mutations))
    return Case("vhdx", params, muts, _build_vhdx)


# ---------------------------------------------------------------------------------------------------
# MBR and GPT (UEFI 2.10 section 5), with real filesystems from mkfs in the partitions

GPT_ESP = uuid.UUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
GPT_LINUX = uuid.UUID("0FC63DAF-8483-4772-8E79-3D69D8E47DE4")
GPT_BASIC = uuid.UUID("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7")
GPT_LVM = uuid.UUID("E6D6D379-F507-44C2-A23C-238F2A3DF928")


def gpt_disk(size: int, partitions: list[tuple[uuid.UUID, int, int]], entries: int = 128) -> bytearray:
    """A GPT disk: protective MBR, primary header and entries, backup entries and header."""
    import zlib

    disk = bytearray(size)
    last = size // SECTOR - 1
    disk[446:462] = struct.pack("<B3sB3sII", 0, b"\0\x02\0", 0xEE, b"\xff\xff\xff", 1, min(last, 0xFFFFFFFF))
    disk[510:512] = b"\x55\xaa"
    table = bytearray(entries * 128)
    for i, (type_guid, first, count) in enumerate(partitions):
        struct.pack_into("<16s16sQQQ", table, 128 * i, type_guid.bytes_le, uuid.uuid4().bytes_le, first,
                         first + count - 1, 0)
        table[128 * i + 56:128 * i + 56 + 16] = f"part{i}".encode("utf-16-le").ljust(16, b"\0")
    table_sectors = len(table) // SECTOR
    entries_crc = zlib.crc32(table) & 0xFFFFFFFF
    disk_guid = uuid.uuid4().bytes_le

    def header(my: int, alt: int, entries_lba: int) -> bytes:
        raw = bytearray(struct.pack("<8sIIIIQQQQ16sQIII", b"EFI PART", 0x00010000, 92, 0, 0, my, alt,
                                    2 + table_sectors, last - 1 - table_sectors, disk_guid, entries_lba,
                                    entries, 128, entries_crc))
        struct.pack_into("<I", raw, 16, zlib.crc32(raw) & 0xFFFFFFFF)
        return bytes(raw)

    disk[SECTOR:SECTOR + 92] = header(1, last, 2)
    disk[2 * SECTOR:2 * SECTOR + len(table)] = table
    backup = (last - table_sectors) * SECTOR
    disk[backup:backup + len(table)] = table
    disk[last * SECTOR:last * SECTOR + 92] = header(last, 1, last - table_sectors)
    return disk


def mbr_disk(size: int, partitions: list[tuple[int, int, int]], logical: list[tuple[int, int, int]],
             active: int = 0) -> bytearray:
    """An MBR disk; ``logical`` partitions go into an extended partition as a chain of EBRs."""
    disk = bytearray(size)
    primaries = list(partitions)
    if logical:
        ext_start = logical[0][1] - 2048
        ext_end = max(first + count for _t, first, count in logical)
        primaries.append((0x05, ext_start, ext_end - ext_start))
        for i, (ptype, first, count) in enumerate(logical):
            ebr = (first - 2048) * SECTOR
            disk[ebr + 446:ebr + 462] = struct.pack("<B3sB3sII", 0, b"\0\0\0", ptype, b"\0\0\0", 2048, count)
            if i + 1 < len(logical):
                nxt = logical[i + 1][1] - 2048
                disk[ebr + 462:ebr + 478] = struct.pack("<B3sB3sII", 0, b"\0\0\0", 0x05, b"\0\0\0",
                                                        nxt - ext_start, logical[i + 1][2] + 2048)
            disk[ebr + 510:ebr + 512] = b"\x55\xaa"
    for i, (ptype, first, count) in enumerate(primaries[:4]):
        disk[446 + 16 * i:462 + 16 * i] = struct.pack("<B3sB3sII", 0x80 if i == active else 0, b"\0\0\0", ptype,
                                                      b"\0\0\0", first, count)
    disk[510:512] = b"\x55\xaa"
    return disk


_MBR_FIELDS = [(446 + 16 * i + o, w) for i in range(4) for o, w in [(0, 1), (4, 1), (8, 4), (12, 4)]] + [(510, 2)]
_GPT_HEADER_FIELDS = [(0, 8), (8, 4), (12, 4), (24, 8), (32, 8), (40, 8), (48, 8), (72, 8), (80, 4), (84, 4)]
_GPT_ENTRY_FIELDS = [(128 * i + o, w) for i in range(3) for o, w in [(0, 16), (32, 8), (40, 8), (48, 8)]]
_EXT4_FIELDS = [(0, 4), (4, 4), (20, 4), (24, 4), (32, 4), (40, 4), (56, 2), (76, 4), (88, 2), (92, 4), (96, 4),
                (100, 4), (254, 2), (0x150, 4)]
_NTFS_FIELDS = [(3, 8), (11, 2), (13, 1), (14, 2), (21, 1), (40, 8), (48, 8), (56, 8), (64, 1), (68, 1)]
_FAT_FIELDS = [(11, 2), (13, 1), (14, 2), (16, 1), (17, 2), (19, 2), (22, 2), (32, 4), (36, 4), (44, 4)]

TABLE_FIELDS: list[Field] = (
    [("mbr", o, w, "<") for o, w in _MBR_FIELDS]
    + [("gpt_header", o, w, "<") for o, w in _GPT_HEADER_FIELDS]
    + [("gpt_entries", o, w, "<") for o, w in _GPT_ENTRY_FIELDS]
    + [("ebr", 446 + o, w, "<") for o, w in [(4, 1), (8, 4), (12, 4), (20, 1), (24, 4), (28, 4)]]
    + [("ext4_sb", o, w, "<") for o, w in _EXT4_FIELDS]
    + [("part_boot", o, w, "<") for o, w in _NTFS_FIELDS + _FAT_FIELDS]
)
TABLE_REGIONS = ["mbr", "gpt_header", "gpt_entries", "part0", "part1", "ext4_sb", "part_boot", "ebr"]
TABLE_CHECKSUMS = ["gpt_header", "gpt_entries"]


@dataclass(frozen=True)
class Volumes:
    """Filesystem images made once per session by real mkfs tools: ``name -> bytes``."""

    images: dict[str, bytes]


def make_volumes(folder: Path) -> Volumes:
    """Small ext4 (with symlink loops and a very deep tree), FAT32 and NTFS (Windows tree) volumes."""
    import subprocess

    images: dict[str, bytes] = {}
    tree = folder / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "os-release").write_text('ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian 12"\n')
    (tree / "etc" / "hostname").write_text("fuzz\n")
    (tree / "etc" / "fstab").write_text("/dev/sda1 / ext4 defaults 0 1\n")
    os.symlink("loop-b", tree / "etc" / "loop-a")
    os.symlink("loop-a", tree / "etc" / "loop-b")
    os.symlink("/etc/machine-id", tree / "etc" / "machine-id")  # points at itself through the root
    os.symlink("../../..", tree / "etc" / "up")
    (tree / "var" / "lib").mkdir(parents=True)
    os.symlink("/var/lib", tree / "var" / "lib" / "waagent")
    deep = tree / "deep"
    for _ in range(40):
        deep = deep / ("d" * 60)
    deep.mkdir(parents=True)
    os.symlink("/" + "/".join(["etc", "up"] * 60), deep / "far")
    ext4 = folder / "ext4.img"
    with open(ext4, "wb") as f:
        f.truncate(4 * MiB)
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "1024", "-d", str(tree), str(ext4)], check=True,
                   capture_output=True, env={**os.environ, "E2FSPROGS_FAKE_TIME": "1767225600"})
    images["ext4"] = ext4.read_bytes()
    fat = folder / "fat.img"
    with open(fat, "wb") as f:
        f.truncate(2 * MiB)
    subprocess.run(["mkfs.fat", "-F", "12", str(fat)], check=True, capture_output=True)
    subprocess.run(["mmd", "-i", str(fat), "::/EFI", "::/EFI/BOOT"], check=True, capture_output=True)
    loader = folder / "BOOTX64.EFI"
    loader.write_bytes(b"MZ" + bytes(100))
    subprocess.run(["mcopy", "-i", str(fat), str(loader), "::/EFI/BOOT/BOOTX64.EFI"], check=True,
                   capture_output=True)
    images["fat"] = fat.read_bytes()
    try:
        import importlib.util

        script = Path(__file__).resolve().parents[2] / "fixtures" / "windows" / "make_fixtures.py"
        spec = importlib.util.spec_from_file_location("make_fixtures_fuzz", script)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        import sys

        sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
        spec.loader.exec_module(module)
        if not module.missing_tools():
            wtree = folder / "wtree"
            module.build_tree(module.VARIANTS["specialized"], wtree)
            ntfs = folder / "ntfs.img"
            module.build_ntfs(wtree, ntfs)
            images["ntfs"] = ntfs.read_bytes()
            hive = (wtree / "Windows" / "System32" / "config" / "SOFTWARE").read_bytes()
            images["hive_software"] = hive
            images["hive_system"] = (wtree / "Windows" / "System32" / "config" / "SYSTEM").read_bytes()
    except (OSError, subprocess.CalledProcessError):
        pass
    return Volumes(images)


def _build_table(folder: Path, p: dict[str, Any], volumes: Volumes) -> tuple[Path, dict[str, int], dict[str, Op]]:
    contents = [volumes.images[name] for name in p["filesystems"] if name in volumes.images]
    first = 2048
    layout: list[tuple[int, int, bytes]] = []
    for data in contents:
        count = len(data) // SECTOR
        layout.append((first, count, data))
        first += count + 2048  # leave room for an EBR before each logical partition
    size = (first + 2048) * SECTOR
    regions: dict[str, int] = {"mbr": 0}
    checksums: dict[str, Op] = {}
    if p["scheme"] == "gpt":
        types = {"ext4": GPT_LINUX, "fat": GPT_ESP, "ntfs": GPT_BASIC}
        parts = [(types.get(name, GPT_LVM), f, c) for name, (f, c, _d) in zip(p["filesystems"], layout, strict=False)]
        disk = gpt_disk(size, parts)
        regions.update({"gpt_header": SECTOR, "gpt_entries": 2 * SECTOR})
        checksums = {"gpt_header": ("crc32", SECTOR, 92, 16), "gpt_entries": ("crc32_to", 2 * SECTOR, 128 * 128,
                                                                               SECTOR + 88)}
    else:
        mbr_types = {"ext4": 0x83, "fat": 0x0C, "ntfs": 0x07}
        parts = [(mbr_types[name], f, c) for name, (f, c, _d) in zip(p["filesystems"], layout, strict=False)]
        split = 1 if p["scheme"] == "mbr-logical" else len(parts)
        disk = mbr_disk(size, parts[:split], parts[split:])
        if parts[split:]:
            regions["ebr"] = (parts[split][1] - 2048) * SECTOR
    for i, (f, _c, data) in enumerate(layout):
        disk[f * SECTOR:f * SECTOR + len(data)] = data
        regions[f"part{i}"] = f * SECTOR
        if p["filesystems"][i] == "ext4":
            regions["ext4_sb"] = f * SECTOR + 1024
        else:
            regions["part_boot"] = f * SECTOR
    path = folder / "disk.raw"
    path.write_bytes(bytes(disk))
    return path, regions, checksums


def table_cases(volumes: Volumes, max_mutations: int = 4) -> st.SearchStrategy[Case]:
    """MBR (with logical partitions) or GPT disks holding real ext4 / FAT / NTFS volumes, then damaged."""
    names = [n for n in ("ext4", "fat", "ntfs") if n in volumes.images]

    @st.composite
    def strategy(draw: st.DrawFn) -> Case:
        params = {"scheme": draw(st.sampled_from(["gpt", "mbr", "mbr-logical"])),
                  "filesystems": tuple(draw(st.lists(st.sampled_from(names), min_size=1, max_size=3)))}
        regions = TABLE_REGIONS + ["part2"]
        muts = draw(mutations(TABLE_FIELDS, regions, TABLE_CHECKSUMS, max_mutations))
        # Filesystem damage further in: group descriptors, inode tables, MFT records, FATs, directories.
        deep = draw(st.lists(st.tuples(st.just("bytes"), st.sampled_from(["part0", "part1"]),
                                       st.integers(0, 256 * KiB), st.binary(min_size=1, max_size=32)), max_size=3))
        return Case("table-" + params["scheme"], params, muts + tuple(deep),
                    lambda folder, p: _build_table(folder, p, volumes))

    return strategy()


def hive_mutations(size: int) -> st.SearchStrategy[list[Op]]:
    """Damage to a registry hive: base block fields, hbin headers, cells; checksum repaired sometimes."""
    base_fields = [(4, 4), (8, 4), (28, 4), (32, 4), (36, 4), (40, 4), (44, 4)]
    one = st.one_of(
        st.sampled_from(base_fields).flatmap(lambda f: interesting_ints(f[1]).map(
            lambda v: ("write", f[0], (v[1] if v[0] == "abs" else max(0, size + v[1]) & 0xFFFFFFFF)
                       .to_bytes(f[1], "little")))),
        st.tuples(st.just("write"), st.integers(4096, max(4096, size - 1)), st.binary(min_size=1, max_size=8)),
        st.tuples(st.just("flip"), st.integers(0, size - 1), st.integers(0, 7)),
        st.tuples(st.just("write"), st.integers(4096, max(4096, size - 4)).map(lambda o: o - o % 8),
                  st.sampled_from([b"\xf8\xff\xff\xff", b"\x00\x00\x00\x80", b"\x20\x00\x00\x00", b"nk", b"lf",
                                   b"ri", b"\xff\xff\xff\xff", b"\x00\x00\x00\x00"])),
        st.tuples(st.just("truncate"), st.integers(0, size)),
    )
    return st.lists(one, min_size=1, max_size=5)
