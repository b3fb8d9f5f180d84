"""``convert`` of differencing chains (flattened) and of a VHDX with a pending log (replayed).

qemu-img makes neither differencing VHD/VHDX files nor dirty logs, so these images come from the
independent test builders (``vhd_builder``, ``vhdx_builder``, which share no code with vhdtool);
the expected bytes are the builders' models, and for VHD chains libvhdi (``pyvhdi``) as well.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from support.vhd_builder import build_child, build_vhd, model_bytes, sectors_from_writes
from support.vhdx_builder import (
    FULLY_PRESENT,
    PARTIALLY_PRESENT,
    Block,
    LogWrite,
    bat_sector_update,
    build_vhdx,
    write_log,
)

from vhdtool import open_image
from vhdtool.extents import MiB, align_up
from vhdtool.formats.vhd.footer import parse_footer
from vhdtool.jobs.convert import convert

KiB = 1024


def output_disk_bytes(out: Path, size: int) -> bytes:
    """The disk bytes of a converted fixed VHD, after checking its footer and padding."""
    data = out.read_bytes()
    virtual = align_up(size, MiB)
    assert len(data) == virtual + 512
    footer = parse_footer(data[-512:], str(out), virtual)
    assert footer.checksum_valid and footer.disk_type == 2 and footer.current_size == virtual
    assert not any(data[size:virtual])
    return data[:size]


def pyvhdi_bytes(child: Path, parent: Path) -> bytes:
    import pyvhdi

    parent_file = pyvhdi.file()
    parent_file.open(str(parent))
    child_file = pyvhdi.file()
    child_file.open(str(child))
    child_file.set_parent(parent_file)
    size = child_file.get_media_size()
    try:
        # One sector per call: libvhdi 20260901 mis-assembles reads spanning partially present runs.
        return b"".join(child_file.read_buffer_at_offset(min(512, size - o), o) for o in range(0, size, 512))
    finally:
        child_file.close()
        parent_file.close()


@pytest.mark.parametrize("seed", [1, 2])
def test_vhd_differencing_chain_is_flattened(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    size = rng.randrange(3 * MiB, 9 * MiB) // 4096 * 4096 + 4096
    block = rng.choice([4096, 64 * KiB, 2 * MiB])

    def writes(n: int) -> dict[int, bytes]:
        out = []
        for _ in range(n):
            # Whole bitmap bytes (8 sectors): libvhdi 20260901 treats a set bit as covering the
            # rest of its byte; sub-byte runs are covered by the reader's own tests.
            runs = rng.randrange(1, 5)
            offset = rng.randrange(0, size // 4096 - runs) * 4096
            out.append((offset, rng.randbytes(runs * 4096)))
        return sectors_from_writes(out)

    base_sectors, child_sectors = writes(12), writes(12)
    base_sectors.update(sectors_from_writes([(size - 4096, b"\x5a" * 4096)]))  # where padding starts
    base = tmp_path / "base.vhd"
    child = tmp_path / "child.vhd"
    # fill=0: libvhdi reads unset-bitmap sectors of a dynamic disk from the block; vhdtool reads zeros.
    build_vhd(base, size, base_sectors, block_size=block, fill=0)
    build_child(child, base, child_sectors, block_size=block)
    expected = model_bytes(size, child_sectors, model_bytes(size, base_sectors))
    out = tmp_path / "flat.vhd"
    with open_image(child) as disk:
        assert disk.parent is not None
        result = convert(disk, out)
    assert output_disk_bytes(out, size) == expected
    assert pyvhdi_bytes(child, base) == expected
    assert result.bytes_written < 2 * MiB  # the holes of both layers stay holes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.vhd", "child.vhd", "flat.vhd"]


def test_vhdx_differencing_chain_is_flattened(tmp_path: Path) -> None:
    size, block = 6 * MiB + 3 * 512, MiB
    rng = random.Random(3)
    parent_blocks = {0: rng.randbytes(block), 2: rng.randbytes(block), 6: rng.randbytes(block)}
    parent = tmp_path / "parent.vhdx"
    built = build_vhdx(parent, size, block_size=block,
                       blocks={n: Block(FULLY_PRESENT, data) for n, data in parent_blocks.items()})
    # The child: block 2 partly present (every other 8-sector run), block 4 fully present.
    present = [(i // 8) % 2 == 0 for i in range(block // 512)]
    child_block2 = rng.randbytes(block)
    child_block4 = rng.randbytes(block)
    child = tmp_path / "child.vhdx"
    build_vhdx(child, size, block_size=block,
               blocks={2: Block(PARTIALLY_PRESENT, child_block2, present),
                       4: Block(FULLY_PRESENT, child_block4)},
               parent_locator={"parent_linkage": "{" + str(built.data_write_guid) + "}",
                               "relative_path": ".\\parent.vhdx"})
    model = bytearray(size)
    for n, data in parent_blocks.items():
        model[n * block:(n + 1) * block] = data[:max(0, size - n * block)]
    for i, here in enumerate(present):
        if here:
            model[2 * block + i * 512:2 * block + (i + 1) * 512] = child_block2[i * 512:(i + 1) * 512]
    model[4 * block:5 * block] = child_block4
    out = tmp_path / "flat.vhd"
    with open_image(child) as disk:
        assert disk.parent is not None
        convert(disk, out)
    assert output_disk_bytes(out, size) == bytes(model[:size])
    assert pyvhdi_bytes(child, parent) == bytes(model[:size])  # libvhdi reads the chain the same way


def test_vhdx_with_a_dirty_log_converts_to_the_replayed_bytes(tmp_path: Path) -> None:
    """The log rewrites one sector of block 0 and allocates block 3 (BAT update + its data)."""
    size, block = 5 * MiB, MiB
    rng = random.Random(4)
    block0 = rng.randbytes(block)
    path = tmp_path / "dirty.vhdx"
    built = build_vhdx(path, size, block_size=block, blocks={0: Block(FULLY_PRESENT, block0)}, spare=MiB)
    before = path.read_bytes()
    new_sector = rng.randbytes(4 * KiB)
    block3_sector = rng.randbytes(4 * KiB)
    block3_at = built.end - MiB  # the spare MiB the builder left after the payload
    writes = [LogWrite(built.block_offsets[0] + 8 * KiB, new_sector),
              *bat_sector_update(built, {3: FULLY_PRESENT | block3_at}),
              LogWrite(block3_at + 12 * KiB, block3_sector)]
    write_log(built, [writes])
    logged = path.read_bytes()
    model = bytearray(size)
    model[:block] = block0
    model[8 * KiB:12 * KiB] = new_sector
    model[3 * block + 12 * KiB:3 * block + 16 * KiB] = block3_sector
    out = tmp_path / "replayed.vhd"
    with open_image(path) as disk:
        assert disk.log_state == "dirty"
        convert(disk, out)
    assert output_disk_bytes(out, size) == bytes(model)
    assert path.read_bytes() == logged != before  # replayed in memory only: the input is untouched
    assert os.path.getsize(out) == size + 512
    # qemu replays the log only into a file it may write: a copy, then compared with our output.
    copy = tmp_path / "qemu-replayed.vhdx"
    shutil.copyfile(path, copy)
    subprocess.run(["qemu-img", "check", "-q", "-r", "all", str(copy)], check=True, capture_output=True)
    compare = subprocess.run(["qemu-img", "compare", "-f", "vhdx", "-F", "vpc", str(copy), str(out)],
                             capture_output=True, text=True)
    assert compare.returncode == 0, compare.stdout + compare.stderr
