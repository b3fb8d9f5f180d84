"""The processor architecture an OS disk is built for (``x64`` / ``Arm64``), as a gallery image needs it.

Clues, none of which needs more than a few bytes: Windows' ``PROCESSOR_ARCHITECTURE`` and the Linux
kernel names the inspection already found, the UEFI loader names on the ESP (``BOOTX64.EFI`` /
``BOOTAA64.EFI``), and the ELF machine field of a binary on the Linux root, read by ``inspect_disk``
from the root filesystem it already has open. Disagreeing clues give ``None`` rather than a guess.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from vhdtool.errors import VhdtoolError
from vhdtool.inspect.model import FileTree
from vhdtool.inspect.os_facts import LinuxFacts, OsFacts, WindowsFacts


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


def tree_machine(tree: FileTree) -> str | None:
    """The ELF machine of the first of :data:`ELF_PROBES` found on a Linux root filesystem, if any.

    Only ``tree`` itself is read: other filesystems mounted below it (a separate ``/usr``) are not.
    A probe that cannot be read is skipped: the architecture is a hint, never a reason to fail.
    """
    for path in ELF_PROBES:
        try:
            header = tree.read_file(path, 64)
        except VhdtoolError:
            continue
        machine = None if header is None else elf_machine(header)
        if machine is not None:
            return machine
    return None
