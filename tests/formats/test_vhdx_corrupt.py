"""Damaged and hostile VHDX files: each must give a typed error naming the structure and byte offset
(or fall back to the valid copy where the format keeps two), never a crash or a huge allocation."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import pytest
from support.vhdx_builder import (
    BAT_GUID,
    FULLY_PRESENT,
    METADATA_GUID,
    PARTIALLY_PRESENT,
    Block,
    Built,
    build_vhdx,
    crc,
    header_bytes,
    region_table_bytes,
)

from vhdtool.errors import ImageError, UnsupportedImageError
from vhdtool.extents import MiB
from vhdtool.formats.open import open_image

KiB = 1024
# Offsets of the builder's metadata items after the 64 KiB table (each padded to 8 bytes).
ITEM_FILE_PARAMETERS, ITEM_VIRTUAL_SIZE, ITEM_LOGICAL_SECTOR = 0, 8, 32


def patch(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def plain(tmp_path: Path, **kw: object) -> Built:
    kw.setdefault("blocks", {0: Block(FULLY_PRESENT, b"\x5a" * MiB), 2: Block(FULLY_PRESENT, b"\xa5" * MiB)})
    return build_vhdx(tmp_path / "disk.vhdx", 4 * MiB, **kw)  # type: ignore[arg-type]


def test_bad_header_falls_back_to_the_other(tmp_path: Path) -> None:
    built = plain(tmp_path)
    patch(built.path, 128 * KiB + 100, b"\xff")  # header 2 (the current one) damaged
    with open_image(built.path) as disk:
        assert disk.info()["vhdx"]["active_header"] == 1
        assert any("header 2" in w for w in disk.warnings)
        assert disk.read(0, 2) == b"\x5a\x5a"


def test_higher_sequence_number_wins(tmp_path: Path) -> None:
    built = plain(tmp_path)
    patch(built.path, 64 * KiB, header_bytes(9, built.file_write_guid, built.data_write_guid,
                                            uuid.UUID(int=0), built.log_offset, built.log_length))
    with open_image(built.path) as disk:
        assert disk.info()["vhdx"]["active_header"] == 1
        assert disk.info()["vhdx"]["header_sequence_number"] == 9


def test_both_headers_bad(tmp_path: Path) -> None:
    built = plain(tmp_path)
    patch(built.path, 64 * KiB, b"HEAD")
    patch(built.path, 128 * KiB + 8, b"\x01")
    with pytest.raises(ImageError) as info:
        open_image(built.path)
    assert info.value.offset == 64 * KiB and "no valid header" in str(info.value)


def test_unsupported_version(tmp_path: Path) -> None:
    built = plain(tmp_path)
    for at, seq in ((64 * KiB, 1), (128 * KiB, 2)):
        patch(built.path, at, header_bytes(seq, built.file_write_guid, built.data_write_guid,
                                           uuid.UUID(int=0), built.log_offset, built.log_length, version=2))
    with pytest.raises(UnsupportedImageError, match="version 2"):
        open_image(built.path)


def test_region_table_fallback_and_failure(tmp_path: Path) -> None:
    built = plain(tmp_path)
    patch(built.path, 192 * KiB + 40, b"\x77")
    with open_image(built.path) as disk:
        assert any("region table 1" in w for w in disk.warnings)
    patch(built.path, 256 * KiB + 40, b"\x77")
    with pytest.raises(ImageError, match="CRC-32C") as info:
        open_image(built.path)
    assert info.value.offset == 192 * KiB


def test_unknown_regions(tmp_path: Path) -> None:
    optional = uuid.uuid4()
    built = plain(tmp_path, extra_regions=[(optional, 20 * MiB, MiB, False)])
    open_image(built.path).close()  # an optional unknown region is skipped
    built = plain(tmp_path, extra_regions=[(uuid.uuid4(), 20 * MiB, MiB, True)])
    with pytest.raises(UnsupportedImageError, match="required region"):
        open_image(built.path)


def test_region_outside_file(tmp_path: Path) -> None:
    built = plain(tmp_path)
    table = region_table_bytes([(BAT_GUID, built.bat_offset, 4096 * MiB - MiB, True),
                                (METADATA_GUID, built.metadata_offset, MiB, True)])
    patch(built.path, 192 * KiB, table)
    patch(built.path, 256 * KiB, table)
    with pytest.raises(ImageError, match="inside the file") as info:
        open_image(built.path)
    assert info.value.offset == built.bat_offset


def test_metadata_unknown_required_item(tmp_path: Path) -> None:
    plain(tmp_path, extra_items=[(uuid.uuid4(), 0, b"optional")])
    open_image(tmp_path / "disk.vhdx").close()
    plain(tmp_path, extra_items=[(uuid.uuid4(), 4, b"required")])
    with pytest.raises(UnsupportedImageError, match="required item"):
        open_image(tmp_path / "disk.vhdx")


@pytest.mark.parametrize(("item", "value", "message"), [
    (ITEM_FILE_PARAMETERS, struct.pack("<I", 3 * MiB), "block size"),
    (ITEM_FILE_PARAMETERS, struct.pack("<I", 512 * MiB), "block size"),
    (ITEM_VIRTUAL_SIZE, struct.pack("<Q", 0), "virtual disk size"),
    (ITEM_VIRTUAL_SIZE, struct.pack("<Q", 4 * MiB + 100), "virtual disk size"),
    (ITEM_VIRTUAL_SIZE, struct.pack("<Q", 65 * 1024**4), "virtual disk size"),
    (ITEM_LOGICAL_SECTOR, struct.pack("<I", 1024), "logical sector size"),
])
def test_metadata_values_validated(tmp_path: Path, item: int, value: bytes, message: str) -> None:
    built = plain(tmp_path)
    at = built.metadata_offset + 64 * KiB + item
    patch(built.path, at, value)
    with pytest.raises(ImageError, match=message) as info:
        open_image(built.path)
    assert info.value.offset == at


def test_metadata_bad_signature(tmp_path: Path) -> None:
    built = plain(tmp_path)
    patch(built.path, built.metadata_offset, b"METADATA")
    with pytest.raises(ImageError, match="signature") as info:
        open_image(built.path)
    assert info.value.offset == built.metadata_offset


def test_huge_virtual_size_needs_a_huge_bat(tmp_path: Path) -> None:
    """A size field of 64 TiB over a 1 MiB BAT region: refused before anything is allocated."""
    built = plain(tmp_path)
    patch(built.path, built.metadata_offset + 64 * KiB + ITEM_VIRTUAL_SIZE, struct.pack("<Q", 64 * 1024**4))
    with pytest.raises(ImageError, match="cannot hold") as info:
        open_image(built.path)
    assert info.value.structure == "VHDX BAT region"


def bat_error(built: Built, block: int, entry: int) -> ImageError:
    patch(built.path, built.bat_entry_offset(block), struct.pack("<Q", entry))
    with pytest.raises(ImageError) as info:
        open_image(built.path)
    assert info.value.structure == f"VHDX BAT entry {built.bat_index(block)}"
    assert info.value.offset == built.bat_entry_offset(block)
    return info.value


def test_bat_entry_past_end_of_file(tmp_path: Path) -> None:
    built = plain(tmp_path)
    assert "past the end" in str(bat_error(built, 3, FULLY_PRESENT | (built.end + 4 * MiB)))


def test_bat_entries_overlapping(tmp_path: Path) -> None:
    built = plain(tmp_path)
    error = bat_error(built, 2, FULLY_PRESENT | built.block_offsets[0])
    assert "overlaps the block of BAT entry 0" in str(error)


@pytest.mark.parametrize("target", ["header", "log", "metadata", "bat"])
def test_bat_entry_into_reserved_areas(tmp_path: Path, target: str) -> None:
    built = plain(tmp_path)
    offset = {"header": 0, "log": built.log_offset, "metadata": built.metadata_offset,
              "bat": built.bat_offset}[target]
    entry = FULLY_PRESENT | offset
    if offset == 0:
        assert "file offset is 0" in str(bat_error(built, 3, entry))
    else:
        assert "overlaps the" in str(bat_error(built, 3, entry))


def test_bat_invalid_states(tmp_path: Path) -> None:
    built = plain(tmp_path)
    assert "invalid state 4" in str(bat_error(built, 3, 4))
    built = plain(tmp_path)
    assert "without parent" in str(bat_error(built, 3, PARTIALLY_PRESENT | built.block_offsets[2] + 4 * MiB))


def test_partial_block_without_bitmap(tmp_path: Path) -> None:
    base = build_vhdx(tmp_path / "base.vhdx", 2 * MiB)
    child = build_vhdx(tmp_path / "child.vhdx", 2 * MiB, parent_locator={
        "parent_linkage": str(base.data_write_guid), "relative_path": "base.vhdx"},
        blocks={0: Block(PARTIALLY_PRESENT, bytes(MiB), [True] * 8)})
    patch(child.path, child.bat_offset + 8 * child.chunk_ratio, bytes(8))  # drop the sector bitmap entry
    with pytest.raises(ImageError, match="no sector bitmap"):
        open_image(child.path)


def test_log_region_outside_file(tmp_path: Path) -> None:
    built = plain(tmp_path)
    raw = bytearray(header_bytes(7, built.file_write_guid, built.data_write_guid, uuid.uuid4(),
                                 built.end + 8 * MiB, MiB))
    patch(built.path, 128 * KiB, bytes(raw))
    with pytest.raises(ImageError, match="log at") as info:
        open_image(built.path)
    assert info.value.offset == 128 * KiB


def test_header_crc_is_over_4_kib(tmp_path: Path) -> None:
    """A change in the reserved part of a header (past the fields) still breaks its checksum."""
    built = plain(tmp_path)
    raw = bytearray(header_bytes(3, built.file_write_guid, built.data_write_guid, uuid.UUID(int=0),
                                 built.log_offset, built.log_length))
    raw[4000] = 1
    assert crc(bytes(raw), 4) != struct.unpack_from("<I", raw, 4)[0]
    patch(built.path, 128 * KiB, bytes(raw))
    with open_image(built.path) as disk:
        assert disk.info()["vhdx"]["active_header"] == 1


def test_region_overlapping_the_log(tmp_path: Path) -> None:
    built = plain(tmp_path)
    table = region_table_bytes([(BAT_GUID, built.bat_offset, MiB, True),
                                (METADATA_GUID, built.log_offset, MiB, True)])
    patch(built.path, 192 * KiB, table)
    patch(built.path, 256 * KiB, table)
    with pytest.raises(ImageError, match="overlaps the log") as info:
        open_image(built.path)
    assert info.value.offset == built.log_offset


def test_metadata_item_longer_than_the_spec_allows(tmp_path: Path) -> None:
    """An item may be at most 1 MiB (2.6.1.2). A metadata region moved to a sparse 8 MiB stretch at the
    end of the file lets a hostile length fit "inside the region": refused before it is read."""
    built = plain(tmp_path)
    with open(built.path, "rb") as f:
        f.seek(built.metadata_offset)
        metadata = bytearray(f.read(MiB))
    new_offset = built.end
    entry = 32  # the first metadata table entry (file parameters): length at +20
    metadata[entry + 20:entry + 24] = struct.pack("<I", 6 * MiB)
    with open(built.path, "r+b") as f:
        f.truncate(new_offset + 8 * MiB)
        f.seek(new_offset)
        f.write(metadata)
    table = region_table_bytes([(BAT_GUID, built.bat_offset, built.bat_length, True),
                                (METADATA_GUID, new_offset, 8 * MiB, True)])
    patch(built.path, 192 * KiB, table)
    patch(built.path, 256 * KiB, table)
    with pytest.raises(ImageError, match="more than the 1 MiB") as info:
        open_image(built.path)
    assert info.value.offset == new_offset + entry
