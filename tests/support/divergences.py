"""Every condition on which vhdtool's readers refuse an image, warn, or read differently from qemu-img or
libvhdi, as a small image built to show it (docs/formats.md, "Where vhdtool differs from qemu-img and
libvhdi").

``tests/formats/test_divergences.py`` checks vhdtool's column of that table against these images and that the
table names every condition; ``python benchmarks/reader_divergence.py`` runs qemu-img and libvhdi on
them and prints their columns, so the table can be redone when either tool changes.
"""

from __future__ import annotations

import os
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from support.vhd_builder import (
    SECTOR,
    Layout,
    build_child,
    build_fixed_vhd,
    build_vhd,
    ones_complement_checksum,
)
from support.vhdx_builder import (
    BAT_GUID,
    FULLY_PRESENT,
    METADATA_GUID,
    PARTIALLY_PRESENT,
    SB_PRESENT,
    ZERO,
    Block,
    Built,
    LogWrite,
    build_vhdx,
    header_bytes,
    region_table_bytes,
    write_headers,
    write_log,
)
from vhdtool.extents import MiB

KiB = 1024
VHD_SIZE = 5 * MiB
VHD_SECTORS = {0: b"\x01" * SECTOR, 4095: b"\x02" * SECTOR, 5000: b"\x03" * SECTOR,
               VHD_SIZE // SECTOR - 1: b"\x04" * SECTOR}
VHDX_SIZE = 4 * MiB - 4 * KiB
# Offsets of the builder's metadata items after the 64 KiB table (each padded to 8 bytes).
ITEM_FILE_PARAMETERS, ITEM_LOGICAL_SECTOR, ITEM_PHYSICAL_SECTOR, ITEM_VIRTUAL_SIZE = 0, 32, 40, 8

# Outcomes of vhdtool: "read", "read, warning", "refused".
READ, WARNS, REFUSED = "read", "read, warning", "refused"


@dataclass(frozen=True)
class Condition:
    """An image showing one condition: ``build`` returns the chain, parents first, the image last."""

    key: str
    fmt: str  # "vhd" | "vhdx" (qemu-img's -f is "vpc" for VHD)
    text: str  # the condition as docs/formats.md words it
    vhdtool: str
    build: Callable[[Path], list[Path]]


def patch(path: Path | str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


# --- VHD ----------------------------------------------------------------------------------------


def _dynamic(folder: Path, **kwargs: object) -> tuple[Path, Layout]:
    path = folder / "dynamic.vhd"
    layout = build_vhd(path, VHD_SIZE, VHD_SECTORS, block_size=2 * MiB, fill=0, creator=b"win ",
                       **kwargs)  # type: ignore[arg-type]
    return path, layout


def _vhd_footers(path: Path, layout: Layout, field: int, data: bytes, copies: tuple[int, ...] | None = None) -> None:
    """Set a footer field in both copies (or those at ``copies``) and fix their checksums."""
    for offset in copies if copies is not None else (0, layout.footer_offset):
        with open(path, "r+b") as f:
            f.seek(offset)
            footer = bytearray(f.read(SECTOR))
            footer[field:field + len(data)] = data
            footer[64:68] = ones_complement_checksum(footer, 64).to_bytes(4, "big")
            f.seek(offset)
            f.write(footer)


def _vhd_header(path: Path, layout: Layout, field: int, data: bytes) -> None:
    """Set a dynamic header field and fix the header checksum, so only that field is odd."""
    with open(path, "r+b") as f:
        f.seek(layout.header_offset)
        header = bytearray(f.read(1024))
        header[field:field + len(data)] = data
        header[36:40] = ones_complement_checksum(header, 36).to_bytes(4, "big")
        f.seek(layout.header_offset)
        f.write(header)


def _vhd_bat(path: Path, layout: Layout, block: int, sector: int) -> None:
    patch(path, layout.bat_offset + 4 * block, struct.pack(">I", sector))


def _one(make: Callable[[Path], Path]) -> Callable[[Path], list[Path]]:
    return lambda folder: [make(folder)]


def vhd_end_footer_bad(folder: Path) -> Path:
    path, layout = _dynamic(folder)
    patch(path, layout.footer_offset + 64, b"\x12\x34\x56\x78")
    return path


def vhd_both_footers_bad(folder: Path) -> Path:
    path, layout = _dynamic(folder)
    for offset in (64, layout.footer_offset + 64):
        patch(path, offset, b"\x12\x34\x56\x78")
    return path


def vhd_fixed_footer_bad(folder: Path) -> Path:
    path = folder / "fixed.vhd"
    build_fixed_vhd(path, VHD_SIZE, [(0, b"\x01" * 4096)])
    patch(path, VHD_SIZE + 64, b"\x12\x34\x56\x78")
    return path


def vhd_no_copy(folder: Path) -> Path:
    return _dynamic(folder, footer_copy=False)[0]


def vhd_disk_type(folder: Path) -> Path:
    path, layout = _dynamic(folder)
    _vhd_footers(path, layout, 60, struct.pack(">I", 5))
    return path


def vhd_header_checksum(folder: Path) -> Path:
    path, layout = _dynamic(folder)
    patch(path, layout.header_offset + 36, b"\x12\x34\x56\x78")
    return path


def vhd_header_cookie(folder: Path) -> Path:
    path, layout = _dynamic(folder)
    _vhd_header(path, layout, 0, b"cxspars_")
    return path


def vhd_header_version(folder: Path) -> Path:
    path, layout = _dynamic(folder)
    _vhd_header(path, layout, 24, struct.pack(">I", 0x00020000))
    return path


def vhd_block_not_power_of_two(folder: Path) -> Path:
    path, layout = _dynamic(folder)
    _vhd_header(path, layout, 32, struct.pack(">I", 3 * MiB))
    return path


def vhd_block_huge(folder: Path) -> Path:
    """One 512 MiB block holding a 5 MiB disk, stopped at the disk's end (qemu wants the whole block)."""
    path = folder / "dynamic.vhd"
    build_vhd(path, VHD_SIZE, VHD_SECTORS, block_size=512 * MiB, fill=0, creator=b"win ", truncate_last=True)
    return path


def vhd_bat_short(folder: Path) -> Path:
    path, layout = _dynamic(folder)
    _vhd_header(path, layout, 28, struct.pack(">I", 2))  # 3 blocks of 2 MiB needed
    return path


def vhd_bat_past(folder: Path) -> Path:
    path, layout = _dynamic(folder)
    _vhd_header(path, layout, 16, struct.pack(">Q", layout.footer_offset - 4))
    return path


def vhd_block_on_bat(folder: Path) -> Path:
    path, layout = _dynamic(folder)
    _vhd_bat(path, layout, 1, layout.bat_offset // SECTOR)
    return path


def vhd_blocks_overlap(folder: Path) -> Path:
    path, layout = _dynamic(folder)
    _vhd_bat(path, layout, 2, layout.block_offsets[0] // SECTOR + 8)
    return path


def vhd_block_past(folder: Path) -> Path:
    path, layout = _dynamic(folder)
    with open(path, "rb") as f:
        footer = f.read(SECTOR)  # the copy at offset 0 is the footer
    # Block 2 holds the disk's last 1 MiB: cut its block to 1 MiB - 4 KiB, then the footer.
    os.truncate(path, layout.footer_offset - (2 * MiB - 1 * MiB) - 4 * KiB)
    with open(path, "ab") as f:
        f.write(footer)
    return path


def vhd_last_block_short(folder: Path) -> Path:
    path = folder / "dynamic.vhd"
    build_vhd(path, VHD_SIZE, VHD_SECTORS, block_size=2 * MiB, fill=0, creator=b"win ", truncate_last=True)
    return path


def vhd_fixed_short(folder: Path) -> Path:
    path = folder / "fixed.vhd"
    build_fixed_vhd(path, VHD_SIZE, [(0, b"\x01" * 4096)])
    with open(path, "rb") as f:
        f.seek(VHD_SIZE)
        footer = f.read(SECTOR)
    os.truncate(path, VHD_SIZE - 64 * KiB)
    with open(path, "ab") as f:
        f.write(footer)
    return path


def vhd_fixed_extra(folder: Path) -> Path:
    path = folder / "fixed.vhd"
    build_fixed_vhd(path, VHD_SIZE, [(0, b"\x01" * 4096)])
    with open(path, "r+b") as f:
        f.seek(VHD_SIZE)
        footer = bytearray(f.read(SECTOR))
        footer[48:56] = struct.pack(">Q", VHD_SIZE - 64 * KiB)  # current size below the data part
        footer[64:68] = ones_complement_checksum(footer, 64).to_bytes(4, "big")
        f.seek(VHD_SIZE)
        f.write(footer)
    return path


def vhd_creator_chs(folder: Path) -> Path:
    path = folder / "fixed.vhd"
    build_fixed_vhd(path, VHD_SIZE + 1536, [(0, b"\x01" * 4096), (VHD_SIZE + 1024, b"\x02" * 512)],
                    creator=b"vbox")
    return path


def _vhd_chain(folder: Path) -> tuple[Path, Path, Layout]:
    base, _ = _dynamic(folder)
    child = folder / "child.vhd"
    layout = build_child(child, base, {8: b"\x09" * SECTOR}, block_size=2 * MiB, fill=0, creator=b"win ")
    return base, child, layout


def vhd_parent_id(folder: Path) -> list[Path]:
    base, child, layout = _vhd_chain(folder)
    _vhd_header(child, layout, 40, uuid.uuid4().bytes)
    return [base, child]


def vhd_parent_size(folder: Path) -> list[Path]:
    base, child, layout = _vhd_chain(folder)
    _vhd_footers(child, layout, 48, struct.pack(">Q", VHD_SIZE - 2 * MiB))
    _vhd_footers(child, layout, 40, struct.pack(">Q", VHD_SIZE - 2 * MiB))
    return [base, child]


def vhd_locator_past(folder: Path) -> list[Path]:
    base, child, layout = _vhd_chain(folder)
    entry = layout.locator_entry_offsets[0] - layout.header_offset
    _vhd_header(child, layout, entry + 16, struct.pack(">Q", layout.footer_offset + 4 * KiB))
    return [base, child]


# --- VHDX ---------------------------------------------------------------------------------------


def _vhdx(folder: Path, name: str = "disk.vhdx", **kwargs: object) -> Built:
    kwargs.setdefault("blocks", {0: Block(FULLY_PRESENT, b"\x5a" * MiB), 3: Block(FULLY_PRESENT, b"\xa5" * MiB)})
    return build_vhdx(folder / name, VHDX_SIZE, **kwargs)  # type: ignore[arg-type]


def _vhdx_one(make: Callable[[Built], None], **kwargs: object) -> Callable[[Path], list[Path]]:
    def build(folder: Path) -> list[Path]:
        built = _vhdx(folder, **kwargs)  # type: ignore[arg-type]
        make(built)
        return [Path(built.path)]
    return build


def _item(built: Built, item: int, data: bytes) -> None:
    patch(built.path, built.metadata_offset + 64 * KiB + item, data)


def _bat(built: Built, block: int, entry: int) -> None:
    patch(built.path, built.bat_entry_offset(block), struct.pack("<Q", entry))


def _regions(built: Built, entries: list[tuple[uuid.UUID, int, int, bool]], copies: tuple[int, ...] = (1, 2)) -> None:
    for copy in copies:
        patch(built.path, (192 if copy == 1 else 256) * KiB, region_table_bytes(entries))


def _standard_regions(built: Built) -> list[tuple[uuid.UUID, int, int, bool]]:
    return [(BAT_GUID, built.bat_offset, built.bat_length, True), (METADATA_GUID, built.metadata_offset, MiB, True)]


def vhdx_one_header_bad(built: Built) -> None:
    patch(built.path, 128 * KiB + 100, b"\xff")  # header 2 (the current one)


def vhdx_headers_bad(built: Built) -> None:
    patch(built.path, 64 * KiB + 100, b"\xff")
    patch(built.path, 128 * KiB + 100, b"\xff")


def vhdx_header_v2(built: Built) -> None:
    patch(built.path, 128 * KiB, header_bytes(9, built.file_write_guid, built.data_write_guid, uuid.UUID(int=0),
                                              built.log_offset, built.log_length, version=2))


def vhdx_equal_sequence(built: Built) -> None:
    patch(built.path, 64 * KiB, header_bytes(7, built.file_write_guid, built.data_write_guid, uuid.UUID(int=0),
                                             built.log_offset, built.log_length))
    patch(built.path, 128 * KiB, header_bytes(7, uuid.uuid4(), built.data_write_guid, uuid.UUID(int=0),
                                              built.log_offset, built.log_length))


def vhdx_region1_bad(built: Built) -> None:
    patch(built.path, 192 * KiB + 100, b"\xff")


def vhdx_regions_bad(built: Built) -> None:
    patch(built.path, 192 * KiB + 100, b"\xff")
    patch(built.path, 256 * KiB + 100, b"\xff")


def vhdx_unknown_required_region(built: Built) -> None:
    _regions(built, [*_standard_regions(built), (uuid.uuid4(), built.end - MiB, MiB, True)])


def vhdx_unknown_optional_region(built: Built) -> None:
    _regions(built, [*_standard_regions(built), (uuid.uuid4(), built.end - MiB, MiB, False)])


def vhdx_region_unaligned(built: Built) -> None:
    _regions(built, [(BAT_GUID, built.bat_offset, built.bat_length, True),
                     (METADATA_GUID, built.metadata_offset, 512 * KiB, True)])


def vhdx_regions_overlap(built: Built) -> None:
    _regions(built, [(BAT_GUID, built.bat_offset, built.bat_length, True),
                     (METADATA_GUID, built.bat_offset, MiB, True)])


def _item_entry(built: Built, index: int) -> int:
    """File offset of metadata table entry ``index`` (the builder lists file parameters, virtual size,
    page 83, logical and physical sector size, in that order)."""
    return built.metadata_offset + 32 + 32 * index


def vhdx_item_missing(built: Built) -> None:
    patch(built.path, _item_entry(built, 3), uuid.uuid4().bytes_le + struct.pack("<III", 64 * KiB + 32, 4, 0))


def vhdx_item_outside(built: Built) -> None:
    patch(built.path, _item_entry(built, 3) + 16, struct.pack("<I", MiB - 2))


def vhdx_bat_region_small(built: Built) -> None:
    _item(built, ITEM_VIRTUAL_SIZE, struct.pack("<Q", 1 << 40))


def vhdx_block_size(built: Built) -> None:
    _item(built, ITEM_FILE_PARAMETERS, struct.pack("<I", 3 * MiB))


def vhdx_logical_1024(built: Built) -> None:
    _item(built, ITEM_LOGICAL_SECTOR, struct.pack("<I", 1024))


def vhdx_physical_1024(built: Built) -> None:
    _item(built, ITEM_PHYSICAL_SECTOR, struct.pack("<I", 1024))


def vhdx_size_unaligned(built: Built) -> None:
    _item(built, ITEM_VIRTUAL_SIZE, struct.pack("<Q", VHDX_SIZE - 100))


def vhdx_state_4(built: Built) -> None:
    _bat(built, 1, 4)


def vhdx_partial_without_parent(built: Built) -> None:
    _bat(built, 1, PARTIALLY_PRESENT | (built.block_offsets[3] + MiB))


def vhdx_offset_0(built: Built) -> None:
    _bat(built, 1, FULLY_PRESENT)


def vhdx_block_past(built: Built) -> None:
    _bat(built, 1, FULLY_PRESENT | built.end)


def vhdx_block_on_metadata(built: Built) -> None:
    _bat(built, 1, FULLY_PRESENT | built.metadata_offset)


def vhdx_blocks_overlap(built: Built) -> None:
    _bat(built, 1, FULLY_PRESENT | built.block_offsets[0])


def vhdx_bitmap_without_parent(folder: Path) -> list[Path]:
    """The first sector bitmap entry follows 4 GiB of payload entries: a sparse 4 GiB + 1 MiB disk."""
    built = build_vhdx(folder / "disk.vhdx", 4097 * MiB, blocks={0: Block(FULLY_PRESENT, b"\x5a" * MiB),
                                                                 4096: Block(FULLY_PRESENT, b"\xa5" * MiB)})
    patch(built.path, built.bat_offset + 8 * built.chunk_ratio, struct.pack("<Q", SB_PRESENT | built.block_offsets[0]))
    return [Path(built.path)]


def vhdx_last_block_short(folder: Path) -> list[Path]:
    return [Path(_vhdx(folder, leave_blocks_allocated=True, truncate_last=True, blocks={
        n: Block(FULLY_PRESENT, bytes([n + 1]) * MiB) for n in range(4)}).path)]


def vhdx_logical_4096(folder: Path) -> list[Path]:
    return [Path(_vhdx(folder, logical_sector_size=4096, physical_sector_size=4096).path)]


def _dirty(folder: Path, spare: int = 0) -> Built:
    built = _vhdx(folder, spare=spare)
    write_log(built, [[LogWrite(built.block_offsets[0] + 8 * KiB, b"\x77" * (4 * KiB))]])
    return built


def vhdx_dirty_log(folder: Path) -> list[Path]:
    return [Path(_dirty(folder).path)]


def vhdx_log_truncated(folder: Path) -> list[Path]:
    built = _dirty(folder, spare=MiB)
    os.truncate(built.path, built.end - MiB)  # the log recorded the longer file
    return [Path(built.path)]


def vhdx_log_outside(built: Built) -> None:
    write_headers(built.path, built)  # clean headers, then a log range past the end of the file
    patch(built.path, 128 * KiB, header_bytes(9, built.file_write_guid, built.data_write_guid, uuid.UUID(int=0),
                                              built.end, built.log_length))


def _vhdx_chain(folder: Path, parent: dict[str, object], child: dict[str, object] | None = None,
                child_blocks: dict[int, Block] | None = None) -> list[Path]:
    base = _vhdx(folder, "base.vhdx", **parent)
    size = int(child.pop("size")) if child and "size" in child else VHDX_SIZE  # type: ignore[call-overload]
    # A partially present block gives the child a sector bitmap block: libvhdi 20260901 misreads some
    # parent sectors of a child without one.
    blocks = {1: Block(FULLY_PRESENT, b"\x33" * MiB),
              2: Block(PARTIALLY_PRESENT, b"\x44" * MiB, [i % 3 == 0 for i in range(MiB // SECTOR)]),
              **(child_blocks or {})}
    kid = build_vhdx(folder / "child.vhdx", size, blocks=blocks,
                     parent_locator={"parent_linkage": "{" + str(base.data_write_guid) + "}",
                                     "relative_path": ".\\base.vhdx"}, **(child or {}))  # type: ignore[arg-type]
    return [Path(base.path), Path(kid.path)]


def vhdx_no_linkage(folder: Path) -> list[Path]:
    base = _vhdx(folder, "base.vhdx")
    child = build_vhdx(folder / "child.vhdx", VHDX_SIZE, parent_locator={"relative_path": ".\\base.vhdx"})
    return [Path(base.path), Path(child.path)]


def vhdx_parent_linkage(folder: Path) -> list[Path]:
    paths = _vhdx_chain(folder, {})
    base = _vhdx(folder, "base.vhdx")  # rebuilt: a new DataWriteGuid, as after the parent was changed
    return [Path(base.path), paths[1]]


CONDITIONS: list[Condition] = [
    # VHD
    Condition("vhd-end-footer-bad", "vhd", "dynamic VHD: the footer at the end has a wrong checksum, the copy at "
              "offset 0 is good", WARNS, _one(vhd_end_footer_bad)),
    Condition("vhd-both-footers-bad", "vhd", "dynamic VHD: both footers have a wrong checksum", REFUSED,
              _one(vhd_both_footers_bad)),
    Condition("vhd-fixed-footer-bad", "vhd", "fixed VHD: the footer has a wrong checksum", WARNS,
              _one(vhd_fixed_footer_bad)),
    Condition("vhd-no-footer-copy", "vhd", "dynamic VHD: no footer copy at offset 0", WARNS, _one(vhd_no_copy)),
    Condition("vhd-disk-type", "vhd", "footer disk type not 2, 3 or 4", REFUSED, _one(vhd_disk_type)),
    Condition("vhd-header-checksum", "vhd", "dynamic header has a wrong checksum", REFUSED,
              _one(vhd_header_checksum)),
    Condition("vhd-header-cookie", "vhd", "dynamic header cookie is not `cxsparse`", REFUSED,
              _one(vhd_header_cookie)),
    Condition("vhd-header-version", "vhd", "dynamic header version is not 1.0", REFUSED, _one(vhd_header_version)),
    Condition("vhd-block-size", "vhd", "block size not a power of two", REFUSED, _one(vhd_block_not_power_of_two)),
    Condition("vhd-block-huge", "vhd", "block size above 256 MiB", REFUSED, _one(vhd_block_huge)),
    Condition("vhd-bat-short", "vhd", "BAT has fewer entries than the disk has blocks", REFUSED, _one(vhd_bat_short)),
    Condition("vhd-bat-past", "vhd", "BAT runs past the footer", REFUSED, _one(vhd_bat_past)),
    Condition("vhd-block-on-bat", "vhd", "a block overlaps the BAT (or header, footer copy, locator data)",
              REFUSED, _one(vhd_block_on_bat)),
    Condition("vhd-blocks-overlap", "vhd", "two blocks share file space", REFUSED, _one(vhd_blocks_overlap)),
    Condition("vhd-block-past", "vhd", "a block's bytes inside the virtual size lie past the footer", REFUSED,
              _one(vhd_block_past)),
    Condition("vhd-last-block-short", "vhd", "the last block stops at the virtual size, the footer right after",
              READ, _one(vhd_last_block_short)),
    Condition("vhd-fixed-short", "vhd", "fixed VHD: fewer data bytes than the current size", REFUSED,
              _one(vhd_fixed_short)),
    Condition("vhd-fixed-extra", "vhd", "fixed VHD: more data bytes than the current size", WARNS,
              _one(vhd_fixed_extra)),
    Condition("vhd-creator-chs", "vhd", "fixed VHD by `vbox`, `vpc ` or `wa  `: the CHS geometry is smaller than "
              "the current size", READ, _one(vhd_creator_chs)),
    Condition("vhd-parent-id", "vhd", "differencing VHD: the parent's unique id is not the one recorded", REFUSED,
              vhd_parent_id),
    Condition("vhd-parent-size", "vhd", "differencing VHD: the parent's size differs", REFUSED, vhd_parent_size),
    Condition("vhd-locator-past", "vhd", "differencing VHD: a parent locator's data lies past the footer", WARNS,
              vhd_locator_past),
    # VHDX
    Condition("vhdx-one-header-bad", "vhdx", "one header has a wrong CRC-32C", WARNS, _vhdx_one(vhdx_one_header_bad)),
    Condition("vhdx-headers-bad", "vhdx", "both headers have a wrong CRC-32C", REFUSED, _vhdx_one(vhdx_headers_bad)),
    Condition("vhdx-header-v2", "vhdx", "the current header has version 2 (the other is a valid version 1)",
              REFUSED, _vhdx_one(vhdx_header_v2)),
    Condition("vhdx-equal-sequence", "vhdx", "both headers valid with equal sequence numbers but different "
              "contents", READ, _vhdx_one(vhdx_equal_sequence)),
    Condition("vhdx-region1-bad", "vhdx", "region table 1 has a wrong CRC-32C, table 2 is good", WARNS,
              _vhdx_one(vhdx_region1_bad)),
    Condition("vhdx-regions-bad", "vhdx", "both region tables have a wrong CRC-32C", REFUSED,
              _vhdx_one(vhdx_regions_bad)),
    Condition("vhdx-unknown-required-region", "vhdx", "an unknown region marked required", REFUSED,
              _vhdx_one(vhdx_unknown_required_region, spare=MiB)),
    Condition("vhdx-unknown-optional-region", "vhdx", "an unknown region not marked required", READ,
              _vhdx_one(vhdx_unknown_optional_region, spare=MiB)),
    Condition("vhdx-region-unaligned", "vhdx", "a region whose offset or length is not a multiple of 1 MiB",
              WARNS, _vhdx_one(vhdx_region_unaligned)),
    Condition("vhdx-regions-overlap", "vhdx", "the BAT and metadata regions overlap", REFUSED,
              _vhdx_one(vhdx_regions_overlap)),
    Condition("vhdx-unknown-required-item", "vhdx", "an unknown metadata item marked required", REFUSED,
              _vhdx_one(lambda built: None, extra_items=[(uuid.UUID(int=7), 4, bytes(8))])),
    Condition("vhdx-item-missing", "vhdx", "a system metadata item is missing (here the logical sector size)",
              REFUSED, _vhdx_one(vhdx_item_missing)),
    Condition("vhdx-item-outside", "vhdx", "a metadata item lies outside the metadata region", REFUSED,
              _vhdx_one(vhdx_item_outside)),
    Condition("vhdx-bat-region-small", "vhdx", "the BAT region is too small for the virtual size", REFUSED,
              _vhdx_one(vhdx_bat_region_small)),
    Condition("vhdx-block-size", "vhdx", "block size not a power of two from 1 MiB to 256 MiB", REFUSED,
              _vhdx_one(vhdx_block_size)),
    Condition("vhdx-logical-1024", "vhdx", "logical sector size neither 512 nor 4096", REFUSED,
              _vhdx_one(vhdx_logical_1024)),
    Condition("vhdx-physical-1024", "vhdx", "physical sector size neither 512 nor 4096", WARNS,
              _vhdx_one(vhdx_physical_1024)),
    Condition("vhdx-size-unaligned", "vhdx", "virtual size not a multiple of the logical sector size", REFUSED,
              _vhdx_one(vhdx_size_unaligned)),
    Condition("vhdx-logical-4096", "vhdx", "4096-byte logical sectors", READ, vhdx_logical_4096),
    Condition("vhdx-state-4", "vhdx", "a payload BAT entry in an undefined state (4, 5)", REFUSED,
              _vhdx_one(vhdx_state_4)),
    Condition("vhdx-partial-without-parent", "vhdx", "PARTIALLY_PRESENT in a disk without parent", REFUSED,
              _vhdx_one(vhdx_partial_without_parent)),
    Condition("vhdx-offset-0", "vhdx", "a present block at file offset 0", REFUSED, _vhdx_one(vhdx_offset_0)),
    Condition("vhdx-block-past", "vhdx", "a present block's bytes inside the virtual size lie past the end of "
              "the file", REFUSED, _vhdx_one(vhdx_block_past)),
    Condition("vhdx-last-block-short", "vhdx", "the last block stops at the virtual size, at the end of the file "
              "(qemu-img's fixed disks)", READ, vhdx_last_block_short),
    Condition("vhdx-block-on-metadata", "vhdx", "a present block overlaps the header area, log, BAT or metadata",
              REFUSED, _vhdx_one(vhdx_block_on_metadata)),
    Condition("vhdx-blocks-overlap", "vhdx", "two present blocks share file space", REFUSED,
              _vhdx_one(vhdx_blocks_overlap)),
    Condition("vhdx-bitmap-without-parent", "vhdx", "a sector bitmap block present in a disk without parent",
              WARNS, vhdx_bitmap_without_parent),
    Condition("vhdx-dirty-log", "vhdx", "a log to replay (the disk was copied while attached)", READ,
              vhdx_dirty_log),
    Condition("vhdx-log-truncated", "vhdx", "the log records a longer file than there is", REFUSED,
              vhdx_log_truncated),
    Condition("vhdx-log-outside", "vhdx", "a clean log (LogGuid zero) whose range lies past the end of the file",
              WARNS, _vhdx_one(vhdx_log_outside)),
    Condition("vhdx-parent-linkage", "vhdx", "differencing VHDX: the parent's DataWriteGuid is not the linkage",
              REFUSED, vhdx_parent_linkage),
    Condition("vhdx-no-linkage", "vhdx", "differencing VHDX: the parent locator has no `parent_linkage`", REFUSED,
              vhdx_no_linkage),
    Condition("vhdx-parent-size", "vhdx", "differencing VHDX: the parent's virtual size differs", REFUSED,
              lambda folder: _vhdx_chain(folder, {}, {"size": VHDX_SIZE - 4 * KiB})),
    Condition("vhdx-parent-logical", "vhdx", "differencing VHDX: the parent's logical sector size differs",
              REFUSED, lambda folder: _vhdx_chain(folder, {"logical_sector_size": 4096})),
    Condition("vhdx-parent-physical", "vhdx", "differencing VHDX: the parent's physical sector size differs",
              READ, lambda folder: _vhdx_chain(folder, {}, {"physical_sector_size": 4096})),
    Condition("vhdx-child-zero-block", "vhdx", "differencing VHDX: a child block in the ZERO state over parent "
              "data", READ, lambda folder: _vhdx_chain(folder, {}, child_blocks={0: Block(ZERO)})),
]
