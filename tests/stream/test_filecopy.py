"""The parallel copy loop of convert: same bytes and holes as the ordered walk, by pread/pwrite or by
mapped runs and kernel copies (where the filesystem clones), a fallback where the kernel refuses, and
no fsync unless asked."""

from __future__ import annotations

import errno
import os
import random
import subprocess
from pathlib import Path

import pytest
from support.cli import cli_command, cli_environment
from support.oracles import reference_sparse_digest
from support.vhd_builder import build_child, build_vhd, sectors_from_writes

from vhdtool import open_image
from vhdtool.blockio.fileio import filesystem_type
from vhdtool.extents import MiB
from vhdtool.jobs.convert import convert
from vhdtool.stream import filecopy
from vhdtool.stream.digest import GRANULE, SparseDigest
from vhdtool.stream.filecopy import KERNEL_COPY_FILESYSTEMS, copy_into, kernel_copies, windows
from vhdtool.stream.fixed_file import FixedFileSink
from vhdtool.stream.fixed_view import FixedVhdView
from vhdtool.stream.pump import pump


def scattered_raw(path: Path, size: int, seed: int = 3) -> Path:
    """Random pieces, some of them written zeros (allocated in the file but empty)."""
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for _ in range(40):
            offset = rnd.randrange(0, size - 300_000) // 512 * 512
            length = rnd.choice([512, 4096, 100_000, 300_000])
            f.seek(offset)
            f.write(bytes(length) if rnd.random() < 0.2 else rnd.randbytes(length))
    return path


def sources(tmp: Path) -> dict[str, Path]:
    raw = scattered_raw(tmp / "s.raw", 20 * MiB + 512)
    vhdx = tmp / "s.vhdx"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vhdx", "-o", "block_size=1M", str(raw), str(vhdx)],
                   check=True)
    rnd = random.Random(5)
    parent = tmp / "p.vhd"
    build_vhd(parent, 12 * MiB, sectors_from_writes([(i * MiB, rnd.randbytes(8192)) for i in range(0, 12, 3)]),
              block_size=2 * MiB)
    child = tmp / "c.vhd"
    build_child(child, parent, sectors_from_writes([(i * MiB + 4096, rnd.randbytes(1536)) for i in range(12)]),
                block_size=2 * MiB)
    return {"raw": raw, "vhdx": vhdx, "vhd-child": child}


def test_windows_cover_every_allocated_byte_once() -> None:
    from vhdtool.extents import Extent

    extents = [Extent(0, 512, True), Extent(512, 3 * MiB, False), Extent(3 * MiB + 512, 9 * MiB, True),
               Extent(12 * MiB + 512, 100 * MiB, False)]
    got = list(windows(extents, 4 * MiB))
    assert [w[0] for w in got] == [0, 0 + 4 * MiB, 8 * MiB, 12 * MiB]
    assert [r for w in got for r in w[1]] == [(0, 512), (3 * MiB + 512, 4 * MiB), (4 * MiB, 8 * MiB),
                                              (8 * MiB, 12 * MiB), (12 * MiB, 12 * MiB + 512)]
    assert sum(w[2] for w in got) == 103 * MiB


@pytest.mark.parametrize("workers, kernel_copy, chunk", [(1, False, None), (3, False, None), (3, True, None),
                                                          (2, False, 12 * 1024), (2, False, 3 * MiB)])
def test_parallel_copy_writes_the_bytes_and_holes_of_the_ordered_walk(tmp_path: Path, workers: int,
                                                                       kernel_copy: bool, chunk: int | None,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """``chunk``: the threads' read buffer made small or not dividing the window, so that runs are
    read, scanned, written and hashed in pieces whose ends fall inside granules and runs."""
    if chunk is not None:
        monkeypatch.setattr(filecopy, "READ_CHUNK", chunk)
    for name, path in sources(tmp_path).items():
        with open_image(path) as disk:
            view = FixedVhdView(disk, unique_id=b"\x01" * 16, timestamp=1)
            ordered = tmp_path / f"{name}.ordered.vhd"
            sink = FixedFileSink(ordered, view.size)
            pump(view, [sink])
            parallel = tmp_path / f"{name}.parallel.vhd"
            writer = FixedFileSink(parallel, view.size)
            digest = SparseDigest(view.size)
            visited = copy_into(view, writer, view.size, digest=digest, workers=workers, window=GRANULE,
                                kernel_copy=kernel_copy)
            writer.finish()
        assert parallel.read_bytes() == ordered.read_bytes(), name
        assert visited == sum(e.length for e in view.extents() if e.allocated)
        assert digest.hexdigest() == reference_sparse_digest(parallel), name
        # Holes for zeros: no more blocks in use than the ordered walk's output (which skips zero
        # granules of its chunks), and never more than the non-zero 4 KiB blocks need.
        data = parallel.read_bytes()
        nonzero = sum(1 for i in range(0, len(data), 4096) if any(data[i:i + 4096])) * 4096
        assert os.stat(parallel).st_blocks * 512 <= nonzero + 4096, name
        assert writer.bytes_written <= nonzero


def test_the_filesystem_type_is_the_one_findmnt_names(tmp_path: Path) -> None:
    import shutil

    if shutil.which("findmnt") is None:
        pytest.skip("findmnt is not installed")
    expected = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "--target", str(tmp_path)], capture_output=True,
                              text=True, check=True).stdout.strip()
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        assert filesystem_type(fd) == expected
        assert kernel_copies(fd, fd) == (expected in KERNEL_COPY_FILESYSTEMS)
    finally:
        os.close(fd)


def test_stored_runs_are_copied_by_the_kernel_where_it_clones_and_refusals_fall_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = scattered_raw(tmp_path / "k.raw", 16 * MiB)
    calls: list[int] = []
    real = os.copy_file_range

    def counting(src: int, dst: int, count: int, offset_src: int | None = None,
                 offset_dst: int | None = None) -> int:
        calls.append(count)
        return real(src, dst, count, offset_src, offset_dst)

    monkeypatch.setattr(os, "copy_file_range", counting)
    with open_image(raw) as disk:
        plain = convert(disk, tmp_path / "plain.vhd")
    src, dst = os.open(raw, os.O_RDONLY), os.open(tmp_path, os.O_RDONLY)
    try:
        if not kernel_copies(src, dst):
            assert calls == []  # e.g. ext4: a splice copy would be slower than pread + pwrite
    finally:
        os.close(src)
        os.close(dst)
    monkeypatch.setattr(filecopy, "kernel_copies", lambda src, dst: True)  # as on XFS or Btrfs
    calls.clear()
    with open_image(raw) as disk:
        kernel = convert(disk, tmp_path / "kernel.vhd")
    assert kernel.bytes_written == plain.bytes_written
    # Runs of 256 KiB and more are copied by the kernel; shorter ones (and the footer) are written.
    assert calls and min(calls) >= 4096 and sum(calls) > kernel.bytes_written // 2

    def refusing(*args: object) -> int:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))  # e.g. an older kernel across filesystems

    monkeypatch.setattr(os, "copy_file_range", refusing)
    with open_image(raw) as disk:
        fallback = convert(disk, tmp_path / "fallback.vhd")
    assert fallback.bytes_written == kernel.bytes_written
    assert (tmp_path / "kernel.vhd").read_bytes()[:-512] == (tmp_path / "fallback.vhd").read_bytes()[:-512]
    assert (tmp_path / "kernel.vhd").read_bytes()[:-512] == raw.read_bytes()


@pytest.mark.parametrize("hashes", [(), ("md5",)])
def test_no_fsync_unless_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hashes: tuple[str, ...]) -> None:
    """Like cp and qemu-img, convert does not wait for the disk; --sync flushes file and folder first."""
    raw = scattered_raw(tmp_path / "f.raw", 8 * MiB)
    synced: list[int] = []
    real_fsync = os.fsync

    def counting(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting)
    monkeypatch.setattr(os, "fdatasync", counting)
    with open_image(raw) as disk:
        convert(disk, tmp_path / "nosync.vhd", hashes=hashes)
        assert synced == []
        convert(disk, tmp_path / "sync.vhd", hashes=hashes, sync=True)
        assert len(synced) == 2  # the file before its rename, then the folder after it


def test_cli_sync_flag_fsyncs_and_default_does_not(tmp_path: Path) -> None:
    """Counted by strace in a real process: no fsync by default, fsyncs with --sync."""
    import shutil

    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    raw = scattered_raw(tmp_path / "s.raw", 4 * MiB)
    counts = {}
    for flag in ("", "--sync"):
        log = tmp_path / f"trace{flag}.txt"
        out = tmp_path / f"out{flag}.vhd"
        cmd = ["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync,sync_file_range,syncfs", "-o", str(log),
               *cli_command("convert", str(raw), str(out), "--quiet", *([flag] if flag else []))]
        subprocess.run(cmd, check=True, env=cli_environment())
        counts[flag] = sum(1 for line in log.read_text().splitlines() if "sync" in line)
    assert counts[""] == 0
    assert counts["--sync"] >= 2
