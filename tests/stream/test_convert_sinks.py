"""The sinks ``convert`` uses: the sparse file writer and the same-pass hasher."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vhdtool.errors import OutputError, UsageError
from vhdtool.formats.raw import data_ranges
from vhdtool.stream.fixed_file import FixedFileSink
from vhdtool.stream.hasher import HashSink, parse_algorithms


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
