"""Differencing VHDX chains made by tests/support/vhdx_builder.py: a model of the block map is the oracle for
every state, libvhdi (pyvhdi) an independent reader for the states it implements, and parent
resolution / identity checks are exercised end to end."""

from __future__ import annotations

import json
import random
import tempfile
import uuid
from pathlib import Path

import pytest
import pyvhdi
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.vhdx_builder import (
    FULLY_PRESENT,
    NOT_PRESENT,
    PARTIALLY_PRESENT,
    UNDEFINED,
    UNMAPPED,
    ZERO,
    Block,
    Built,
    build_vhdx,
)

from vhdtool.cli import main
from vhdtool.errors import ParentError
from vhdtool.extents import MiB, allocated_ranges, check_cover, merge_ranges
from vhdtool.formats.open import open_image


def model(blocks: dict[int, Block], size: int, block_size: int, sector: int,
          parent: bytes | None, parent_alloc: list[tuple[int, int]] | None = None
          ) -> tuple[bytes, list[tuple[int, int]]]:
    """Expected logical bytes and allocated ranges of a disk, straight from the spec's rules."""
    out = bytearray(parent if parent is not None else bytes(size))
    alloc: list[tuple[int, int]] = []
    zeroed: list[tuple[int, int]] = []
    for number, spec in blocks.items():
        base = number * block_size
        end = min(base + block_size, size)
        if spec.state == FULLY_PRESENT:
            out[base:end] = spec.data[:end - base]
            alloc.append((base, end))
        elif spec.state == PARTIALLY_PRESENT:
            assert spec.present is not None
            for i, present in enumerate(spec.present):
                lo = base + i * sector
                if present and lo < end:
                    out[lo:lo + sector] = spec.data[i * sector:(i + 1) * sector]
                    alloc.append((lo, lo + sector))
        elif spec.state == ZERO or parent is None:
            out[base:end] = bytes(end - base)
            zeroed.append((base, end))
    for lo, hi in parent_alloc or []:
        position = lo
        for zlo, zhi in sorted(zeroed):
            if zhi <= position or zlo >= hi:
                continue
            if zlo > position:
                alloc.append((position, zlo))
            position = max(position, zhi)
        if position < hi:
            alloc.append((position, hi))
    return bytes(out), merge_ranges((lo, min(hi, size)) for lo, hi in alloc)


def random_blocks(rnd: random.Random, count: int, block_size: int, sector: int,
                  states: list[int]) -> dict[int, Block]:
    blocks = {}
    for number in range(count):
        state = rnd.choice(states)
        if state == NOT_PRESENT:
            continue
        data = rnd.randbytes(block_size) if state in (FULLY_PRESENT, PARTIALLY_PRESENT) else b""
        present = None
        if state == PARTIALLY_PRESENT:
            p = rnd.random()
            present = [rnd.random() < p for _ in range(block_size // sector)]
        blocks[number] = Block(state, data, present)
    return blocks


def make_chain(tmp: Path, rnd: random.Random, size: int, sector: int = 512, depth: int = 1,
               child_states: list[int] | None = None, base_states: list[int] | None = None
               ) -> tuple[list[Built], list[dict[int, Block]]]:
    block_size = 1 * MiB
    count = -(-size // block_size)
    base = base_states or [NOT_PRESENT, FULLY_PRESENT, ZERO]
    blocks = [random_blocks(rnd, count, block_size, sector, base)]
    built = [build_vhdx(tmp / "base.vhdx", size, block_size=block_size, logical_sector_size=sector,
                        blocks=blocks[0])]
    for level in range(depth):
        states = child_states or [NOT_PRESENT, UNDEFINED, ZERO, UNMAPPED, FULLY_PRESENT, PARTIALLY_PRESENT]
        blocks.append(random_blocks(rnd, count, block_size, sector, states))
        parent = built[-1]
        built.append(build_vhdx(tmp / f"child{level}.vhdx", size, block_size=block_size,
                                logical_sector_size=sector, blocks=blocks[-1],
                                parent_locator={"parent_linkage": f"{{{parent.data_write_guid}}}",
                                                "relative_path": ".\\" + Path(parent.path).name}))
    return built, blocks


def expected_chain(built: list[Built], blocks: list[dict[int, Block]], sector: int
                   ) -> tuple[bytes, list[tuple[int, int]]]:
    data: bytes | None = None
    alloc: list[tuple[int, int]] | None = None
    for b, spec in zip(built, blocks, strict=True):
        data, alloc = model(spec, b.virtual_size, b.block_size, sector, data, alloc)
    assert data is not None and alloc is not None
    return data, alloc


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), blocks=st.integers(1, 5), tail=st.sampled_from([0, 512, 4096 * 3]),
       sector=st.sampled_from([512, 4096]), depth=st.integers(1, 2))
def test_random_chains_match_model(seed: int, blocks: int, tail: int, sector: int, depth: int) -> None:
    rnd = random.Random(seed)
    size = blocks * MiB - (tail if tail % sector == 0 and tail < blocks * MiB else 0)
    with tempfile.TemporaryDirectory() as tmp:
        built, specs = make_chain(Path(tmp), rnd, size, sector, depth)
        expected, alloc = expected_chain(built, specs, sector)
        with open_image(built[-1].path) as disk:
            assert disk.disk_type == "differencing"
            assert disk.read(0, size) == expected
            extents = disk.extents()
            check_cover(extents, size)
            assert allocated_ranges(extents) == alloc
            for _ in range(5):  # random unaligned reads
                lo = rnd.randrange(size)
                hi = rnd.randrange(lo, size + 1)
                assert disk.read(lo, hi - lo) == expected[lo:hi]


def _pyvhdi_bytes(paths: list[str], size: int) -> bytes:
    files = []
    for p in paths:
        f = pyvhdi.file()
        f.open(p)
        files.append(f)
    for child, parent in zip(files[1:], files, strict=False):
        child.set_parent(parent)
    data: bytes = files[-1].read_buffer_at_offset(size, 0)
    for f in reversed(files):
        f.close()
    return data


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_chain_matches_libvhdi(tmp_path: Path, seed: int) -> None:
    """libvhdi implements only NOT_PRESENT / FULLY_PRESENT / PARTIALLY_PRESENT faithfully (it reads
    ZERO blocks of a child from the parent, against [MS-VHDX] 2.5.1.1 "block contents are zero",
    and UNMAPPED / UNDEFINED / some ZERO blocks from file offset 0), so these chains use only those;
    the model test above covers the other states. Chains are one child deep: with a differencing
    middle disk libvhdi 20240303 loses sectors of partially present blocks."""
    rnd = random.Random(seed)
    size = 6 * MiB - 1536
    built, specs = make_chain(tmp_path, rnd, size, 512, depth=1,
                              child_states=[NOT_PRESENT, FULLY_PRESENT, PARTIALLY_PRESENT],
                              base_states=[NOT_PRESENT, FULLY_PRESENT])
    oracle = _pyvhdi_bytes([b.path for b in built], size)
    with open_image(built[-1].path) as disk:
        assert disk.read(0, size) == oracle
    # libvhdi agrees with the model too, so the model is not merely agreeing with itself.
    assert expected_chain(built, specs, 512)[0] == oracle


def test_parent_info_and_cli(tmp_path: Path) -> None:
    built, _ = make_chain(tmp_path, random.Random(7), 3 * MiB, depth=2)
    with open_image(built[-1].path) as disk:
        info = disk.info()
    parent = info["parent"]
    assert parent["path"] == built[1].path and parent["format"] == "vhdx"
    assert parent["id"] == str(built[1].data_write_guid)
    assert parent["parent"]["path"] == built[0].path and parent["parent"]["parent"] is None
    assert info["vhdx"]["has_parent"] is True
    assert info["vhdx"]["parent_locator"]["relative_path"] == ".\\child0.vhdx"
    assert info["vhdx"]["bat_entries"] == 4097  # one chunk: 4096 payload entries + its bitmap entry
    result = CliRunner().invoke(main, ["info", "--json", built[-1].path])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["parent"]["parent"]["id"] == str(built[0].data_write_guid)


def test_parent_linkage2_accepted(tmp_path: Path) -> None:
    base = build_vhdx(tmp_path / "base.vhdx", 2 * MiB, blocks={0: Block(FULLY_PRESENT, b"\x42" * MiB)})
    child = build_vhdx(tmp_path / "child.vhdx", 2 * MiB, parent_locator={
        "parent_linkage": str(uuid.uuid4()), "parent_linkage2": str(base.data_write_guid),
        "relative_path": "base.vhdx"})
    with open_image(child.path) as disk:
        assert disk.read(0, 4) == b"\x42" * 4


def test_missing_parent(tmp_path: Path) -> None:
    child = build_vhdx(tmp_path / "child.vhdx", 2 * MiB, parent_locator={
        "parent_linkage": str(uuid.uuid4()), "relative_path": ".\\gone.vhdx",
        "absolute_win32_path": "C:\\vms\\gone.vhdx"})
    with pytest.raises(ParentError, match="parent disk not found"):
        open_image(child.path)
    result = CliRunner().invoke(main, ["info", child.path])
    assert result.exit_code != 0


def test_wrong_parent_identity(tmp_path: Path) -> None:
    build_vhdx(tmp_path / "base.vhdx", 2 * MiB)
    child = build_vhdx(tmp_path / "child.vhdx", 2 * MiB, parent_locator={
        "parent_linkage": str(uuid.uuid4()), "relative_path": "base.vhdx"})
    with pytest.raises(ParentError, match="DataWriteGuid"):
        open_image(child.path)


def test_parent_size_mismatch(tmp_path: Path) -> None:
    base = build_vhdx(tmp_path / "base.vhdx", 3 * MiB)
    child = build_vhdx(tmp_path / "child.vhdx", 2 * MiB, parent_locator={
        "parent_linkage": str(base.data_write_guid), "relative_path": "base.vhdx"})
    with pytest.raises(ParentError, match="bytes"):
        open_image(child.path)


def test_parent_sector_size_mismatch(tmp_path: Path) -> None:
    base = build_vhdx(tmp_path / "base.vhdx", 2 * MiB, logical_sector_size=4096)
    child = build_vhdx(tmp_path / "child.vhdx", 2 * MiB, parent_locator={
        "parent_linkage": str(base.data_write_guid), "relative_path": "base.vhdx"})
    with pytest.raises(ParentError, match="sectors"):
        open_image(child.path)


def test_parent_override_and_absolute_locator(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    base = build_vhdx(tmp_path / "elsewhere" / "base.vhdx", 2 * MiB,
                      blocks={1: Block(FULLY_PRESENT, b"\x17" * MiB)})
    child = build_vhdx(tmp_path / "child.vhdx", 2 * MiB, parent_locator={
        "parent_linkage": str(base.data_write_guid), "absolute_win32_path": base.path})
    with pytest.raises(ParentError, match="not found"):
        open_image(child.path)
    with open_image(child.path, parent=base.path) as disk:
        assert disk.read(MiB, 2) == b"\x17\x17"
    with open_image(child.path, allow_absolute_parent=True) as disk:
        assert disk.read(MiB, 2) == b"\x17\x17"


def test_parent_must_be_vhdx(tmp_path: Path) -> None:
    raw = tmp_path / "base.raw"
    raw.write_bytes(bytes(2 * MiB))
    child = build_vhdx(tmp_path / "child.vhdx", 2 * MiB, parent_locator={
        "parent_linkage": str(uuid.uuid4()), "relative_path": "base.raw"})
    with pytest.raises(ParentError, match="needs a VHDX parent"):
        open_image(child.path)


def test_parent_loop_is_refused(tmp_path: Path) -> None:
    guid_a, guid_b = uuid.uuid4(), uuid.uuid4()
    build_vhdx(tmp_path / "a.vhdx", 2 * MiB, data_write_guid=guid_a, parent_locator={
        "parent_linkage": str(guid_b), "relative_path": "b.vhdx"})
    build_vhdx(tmp_path / "b.vhdx", 2 * MiB, data_write_guid=guid_b, parent_locator={
        "parent_linkage": str(guid_a), "relative_path": "a.vhdx"})
    with pytest.raises(ParentError, match="loops back"):
        open_image(tmp_path / "a.vhdx")


def test_volume_path_is_tried_before_the_absolute_path(tmp_path: Path) -> None:
    """[MS-VHDX] 2.6.2.6.2: relative_path, then volume_path, then absolute_win32_path. Both paths
    resolve here; the one the spec tries first is the right parent, the other a stale copy."""
    for folder in ("vol", "abs", "child"):
        (tmp_path / folder).mkdir()
    right = build_vhdx(tmp_path / "vol" / "right.vhdx", 2 * MiB, blocks={0: Block(FULLY_PRESENT, b"\x21" * MiB)})
    build_vhdx(tmp_path / "abs" / "stale.vhdx", 2 * MiB)
    child = build_vhdx(tmp_path / "child" / "c.vhdx", 2 * MiB, parent_locator={
        "parent_linkage": str(right.data_write_guid), "relative_path": "..\\gone\\right.vhdx",
        "absolute_win32_path": str(tmp_path / "abs" / "stale.vhdx"), "volume_path": right.path})
    with open_image(child.path, allow_absolute_parent=True) as disk:
        assert disk.parent is not None and disk.parent.path == right.path
        assert disk.read(0, 2) == b"\x21\x21"


def test_parent_warnings_reach_the_child(tmp_path: Path) -> None:
    """What the reader noticed about a parent (here: a damaged header, the other copy used) is
    reported on the child too, as for VHD chains, so info and convert say it."""
    base = build_vhdx(tmp_path / "base.vhdx", 2 * MiB)
    with open(base.path, "r+b") as f:
        f.seek(64 * 1024 + 100)  # inside header 1: its CRC-32C no longer matches
        f.write(b"\xff")
    child = build_vhdx(tmp_path / "child.vhdx", 2 * MiB, parent_locator={
        "parent_linkage": str(base.data_write_guid), "relative_path": "base.vhdx"})
    with open_image(child.path) as disk:
        warnings = disk.info()["warnings"]
    assert any(w.startswith(f"parent {base.path}: VHDX header 1 is invalid") for w in warnings), warnings
