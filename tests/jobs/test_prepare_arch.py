"""Architecture of the OS disk (x64 / Arm64) on real images built with mke2fs -d, mkfs.vfat and mtools.

The clues are the UEFI loader on the EFI System Partition (``BOOTX64.EFI`` / ``BOOTAA64.EFI``) and the
ELF machine field of a binary on the root filesystem; the image is otherwise the inspect tests' Debian tree.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from support.cli import run_cli
from support.linux_images import make_linux

from vhdtool.extents import MiB
from vhdtool.inspect.architecture import elf_machine
from vhdtool.jobs.prepare import PrepareRequest, prepare

pytestmark = pytest.mark.slow  # left out of scripts/test.sh --fast

EM_X86_64, EM_AARCH64, EM_RISCV = 0x3E, 0xB7, 0xF3


def elf_header(machine: int, big_endian: bool = False) -> bytes:
    """The first 64 bytes of a 64-bit ELF executable for ``machine``."""
    order = ">" if big_endian else "<"
    ident = b"\x7fELF" + bytes([2, 2 if big_endian else 1, 1]) + bytes(9)
    return ident + struct.pack(order + "HHI", 2, machine, 1) + bytes(40)


def root_tree(work: Path, machine: int, kernel: str | None) -> Path:
    """The generalized Debian tree with ``/usr/bin/env`` built for ``machine`` and one kernel (or none)."""
    tree = work / "root"
    tree.mkdir()
    make_linux.make_tree(tree, "generalized")
    modules = tree / "usr" / "lib" / "modules"
    for entry in modules.iterdir():
        if kernel is None:
            shutil.rmtree(entry)
        else:
            entry.rename(modules / kernel)
    (tree / "usr" / "bin" / "env").write_bytes(elf_header(machine) + b"\0" * 4032)
    return tree


def build(work: Path, machine: int, loader: str | None, kernel: str | None = None) -> Path:
    """A raw disk: GPT with an ESP holding ``/EFI/BOOT/<loader>`` (if any) and an ext4 root."""
    out = work / "disk.img"
    tree = root_tree(work, machine, kernel)
    with open(out, "wb") as f:
        f.truncate(96 * MiB)
    subprocess.run(["sgdisk", "-n", "1:2048:+16M", "-t", "1:ef00", "-c", "1:EFI System",
                    "-n", "2:0:0", "-t", "2:8300", "-c", "2:root", str(out)], check=True, capture_output=True)
    esp = work / "esp.part"
    with open(esp, "wb") as f:
        f.truncate(16 * MiB)
    subprocess.run(["mkfs.vfat", "-n", "ESP", str(esp)], check=True, capture_output=True)
    if loader is not None:
        efi = work / loader
        efi.write_bytes(b"MZ" + bytes(510))
        subprocess.run(["mmd", "-i", str(esp), "::/EFI", "::/EFI/BOOT"], check=True)
        subprocess.run(["mcopy", "-i", str(esp), str(efi), f"::/EFI/BOOT/{loader}"], check=True)
    make_linux.copy_into(esp, out, MiB)
    make_linux.mkext4(out, 17 * MiB, 96 * MiB - 17 * MiB - MiB, tree, "root")
    return out


def architecture(image: Path, tmp_path: Path) -> tuple[str | None, str | None]:
    """(the OS disk's architecture, the gallery definition's) as prepare records them; ``inspect --json``
    and ``check --json`` must tell the same."""
    result = prepare(PrepareRequest("arch", str(image), (), str(tmp_path / "out"), force=True))
    recorded = result.manifest.disks[0].architecture
    inspected = json.loads(run_cli("inspect", str(image), "--json").stdout)["architecture"]
    checked = json.loads(run_cli("check", str(image), "--json").stdout)["architecture"]
    assert inspected == checked == recorded, (inspected, checked, recorded)
    return recorded, result.manifest.gallery_image_definition.architecture


@pytest.mark.parametrize(("machine", "loader", "kernel", "expected"), [
    (EM_AARCH64, None, None, "Arm64"),  # only the ELF header tells
    (EM_X86_64, None, None, "x64"),
    (EM_AARCH64, "BOOTAA64.EFI", "6.1.0-28-cloud-arm64", "Arm64"),  # every clue agrees
    (EM_X86_64, "BOOTX64.EFI", None, "x64"),
    (EM_AARCH64, "BOOTX64.EFI", None, None),  # the clues disagree: unknown, not a guess
    (EM_RISCV, None, None, None),  # neither architecture Azure runs
])
def test_architecture_from_a_built_image(tmp_path: Path, machine: int, loader: str | None, kernel: str | None,
                                         expected: str | None) -> None:
    work = tmp_path / "build"
    work.mkdir()
    image = build(work, machine, loader, kernel)
    assert architecture(image, tmp_path) == (expected, expected)


def test_elf_machine() -> None:
    assert elf_machine(elf_header(EM_AARCH64)) == "aarch64"
    assert elf_machine(elf_header(EM_X86_64)) == "x86_64"
    assert elf_machine(elf_header(EM_AARCH64, big_endian=True)) == "aarch64"
    assert elf_machine(elf_header(EM_RISCV)) is None
    assert elf_machine(b"\x7fELF") is None  # too short to hold e_machine
    assert elf_machine(b"#!/bin/sh\n" + bytes(54)) is None


@pytest.mark.parametrize(("machine", "expected"), [(EM_AARCH64, "Arm64"), (EM_X86_64, "x64")])
def test_architecture_from_a_root_on_lvm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, machine: int,
                                         expected: str) -> None:
    """The inspect tests' GPT + LVM layout (root on a logical volume split across the PV), with an ESP that
    holds no loader and no kernel modules: only the ELF header on the logical volume tells."""
    plain_tree = make_linux.make_tree

    def tree_for(root: Path, state: str, fstab: str = "", with_var: bool = True) -> None:
        plain_tree(root, state, fstab, with_var)
        shutil.rmtree(root / "usr" / "lib" / "modules")
        (root / "usr" / "bin" / "env").write_bytes(elf_header(machine) + b"\0" * 4032)

    plain_esp = make_linux.mkesp
    monkeypatch.setattr(make_linux, "make_tree", tree_for)
    monkeypatch.setattr(make_linux, "mkesp", lambda dest, offset, size, work, loaders=True:
                        plain_esp(dest, offset, size, work, loaders=False))
    image = make_linux.build(tmp_path / "lvm.img", "gpt-lvm", "generalized")
    assert architecture(image, tmp_path) == (expected, expected)
