"""Hyper-V generation from the partition table and boot files: every branch of the pure decision."""

from __future__ import annotations

import pytest

from vhdtool.extents import MiB
from vhdtool.inspect.generation import hyperv_generation
from vhdtool.inspect.partitions import (
    BIOS_BOOT_GUID,
    ESP_GUID,
    LINUX_FS_GUID,
    MS_BASIC_DATA_GUID,
    Partition,
    PartitionTable,
)


def gpt(*types: str, boot_code: bool = False, hybrid: bool = False) -> PartitionTable:
    parts = tuple(Partition(i + 1, (i + 1) * MiB, MiB, t, "x") for i, t in enumerate(types))
    return PartitionTable("gpt", parts, "guid", hybrid, boot_code)


def mbr(*types: int, active: int | None = 1, boot_code: bool = True) -> PartitionTable:
    parts = tuple(
        Partition(i + 1, (i + 1) * MiB, MiB, f"0x{t:02x}", "x", bootable=i + 1 == active)
        for i, t in enumerate(types)
    )
    return PartitionTable("mbr", parts, None, False, boot_code)


LOADER = ["/EFI/BOOT/BOOTX64.EFI"]


@pytest.mark.parametrize(
    ("table", "loaders", "family", "value"),
    [
        (gpt(ESP_GUID, LINUX_FS_GUID), LOADER, "linux", "V2"),
        (gpt(ESP_GUID, LINUX_FS_GUID), [], "linux", "none"),  # an ESP with nothing to boot
        (gpt(ESP_GUID, LINUX_FS_GUID), None, "linux", "V2"),  # ESP present, files unreadable
        (gpt(BIOS_BOOT_GUID, ESP_GUID, LINUX_FS_GUID, boot_code=True), LOADER, "linux", "both"),
        (gpt(BIOS_BOOT_GUID, LINUX_FS_GUID, boot_code=True), None, "linux", "V1"),
        (gpt(BIOS_BOOT_GUID, LINUX_FS_GUID, boot_code=False), None, "linux", "none"),
        (gpt(BIOS_BOOT_GUID, ESP_GUID, MS_BASIC_DATA_GUID, boot_code=True), LOADER, "windows", "V2"),
        (gpt(ESP_GUID, LINUX_FS_GUID, boot_code=True, hybrid=True), LOADER, "linux", "both"),
        (mbr(0x83), None, "linux", "V1"),
        (mbr(0x83, active=None), None, "linux", "V1"),  # GRUB boots without an active flag
        (mbr(0x83, boot_code=False), None, "linux", "none"),
        (mbr(0xEF, 0x83), LOADER, "linux", "both"),
        (mbr(0xEF, 0x07), LOADER, "windows", "V1"),  # Windows boots MBR by BIOS only
        (PartitionTable("none", (Partition(0, 0, MiB, "", "whole disk"),)), None, "linux", "none"),
    ],
)
def test_generation(table: PartitionTable, loaders: list[str] | None, family: str, value: str) -> None:
    result = hyperv_generation(table, loaders, family)
    assert result.value == value, result.evidence
    assert result.evidence  # always says why


@pytest.mark.parametrize(
    ("table", "bios_files", "value", "why"),
    [
        (mbr(0x07), ["/bootmgr", "/Boot/BCD"], "V1", "active partition 1 holds /bootmgr, /Boot/BCD"),
        (mbr(0x07), ["/Boot/BCD"], "none", "active partition 1 holds no /bootmgr"),
        (mbr(0x07), None, "V1", "MBR with boot code and active partition 1"),  # not read: the table decides
        (mbr(0x07, active=None), None, "none", "none is marked active"),
    ],
)
def test_windows_bios_boot_needs_bootmgr_on_the_active_partition(
    table: PartitionTable, bios_files: list[str] | None, value: str, why: str
) -> None:
    result = hyperv_generation(table, None, "windows", bios_files)
    assert result.value == value
    assert any(why in line for line in result.evidence), result.evidence
