"""Damaged and hostile VHDs: typed errors naming the structure and offset, warnings where still readable,
no memory blow-up, no hang on devices or FIFOs, and one-line CLI errors."""

from __future__ import annotations

import os
import struct
import tracemalloc
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.vhd_builder import SECTOR, build_child, build_vhd, model_bytes, ones_complement_checksum

from vhdtool.cli import main
from vhdtool.errors import ImageError, ParentError
from vhdtool.formats.open import open_image, open_with_options
from vhdtool.formats.parent import OpenOptions

SIZE = 64 * 1024
SECTORS = {0: b"\x01" * SECTOR, 9: b"\x09" * SECTOR, 100: b"\x64" * SECTOR}


def patch(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def patch_header(path: Path, header_offset: int, field_offset: int, data: bytes) -> None:
    """Change a dynamic header field and fix the header checksum, so only that field is wrong."""
    with open(path, "r+b") as f:
        f.seek(header_offset)
        header = bytearray(f.read(1024))
        header[field_offset:field_offset + len(data)] = data
        header[36:40] = bytes(4)
        header[36:40] = ones_complement_checksum(header, 36).to_bytes(4, "big")
        f.seek(header_offset)
        f.write(header)


def patch_footer_field(path: Path, footer_offset: int, field_offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(footer_offset)
        footer = bytearray(f.read(512))
        footer[field_offset:field_offset + len(data)] = data
        footer[64:68] = bytes(4)
        footer[64:68] = ones_complement_checksum(footer, 64).to_bytes(4, "big")
        f.seek(footer_offset)
        f.write(footer)


def dynamic(tmp_path: Path, name: str = "d.vhd", **kwargs: object):  # type: ignore[no-untyped-def]
    path = tmp_path / name
    layout = build_vhd(path, SIZE, SECTORS, block_size=4096, **kwargs)  # type: ignore[arg-type]
    return path, layout


# -- footers ------------------------------------------------------------------------------------------

def test_fixed_bad_checksum_is_read_with_warning(fixture_file) -> None:  # type: ignore[no-untyped-def]
    path = fixture_file("vhd/fixed-force.vhd")
    with open_image(path) as disk:
        good = disk.read(0, disk.virtual_size)
    size = os.path.getsize(path)
    patch(path, size - 512 + 64, b"\x00\x00\x00\x01")
    with open_image(path) as disk:
        assert disk.read(0, disk.virtual_size) == good
        assert any("checksum is wrong" in w for w in disk.warnings)
        info = disk.info()
    assert info["footer"]["checksum_valid"] is False
    assert info["footer_source"] == "end"


def test_fixed_truncated_data_is_an_error(fixture_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = fixture_file("vhd/fixed-force.vhd")
    raw = path.read_bytes()
    cut = tmp_path / "cut.vhd"
    cut.write_bytes(raw[:len(raw) - 512 - 8192] + raw[-512:])
    with pytest.raises(ImageError, match="truncated") as err:
        open_image(cut)
    assert err.value.offset == len(raw) - 512 - 8192 and err.value.path == str(cut)


def test_fixed_511_byte_footer(fixture_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = fixture_file("vhd/fixed-force.vhd")
    raw = path.read_bytes()
    old = tmp_path / "old.vhd"
    old.write_bytes(raw[:-1])  # the last footer byte is reserved (zero): old tools left it out
    with open_image(old) as disk:
        assert disk.read(0, disk.virtual_size) == raw[:-512]
        assert any("511 bytes" in w for w in disk.warnings)


@pytest.mark.parametrize("damage", ["checksum", "cookie", "missing"])
def test_dynamic_damaged_end_footer_falls_back_to_copy(tmp_path: Path, damage: str) -> None:
    path, layout = dynamic(tmp_path)
    if damage == "checksum":
        patch(path, layout.footer_offset + 64, b"\x12\x34\x56\x78")
    elif damage == "cookie":
        patch(path, layout.footer_offset, b"garbage!")
    else:
        os.truncate(path, layout.footer_offset)
    with open_image(path) as disk:
        assert disk.read(0, SIZE) == model_bytes(SIZE, SECTORS)
        assert disk.details()["footer_source"] == "copy at offset 0"
        assert any("using the copy at offset 0" in w for w in disk.warnings)


def test_dynamic_damaged_copy_only_warns(tmp_path: Path) -> None:
    path, _ = dynamic(tmp_path)
    patch(path, 64, b"\xff\xff\xff\xff")
    with open_image(path) as disk:
        assert disk.details()["footer_source"] == "end"
        assert disk.warnings == ["the footer copy at offset 0 is missing or damaged"]


def test_dynamic_both_footers_damaged(tmp_path: Path) -> None:
    path, layout = dynamic(tmp_path)
    patch(path, 64, b"\xff\xff\xff\xff")
    patch(path, layout.footer_offset + 64, b"\xff\xff\xff\xff")
    with pytest.raises(ImageError, match="copy at offset 0") as err:
        open_image(path)
    assert err.value.structure == "VHD footer" and err.value.offset == layout.footer_offset


def test_unknown_disk_type(tmp_path: Path) -> None:
    path, layout = dynamic(tmp_path)
    for offset in (0, layout.footer_offset):
        patch_footer_field(path, offset, 60, struct.pack(">I", 7))
    with pytest.raises(ImageError, match="disk type 7"):
        open_image(path)


# -- dynamic header -----------------------------------------------------------------------------------

def test_bad_dynamic_header_checksum(tmp_path: Path) -> None:
    path, layout = dynamic(tmp_path)
    patch(path, layout.header_offset + 40, b"\xaa")  # inside the parent id: only the checksum catches it
    with pytest.raises(ImageError, match="checksum is wrong") as err:
        open_image(path)
    assert err.value.structure == "VHD dynamic header" and err.value.offset == layout.header_offset


@pytest.mark.parametrize(("field", "value", "message"), [
    (0, b"cxsparsX", "cookie"),
    (24, struct.pack(">I", 0x00020000), "header version"),
    (32, struct.pack(">I", 3000), "power of two"),
    (32, struct.pack(">I", 256), "power of two"),
])
def test_bad_dynamic_header_fields(tmp_path: Path, field: int, value: bytes, message: str) -> None:
    path, layout = dynamic(tmp_path)
    patch_header(path, layout.header_offset, field, value)
    with pytest.raises(ImageError, match=message) as err:
        open_image(path)
    assert err.value.offset == layout.header_offset


def test_header_offset_outside_file(tmp_path: Path) -> None:
    path, layout = dynamic(tmp_path)
    for offset in (0, layout.footer_offset):
        patch_footer_field(path, offset, 16, struct.pack(">Q", 1 << 40))
    with pytest.raises(ImageError, match="outside the file"):
        open_image(path)


# -- block allocation table ---------------------------------------------------------------------------

def test_too_few_table_entries(tmp_path: Path) -> None:
    path, layout = dynamic(tmp_path)
    patch_header(path, layout.header_offset, 28, struct.pack(">I", 3))
    with pytest.raises(ImageError, match="needs 16") as err:
        open_image(path)
    assert err.value.offset == layout.bat_offset


def test_absurd_table_entries_allocate_nothing(tmp_path: Path) -> None:
    path, layout = dynamic(tmp_path)
    patch_header(path, layout.header_offset, 28, struct.pack(">I", 1 << 31))
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match="extend past") as err:
            open_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024
    assert err.value.structure == "VHD block allocation table"


def test_bat_entry_past_end_of_file(tmp_path: Path) -> None:
    path, layout = dynamic(tmp_path)
    patch(path, layout.bat_offset + 4 * 2, struct.pack(">I", 10_000))
    with pytest.raises(ImageError, match="entry 2 ") as err:
        open_image(path)
    assert err.value.offset == layout.bat_offset + 8


def test_bat_entry_into_headers(tmp_path: Path) -> None:
    path, layout = dynamic(tmp_path)
    patch(path, layout.bat_offset + 4 * 2, struct.pack(">I", 1))  # sector 1 = the dynamic header
    with pytest.raises(ImageError, match="block 2 .* overlaps the dynamic header") as err:
        open_image(path)
    assert err.value.offset == layout.bat_offset + 8


def test_bat_entry_into_the_table(tmp_path: Path) -> None:
    path, layout = dynamic(tmp_path)
    patch(path, layout.bat_offset, struct.pack(">I", layout.bat_offset // SECTOR))
    with pytest.raises(ImageError, match="overlaps the block allocation table"):
        open_image(path)


def test_overlapping_blocks(tmp_path: Path) -> None:
    path, layout = dynamic(tmp_path)
    first = layout.block_offsets[0] // SECTOR
    patch(path, layout.bat_offset + 4 * 3, struct.pack(">I", first + 2))  # block 3 starts inside block 0
    with pytest.raises(ImageError, match="overlaps block 0") as err:
        open_image(path)
    assert err.value.offset == layout.bat_offset + 12


# -- differencing: locators and parents ---------------------------------------------------------------

def chain(tmp_path: Path, kinds: tuple[str, ...] = ("W2ru", "W2ku")):  # type: ignore[no-untyped-def]
    build_vhd(tmp_path / "p.vhd", SIZE, SECTORS, block_size=4096)
    layout = build_child(tmp_path / "c.vhd", tmp_path / "p.vhd", {3: b"\x03" * SECTOR}, kinds=kinds)
    return tmp_path / "c.vhd", layout


def test_missing_parent(tmp_path: Path) -> None:
    child, _ = chain(tmp_path)
    os.unlink(tmp_path / "p.vhd")
    with pytest.raises(ParentError, match="parent disk not found.*--parent"):
        open_image(child)


def test_wrong_parent_id(tmp_path: Path) -> None:
    child, _ = chain(tmp_path)
    build_vhd(tmp_path / "p.vhd", SIZE, SECTORS, block_size=4096, unique_id=b"\x11" * 16)
    wrong = "11111111-1111-1111-1111-111111111111"
    with pytest.raises(ParentError, match=rf"has id {wrong}, but .* expects") as err:
        open_image(child)
    assert str(tmp_path / "p.vhd") in str(err.value)


def test_explicit_parent_with_wrong_id_is_refused(tmp_path: Path) -> None:
    child, _ = chain(tmp_path)
    build_vhd(tmp_path / "other.vhd", SIZE, {}, block_size=4096)
    with pytest.raises(ParentError, match="other.vhd has id"):
        open_image(child, parent=str(tmp_path / "other.vhd"))
    with pytest.raises(ParentError, match="No such file"):
        open_image(child, parent=str(tmp_path / "nowhere.vhd"))


def test_parent_size_mismatch(tmp_path: Path) -> None:
    child, _ = chain(tmp_path)
    pid = (tmp_path / "p.vhd").read_bytes()[-512 + 68:-512 + 84]
    build_vhd(tmp_path / "p.vhd", SIZE * 2, {}, block_size=4096, unique_id=pid)
    with pytest.raises(ParentError, match="differencing disk is 65536 bytes"):
        open_image(child)


def test_parent_that_is_not_a_vhd(tmp_path: Path) -> None:
    child, _ = chain(tmp_path)
    (tmp_path / "p.vhd").write_bytes(bytes(SIZE))  # a raw file where the parent was
    with pytest.raises(ParentError, match="is a raw image"):
        open_image(child)


def test_parent_loop(tmp_path: Path) -> None:
    a, b = tmp_path / "a.vhd", tmp_path / "b.vhd"
    id_a, id_b = b"\xaa" * 16, b"\xbb" * 16
    build_vhd(a, SIZE, {}, disk_type=4, unique_id=id_a, parent_id=id_b, parent_name="b.vhd",
              locators=[(b"W2ru", ".\\b.vhd".encode("utf-16-le"))])
    build_vhd(b, SIZE, {}, disk_type=4, unique_id=id_b, parent_id=id_a, parent_name="a.vhd",
              locators=[(b"W2ru", ".\\a.vhd".encode("utf-16-le"))])
    with pytest.raises(ParentError, match="loops back"):
        open_image(a)


def test_self_loop(tmp_path: Path) -> None:
    a = tmp_path / "a.vhd"
    build_vhd(a, SIZE, {}, disk_type=4, unique_id=b"\xaa" * 16, parent_id=b"\xaa" * 16,
              locators=[(b"W2ru", ".\\a.vhd".encode("utf-16-le"))])
    with pytest.raises(ParentError, match="loops back"):
        open_image(a)


def test_chain_too_deep(tmp_path: Path) -> None:
    build_vhd(tmp_path / "d0.vhd", 4096, {0: b"\x01" * SECTOR}, block_size=4096)
    for level in range(1, 34):
        build_child(tmp_path / f"d{level}.vhd", tmp_path / f"d{level - 1}.vhd", {}, kinds=("W2ru",))
    with open_image(tmp_path / "d32.vhd") as disk:  # 33 disks: the limit
        assert disk.read(0, SECTOR) == b"\x01" * SECTOR
    with pytest.raises(ParentError, match="deeper than 32"):
        open_image(tmp_path / "d33.vhd")
    with pytest.raises(ParentError, match="deeper than 3"):
        open_with_options(str(tmp_path / "d10.vhd"), OpenOptions(max_chain_depth=3))


def test_locator_to_dev_zero(tmp_path: Path) -> None:
    depth = len(Path(tmp_path).resolve().parts)
    rel = ".\\" + "\\".join([".."] * depth) + "\\dev\\zero"
    child = tmp_path / "c.vhd"
    build_vhd(child, SIZE, {}, disk_type=4, parent_id=b"\x01" * 16,
              locators=[(b"W2ru", rel.encode("utf-16-le"))])
    with pytest.raises(ParentError, match="not a disk image file"):
        open_image(child)
    build_vhd(child, SIZE, {}, disk_type=4, parent_id=b"\x01" * 16,
              locators=[(b"W2ku", "/dev/zero".encode("utf-16-le"))])
    with pytest.raises(ParentError):
        open_image(child, allow_absolute_parent=True)


def test_locator_to_fifo_does_not_hang(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.vhd")
    child = tmp_path / "c.vhd"
    build_vhd(child, SIZE, {}, disk_type=4, parent_id=b"\x01" * 16,
              locators=[(b"W2ru", ".\\pipe.vhd".encode("utf-16-le"))])
    with pytest.raises(ParentError, match="not a regular file"):
        open_image(child)


@pytest.mark.parametrize(("field", "value", "problem"), [
    (16, struct.pack(">Q", 1 << 30), "lies past the data area"),
    (8, struct.pack(">I", 0xFFFFFFF0), "too long for a path"),
])
def test_a_broken_locator_is_skipped_and_the_others_find_the_parent(tmp_path: Path, field: int, value: bytes,
                                                                   problem: str) -> None:
    """A locator only helps find the parent, which the unique id then proves (qemu-img and libvhdi read
    such a child too): the broken one is named in a warning and left out; the parent's name finds it."""
    child, layout = chain(tmp_path)
    entry = layout.locator_entry_offsets[0]
    patch_header(tmp_path / "c.vhd", layout.header_offset, entry - layout.header_offset + field, value)
    with open_image(child) as disk:
        assert disk.parent is not None
        assert [loc.index for loc in disk.header.locators] == [1]
        assert any(w.startswith(f"VHD parent locator 0 ('W2ru') at byte {entry}: ") and problem in w
                   for w in disk.warnings), disk.warnings
    # With every locator broken and no name to fall back on, the parent is not found: one clear error.
    entry = layout.locator_entry_offsets[1]
    patch_header(tmp_path / "c.vhd", layout.header_offset, entry - layout.header_offset + field, value)
    patch_header(tmp_path / "c.vhd", layout.header_offset, 64, bytes(512))  # no parent name either
    with pytest.raises(ParentError, match="parent disk not found"):
        open_image(child)


# -- CLI ----------------------------------------------------------------------------------------------

def test_cli_reports_corruption_in_one_line(tmp_path: Path) -> None:
    path, layout = dynamic(tmp_path)
    patch(path, layout.bat_offset + 4 * 2, struct.pack(">I", 10_000))
    result = CliRunner().invoke(main, ["info", str(path), "--json"])
    assert result.exit_code != 0
    assert isinstance(result.exception, ImageError)  # CliRunner bypasses run(); check it through run too


@pytest.mark.parametrize("damage", ["bat", "header", "parent"])
def test_run_prints_one_line_and_exits_1(tmp_path: Path, damage: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from vhdtool.cli import run

    if damage == "parent":
        path, _ = chain(tmp_path)
        os.unlink(tmp_path / "p.vhd")
    else:
        path, layout = dynamic(tmp_path)
        if damage == "bat":
            patch(path, layout.bat_offset, struct.pack(">I", 10_000))
        else:
            patch(path, layout.header_offset + 40, b"\xaa")
    with pytest.raises(SystemExit) as exc:
        run(["info", str(path), "--json"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vhdtool: error: ") and "Traceback" not in err
    assert str(path) in err


def sparse_vhd_with_hole_table(path: Path, size: int, block_size: int, entries: int) -> None:
    """A dynamic VHD whose BAT of ``entries`` entries is a hole of a sparse file: all entries read 0."""
    from support.vhd_builder import footer_bytes

    bat_offset = 1536
    data_end = bat_offset + 4 * entries + 4096
    footer = footer_bytes(size=size, disk_type=3, data_offset=512, unique_id=os.urandom(16))
    header = bytearray(struct.pack(">8sQQIIII16sII512s", b"cxsparse", 0xFFFFFFFFFFFFFFFF, bat_offset,
                                   0x00010000, entries, block_size, 0, bytes(16), 0, 0, bytes(512)))
    header += bytes(1024 - len(header))
    header[36:40] = ones_complement_checksum(header, 36).to_bytes(4, "big")
    with open(path, "wb") as f:
        f.write(footer)
        f.write(header)
        f.truncate(data_end)
        f.seek(data_end)
        f.write(footer)


def test_huge_table_in_a_sparse_file_allocates_nothing(tmp_path: Path) -> None:
    """2**31 entries of a 1 TiB disk (8 GiB of table, all a hole): refused at the first entry,
    without reading or allocating the table (it was read whole: an 8 GiB allocation)."""
    path = tmp_path / "hole.vhd"
    sparse_vhd_with_hole_table(path, 1 << 40, SECTOR, 1 << 31)
    assert path.stat().st_blocks * 512 < 1024 * 1024  # really sparse
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match="block 0 .* overlaps the footer copy") as err:
            open_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, f"peak Python allocation {peak} bytes"
    assert err.value.offset == 1536


def test_many_entries_naming_one_block_are_refused_early(tmp_path: Path) -> None:
    """Every entry of a long table points at the same block: more blocks than the file can hold."""
    path, layout = dynamic(tmp_path, max_table_entries=1 << 20)
    first = layout.block_offsets[0] // SECTOR
    patch_header(path, layout.header_offset, 28, struct.pack(">I", 1 << 20))
    patch_footer_field(path, 0, 48, struct.pack(">Q", (1 << 20) * 4096))
    patch_footer_field(path, layout.footer_offset, 48, struct.pack(">Q", (1 << 20) * 4096))
    patch(path, layout.bat_offset, struct.pack(">I", first) * (1 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match="without overlapping") as err:
            open_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.value.structure == "VHD block allocation table"
    assert peak < 48 * 1024 * 1024, f"peak Python allocation {peak} bytes"  # was 120 MiB: the whole table at once
