"""The platform fallback of :mod:`vhdtool.blockio.fileio` (Windows has no ``pread``/``pwrite``), forced on here.

With the POSIX calls switched off, reading every fixture, converting and fixing must give the same
bytes as with them, checked against qemu-img; and threads sharing one descriptor must never see
each other's cursor moves.
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.oracles import qemu_img, qemu_raw_bytes

from vhdtool import open_image
from vhdtool.blockio import fileio
from vhdtool.disk.base import ImageFile
from vhdtool.errors import OutputError
from vhdtool.jobs.convert import convert
from vhdtool.jobs.fix import apply_fix, plan_fix


@pytest.fixture
def no_positional_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """What a platform without ``os.pread``/``os.preadv``/``os.pwrite`` sees."""
    for name in ("HAVE_PREAD", "HAVE_PREADV", "HAVE_PWRITE"):
        monkeypatch.setattr(fileio, name, False)
    monkeypatch.delattr(os, "pread", raising=False)
    monkeypatch.delattr(os, "preadv", raising=False)
    monkeypatch.delattr(os, "pwrite", raising=False)
    yield


def test_fallback_reads_and_writes_like_the_positional_calls(tmp_path: Path, no_positional_calls: None) -> None:
    path = tmp_path / "f"
    data = random.Random(1).randbytes(100_000)
    path.write_bytes(data)
    fd = os.open(path, os.O_RDWR)
    try:
        assert fileio.pread(fd, 10, 99_995) == data[99_995:]
        view = memoryview(bytearray(4096))
        assert fileio.preadinto(fd, view, 50_000) == 4096 and bytes(view) == data[50_000:54_096]
        assert fileio.preadinto(fd, view, 100_000) == 0
        assert fileio.pwrite(fd, b"xyz", 7) == 3
        assert fileio.pread(fd, 5, 5) == data[5:7] + b"xyz"
    finally:
        fileio.forget(fd)
        os.close(fd)


def test_threads_sharing_one_descriptor_read_their_own_offsets(tmp_path: Path, no_positional_calls: None) -> None:
    path = tmp_path / "f"
    block = 4096
    path.write_bytes(b"".join(i.to_bytes(4, "little") * (block // 4) for i in range(512)))
    image = ImageFile(path)
    errors: list[str] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(300):
            i = rng.randrange(512)
            got = image.pread(i * block, block, "test block")
            if got != i.to_bytes(4, "little") * (block // 4):
                errors.append(f"block {i}")

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    image.close()
    assert errors == []


def test_convert_and_fix_without_positional_calls(tmp_path: Path, no_positional_calls: None) -> None:
    src = tmp_path / "src.vhdx"
    qemu_img("create", "-q", "-f", "vhdx", "-o", "block_size=1M", str(src), "5000k")
    for offset in (0, 1_500_000, 4_000_000):
        subprocess.run(["qemu-io", "-f", "vhdx", "-c", f"write -P 0x5a {offset} 300k", str(src)],
                       check=True, capture_output=True)
    expected = qemu_raw_bytes(src, tmp_path, "vhdx")
    out = tmp_path / "out.vhd"
    with open_image(src) as disk:
        result = convert(disk, out, hashes=("sha256",))
    with open_image(out) as fixed:
        assert fixed.read(0, len(expected)) == expected
    assert result.file_size == out.stat().st_size == 5 * 1024 * 1024 + 512

    # qemu-img's CHS-sized fixed VHD, repaired in place with the fallback writes.
    unaligned = tmp_path / "qemu.vhd"
    qemu_img("convert", "-q", "-f", "vhdx", "-O", "vpc", "-o", "subformat=fixed", str(src), str(unaligned))
    plan = plan_fix(str(unaligned))
    apply_fix(plan)
    with open_image(unaligned) as repaired:
        assert repaired.virtual_size % (1024 * 1024) == 0
        assert repaired.read(0, len(expected)) == expected


def test_pwrite_all_loops_over_short_writes_and_refuses_no_progress(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(64))
    real = fileio.pwrite
    fd = os.open(path, os.O_RDWR)
    try:
        # Three bytes a call: the helper keeps going until everything is written.
        monkeypatch.setattr(fileio, "pwrite", lambda f, v, o: real(f, v[:3], o))
        assert fileio.pwrite_all(fd, b"0123456789", 20) == 10
        assert fileio.pread(fd, 12, 19) == b"\x000123456789\x00"
        monkeypatch.setattr(fileio, "pwrite", lambda f, v, o: 0)
        with pytest.raises(OSError, match="no progress"):
            fileio.pwrite_all(fd, b"abc", 0)
    finally:
        os.close(fd)


def test_fix_and_convert_fail_cleanly_when_writes_make_no_progress(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``pwrite`` that returns 0 (a full FUSE mount, a broken network filesystem) ends both writers
    with one error instead of a loop; the image to fix is left as it was."""
    image = tmp_path / "qemu.vhd"
    qemu_img("create", "-q", "-f", "vpc", "-o", "subformat=fixed", str(image), "5000k")
    before = image.read_bytes()
    plan = plan_fix(str(image))
    assert plan.needed
    monkeypatch.setattr(fileio, "pwrite", lambda fd, view, offset: 0)
    with pytest.raises(OutputError, match="no progress"):
        apply_fix(plan)
    assert image.read_bytes() == before
    src = tmp_path / "src.vhdx"
    qemu_img("create", "-q", "-f", "vhdx", str(src), "3M")
    subprocess.run(["qemu-io", "-f", "vhdx", "-c", "write -P 0x5a 0 64k", str(src)], check=True, capture_output=True)
    with open_image(src) as disk, pytest.raises(OutputError, match="no progress"):
        convert(disk, tmp_path / "out.vhd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qemu.vhd", "src.vhdx"]  # no output, no temporary
