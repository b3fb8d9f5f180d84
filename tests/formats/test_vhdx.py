"""VHDX images made by qemu-img (fixtures/vhdx/make.sh): our bytes must equal `qemu-img convert -O raw`,
extents must be exact, and `info` must describe the file; plus a 64 TiB sparse disk without memory blow-up."""

from __future__ import annotations

import json
import threading
import tracemalloc
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.cli import run_cli
from support.fixture_files import unpack_fixture
from support.oracles import qemu_img, qemu_raw_bytes

from vhdtool.cli import main
from vhdtool.extents import MiB, check_cover
from vhdtool.formats.open import open_image
from vhdtool.formats.vhdx.reader import VhdxDisk

FIXTURES = ["dynamic-1m", "dynamic-default", "dynamic-8m", "fixed-4m", "fixed-zero-state"]
EXPECTED = {  # name: (type, virtual size, block size, allocated bytes)
    "dynamic-1m": ("dynamic", 10 * MiB + 3584, 1 * MiB, 3 * MiB + 3584),
    "dynamic-default": ("dynamic", 100 * MiB, 8 * MiB, 20 * MiB),
    "dynamic-8m": ("dynamic", 40 * MiB, 8 * MiB, 24 * MiB),
    "fixed-4m": ("fixed", 12 * MiB, None, 12 * MiB),  # info: no block size for fixed disks
    "fixed-zero-state": ("fixed", 8 * MiB, None, 1 * MiB),
}


@pytest.fixture(params=FIXTURES)
def qemu_vhdx(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path]:
    return request.param, unpack_fixture(f"vhdx/{request.param}.vhdx.gz", tmp_path)


def test_bytes_match_qemu(qemu_vhdx: tuple[str, Path], tmp_path: Path) -> None:
    name, path = qemu_vhdx
    oracle = qemu_raw_bytes(path, tmp_path)
    with open_image(path) as disk:
        assert isinstance(disk, VhdxDisk)
        assert disk.virtual_size == len(oracle)
        assert disk.read(0, disk.virtual_size) == oracle
        # Unaligned reads crossing block boundaries.
        for offset, length in [(511, 1030), (1 * MiB - 7, 20), (3 * MiB - 1, 1 * MiB + 2),
                               (disk.virtual_size - 1000, 1000)]:
            assert disk.read(offset, length) == oracle[offset:offset + length]


def test_extents_are_exact(qemu_vhdx: tuple[str, Path], tmp_path: Path) -> None:
    name, path = qemu_vhdx
    oracle = qemu_raw_bytes(path, tmp_path)
    kind, size, block_size, allocated = EXPECTED[name]
    with open_image(path) as disk:
        extents = disk.extents()
        check_cover(extents, disk.virtual_size)
        for e in extents:
            if not e.allocated:  # unallocated extents must read as zeros
                assert oracle[e.offset:e.end].count(0) == e.length
            else:  # allocated extents are present blocks less the file's holes: 4 KiB-aligned pieces
                assert e.offset % 4096 == 0
                assert e.end % 4096 == 0 or e.end == size
        info = disk.info()
    assert (info["type"], info["virtual_size"], info["block_size"]) == (kind, size, block_size)
    # The BAT allows ``allocated`` bytes; holes in the (sparse) file take some of them away.
    assert 0 < info["allocated_bytes"] <= allocated


def test_info_details(qemu_vhdx: tuple[str, Path]) -> None:
    name, path = qemu_vhdx
    with open_image(path) as disk:
        info = disk.info()
    vhdx = info["vhdx"]
    assert info["format"] == "vhdx" and info["log"] == "clean" and info["parent"] is None
    assert vhdx["active_header"] in (1, 2)
    assert info["block_size"] == (None if info["type"] == "fixed" else vhdx["block_size"])
    assert vhdx["block_size"] == {"fixed-4m": 4 * MiB, "fixed-zero-state": MiB}.get(name, info["block_size"])
    assert vhdx["chunk_ratio"] == (1 << 23) * 512 // vhdx["block_size"]
    blocks = -(-info["virtual_size"] // vhdx["block_size"])
    assert vhdx["bat_entries"] == blocks + (blocks - 1) // vhdx["chunk_ratio"]
    assert vhdx["has_parent"] is False and vhdx["parent_locator"] is None
    assert vhdx["leave_blocks_allocated"] is (info["type"] == "fixed")
    assert vhdx["log_guid"] == "00000000-0000-0000-0000-000000000000"
    assert vhdx["log_length"] == (2 * MiB if name == "dynamic-default" else 1 * MiB)
    json.dumps(info)


def test_concurrent_reads_agree(tmp_path: Path) -> None:
    path = unpack_fixture("vhdx/dynamic-8m.vhdx.gz", tmp_path)
    oracle = qemu_raw_bytes(path, tmp_path)
    errors: list[str] = []
    with open_image(path) as disk:
        def worker(seed: int) -> None:
            for i in range(40):
                offset = (seed * 7919 + i * 104729 * 13) % (disk.virtual_size - 70000)
                if disk.read(offset, 65536 + seed) != oracle[offset:offset + 65536 + seed]:
                    errors.append(f"{seed}:{offset}")
        threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_cli_info_json(tmp_path: Path) -> None:
    path = unpack_fixture("vhdx/dynamic-1m.vhdx.gz", tmp_path)
    result = CliRunner().invoke(main, ["info", "--json", str(path)])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["format"] == "vhdx" and info["type"] == "dynamic" and info["log"] == "clean"
    assert info["virtual_size"] == 10 * MiB + 3584


def test_huge_sparse_disk_is_cheap(tmp_path: Path) -> None:
    """64 TiB (the format's maximum) with 1 MiB blocks: a 512 MiB BAT of zeros. Opening must not
    hold the BAT in memory nor loop over its 67 million entries in Python."""
    path = tmp_path / "huge.vhdx"
    qemu_img("create", "-q", "-f", "vhdx", "-o", "block_size=1M", str(path), "64T")
    tracemalloc.start()
    try:
        with open_image(path) as disk:
            extents = disk.extents()
            assert disk.read(disk.virtual_size - 4096, 4096) == bytes(4096)
            info = disk.info()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info["virtual_size"] == 64 * 1024**4
    assert info["vhdx"]["bat_entries"] == 64 * 1024**2 + (64 * 1024**2 - 1) // 4096
    assert [(e.offset, e.length, e.allocated) for e in extents] == [(0, 64 * 1024**4, False)]
    assert peak < 64 * MiB, f"peak Python allocation {peak} bytes"
    # How fast `info` answers is measured by benchmarks/info_speed.py, not asserted here.


def test_cli_rejects_garbage_vhdx_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.vhdx"
    path.write_bytes(b"vhdxfile" + bytes(2 * MiB))
    proc = run_cli("info", str(path))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "VHDX header 1 at byte 65536" in lines[0], proc.stderr


def test_4k_sector_dynamic_disk_matches_libvhdi(tmp_path: Path) -> None:
    """qemu cannot make 4 KiB-sector VHDX; the test builder can, and libvhdi reads it independently."""
    import random

    import pyvhdi
    from support.vhdx_builder import FULLY_PRESENT, Block, build_vhdx

    rnd = random.Random(11)
    size = 5 * MiB - 4096
    blocks = {n: Block(FULLY_PRESENT, rnd.randbytes(MiB)) for n in (0, 2, 4)}
    built = build_vhdx(tmp_path / "4k.vhdx", size, logical_sector_size=4096, physical_sector_size=4096,
                       blocks=blocks)
    f = pyvhdi.file()
    f.open(built.path)
    try:
        assert f.get_bytes_per_sector() == 4096
        oracle = f.read_buffer_at_offset(size, 0)
    finally:
        f.close()
    with open_image(built.path) as disk:
        assert (disk.logical_sector_size, disk.physical_sector_size) == (4096, 4096)
        assert disk.info()["vhdx"]["chunk_ratio"] == (1 << 23) * 4096 // MiB
        assert disk.read(0, size) == oracle
        assert [(e.offset, e.end) for e in disk.extents() if e.allocated] == [
            (0, MiB), (2 * MiB, 3 * MiB), (4 * MiB, size)]
