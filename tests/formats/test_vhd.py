"""The VHD reader on images made by qemu-img (fixtures/vhd/make.sh), checked against qemu-img and libvhdi."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.cli import run_cli_process
from support.oracles import qemu_img, qemu_raw_bytes

from vhdtool.cli import main
from vhdtool.disk.base import DiskReader
from vhdtool.extents import check_cover
from vhdtool.formats.open import open_image
from vhdtool.formats.vhd.reader import FixedVhd, SparseVhd

FIXTURES = [
    "dynamic-chs.vhd", "dynamic-force.vhd", "dynamic-force-mib.vhd", "fixed-chs.vhd", "fixed-force.vhd",
]
# Where fixtures/vhd/make.sh wrote patterns (offset, length, byte) before the last-sector write.
PATTERNS = [(0, 4096, 0x11), (2 * 1048576 - 1024, 2048, 0x22), (3 * 1048576 + 512, 512, 0x33)]


def qemu_size(path: Path) -> int:
    info = json.loads(qemu_img("info", "-f", "vpc", "--output=json", str(path)).stdout)
    return int(info["virtual-size"])


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_bytes_match_qemu_and_libvhdi(name: str, fixture_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import pyvhdi

    path = fixture_file(f"vhd/{name}")
    oracle = qemu_raw_bytes(path, tmp_path, fmt="vpc")
    with open_image(path) as disk:
        assert disk.format == "vhd"
        assert disk.disk_type == ("fixed" if name.startswith("fixed") else "dynamic")
        assert isinstance(disk, FixedVhd if name.startswith("fixed") else SparseVhd)
        assert disk.virtual_size == disk.footer.current_size == qemu_size(path) == len(oracle)
        assert disk.read(0, disk.virtual_size) == oracle
        assert disk.warnings == []
        # Scattered reads across block boundaries and unaligned ends.
        for offset, length in [(1, 10), (2 * 1048576 - 700, 1400), (4095, 2), (disk.virtual_size - 3, 3)]:
            assert disk.read(offset, length) == oracle[offset:offset + length]
    vhdi = pyvhdi.file()
    vhdi.open(str(path))
    try:
        assert vhdi.media_size == len(oracle)
        assert vhdi.read_buffer_at_offset(len(oracle), 0) == oracle
    finally:
        vhdi.close()


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_patterns_and_extents(name: str, fixture_file) -> None:  # type: ignore[no-untyped-def]
    path = fixture_file(f"vhd/{name}")
    with open_image(path) as disk:
        data = disk.read(0, disk.virtual_size)
        for offset, length, byte in [*PATTERNS, (disk.virtual_size - 512, 512, 0x44)]:
            assert data[offset:offset + length] == bytes([byte]) * length
        extents = disk.extents()
        check_cover(extents, disk.virtual_size)
        for e in extents:
            if not e.allocated:
                assert data[e.offset:e.end].count(0) == e.length
        if name.startswith("dynamic"):
            # qemu allocates blocks 0, 1 and the last one; block 2 (4-6 MiB) is never written.
            assert any(not e.allocated and e.offset <= 4 * 1048576 < e.end for e in extents)
            assert disk.block_size == 2 * 1048576
        assert disk.extents() is extents  # cached


def test_fixed_extents_follow_file_holes(tmp_path: Path) -> None:
    path = tmp_path / "sparse-fixed.vhd"
    qemu_img("create", "-q", "-f", "vpc", "-o", "subformat=fixed,force_size=on", str(path), "8M")
    subprocess.run(["qemu-io", "-f", "vpc", "-c", "write -P 0x5a 3M 4k", str(path)], check=True,
                   capture_output=True)
    with open_image(path) as disk:
        extents = disk.extents()
        check_cover(extents, disk.virtual_size)
        holes = [e for e in extents if not e.allocated]
        assert holes, "qemu-img makes fixed VHDs sparse: the holes must show"
        assert all(disk.read(e.offset, e.length).count(0) == e.length for e in holes)
        assert any(e.allocated and e.offset <= 3 * 1048576 < e.end for e in extents)
        assert disk.read(3 * 1048576, 4096) == b"\x5a" * 4096


def test_details_and_info(fixture_file) -> None:  # type: ignore[no-untyped-def]
    path = fixture_file("vhd/dynamic-force.vhd")
    with open_image(path) as disk:
        info = disk.info()
    assert info["format"] == "vhd" and info["type"] == "dynamic"
    assert info["virtual_size"] == 7 * 1048576 + 1536
    assert info["footer_source"] == "end"
    assert info["footer"]["checksum_valid"] is True
    assert info["footer"]["creator_application"] == "qem2"  # force_size writes creator qem2
    header = info["dynamic_header"]
    assert header["block_size"] == 2 * 1048576 and header["checksum_valid"] is True
    assert header["max_table_entries"] == 4
    assert info["allocated_blocks"] == 3
    assert info["parent"] is None
    json.dumps(info)


def test_chs_sized_fixture_reports_geometry_size(fixture_file) -> None:  # type: ignore[no-untyped-def]
    with open_image(fixture_file("vhd/dynamic-chs.vhd")) as disk:
        footer = disk.details()["footer"]
    assert footer["current_size"] == footer["geometry"]["size"] != 6 * 1048576


def test_threaded_reads_agree(fixture_file, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = fixture_file("vhd/dynamic-force.vhd")
    oracle = qemu_raw_bytes(path, tmp_path, fmt="vpc")
    errors: list[str] = []
    with open_image(path) as disk:
        def worker(seed: int) -> None:
            step = 4096 + 512 * seed
            for offset in range(seed * 512, disk.virtual_size - step, step * 7):
                if disk.read(offset, step) != oracle[offset:offset + step]:
                    errors.append(f"mismatch at {offset}")
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_disk_reader_over_vhd(fixture_file) -> None:  # type: ignore[no-untyped-def]
    with open_image(fixture_file("vhd/dynamic-force.vhd")) as disk:
        reader = DiskReader(disk)
        reader.seek(2 * 1048576 - 1024)
        assert reader.read(2048) == b"\x22" * 2048


def test_cli_info_json(fixture_file) -> None:  # type: ignore[no-untyped-def]
    path = fixture_file("vhd/dynamic-force.vhd")
    result = CliRunner().invoke(main, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    assert facts["type"] == "dynamic" and facts["dynamic_header"]["block_size"] == 2 * 1048576


def test_cli_info_human_and_subprocess(fixture_file) -> None:  # type: ignore[no-untyped-def]
    path = fixture_file("vhd/fixed-force.vhd")
    proc = run_cli_process("info", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "vhd (fixed)" in proc.stdout and "footer checksum  valid" in proc.stdout
