"""Stored VHD and VHDX blocks whose bytes are holes in the image file are not reported as data."""

from __future__ import annotations

import subprocess
from pathlib import Path

from support.oracles import qemu_raw_bytes

from vhdtool import open_image
from vhdtool.extents import MiB, allocated_bytes


def test_unwritten_parts_of_present_blocks_are_not_data(tmp_path: Path) -> None:
    img = tmp_path / "sparse.vhdx"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", "block_size=32M", str(img), "256M"], check=True)
    for offset in (5 * MiB, 100 * MiB + 4096):
        subprocess.run(["qemu-io", "-f", "vhdx", "-c", f"write -P 0x5a {offset} 8k", str(img)],
                       check=True, capture_output=True)
    oracle = qemu_raw_bytes(img, tmp_path)
    with open_image(img) as disk:
        extents = disk.extents()
        data = allocated_bytes(extents)
        assert disk.read(0, disk.virtual_size) == oracle
    # Two 32 MiB blocks are present, but only their written 8 KiB are stored in the file.
    assert 16 * 1024 <= data <= 2 * MiB
    for e in extents:
        if not e.allocated:
            assert oracle[e.offset:e.end].count(0) == e.length


def test_unwritten_parts_of_dynamic_vhd_blocks_are_not_data(tmp_path: Path) -> None:
    img = tmp_path / "sparse.vhd"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vpc", "-o", "force_size=on", str(img), "64M"], check=True)
    subprocess.run(["qemu-io", "-f", "vpc", "-c", "write -P 0x11 3M 4k", str(img)], check=True, capture_output=True)
    oracle = qemu_raw_bytes(img, tmp_path, "vpc")
    with open_image(img) as disk:
        extents = disk.extents()
        assert disk.read(0, disk.virtual_size) == oracle
    # One 2 MiB block is allocated; only its written 4 KiB (plus file-system rounding) is stored.
    assert 4096 <= allocated_bytes(extents) <= 1 * MiB
    for e in extents:
        if not e.allocated:
            assert oracle[e.offset:e.end].count(0) == e.length
