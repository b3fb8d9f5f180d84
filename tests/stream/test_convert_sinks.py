"""The sinks ``convert`` uses: the sparse file writer and the same-pass hasher."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vhdtool.blockio import fileio
from vhdtool.errors import OutputError, UsageError
from vhdtool.formats.raw import data_ranges
from vhdtool.stream import fixed_file
from vhdtool.stream.fixed_file import FixedFileSink
from vhdtool.stream.hasher import HashSink, parse_algorithms
from vhdtool.units import MiB


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 3 * 1024 * 1024)), min_size=1, max_size=8),
       st.sampled_from(["md5", "sha256"]))
def test_hashing_zero_ranges_equals_hashing_zero_bytes(pieces: list[tuple[bool, int]], name: str) -> None:
    sink = HashSink([name])
    reference = hashlib.new(name)
    offset = 0
    for is_zero, length in pieces:
        if is_zero:
            sink.zeros(offset, length)
            reference.update(bytes(length))
        else:
            data = bytes([offset % 251 + 1]) * length
            sink.data(offset, memoryview(data))
            reference.update(data)
        offset += length
    assert sink.digests() == {name: reference.hexdigest()}


def test_hasher_refuses_gaps_and_unknown_names() -> None:
    sink = HashSink(["md5"])
    sink.zeros(0, 512)
    with pytest.raises(ValueError):
        sink.zeros(1024, 512)
    assert parse_algorithms("MD5, sha-256,md5") == ("md5", "sha256")
    with pytest.raises(UsageError):
        parse_algorithms("md5,crc7")


def test_file_sink_leaves_holes_for_zero_extents_and_zero_granules(tmp_path: Path) -> None:
    target = tmp_path / "out.img"
    size = 8 * 1024 * 1024
    sink = FixedFileSink(target, size)
    chunk = bytearray(2 * 1024 * 1024)
    chunk[4096:8192] = b"\x01" * 4096  # one non-zero granule in an otherwise zero chunk
    chunk[-100:] = b"\x02" * 100
    sink.data(0, memoryview(chunk))
    sink.zeros(len(chunk), size - len(chunk))
    assert not target.exists()  # only the temporary file exists until finish
    sink.finish()
    assert sink.bytes_written == 2 * 4096
    assert target.stat().st_size == size
    assert target.read_bytes() == bytes(chunk) + bytes(size - len(chunk))
    fd = os.open(target, os.O_RDONLY)
    try:
        assert data_ranges(fd, size) == [(4096, 8192), (len(chunk) - 4096, len(chunk))]
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.img"]


def test_file_sink_abort_removes_the_temporary_file(tmp_path: Path) -> None:
    sink = FixedFileSink(tmp_path / "out.img", 1024 * 1024)
    sink.data(0, memoryview(b"\x07" * 4096))
    assert len(list(tmp_path.iterdir())) == 1
    sink.abort()
    sink.abort()
    assert list(tmp_path.iterdir()) == []


def test_file_sink_does_not_clobber_a_target_that_appeared_meanwhile(tmp_path: Path) -> None:
    target = tmp_path / "out.img"
    sink = FixedFileSink(target, 4096)
    sink.data(0, memoryview(b"\x07" * 4096))
    target.write_bytes(b"someone else's")
    with pytest.raises(OutputError, match="appeared"):
        sink.finish()
    assert target.read_bytes() == b"someone else's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.img"]


def test_file_sink_reports_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        FixedFileSink(tmp_path / "nowhere" / "out.img", 4096)


def test_early_writeback_keeps_the_bytes_right(tmp_path: Path) -> None:
    """Writeback is started every few KiB here (every 64 MiB by default): same bytes, same holes."""
    target = tmp_path / "out.img"
    size = 1024 * 1024
    sink = FixedFileSink(target, size, writeback_every=8192)
    expected = bytearray(size)
    for i, offset in enumerate(range(0, size, 64 * 1024)):
        piece = bytes([i + 1]) * 4096 + bytes(60 * 1024)
        expected[offset:offset + len(piece)] = piece
        sink.data(offset, memoryview(piece))
    sink.finish()
    assert target.read_bytes() == bytes(expected)
    assert sink.bytes_written == 16 * 4096


def test_a_sink_dropped_unfinished_removes_its_temporary_file(tmp_path: Path) -> None:
    """What a Ctrl-C leaves when it lands as the constructor returns, before anyone holds the sink."""
    FixedFileSink(tmp_path / "out.img", 4096)
    assert list(tmp_path.iterdir()) == []
    kept = FixedFileSink(tmp_path / "kept.img", 4096)
    kept.finish()
    del kept
    assert [p.name for p in tmp_path.iterdir()] == ["kept.img"]


def _filesystem_of(folder: Path) -> str | None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        return fileio.filesystem_type(fd)
    finally:
        os.close(fd)


def _recorded_preallocations(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    calls: list[tuple[int, int]] = []
    real = fileio.preallocate

    def recording(fd: int, offset: int, length: int) -> bool:
        calls.append((offset, length))
        return real(fd, offset, length)

    monkeypatch.setattr(fileio, "preallocate", recording)
    return calls


def test_long_runs_are_allocated_before_they_are_written_where_that_was_measured(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On ext4 a run of 256 KiB or more is fallocated first, a short one is not; on any other
    filesystem nothing is; the bytes and holes are the same either way."""
    calls = _recorded_preallocations(monkeypatch)
    kind = _filesystem_of(tmp_path)
    data = os.urandom(MiB + 4096)
    cases = {"shipped": fixed_file.PREALLOCATING_FILESYSTEMS, "none": frozenset(), "this": frozenset({kind})}
    for case, filesystems in cases.items():
        calls.clear()
        preallocating = kind in filesystems
        monkeypatch.setattr(fixed_file, "PREALLOCATING_FILESYSTEMS", filesystems)
        target = tmp_path / f"out-{case}.raw"
        sink = FixedFileSink(target, 8 * MiB)
        sink.write_at(2 * MiB, memoryview(data))  # long: allocated first where preallocating
        sink.write_at(6 * MiB, memoryview(data[:64 * 1024]))  # short: written as it is
        sink.finish()
        assert calls == ([(2 * MiB, len(data))] if preallocating else [])
        written = target.read_bytes()
        assert written[2 * MiB:2 * MiB + len(data)] == data and written[6 * MiB:6 * MiB + 65536] == data[:65536]
        assert written.count(0, 0, 2 * MiB) == 2 * MiB and not any(written[4 * MiB:6 * MiB])
        assert os.stat(target).st_blocks * 512 <= len(data) + 64 * 1024 + 2 * 4096  # the rest are holes


def test_a_filesystem_that_cannot_preallocate_is_written_as_it_is(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    tried: list[int] = []

    def unsupported(fd: int, offset: int, length: int) -> None:
        tried.append(offset)
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(fixed_file, "PREALLOCATING_FILESYSTEMS",
                        frozenset({_filesystem_of(tmp_path)}))
    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    sink = FixedFileSink(tmp_path / "out.raw", 4 * MiB)
    data = os.urandom(MiB)
    sink.write_at(0, memoryview(data))
    sink.write_at(2 * MiB, memoryview(data))
    sink.finish()
    assert tried == [0]  # asked once, then never again
    assert (tmp_path / "out.raw").read_bytes()[:MiB] == data


def test_no_space_to_preallocate_is_one_output_error_and_no_file(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fixed_file, "PREALLOCATING_FILESYSTEMS",
                        frozenset({_filesystem_of(tmp_path)}))
    monkeypatch.setattr(os, "posix_fallocate", full)
    target = tmp_path / "out.raw"
    sink = FixedFileSink(target, 4 * MiB)
    with pytest.raises(OutputError) as err:
        sink.write_at(0, memoryview(os.urandom(MiB)))
    sink.abort()
    assert str(target) in str(err.value) and "no space left" in str(err.value)
    assert list(tmp_path.iterdir()) == []
