"""The sparse digest: the streaming sink, the any-order accumulator and the reference script agree."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from vhdtool.extents import Extent
from vhdtool.stream.digest import GRANULE, SparseDigest, SparseDigestSink, granules_touched

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "scripts" / "sparse_digest.py"


def _reference():
    spec = importlib.util.spec_from_file_location("sparse_digest_reference", REFERENCE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _by_definition(data: bytes) -> str:
    """The definition in docs/sparse-digest.md, written out once more as plainly as possible."""
    top = hashlib.sha256(b"vhdtool-sparse-sha256-v1\n" + len(data).to_bytes(8, "big") + GRANULE.to_bytes(8, "big"))
    for i in range(0, len(data), GRANULE):
        chunk = data[i:i + GRANULE]
        if any(chunk):
            top.update((i // GRANULE).to_bytes(8, "big") + hashlib.sha256(chunk).digest())
    return top.hexdigest()


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, bool]]]:
    """A byte string with a few random non-zero runs, and a cut of it into data/zero pieces."""
    size = draw(st.sampled_from([0, 1, 4096, GRANULE - 1, GRANULE, GRANULE + 512, 3 * GRANULE + 4097]))
    buf = bytearray(size)
    for _ in range(draw(st.integers(0, 4))):
        if not size:
            break
        start = draw(st.integers(0, size - 1))
        end = min(size, start + draw(st.integers(1, GRANULE + 3)))
        buf[start:end] = os.urandom(end - start)
    pieces: list[tuple[int, bool]] = []
    position = 0
    while position < size:
        step = min(size - position, draw(st.sampled_from([1, 512, 65536, 1 << 20, GRANULE, GRANULE + 1])))
        as_zeros = not any(buf[position:position + step]) and draw(st.booleans())
        pieces.append((step, as_zeros))
        position += step
    return bytes(buf), pieces


@settings(max_examples=40, deadline=None)
@given(streams())
def test_sink_matches_definition_however_the_stream_is_cut(case: tuple[bytes, list[tuple[int, bool]]]) -> None:
    data, pieces = case
    sink = SparseDigestSink(len(data))
    position = 0
    for length, as_zeros in pieces:
        if as_zeros:
            sink.zeros(position, length)
        else:
            sink.data(position, memoryview(data)[position:position + length])
        position += length
    sink.finish()
    assert sink.hexdigest() == _by_definition(data)


def test_accumulator_takes_granules_in_any_order() -> None:
    data = bytearray(5 * GRANULE + 100)
    data[10] = 1
    data[3 * GRANULE + 5: 3 * GRANULE + 9000] = os.urandom(8995)
    data[-1] = 7
    acc = SparseDigest(len(data))
    for i in reversed(range(acc.granule_count)):
        acc.add_granule(i, data[i * GRANULE:(i + 1) * GRANULE])
    assert acc.nonzero_granules == 3
    assert acc.hexdigest() == _by_definition(bytes(data))


def test_length_is_bound_in_and_zero_granules_are_free() -> None:
    assert _by_definition(bytes(10)) != _by_definition(bytes(11))
    empty = SparseDigestSink(1 << 40)  # a TiB of zeros: one call, no hashing
    empty.zeros(0, 1 << 40)
    empty.finish()
    assert empty.digest.nonzero_granules == 0
    assert empty.hexdigest() == SparseDigest(1 << 40).hexdigest()


def test_reference_script_on_a_sparse_file(tmp_path: Path) -> None:
    path = tmp_path / "sparse.img"
    payload = os.urandom(3 * 4096)
    with open(path, "wb") as f:
        f.truncate(64 * GRANULE + 123)
        f.seek(40 * GRANULE - 4096)
        f.write(payload)
    data = path.read_bytes()
    expected = _by_definition(data)
    assert _reference().sparse_digest(str(path)) == expected
    out = subprocess.run([sys.executable, str(REFERENCE), str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected


def test_granules_touched_are_the_allocated_ones_once() -> None:
    extents = [Extent(0, 100, True), Extent(100, GRANULE, False), Extent(GRANULE + 200, 10, True),
               Extent(GRANULE + 210, 3 * GRANULE, True), Extent(4 * GRANULE + 210, 5, False)]
    assert granules_touched(extents) == [0, 1, 2, 3, 4]
    assert granules_touched([Extent(0, 9 * GRANULE, False)]) == []


def test_leading_zeros_from_the_kept_states_hash_like_hashlib() -> None:
    from vhdtool.stream.digest import _zero_prefix

    for n in (0, 1, 512, 65535, 65536, 65537, 3 * 65536 + 4096, GRANULE - 512, GRANULE):
        assert _zero_prefix(n).hexdigest() == hashlib.sha256(bytes(n)).hexdigest(), n
    h = _zero_prefix(65536)
    h.update(b"x")  # a copy: the kept state is not changed by its users
    assert _zero_prefix(65536).hexdigest() == hashlib.sha256(bytes(65536)).hexdigest()
