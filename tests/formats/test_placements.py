"""Placements: where each reader says a range of its disk is stored, checked against its own reads.

A ``"file"`` placement must name bytes that sit, as they are, in the image file at that offset (the
converter copies them file to file with the kernel); ``"zero"`` must read as zeros. Every reader and
chain is tried on images made by qemu-img or by the test builders, over random ranges.
"""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest
from support.vhd_builder import build_child, build_vhd, sectors_from_writes
from support.vhdx_builder import (
    FULLY_PRESENT,
    NOT_PRESENT,
    PARTIALLY_PRESENT,
    ZERO,
    Block,
    LogWrite,
    build_vhdx,
    write_log,
)

from vhdtool.disk.base import Placement
from vhdtool.extents import MiB
from vhdtool.formats.open import open_image
from vhdtool.jobs.convert import PaddedView
from vhdtool.stream.fixed_view import FixedVhdView

SIZE = 6 * MiB


def _raw(path: Path, seed: int = 1) -> Path:
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(SIZE)
        for _ in range(12):
            offset = rnd.randrange(0, SIZE - 70000) // 512 * 512
            f.seek(offset)
            f.write(rnd.randbytes(rnd.choice([512, 4096, 65536])))
    return path


def _qemu(src: Path, fmt: str, dest: Path, *opts: str) -> Path:
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, *opts, str(src), str(dest)], check=True)
    return dest


def _images(tmp: Path) -> dict[str, Path]:
    raw = _raw(tmp / "disk.raw")
    images = {
        "raw": raw,
        "vhdx": _qemu(raw, "vhdx", tmp / "d.vhdx", "-o", "block_size=1M"),
        "vhd-dynamic": _qemu(raw, "vpc", tmp / "d.vhd", "-o", "force_size=on"),
        "vhd-fixed": _qemu(raw, "vpc", tmp / "f.vhd", "-o", "subformat=fixed,force_size=on"),
    }
    rnd = random.Random(7)
    parent = tmp / "parent.vhd"
    build_vhd(parent, SIZE, sectors_from_writes([(0, rnd.randbytes(8192)), (3 * MiB, rnd.randbytes(4096))]),
              block_size=MiB)
    child = tmp / "child.vhd"
    build_child(child, parent, sectors_from_writes([(4096, rnd.randbytes(1024)), (5 * MiB, rnd.randbytes(512))]),
                block_size=MiB)
    images["vhd-child"] = child
    vparent = tmp / "vparent.vhdx"
    built = build_vhdx(vparent, SIZE, blocks={0: Block(FULLY_PRESENT, rnd.randbytes(MiB)),
                                              2: Block(FULLY_PRESENT, rnd.randbytes(MiB))})
    vchild = tmp / "vchild.vhdx"
    present = [i % 5 == 0 for i in range(MiB // 512)]
    build_vhdx(vchild, SIZE, parent_locator={"parent_linkage": "{" + str(built.data_write_guid) + "}",
                                             "relative_path": ".\\vparent.vhdx"},
               blocks={0: Block(PARTIALLY_PRESENT, rnd.randbytes(MiB), present),
                       1: Block(FULLY_PRESENT, rnd.randbytes(MiB)), 2: Block(ZERO), 3: Block(NOT_PRESENT)})
    images["vhdx-child"] = vchild
    dirty = tmp / "dirty.vhdx"
    built = build_vhdx(dirty, SIZE, blocks={1: Block(FULLY_PRESENT, rnd.randbytes(MiB))})
    write_log(built, [[LogWrite(built.block_offsets[1] + 8192, rnd.randbytes(4096))]])
    images["vhdx-dirty"] = dirty
    return images


def _read_placements(pieces: list[Placement]) -> bytes:
    out = bytearray()
    for p in pieces:
        if p.kind == "file":
            assert p.image is not None
            out += os.pread(p.image.fd, p.length, p.file_offset)
        else:
            assert p.kind == "zero"
            out += bytes(p.length)
    return bytes(out)


def _check(source: object, size: int, rnd: random.Random) -> set[str]:
    kinds: set[str] = set()
    ranges = [(0, size)] + [(a, min(size, a + rnd.randrange(1, 2 * MiB)))
                            for a in (rnd.randrange(0, size) for _ in range(40))]
    for start, end in ranges:
        pieces = source.placements(start, end - start)  # type: ignore[attr-defined]
        position = start
        for p in pieces:
            assert p.offset == position and p.length > 0
            position = p.end
        assert position == end
        kinds |= {p.kind for p in pieces}
        expected = bytearray(end - start)
        source.readinto(start, memoryview(expected))  # type: ignore[attr-defined]
        readable = [p for p in pieces if p.kind != "read"]
        for p in pieces:  # "read" pieces: whatever readinto gives; the others by their own description
            if p.kind == "read":
                got = bytearray(p.length)
                source.readinto(p.offset, memoryview(got))  # type: ignore[attr-defined]
                assert got == expected[p.offset - start:p.end - start]
        for p in readable:
            assert _read_placements([p]) == expected[p.offset - start:p.end - start], (p, start, end)
    return kinds


def test_every_reader_places_its_bytes_where_it_reads_them(tmp_path: Path) -> None:
    rnd = random.Random(11)
    for name, path in _images(tmp_path).items():
        with open_image(path) as disk:
            kinds = _check(disk, disk.virtual_size, rnd)
            if name == "vhdx-dirty":
                assert "read" in kinds, name  # a replayed log overlays the file: no direct copies
            else:
                assert "file" in kinds and "read" not in kinds, (name, kinds)
            view = FixedVhdView(disk, size=disk.virtual_size + 3 * MiB)
            view_kinds = _check(view, view.size, rnd)
            assert "read" in view_kinds  # the footer is made, not stored
            padded = PaddedView(disk, disk.virtual_size + MiB)
            _check(padded, padded.size, rnd)


def test_a_range_outside_the_disk_is_refused(tmp_path: Path) -> None:
    with open_image(_raw(tmp_path / "r.raw")) as disk, pytest.raises(ValueError):
        disk.placements(SIZE - 512, 1024)
