"""Which Hyper-V generation a disk can boot as, from its partition table and the boot files present.

Generation 1 boots by BIOS: an MBR with boot code and an active partition, or GPT with a BIOS boot
partition (GRUB's core image). Generation 2 boots by UEFI: an EFI System Partition holding a boot
loader. Windows boots GPT only by UEFI and MBR only by BIOS (docs/azure-rules.md §1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vhdtool.inspect.partitions import PartitionTable

V1, V2 = "V1", "V2"
# Boot loaders UEFI firmware or the Windows / Linux boot managers use on the ESP.
EFI_BOOT_FILES = ("/EFI/BOOT/BOOTX64.EFI", "/EFI/BOOT/BOOTAA64.EFI", "/EFI/Microsoft/Boot/bootmgfw.efi")
EFI_VENDOR_LOADERS = ("shimx64.efi", "grubx64.efi", "shimaa64.efi", "grubaa64.efi", "systemd-bootx64.efi")
# What Windows' BIOS boot path reads from the active partition (the boot manager and its store).
WINDOWS_BIOS_FILES = ("/bootmgr", "/Boot/BCD")


@dataclass(frozen=True)
class GenerationReport:
    """The generations the disk can boot as, and why."""

    supported: tuple[str, ...]  # subset of ("V1", "V2"), in that order
    evidence: tuple[str, ...]

    @property
    def value(self) -> str:
        """``"V1"``, ``"V2"``, ``"both"`` or ``"none"`` (nothing bootable found)."""
        if len(self.supported) == 2:
            return "both"
        return self.supported[0] if self.supported else "none"

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "supported": list(self.supported), "evidence": list(self.evidence)}


def hyperv_generation(
    table: PartitionTable,
    esp_loaders: list[str] | None,
    os_family: str | None,
    bios_files: list[str] | None = None,
) -> GenerationReport:
    """Decide V1 / V2 / both.

    ``esp_loaders``: the boot loader paths found on the EFI System Partition, ``None`` if no ESP
    was read (absent, or unreadable without the optional readers). ``bios_files``: which of
    :data:`WINDOWS_BIOS_FILES` the active MBR partition holds, ``None`` if it was not read.
    """
    v1 = v2 = False
    why: list[str] = []
    has_esp = any(p.is_esp for p in table.partitions)
    if has_esp:
        if esp_loaders is None:
            v2 = True
            why.append("EFI System Partition present (its files could not be read)")
        elif esp_loaders:
            v2 = True
            why.append(f"EFI System Partition with {', '.join(esp_loaders[:3])}")
        else:
            why.append("EFI System Partition without a boot loader")
    if table.scheme == "mbr":
        active = [p.number for p in table.partitions if p.bootable]
        if active and table.mbr_boot_code:
            v1 = True
            why.append(f"MBR with boot code and active partition {active[0]}")
        elif table.mbr_boot_code:
            v1 = True
            why.append("MBR with boot code (no active partition: some BIOS loaders do not need one)")
        else:
            why.append("MBR without boot code")
        if os_family == "windows" and v1:
            # The Windows MBR code starts the active partition's boot sector, which loads \bootmgr.
            if not active:
                v1 = False
                why.append("Windows boots by BIOS from the active partition, and none is marked active")
            elif bios_files is not None and WINDOWS_BIOS_FILES[0] not in bios_files:
                v1 = False
                why.append(f"active partition {active[0]} holds no /bootmgr")
            elif bios_files:
                why.append(f"active partition {active[0]} holds {', '.join(bios_files)}")
        if os_family == "windows" and v2:
            v2 = False
            why.append("Windows does not boot an MBR disk by UEFI")
    elif table.scheme == "gpt":
        bios_boot = any(p.is_bios_boot for p in table.partitions)
        if bios_boot and table.mbr_boot_code:
            v1 = True
            why.append("GPT with a BIOS boot partition and MBR boot code")
        elif bios_boot:
            why.append("BIOS boot partition but no boot code in the protective MBR")
        elif not has_esp:
            why.append("GPT without an EFI System Partition or a BIOS boot partition")
        if os_family == "windows" and v1:
            v1 = False
            why.append("Windows does not boot a GPT disk by BIOS")
        if table.hybrid_mbr and table.mbr_boot_code and not v1 and os_family != "windows":
            v1 = True
            why.append("hybrid MBR with boot code")
    else:
        why.append("no partition table")
    supported = tuple(g for g, ok in ((V1, v1), (V2, v2)) if ok)
    return GenerationReport(supported, tuple(why))
