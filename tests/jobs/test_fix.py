"""``vhdtool fix``: fixed VHDs made by qemu-img (without force_size) or with wrong footers.

Each case starts from a real qemu-img image or a real footer defect, and checks the plan, the few
bytes written, that the disk's data is unchanged (compared with qemu-img's reading taken before the
fix), and that the result is what Azure accepts.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
from pathlib import Path

import pytest
from support.cli import run_cli
from support.oracles import qemu_img

from vhdtool.errors import ImageError, OutputError, UnsupportedImageError
from vhdtool.extents import MiB, align_up
from vhdtool.formats.vhd.footer import build_footer, chs_geometry, fixed_footer, parse_footer
from vhdtool.jobs.fix import apply_fix, plan_fix


def qemu_fixed(tmp_path: Path, size: int, force: bool, seed: int = 0) -> tuple[Path, int]:
    """A fixed VHD made by qemu-img, with data written by qemu-io up to its last sector."""
    path = tmp_path / "q.vhd"
    opts = "subformat=fixed" + (",force_size=on" if force else "")
    qemu_img("create", "-q", "-f", "vpc", "-o", opts, str(path), str(size))
    real = json.loads(qemu_img("info", "-f", "vpc", "--output=json", str(path)).stdout)["virtual-size"]
    rng = random.Random(seed)
    commands = ["-c", f"write -P 0x61 0 {64 * 1024}", "-c", f"write -P 0x7e {real - 512} 512"]
    for _ in range(4):
        offset = rng.randrange(0, real - MiB) // 512 * 512
        commands += ["-c", f"write -P 0x{rng.randrange(1, 256):02x} {offset} 4096"]
    subprocess.run(["qemu-io", "-f", "vpc", *commands, str(path)], check=True, capture_output=True)
    return path, real


def footer_of(path: Path) -> tuple[int, bytes]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(size - 512)
        return size, f.read()


def digest(path: Path, length: int) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(length)).hexdigest()


@pytest.mark.parametrize(("size", "seed"), [(64 * MiB, 1), (5 * MiB, 2), (30 * MiB + 12345, 3)])
def test_qemu_chs_sized_image_grows_to_a_mib_keeping_every_byte(tmp_path: Path, size: int, seed: int) -> None:
    path, real = qemu_fixed(tmp_path, size, force=False, seed=seed)
    assert real % MiB  # qemu's CHS rounding: not a whole MiB (64 MiB -> 67,125,248)
    before = digest(path, real)
    usage_before = path.stat().st_blocks
    plan = plan_fix(path)
    assert plan.needed and plan.data_size == real and plan.new_virtual_size == align_up(real, MiB)
    assert any("not a whole number of MiB" in r for r in plan.reasons)
    assert {c.name for c in plan.changes} >= {"current_size", "original_size", "geometry"}
    shown = {c.name: (c.old, c.new) for c in plan.changes}
    assert shown["creator_version"][1] == "10.0" and shown["creator_application"][1] == "win "
    assert shown["checksum"][1] == f"0x{plan.new_footer.checksum:08x}"  # as `info` shows the fields
    assert plan.bytes_to_write == 1024
    apply_fix(plan)
    new_size = align_up(real, MiB)
    assert path.stat().st_size == new_size + 512
    assert digest(path, real) == before
    with open(path, "rb") as f:
        f.seek(real)
        padding = f.read(new_size - real)
        footer = parse_footer(f.read(), str(path), new_size)
    assert not any(padding)
    assert footer.checksum_valid and footer.disk_type == 2
    assert footer.current_size == footer.original_size == new_size
    assert footer.geometry == chs_geometry(new_size)
    assert path.stat().st_blocks - usage_before <= 16  # a few KiB more at most: the gap is a hole
    assert not plan_fix(path).needed  # fixing twice changes nothing
    # qemu reads the fixed file like Azure when sized from current_size: old bytes, then zeros.
    proc = subprocess.run(["qemu-img", "info", "--output=json", "--image-opts",
                           f"driver=vpc,force_size_calc=current_size,file.filename={path}"],
                          capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout)["virtual-size"] == new_size


def test_a_good_image_is_left_alone(tmp_path: Path) -> None:
    path, real = qemu_fixed(tmp_path, 8 * MiB, force=True)
    assert real == 8 * MiB
    before = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    plan = plan_fix(path)
    assert not plan.needed and plan.writes == () and plan.reasons == ()
    apply_fix(plan)
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime


def test_bad_checksum_on_a_mib_sized_image_is_rewritten_in_place(tmp_path: Path) -> None:
    path, real = qemu_fixed(tmp_path, 6 * MiB, force=True)
    size, raw = footer_of(path)
    broken = bytearray(raw)
    broken[64] ^= 0xFF
    with open(path, "r+b") as f:
        f.seek(size - 512)
        f.write(broken)
    before = digest(path, real)
    plan = plan_fix(path)
    assert plan.needed and "the footer checksum is wrong" in plan.reasons
    assert [(w.offset, w.length) for w in plan.writes] == [(real, 512)]
    apply_fix(plan)
    assert path.stat().st_size == size and digest(path, real) == before
    footer = parse_footer(footer_of(path)[1], str(path), real)
    assert footer.checksum_valid and footer.current_size == real
    assert footer.unique_id == parse_footer(raw, str(path), real).unique_id  # same disk, same id


def test_chs_current_size_below_an_exact_data_part_takes_the_data_part(tmp_path: Path) -> None:
    """Data part exactly 64 MiB, current size the CHS size below it (a Virtual PC style footer):
    the data part wins, so no byte is dropped, and it is already a whole MiB: only the footer changes."""
    size = 64 * MiB
    chs_size = chs_geometry(size).size
    assert chs_size < size
    path = tmp_path / "vpc.vhd"
    footer = fixed_footer(size)
    from dataclasses import replace
    footer = replace(footer, current_size=chs_size, original_size=chs_size, creator_application=b"vpc ")
    with open(path, "wb") as f:
        f.truncate(size)
        f.seek(size - 4096)
        f.write(b"\x33" * 4096)  # data beyond the CHS size: a reader of current_size misses it
        f.write(build_footer(footer))
    plan = plan_fix(path)
    assert plan.needed and plan.new_virtual_size == size
    assert any("kept" in r for r in plan.reasons)
    assert [(w.offset, w.length) for w in plan.writes] == [(size, 512)]
    apply_fix(plan)
    assert path.stat().st_size == size + 512
    new = parse_footer(footer_of(path)[1], str(path), size)
    assert new.current_size == size and new.checksum_valid
    with open(path, "rb") as f:
        f.seek(size - 4096)
        assert f.read(4096) == b"\x33" * 4096


def test_511_byte_footer_from_an_old_tool_gets_a_full_footer(tmp_path: Path) -> None:
    path, real = qemu_fixed(tmp_path, 4 * MiB, force=True)
    with open(path, "r+b") as f:
        f.truncate(real + 511)
    plan = plan_fix(path)
    assert plan.needed and any("511" in r for r in plan.reasons)
    apply_fix(plan)
    assert path.stat().st_size == real + 512
    assert parse_footer(footer_of(path)[1], str(path), real).checksum_valid


def test_refusals(tmp_path: Path) -> None:
    dynamic = tmp_path / "d.vhd"
    qemu_img("create", "-q", "-f", "vpc", "-o", "subformat=dynamic", str(dynamic), "5M")
    with pytest.raises(UnsupportedImageError, match="convert"):
        plan_fix(dynamic)
    raw = tmp_path / "r.raw"
    raw.write_bytes(bytes(MiB))
    with pytest.raises(UnsupportedImageError, match=r"not a VHD .*vhdtool convert .*r\.raw OUT\.vhd"):
        plan_fix(raw)
    # Other formats are named, not mistaken for a VHD whose footer is missing.
    vhdx = tmp_path / "x.vhdx"
    qemu_img("create", "-q", "-f", "vhdx", str(vhdx), "5M")
    with pytest.raises(UnsupportedImageError, match="a VHDX image; fix repairs fixed VHDs"):
        plan_fix(vhdx)
    qcow2 = tmp_path / "q.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(qcow2), "5M")
    with pytest.raises(UnsupportedImageError, match="qcow2"):
        plan_fix(qcow2)
    for path in (raw, vhdx, qcow2):
        proc = run_cli("fix", str(path), "--yes")
        assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1 and "VHD footer at byte" not in proc.stderr
    # A footer claiming more than the file holds: a truncated copy; refuse rather than guess.
    truncated = tmp_path / "t.vhd"
    with open(truncated, "wb") as f:
        f.truncate(2 * MiB)
        f.seek(2 * MiB)
        f.write(build_footer(fixed_footer(3 * MiB)))
    with pytest.raises(ImageError, match="truncated"):
        plan_fix(truncated)


def test_a_file_changed_after_planning_is_not_touched(tmp_path: Path) -> None:
    path, real = qemu_fixed(tmp_path, 5 * MiB, force=False)
    plan = plan_fix(path)
    with open(path, "ab") as f:
        f.write(b"\0" * 512)
    before = path.read_bytes()
    with pytest.raises(OutputError, match="changed"):
        apply_fix(plan)
    assert path.read_bytes() == before


def test_cli_needs_yes_and_dry_run_only_reports(tmp_path: Path) -> None:
    path, real = qemu_fixed(tmp_path, 64 * MiB, force=False)
    before = path.read_bytes()
    asked = run_cli("fix", str(path))
    assert asked.returncode == 2 and "--yes" in asked.stderr
    assert "67,125,248 -> 68,157,440" in asked.stdout
    dry = run_cli("fix", str(path), "--dry-run", "--json")
    assert dry.returncode == 0
    report = json.loads(dry.stdout)
    assert report["needed"] and not report["applied"] and report["new_file_size"] == 65 * MiB + 512
    assert path.read_bytes() == before
    done = run_cli("fix", str(path), "--yes")
    assert done.returncode == 0 and "fixed" in done.stdout
    assert path.stat().st_size == 65 * MiB + 512
    again = run_cli("fix", str(path))
    assert again.returncode == 0 and "nothing to fix" in again.stdout
    dynamic = tmp_path / "d.vhd"
    qemu_img("create", "-q", "-f", "vpc", "-o", "subformat=dynamic", str(dynamic), "5M")
    refused = run_cli("fix", str(dynamic), "--yes")
    assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1 and "convert" in refused.stderr


@pytest.mark.parametrize("sync", [False, True])
def test_fix_waits_for_the_disk_only_with_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync: bool) -> None:
    """Like convert: no fsync unless asked; with --sync each of the two writes is flushed before the next."""
    path, real = qemu_fixed(tmp_path, 3 * MiB, force=False, seed=4)
    plan = plan_fix(path)
    assert len(plan.writes) == 2
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    apply_fix(plan, sync=sync)
    assert len(synced) == (2 if sync else 0)
    assert plan_fix(path).needed is False
