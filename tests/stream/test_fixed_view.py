"""The fixed-VHD view of a disk: padding, footer and extents, checked on real raw images."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vhdtool import open_image
from vhdtool.blockio.zeros import nonzero_runs
from vhdtool.errors import UsageError
from vhdtool.extents import MiB, allocated_bytes, check_cover
from vhdtool.formats.vhd.footer import chs_geometry, footer_checksum, parse_footer
from vhdtool.stream.fixed_view import FixedVhdView, azure_virtual_size


def make_raw(path: Path, size: int, writes: list[tuple[int, bytes]]) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in writes:
            f.seek(offset)
            f.write(data)


def test_view_pads_to_mib_and_appends_a_valid_fixed_footer(tmp_path: Path) -> None:
    size = 3 * MiB + 4096 + 512
    img = tmp_path / "disk.raw"
    make_raw(img, size, [(0, b"\x01" * 512), (2 * MiB, b"\x02" * 8192), (size - 512, b"\x03" * 512)])
    with open_image(img) as disk:
        view = FixedVhdView(disk)
        assert view.virtual_size == 4 * MiB
        assert view.size == 4 * MiB + 512
        extents = view.extents()
        check_cover(extents, view.size)
        assert extents[-1].offset == 4 * MiB and extents[-1].length == 512 and extents[-1].allocated
        everything = bytearray(view.size)
        view.readinto(0, memoryview(everything))
    assert bytes(everything[:size]) == img.read_bytes()
    assert everything[size:4 * MiB] == bytes(4 * MiB - size)
    footer = parse_footer(bytes(everything[-512:]), str(img), 4 * MiB)
    assert footer.checksum_valid and footer.disk_type == 2
    assert footer.current_size == footer.original_size == 4 * MiB
    assert footer.data_offset == 0xFFFFFFFFFFFFFFFF
    assert footer.features & 2 and footer.file_format_version == 0x00010000
    assert footer.geometry == chs_geometry(4 * MiB)


def test_unallocated_bytes_of_the_view_read_as_zeros(tmp_path: Path) -> None:
    img = tmp_path / "sparse.raw"
    make_raw(img, 5 * MiB, [(MiB + 100, b"data")])
    with open_image(img) as disk:
        view = FixedVhdView(disk, size=7 * MiB)
        for e in view.extents():
            if not e.allocated:
                buf = bytearray(e.length)
                view.readinto(e.offset, memoryview(buf))
                assert not any(buf)
        assert allocated_bytes(view.extents()) < 2 * MiB


def test_shrinking_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        azure_virtual_size(10 * MiB, 5 * MiB)
    assert azure_virtual_size(10 * MiB, 10 * MiB + 1) == 11 * MiB


@given(st.integers(1, 1 << 45).map(lambda n: n * 512))
def test_geometry_never_exceeds_the_size_and_checksum_roundtrips(size: int) -> None:
    geometry = chs_geometry(size)
    assert geometry.size <= size
    assert 1 <= geometry.heads <= 16 and geometry.sectors_per_track in (17, 31, 63, 255)


def test_footer_checksum_matches_qemu_img(tmp_path: Path) -> None:
    import subprocess
    img = tmp_path / "q.vhd"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=fixed,force_size=on",
                    str(img), "64M"], check=True)
    raw = img.read_bytes()[-512:]
    assert footer_checksum(raw) == int.from_bytes(raw[64:68], "big")


@settings(max_examples=60)
@given(st.lists(st.tuples(st.integers(0, 63), st.integers(1, 700)), max_size=12),
       st.sampled_from([8, 512, 4096]))
def test_nonzero_runs_match_a_byte_model(writes: list[tuple[int, int]], granularity: int) -> None:
    size = 64 * 512 + 100
    buf = bytearray(size)
    for sector, length in writes:
        start = sector * 512 + (length % 7)
        buf[start:start + length] = b"\xff" * len(buf[start:start + length])
    runs = nonzero_runs(memoryview(buf), granularity)
    marked = bytearray(size)
    for a, b in runs:
        assert a % granularity == 0 and (b % granularity == 0 or b == size)
        marked[a:b] = b"\x01" * (b - a)
    for i in range(size):
        if buf[i]:
            assert marked[i], f"non-zero byte {i} outside every run"
    for a, b in runs:
        assert any(buf[a:b])
    for (_a1, b1), (a2, _) in zip(runs, runs[1:], strict=False):
        assert b1 < a2


@settings(max_examples=80)
@given(st.lists(st.sampled_from(["data", "zero", "late"]), min_size=1, max_size=40), st.sampled_from([512, 4096]),
       st.integers(0, 2**32))
def test_nonzero_runs_on_dense_data_match_a_granule_model(kinds: list[str], granularity: int, seed: int) -> None:
    """Mostly data, as in a full disk: granules of random bytes, all-zero ones, and ones whose first
    word is zero with a non-zero byte further in (the granules the first-word test cannot decide)."""
    rng = random.Random(seed)
    buf = bytearray()
    for kind in kinds:
        granule = bytearray(rng.randbytes(granularity) if kind == "data" else bytes(granularity))
        if kind == "data":
            granule[0] = granule[0] or 1
        if kind == "late":
            granule[rng.randrange(8, granularity)] = rng.randrange(1, 256)
        buf += granule
    expected: list[tuple[int, int]] = []
    for i, kind in enumerate(kinds):
        if kind == "zero":
            continue
        a, b = i * granularity, (i + 1) * granularity
        if expected and expected[-1][1] == a:
            expected[-1] = (expected[-1][0], b)  # adjacent non-zero granules make one run
        else:
            expected.append((a, b))
    assert nonzero_runs(memoryview(buf), granularity) == expected


def test_raw_extents_follow_the_files_holes(tmp_path: Path) -> None:
    img = tmp_path / "holes.raw"
    make_raw(img, 64 * MiB, [(8 * MiB, os.urandom(MiB)), (40 * MiB, b"x")])
    with open_image(img) as disk:
        assert disk.format == "raw"
        data = allocated_bytes(disk.extents())
    # Filesystems may allocate a little around writes, but a 64 MiB file with ~1 MiB of data is sparse.
    assert MiB <= data <= 4 * MiB


def test_qemu_img_reads_our_footer_size_without_hints(tmp_path: Path) -> None:
    """Our footer names Hyper-V as creator, so tools that trust current size only for it agree on the size."""
    import json
    import subprocess

    img = tmp_path / "odd.raw"
    make_raw(img, 101 * MiB - 4096, [(0, b"\x01" * 512)])
    out = tmp_path / "out.vhd"
    with open_image(img) as disk:
        view = FixedVhdView(disk)
        buf = bytearray(view.size)
        view.readinto(0, memoryview(buf))
    out.write_bytes(buf)
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-f", "vpc", str(out)],
                                     check=True, capture_output=True, text=True).stdout)
    assert info["virtual-size"] == 101 * MiB
