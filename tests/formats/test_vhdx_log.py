"""Dirty VHDX logs ([MS-VHDX] 2.3) replayed in memory. Oracle: qemu replays a log only when it may write,
so a copy goes through `qemu-img check -r all` and `qemu-img convert -O raw`; vhdtool reads the untouched
original, which must not change. Cases qemu gets wrong (wrapped sequences, Tail) use an equivalent
unwrapped file as the oracle."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from support.oracles import qemu_raw_bytes
from support.vhdx_builder import (
    FULLY_PRESENT,
    Block,
    Built,
    LogWrite,
    bat_sector_update,
    build_vhdx,
    write_headers,
    write_log,
)

from vhdtool.errors import ImageError
from vhdtool.extents import MiB
from vhdtool.formats.open import open_image
from vhdtool.formats.vhdx.reader import VhdxDisk

SIZE = 8 * MiB


def base_file(path: Path, seed: int = 2) -> tuple[Built, int]:
    """A dynamic disk with block 1 present and a 1 MiB block of data in unreferenced spare space."""
    rnd = random.Random(seed)
    built = build_vhdx(path, SIZE, blocks={1: Block(FULLY_PRESENT, rnd.randbytes(MiB))}, spare=2 * MiB)
    spare = built.end - 2 * MiB
    with open(path, "r+b") as f:
        f.seek(spare)
        f.write(rnd.randbytes(MiB))
    return built, spare


def scenario(built: Built, spare: int, seed: int = 3) -> list[list[LogWrite]]:
    """Entry 1 maps block 3 onto the spare data and block 5 past the end of the file (the replay
    extends the file, so it reads as zeros); entry 2 rewrites a payload sector and zeroes three."""
    rnd = random.Random(seed)
    entry1 = bat_sector_update(built, {3: FULLY_PRESENT | spare, 5: FULLY_PRESENT | built.end})
    entry2 = [LogWrite(built.block_offsets[1] + 8192, rnd.randbytes(4096)),
              LogWrite(built.block_offsets[1] + 65536, zero_length=3 * 4096)]
    return [entry1, entry2]


def qemu_replayed(path: Path, tmp_path: Path) -> bytes:
    copy = tmp_path / ("replayed-" + path.name)
    shutil.copyfile(path, copy)
    proc = subprocess.run(["qemu-img", "check", "-r", "all", str(copy)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return qemu_raw_bytes(copy, tmp_path)


def fingerprint(path: Path) -> tuple[str, int, int]:
    st = os.stat(path)
    return hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mtime_ns, st.st_size


def test_dirty_log_matches_qemu_replay(tmp_path: Path) -> None:
    path = tmp_path / "dirty.vhdx"
    built, spare = base_file(path)
    guid = write_log(built, scenario(built, spare), last_file_offset=built.end + MiB - 4096)
    before = fingerprint(path)
    proc = subprocess.run(["qemu-img", "info", str(path)], capture_output=True, text=True)
    assert proc.returncode != 0 and "log that needs to be replayed" in proc.stderr  # it really is dirty
    with open_image(path) as disk:
        assert isinstance(disk, VhdxDisk)
        assert disk.log_state == "dirty"
        ours = disk.read(0, SIZE)
        info = disk.info()
        allocated = [(e.offset, e.end) for e in disk.extents() if e.allocated]
    assert fingerprint(path) == before  # the input was never written
    assert ours == qemu_replayed(path, tmp_path)
    assert info["log"] == "dirty" and info["vhdx"]["log_guid"] == str(guid)
    assert allocated == [(1 * MiB, 2 * MiB), (3 * MiB, 4 * MiB), (5 * MiB, 6 * MiB)]
    assert ours[5 * MiB:6 * MiB] == bytes(MiB)  # beyond the real end of the file


def test_wrapped_sequence_replays_from_tail(tmp_path: Path) -> None:
    """The same two entries, written across the end of the circular log, give the same disk.
    (qemu 7.2 replays only the entries after the wrap, ignoring the head's Tail.)"""
    straight_path, wrapped_path = tmp_path / "straight.vhdx", tmp_path / "wrapped.vhdx"
    straight, spare = base_file(straight_path)
    write_log(straight, scenario(straight, spare), last_file_offset=straight.end + MiB - 4096)
    wrapped, spare2 = base_file(wrapped_path)
    write_log(wrapped, scenario(wrapped, spare2), start=wrapped.log_length - 4096,
              last_file_offset=wrapped.end + MiB - 4096)
    expected = qemu_replayed(straight_path, tmp_path)
    with open_image(wrapped_path) as disk:
        assert disk.log_state == "dirty"
        assert disk.read(0, SIZE) == expected


def test_corrupt_entry_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "dirty.vhdx"
    built, spare = base_file(path)
    write_log(built, scenario(built, spare), corrupt={1}, last_file_offset=built.end + MiB - 4096)
    with open_image(path) as disk:
        assert disk.log_state == "dirty"
        ours = disk.read(0, SIZE)
    assert ours == qemu_replayed(path, tmp_path)
    # Entry 1 (the BAT update) applied, entry 2 (payload sector write) not.
    with open(path, "rb") as f:
        f.seek(built.block_offsets[1])
        assert ours[1 * MiB:2 * MiB] == f.read(MiB)
    assert ours[3 * MiB:3 * MiB + 16] != bytes(16)


def test_log_guid_without_entries_is_clean_with_warning(tmp_path: Path) -> None:
    path = tmp_path / "guid-only.vhdx"
    built, _ = base_file(path)
    clean = open_image(path).read(0, SIZE)
    write_headers(str(path), built, log_guid=uuid.uuid4())
    with open_image(path) as disk:
        assert disk.log_state == "clean"
        assert any("no valid entries" in w for w in disk.warnings)
        assert disk.read(0, SIZE) == clean


def test_entries_of_another_log_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "stale.vhdx"
    built, spare = base_file(path)
    write_log(built, scenario(built, spare), header_log_guid=uuid.uuid4())
    with open_image(path) as disk:
        assert disk.log_state == "clean"
        assert disk.read(3 * MiB, 16) == bytes(16)


def test_tail_outside_the_sequence_is_not_replayed(tmp_path: Path) -> None:
    path = tmp_path / "tail.vhdx"
    built, spare = base_file(path)
    write_log(built, scenario(built, spare), tail=64 * 4096)
    with open_image(path) as disk:
        assert disk.log_state == "clean"
        assert disk.read(3 * MiB, 16) == bytes(16)


def test_newest_sequence_wins(tmp_path: Path) -> None:
    path = tmp_path / "two.vhdx"
    built, spare = base_file(path)
    older = bat_sector_update(built, {4: FULLY_PRESENT | spare})
    newer = bat_sector_update(built, {3: FULLY_PRESENT | spare})
    guid = write_log(built, [newer], start=256 * 1024, first_sequence=20)
    # A complete older sequence at the start of the same log, signed with the same LogGuid.
    write_log(built, [older], start=0, first_sequence=10, log_guid=guid)
    with open_image(path) as disk:
        assert disk.log_state == "dirty"
        assert disk.read(3 * MiB, 16) != bytes(16)
        assert disk.read(4 * MiB, 16) == bytes(16)


def test_later_writes_win_in_the_overlay(tmp_path: Path) -> None:
    path = tmp_path / "order.vhdx"
    built, spare = base_file(path)
    a, b, c = (bytes([n]) * 4096 for n in (0xA1, 0xB2, 0xC3))
    target = spare + MiB  # unreferenced space, read through the replayed file view
    entries = [[LogWrite(target, a), LogWrite(target + 4096, a)],
               [LogWrite(target, zero_length=3 * 4096)],
               [LogWrite(target + 4096, b), LogWrite(target + 8192, c)]]
    with open(path, "r+b") as f:
        f.seek(target)
        f.write(b"\xee" * 4 * 4096)
    write_log(built, entries)
    with open_image(path) as disk:
        assert isinstance(disk, VhdxDisk)
        got = disk.view.pread(target, 4 * 4096 + 10, "test")
    assert got == bytes(4096) + b + c + b"\xee" * 4096 + b"\0" * 10


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "truncated.vhdx"
    built, spare = base_file(path)
    write_log(built, scenario(built, spare))
    os.truncate(path, built.end - MiB)
    with pytest.raises(ImageError, match="truncated"):
        open_image(path)


def test_log_of_overlapping_whole_log_candidates_is_refused_quickly(tmp_path: Path) -> None:
    """Every sector of a 32 MiB log starts an entry header claiming the whole log (with a wrong
    checksum): checksumming each candidate would cost 8,192 × 32 MiB. The scan stops, refusing the
    image with one error, within its budget of a few times the log's length."""
    import struct

    from fuzz.harness import watchdog

    path = tmp_path / "hostile-log.vhdx"
    log_length = 32 * MiB
    built = build_vhdx(path, SIZE, log_length=log_length)
    guid = uuid.uuid4()
    header = struct.pack("<4sIIIQII16sQQ", b"loge", 0, log_length, 0, 7, 0, 0, guid.bytes_le, 0, 0)
    sector = header.ljust(4096, b"\0")
    with open(path, "r+b") as f:
        f.seek(built.log_offset)
        f.write(sector * (log_length // 4096))
    write_headers(str(path), built, log_guid=guid)
    with watchdog(30.0), pytest.raises(ImageError, match="VHDX log.*candidate entries"):
        open_image(path)
