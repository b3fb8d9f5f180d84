"""Every image the producers matrix generates (tests/support/producers.py) reads as qemu-img and libvhdi read
it: ``vhdtool info`` describes it and ``vhdtool convert --format raw`` writes byte for byte what the
oracles read. The wider matrix is marked ``wide`` (``scripts/test.sh --slow``). Beside the matrix:
the divergences from qemu-img that docs/formats.md records, and the bad input that stays refused."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from support.producers import (
    ALSO,
    CREATORS,
    PRODUCERS,
    QEMU_TRUSTS_CURRENT_SIZE,
    VHDX_DIMS,
    VPC_DIMS,
    Case,
    builder_cases,
    chs_size,
    make,
    matrix,
    qemu_info,
)
from support.vhdx_builder import FULLY_PRESENT, Block, build_vhdx

from vhdtool.cli import run
from vhdtool.extents import MiB

DOCS = Path(__file__).resolve().parents[2] / "docs" / "formats.md"
WARNINGS = {"no-footer-copy": "footer copy at offset 0 is missing",
            "stale-footer-copy": "footer copy at offset 0 differs"}

Cli = Callable[..., tuple[int, str, str]]
CASES = ([pytest.param(case, id=case.id) for case in matrix()]
         + [pytest.param(case, id=case.id, marks=pytest.mark.wide) for case in matrix(slow=True)])


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """``cli("info", path)`` -> (exit code, stdout, stderr) of the real entry point, in process."""
    def call(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as stop:
            run(list(args))
        out, err = capsys.readouterr()
        return int(stop.value.code or 0), out, err
    return call


@pytest.mark.parametrize("case", CASES)
def test_image_reads_as_the_oracles_read_it(case: Case, tmp_path: Path, cli: Cli) -> None:
    made = make(case, tmp_path)
    code, out, err = cli("info", "--json", str(made.path))
    assert code == 0, err
    info = json.loads(out)
    assert (info["format"], info["type"], info["virtual_size"]) == (made.fmt, made.disk_type, made.virtual_size)
    assert (info["logical_sector_size"], info["physical_sector_size"]) == (made.logical, made.physical)
    if made.fmt == "vhdx":
        assert info["log"] == made.log and info["vhdx"]["block_size"] == made.block_size
    quirk = case.opts.get("quirk", "")
    if quirk in WARNINGS:
        assert any(WARNINGS[quirk] in w for w in info["warnings"]), info["warnings"]
    else:
        assert info["warnings"] == [], info["warnings"]  # a producer's ordinary output is not suspicious

    raw = tmp_path / "vhdtool.raw"
    code, _, err = cli("convert", "--format", "raw", "-q", str(made.path), str(raw))
    assert code == 0, err
    assert raw.stat().st_size == made.virtual_size
    assert made.oracles, "every image has an independent reader"
    for name, oracle in made.oracles.items():
        try:
            oracle(raw)
        except AssertionError as failure:
            raise AssertionError(f"{name}: {failure}") from None
    if made.expected is not None:
        assert raw.read_bytes() == made.expected, "the builder's model"


# --- the matrix itself --------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [VHDX_DIMS, VPC_DIMS], ids=["vhdx", "vpc"])
def test_default_matrix_meets_every_pair_of_options_and_slow_adds_the_rest(dims: dict[str, list[object]]) -> None:
    producer = "qemu-vhdx" if dims is VHDX_DIMS else "qemu-vpc"
    rows = [dict(c.options) for c in matrix() if c.producer == producer]
    for group in [*itertools.combinations(dims, 2), *ALSO[producer]]:
        assert ({tuple(r[n] for n in group) for r in rows}
                == set(itertools.product(*(dims[n] for n in group)))), group
    default = {c.options for c in matrix() if c.producer == producer}
    slow = {c.options for c in matrix(slow=True) if c.producer == producer}
    assert not default & slow
    assert len(default | slow) == len(list(itertools.product(*dims.values())))


def test_docs_list_every_producer_of_the_matrix() -> None:
    text = DOCS.read_text()
    section = text[text.index("## Producers checked"):]
    for producer in PRODUCERS:
        assert f"`{producer}`" in section, producer
    default, slow = len(matrix()), len(matrix(slow=True))
    assert f"{default} images" in section and f"{slow} more images" in section and f"{default + slow} in all" in section
    for creator in CREATORS:
        assert f"`{creator.decode('latin-1').replace(chr(0), chr(92) + '0')}`" in section, creator


# --- where qemu-img reads differently (docs/formats.md, "Stricter or different") -----------------


@pytest.mark.parametrize("creator", [c for c in CREATORS if c not in QEMU_TRUSTS_CURRENT_SIZE],
                         ids=lambda c: c.decode().strip())
def test_qemu_takes_the_chs_size_for_creators_it_does_not_trust(creator: bytes, tmp_path: Path, cli: Cli) -> None:
    """For these creators qemu-img shows the smaller CHS size; vhdtool, like Hyper-V, Azure and libvhdi,
    the footer's current size (the matrix compares with qemu's ``force_size_calc=current_size``)."""
    made = make(Case("builder-fixed-vhd", (("creator", creator),)), tmp_path)
    assert qemu_info(made.path, "vpc")["virtual-size"] == chs_size(made.path) < made.virtual_size
    code, out, _ = cli("info", "--json", str(made.path))
    assert code == 0 and json.loads(out)["virtual_size"] == made.virtual_size


@pytest.mark.parametrize("quirk", ["no-footer-copy", "truncated-last-block"])
def test_qemu_refuses_dynamic_vhd_layouts_vhdtool_and_libvhdi_read(quirk: str, tmp_path: Path, cli: Cli) -> None:
    made = make(Case("builder-dynamic-vhd", (("quirk", quirk),)), tmp_path)
    proc = subprocess.run(["qemu-img", "info", "-f", "vpc", str(made.path)], capture_output=True, text=True)
    assert proc.returncode != 0
    assert cli("info", str(made.path))[0] == 0


# --- bad input stays refused --------------------------------------------------------------------


def one_line_refusal(cli: Cli, path: Path, structure: str) -> str:
    code, out, err = cli("convert", "--format", "raw", "-q", str(path), str(path.with_suffix(".raw")))
    assert code != 0 and not path.with_suffix(".raw").exists()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and structure in lines[0], err
    assert re.search(r"at byte \d+", lines[0]), err
    return lines[0]


def test_a_last_block_short_of_the_virtual_size_is_refused(tmp_path: Path, cli: Cli) -> None:
    """The qemu shape minus one sector: bytes inside the virtual size are missing."""
    path = tmp_path / "short.vhdx"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=fixed,block_state_zero=off",
                    str(path), "48830976"], check=True)
    os.truncate(path, path.stat().st_size - 512)
    line = one_line_refusal(cli, path, "VHDX BAT entry 5")
    assert "past the end of the file" in line


def test_a_short_last_block_still_may_not_share_file_space_with_another_block(tmp_path: Path, cli: Cli) -> None:
    built = build_vhdx(tmp_path / "overlap.vhdx", 3 * MiB - 4096,
                       blocks={n: Block(FULLY_PRESENT, bytes([n + 1]) * MiB) for n in range(3)},
                       leave_blocks_allocated=True)
    with open(built.path, "r+b") as f:  # the last block (1 MiB - 4 KiB used) moved onto block 1
        f.seek(built.bat_entry_offset(2))
        f.write((FULLY_PRESENT | built.block_offsets[1]).to_bytes(8, "little"))
    line = one_line_refusal(cli, Path(built.path), "VHDX BAT entry")
    assert "overlaps" in line


@pytest.mark.parametrize("what", ["logical sector size", "virtual size"])
def test_a_child_that_does_not_fit_its_parent_is_refused(what: str, tmp_path: Path, cli: Cli) -> None:
    base = build_vhdx(tmp_path / "base.vhdx", 2 * MiB, logical_sector_size=4096 if what.startswith("l") else 512)
    child = build_vhdx(tmp_path / "child.vhdx", 2 * MiB if what.startswith("l") else 3 * MiB, parent_locator={
        "parent_linkage": "{" + str(base.data_write_guid) + "}", "relative_path": "base.vhdx"})
    code, _, err = cli("info", child.path)
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and child.path in lines[0] and "parent" in lines[0], err
    assert ("logical sectors" if what.startswith("l") else "bytes") in lines[0]


def test_builder_cases_are_all_in_the_default_run() -> None:
    assert set(builder_cases()) <= set(matrix())
