"""Parent chains as untrusted paths: the cases of issue 7 not covered by test_vhd_corrupt / test_vhdx_diff.

Devices, FIFOs and /proc reached through every door (a relative locator, a symlink beside the child,
``--parent``, an absolute locator with ``--allow-absolute-parent``, the image path itself), the depth
bound on VHDX chains, and ``info`` naming the file actually used.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.vhd_builder import SECTOR, build_child, build_vhd, read_identity
from support.vhdx_builder import FULLY_PRESENT, Block, MiB, build_vhdx

from fuzz.harness import watchdog
from vhdtool.cli import main
from vhdtool.errors import ImageError, ParentError, VhdtoolError
from vhdtool.formats.open import open_image, open_with_options
from vhdtool.formats.parent import OpenOptions

pytestmark = pytest.mark.slow  # left out of scripts/test.sh --fast

SIZE = 64 * 1024


def _vhd_child(folder: Path, locators: list[tuple[bytes, bytes]], parent_id: bytes = b"\x01" * 16) -> Path:
    child = folder / "child.vhd"
    build_vhd(child, SIZE, {}, disk_type=4, parent_id=parent_id, locators=locators)
    return child


def test_open_fifo_image_does_not_hang(tmp_path: Path) -> None:
    """``vhdtool info some-fifo`` used to block in open(2) until a writer came (fixed: O_NONBLOCK)."""
    fifo = tmp_path / "image.vhd"
    os.mkfifo(fifo)
    with watchdog(5.0), pytest.raises(ImageError, match="not a regular file"):
        open_image(fifo)


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero", "/proc/self/environ", "/proc/self/mem",
                                    "/sys/kernel/mm/transparent_hugepage/enabled"])
def test_parent_override_to_pseudo_files_is_refused(tmp_path: Path, device: str) -> None:
    child = _vhd_child(tmp_path, [(b"W2ru", ".\\parent.vhd".encode("utf-16-le"))])
    with watchdog(5.0), pytest.raises(ParentError):
        open_image(child, parent=device)


def test_parent_override_to_fifo_does_not_hang(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    child = _vhd_child(tmp_path, [])
    with watchdog(5.0), pytest.raises(ParentError, match="not a regular file"):
        open_image(child, parent=str(tmp_path / "pipe"))


@pytest.mark.parametrize("target", ["/dev/zero", "/proc/self/environ", "/proc/self/fd/0"])
def test_symlink_beside_child_to_pseudo_file_is_refused(tmp_path: Path, target: str) -> None:
    """A relative locator naming a symlink that leads into /dev or /proc is not followed."""
    os.symlink(target, tmp_path / "parent.vhd")
    child = _vhd_child(tmp_path, [(b"W2ru", ".\\parent.vhd".encode("utf-16-le"))])
    with watchdog(5.0), pytest.raises(ParentError):
        open_image(child)


@pytest.mark.parametrize("path", ["/proc/self/environ", "/proc/self/mem", "/dev/stdin", "/sys/power/state"])
def test_absolute_vhdx_locator_to_pseudo_file_is_refused(tmp_path: Path, path: str) -> None:
    child = build_vhdx(tmp_path / "child.vhdx", 2 * MiB, parent_locator={
        "parent_linkage": str(uuid.uuid4()), "absolute_win32_path": path})
    with watchdog(5.0), pytest.raises(ParentError):
        open_image(child.path, allow_absolute_parent=True)


def test_relative_vhdx_locator_climbing_to_proc_is_refused(tmp_path: Path) -> None:
    depth = len(tmp_path.resolve().parts)
    climb = "\\".join([".."] * depth) + "\\proc\\self\\environ"
    child = build_vhdx(tmp_path / "child.vhdx", 2 * MiB, parent_locator={
        "parent_linkage": str(uuid.uuid4()), "relative_path": climb})
    with watchdog(5.0), pytest.raises(ParentError, match="not a disk image file"):
        open_image(child.path)


def test_vhdx_chain_depth_is_bounded(tmp_path: Path) -> None:
    prev = build_vhdx(tmp_path / "d0.vhdx", 2 * MiB, blocks={0: Block(FULLY_PRESENT, b"\x05" * 4096)})
    for level in range(1, 6):
        prev = build_vhdx(tmp_path / f"d{level}.vhdx", 2 * MiB, parent_locator={
            "parent_linkage": str(prev.data_write_guid), "relative_path": f"d{level - 1}.vhdx"})
    with open_with_options(str(tmp_path / "d3.vhdx"), OpenOptions(max_chain_depth=3)) as disk:
        assert disk.read(0, 2) == b"\x05\x05"
    with pytest.raises(ParentError, match="deeper than 3"):
        open_with_options(str(tmp_path / "d4.vhdx"), OpenOptions(max_chain_depth=3))
    with open_image(tmp_path / "d5.vhdx") as disk:  # the default bound (32) lets real chains through
        assert disk.read(0, 2) == b"\x05\x05"


def test_info_names_the_parent_file_used_vhd(tmp_path: Path) -> None:
    """A hostile first locator is skipped; ``info`` says which file was used, down the chain."""
    base = tmp_path / "base.vhd"
    build_vhd(base, SIZE, {0: b"\x07" * SECTOR})
    middle = tmp_path / "middle.vhd"
    build_child(middle, base, {1: b"\x08" * SECTOR}, kinds=("W2ru",))
    pid, _ = read_identity(middle)
    child = tmp_path / "child.vhd"
    build_vhd(child, SIZE, {}, disk_type=4, parent_id=pid, parent_name="middle.vhd",
              locators=[(b"W2ru", ".\\gone\\middle.vhd".encode("utf-16-le")),
                        (b"W2ku", "C:\\VMs\\middle.vhd".encode("utf-16-le"))])
    with open_image(child) as disk:
        info = disk.info()
    assert info["parent"]["path"] == str(middle)
    assert info["parent"]["parent"]["path"] == str(base)
    result = CliRunner().invoke(main, ["info", "--json", str(child)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["parent"]["path"] == str(middle)


def test_info_names_the_parent_file_used_vhdx_override(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    base = build_vhdx(tmp_path / "store" / "base-copy.vhdx", 2 * MiB)
    child = build_vhdx(tmp_path / "child.vhdx", 2 * MiB, parent_locator={
        "parent_linkage": str(base.data_write_guid), "relative_path": ".\\base.vhdx"})
    with open_image(child.path, parent=base.path) as disk:
        assert disk.info()["parent"]["path"] == base.path


def test_hostile_paths_never_escape_typed_errors(tmp_path: Path) -> None:
    """A grab-bag of locator strings: each open ends in a VhdtoolError, quickly, and that error is the
    parent lookup's (the child itself was read; the locator, not a header check, stopped the open)."""
    hostile = ["", ".", "..", "/", "\\", "C:", "\\\\?\\GLOBALROOT\\Device\\Harddisk0", "\\\\srv\\share\\p.vhd",
               "a\0b", "%s%n", "../" * 300 + "etc/passwd", "x" * 4000, "\udcff.vhd", "file:///dev/zero",
               "/dev/fd/0", "/proc/1/root/etc/shadow", "CON", "NUL", "child.vhd"]
    for text in hostile:
        for code in (b"W2ru", b"W2ku", b"Wi2r", b"Wi2k", b"MacX"):
            data = text.encode("utf-16-le", "surrogatepass") if code.startswith(b"W2") else \
                text.encode("utf-8", "surrogateescape")
            child = _vhd_child(tmp_path, [(code, data)])
            for allow in (False, True):
                with watchdog(5.0), pytest.raises(VhdtoolError) as refused:
                    open_image(child, allow_absolute_parent=allow).close()
                assert isinstance(refused.value, ParentError), (text, code, allow, refused.value)
