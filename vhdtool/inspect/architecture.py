"""The processor architecture an OS disk is built for (``x64`` / ``Arm64``), as a gallery image needs it.

Clues, none of which needs more than a few bytes: Windows' ``PROCESSOR_ARCHITECTURE`` and the Linux
kernel names the inspection already found, the UEFI loader names on the ESP (``BOOTX64.EFI`` /
``BOOTAA64.EFI``), and the ELF machine field of a binary on the Linux root. Disagreeing clues give
``None`` rather than a guess.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from vhdtool.inspect.filesystems import LINUX_FILESYSTEMS, LVM2, DissectMissing, open_tree
from vhdtool.inspect.lvm import LogicalVolumeDisk, logical_volumes, read_pv
from vhdtool.inspect.os_facts import LinuxFacts, OsFacts, WindowsFacts
from vhdtool.inspect.report import LVM_LV_TYPE

if TYPE_CHECKING:
    from vhdtool.disk.base import VirtualDisk
    from vhdtool.inspect.report import DiskReport


def disk_architecture(disk: VirtualDisk, report: DiskReport) -> str | None:
    """``x64`` / ``Arm64`` for the OS ``report`` found on ``disk``; ``None`` when nothing tells."""
    machine = linux_binary_machine(disk, report)
    return guess_architecture(report.os.facts if report.os else None,
                              [*report.generation.evidence, *([machine] if machine else [])])


def guess_architecture(facts: OsFacts | None, clues: Sequence[str]) -> str | None:
    """``x64`` / ``Arm64`` from the OS facts (Windows' PROCESSOR_ARCHITECTURE, Linux kernel names)
    and ``clues`` (the UEFI loader names ``BOOTX64.EFI`` / ``BOOTAA64.EFI``, the ELF machine of a
    binary: ``x86_64`` / ``aarch64``); ``None`` when nothing tells or the clues disagree."""
    words: list[str] = []
    if isinstance(facts, WindowsFacts) and facts.architecture is not None:
        words.append(facts.architecture)
    if isinstance(facts, LinuxFacts):
        for kernels in facts.hyperv_drivers.values():
            words.extend(kernels)
    words.extend(clues)
    text = " ".join(words).lower()
    arm = re.search(r"arm64|aarch64|aa64", text) is not None
    x64 = re.search(r"amd64|x86_64|x64", text) is not None
    if arm == x64:
        return None
    return "Arm64" if arm else "x64"


# Binaries every Linux root has, read for their ELF header's machine field (symlinks are followed).
ELF_PROBES = ("/usr/bin/env", "/bin/sh", "/usr/bin/ls", "/bin/ls", "/usr/bin/bash", "/bin/bash", "/sbin/init",
              "/usr/lib/systemd/systemd")
ELF_MACHINES = {0x3E: "x86_64", 0xB7: "aarch64"}  # e_machine: EM_X86_64, EM_AARCH64


def elf_machine(header: bytes) -> str | None:
    """``x86_64`` / ``aarch64`` from the first bytes of an ELF file, ``None`` for anything else."""
    if len(header) < 20 or header[:4] != b"\x7fELF" or header[5] not in (1, 2):
        return None
    machine = int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")
    return ELF_MACHINES.get(machine)


def linux_binary_machine(disk: VirtualDisk, report: DiskReport) -> str | None:
    """The ELF machine of the first of :data:`ELF_PROBES` found on the Linux root filesystem, if any.

    The root is the volume the inspection found the OS on: a partition, or an LVM logical volume
    (assembled again from the disk's physical volumes). Other filesystems mounted below it (a
    separate ``/usr``) are not read.
    """

    root = next((v for v in report.volumes if v.holds_os), None)
    if report.os is None or report.os.family != "linux" or root is None or root.info.kind not in LINUX_FILESYSTEMS:
        return None
    backing, offset, length = disk, root.partition.offset, root.partition.length
    if root.partition.type_id == LVM_LV_TYPE:
        pvs = [pv for v in report.volumes if v.info.kind == LVM2
               for pv in [read_pv(disk, v.partition.offset, v.partition.length)] if pv is not None]
        lv = next((lv for lv in logical_volumes(pvs)[0] if f"{lv.vg}/{lv.name}" == root.partition.name), None)
        if lv is None:
            return None
        backing, offset, length = LogicalVolumeDisk(disk, lv), 0, lv.size
    try:
        tree = open_tree(backing, offset, length, root.info.kind)
    except DissectMissing:
        return None
    if tree is None:
        return None
    for path in ELF_PROBES:
        header = tree.read_file(path, 64)
        machine = None if header is None else elf_machine(header)
        if machine is not None:
            return machine
    return None
