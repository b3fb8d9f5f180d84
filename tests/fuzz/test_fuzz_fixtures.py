"""Mutating every real fixture (bit flips, byte overwrites, truncations, extensions) and the regression corpus.

The fixtures were made by qemu-img, mkfs and the Windows builder (fixtures/*/make*); damage lands mostly
on the bytes the file actually holds (metadata, bitmaps, filesystem structures), since damage to holes is
rarely interesting. Each case runs every entry point (tests/fuzz/harness.py).
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.fixture_files import FIXTURES

from fuzz.harness import exercise
from fuzz.mutate import Op, SparseImage, make_case

pytestmark = pytest.mark.slow  # left out of scripts/test.sh --fast

ALL_FIXTURES = sorted(str(p.relative_to(FIXTURES)) for p in FIXTURES.glob("*/*.gz")
                      if p.parent.name in ("vhd", "vhdx", "sample"))
REGRESSIONS = sorted(p.name for p in (FIXTURES / "regressions").glob("*.gz"))
# Inspect and check only on the fixtures that hold partitions and filesystems (the others are blank disks).
WITH_FILESYSTEMS = {"sample/data.vhd.gz", "sample/linux-os.vhdx.gz"}

_BASES: dict[str, SparseImage] = {}


def base(name: str) -> SparseImage:
    if name not in _BASES:
        _BASES[name] = SparseImage.from_file(FIXTURES / name)
    return _BASES[name]


@st.composite
def fixture_mutations(draw: st.DrawFn, image: SparseImage) -> list[Op]:
    """Damage aimed at the held bytes (first/last 64 KiB pieces weighted up), or at the file's length."""
    held = image.data_offsets()
    hot = held[:2] + held[-2:]
    ops: list[Op] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "flip", "write", "write", "word", "truncate", "extend"]))
        piece = draw(st.sampled_from(hot) if draw(st.booleans()) else st.sampled_from(held))
        at = min(image.size - 1, piece + draw(st.integers(0, 65535)))
        if kind == "flip":
            ops.append(("flip", at, draw(st.integers(0, 7))))
        elif kind == "write":
            ops.append(("write", at, draw(st.binary(min_size=1, max_size=64))))
        elif kind == "word":
            at -= at % 4
            ops.append(("write", at, draw(st.sampled_from([b"\xff\xff\xff\xff", b"\0\0\0\0", b"\x7f\xff\xff\xff",
                                                           b"\x00\x00\x00\x80", b"\x00\x00\x10\x00"]))))
        elif kind == "truncate":
            ops.append(("truncate", draw(st.sampled_from([0, 1, 511, 512, image.size - 1, image.size - 512,
                                                          draw(st.integers(0, image.size))]))))
        else:
            ops.append(("extend", image.size + draw(st.sampled_from([1, 511, 512, 4096, 1 << 20]))))
    return ops


@pytest.mark.parametrize("name", ALL_FIXTURES)
@settings(max_examples=25, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_fixture(name: str, data: st.DataObject) -> None:
    image = base(name)
    ops = data.draw(fixture_mutations(image))
    with tempfile.TemporaryDirectory(prefix="vhdtool-fuzz-") as folder:
        path = make_case(image, ops, Path(folder) / Path(name).name.removesuffix(".gz"))
        deep = name in WITH_FILESYSTEMS
        outcome = exercise(path, work_dir=folder, inspect=deep, check=deep, time_limit=60.0)
        assert outcome.crash is None, f"{name} {ops}\n{outcome.crash}"


def test_fixture_list_is_complete() -> None:
    """The mutation test covers the container fixtures of every format."""
    assert {n.split("/")[0] for n in ALL_FIXTURES} == {"vhd", "vhdx", "sample"}
    assert len(ALL_FIXTURES) >= 10


@pytest.mark.parametrize("name", REGRESSIONS)
def test_regression_input(name: str, tmp_path: Path) -> None:
    """Every stored hostile input opens and runs every entry point, or is refused with a VhdtoolError."""
    dest = tmp_path / name.removesuffix(".gz")
    with gzip.open(FIXTURES / "regressions" / name, "rb") as fin, open(dest, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    outcome = exercise(dest, work_dir=tmp_path, time_limit=60.0)
    assert outcome.crash is None, outcome.crash
