"""``inspect_disk``: partitions, filesystems, the OS and its state, generation, unclean-capture signals.

Reads only metadata: partition tables, superblocks and the handful of files the OS detectors ask for.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import IO, Any

from vhdtool.disk.base import VirtualDisk
from vhdtool.inspect import windows
from vhdtool.inspect.architecture import guess_architecture, tree_machine
from vhdtool.inspect.bcd import BCD_PATHS, MAX_BCD_SIZE, read_bcd
from vhdtool.inspect.filesystems import (
    FAT,
    LINUX_FILESYSTEMS,
    LVM2,
    NOT_PROBED,
    NTFS,
    DissectMissing,
    NodeTree,
    VolumeInfo,
    ntfs_dirty,
    open_tree,
    probe_volume,
)
from vhdtool.inspect.generation import (
    EFI_BOOT_FILES,
    EFI_VENDOR_LOADERS,
    WINDOWS_BIOS_FILES,
    GenerationReport,
    hyperv_generation,
)
from vhdtool.inspect.linux import fstab_mounts, inspect_linux, looks_like_linux
from vhdtool.inspect.linux_readiness import lookup_key
from vhdtool.inspect.lvm import LogicalVolumeDisk, PhysicalVolume, logical_volumes, read_pv
from vhdtool.inspect.model import FileTree, OsReport
from vhdtool.inspect.partitions import Partition, PartitionTable, read_partition_table
from vhdtool.inspect.windows_readiness import BcdSettings

# Partition types that hold no filesystem (MBR extended containers, Microsoft reserved, BIOS boot): listed,
# not probed.
SKIPPED_TYPES = frozenset(
    {"0x05", "0x0f", "0x85", "e3c9e316-0b5c-4db8-817d-f92df00215ae", "21686148-6449-6e6f-744e-656564454649"}
)
LVM_LV_TYPE = "lvm-lv"  # the pseudo partition type of a logical volume
HIBERNATION_SIGNATURES = (b"hibr", b"HIBR", b"wake", b"WAKE")  # header of an in-use hiberfil.sys


@dataclass(frozen=True)
class VolumeReport:
    """One partition and what it holds."""

    partition: Partition
    info: VolumeInfo
    holds_os: bool = False

    def to_json(self) -> dict[str, Any]:
        return {**self.partition.to_json(), "filesystem": self.info.to_json(), "holds_os": self.holds_os}


@dataclass
class DiskReport:
    """Everything ``vhdtool inspect`` tells about one disk."""

    path: str
    format: str
    disk_type: str
    virtual_size: int
    table: PartitionTable
    volumes: list[VolumeReport]
    os: OsReport | None
    os_volume: VolumeReport | None
    generation: GenerationReport
    unclean: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    missing_readers: list[str] = field(default_factory=list)  # filesystem kinds the optional extra would read
    root_machine: str | None = None  # ELF machine of a binary on the Linux root (``x86_64`` / ``aarch64``)

    @property
    def encrypted_volumes(self) -> list[VolumeReport]:
        return [v for v in self.volumes if v.info.encrypted]

    @property
    def architecture(self) -> str | None:
        """``x64`` / ``Arm64`` of the OS found, from what the inspection read; ``None`` when nothing tells."""
        clues = [*self.generation.evidence, *([self.root_machine] if self.root_machine else [])]
        return guess_architecture(self.os.facts if self.os else None, clues)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "type": self.disk_type,
            "virtual_size": self.virtual_size,
            "partition_table": {k: v for k, v in self.table.to_json().items() if k != "partitions"},
            "volumes": [v.to_json() for v in self.volumes],
            "os": None if self.os is None else self.os.to_json(),
            "os_partition": None if self.os_volume is None else self.os_volume.partition.number,
            "generation": self.generation.to_json(),
            "architecture": self.architecture,
            "unclean": list(self.unclean),
            "warnings": list(self.warnings),
            "missing_readers": list(self.missing_readers),
        }


class MountTree:
    """A root filesystem with others mounted on it as its ``/etc/fstab`` says (``/var``, ``/boot``...).

    Paths are routed by their longest mount-point prefix; symlinks are followed inside each filesystem.
    """

    def __init__(self, root: NodeTree, mounts: dict[str, NodeTree]) -> None:
        self.root = root
        self.mounts = sorted(mounts.items(), key=lambda kv: -len(kv[0]))

    def _route(self, path: str) -> tuple[NodeTree, str]:
        norm = "/" + "/".join(p for p in path.split("/") if p)
        for point, tree in self.mounts:
            if norm == point or norm.startswith(point + "/"):
                return tree, norm[len(point) :] or "/"
        return self.root, norm

    def exists(self, path: str) -> bool:
        tree, rest = self._route(path)
        return tree.exists(rest)

    def is_dir(self, path: str) -> bool:
        tree, rest = self._route(path)
        return tree.is_dir(rest)

    def listdir(self, path: str) -> list[str] | None:
        tree, rest = self._route(path)
        return tree.listdir(rest)

    def read_file(self, path: str, limit: int = 16 * 1024 * 1024) -> bytes | None:
        tree, rest = self._route(path)
        return tree.read_file(rest, limit)

    def file_size(self, path: str) -> int | None:
        tree, rest = self._route(path)
        return tree.file_size(rest)

    def readlink(self, path: str) -> str | None:
        tree, rest = self._route(path)
        return tree.readlink(rest)

    def open_file(self, path: str) -> IO[bytes] | None:
        tree, rest = self._route(path)
        return tree.open_file(rest)


def _windows_inspector() -> Any:
    """The Windows detector (looked up by name, so tests can replace it)."""
    return getattr(windows, "inspect_windows", None)


@dataclass
class _Scan:
    """What the volume pass gathers: each volume probed, the filesystems it opened, the notes it made."""

    volumes: list[VolumeReport] = field(default_factory=list)
    trees: dict[int, NodeTree] = field(default_factory=dict)  # partition number -> its opened filesystem
    physical_volumes: list[PhysicalVolume] = field(default_factory=list)
    unclean: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # filesystem kinds the optional extra would read

    def add(self, backing: VirtualDisk, offset: int, part: Partition) -> None:
        """Probe one partition (or logical volume) and open its filesystem if inspection reads that kind."""
        info = probe_volume(backing, offset, part.length)
        self.volumes.append(VolumeReport(part, info))
        if info.unclean:
            self.unclean.append(f"partition {part.number} ({info.kind}): {info.unclean}")
        if info.kind == LVM2:
            pv = read_pv(backing, offset, part.length)
            if pv is not None:
                self.physical_volumes.append(pv)
                self.warnings.extend(pv.problems)
        if info.kind in LINUX_FILESYSTEMS or info.kind in (NTFS, FAT):
            self._open(backing, offset, part, info)

    def _open(self, backing: VirtualDisk, offset: int, part: Partition, info: VolumeInfo) -> None:
        try:
            tree = open_tree(backing, offset, part.length, info.kind)
        except DissectMissing as err:
            if str(err) not in self.warnings:
                self.warnings.append(str(err))
            if info.kind not in self.missing:
                self.missing.append(info.kind)
            return
        if tree is None:
            self.warnings.append(f"partition {part.number}: {info.kind} filesystem could not be read")
            return
        self.trees[part.number] = tree


def inspect_disk(disk: VirtualDisk) -> DiskReport:
    """Inspect ``disk`` read-only: partition table, filesystems, OS, generation, unclean-capture signals."""
    table = read_partition_table(disk)
    scan = _Scan(warnings=[f"partition table: {p}" for p in table.problems])
    if disk.log_state == "dirty":
        scan.unclean.append("VHDX log is not empty (the image was not closed cleanly)")
    _scan_partitions(disk, table, scan)
    _scan_logical_volumes(disk, table, scan)
    os_report, os_index = _find_os(scan.volumes, scan.trees, scan.warnings)
    _ntfs_unclean(scan, os_index)
    volumes = scan.volumes
    if os_index is not None:
        volumes[os_index] = VolumeReport(volumes[os_index].partition, volumes[os_index].info, True)
    root_machine = None
    if os_report is not None:
        _resolve_mounts(os_report, volumes)
        if os_report.windows is not None:
            bcd = _find_bcd(volumes, scan.trees, os_index)
            if bcd is not None:
                os_report.windows = replace(os_report.windows, bcd=bcd)
        if os_report.family == "linux" and os_index is not None and volumes[os_index].partition.number in scan.trees:
            root_machine = tree_machine(scan.trees[volumes[os_index].partition.number])
    generation = _generation(table, volumes, scan.trees, os_report)
    return DiskReport(
        disk.path,
        disk.format,
        disk.disk_type,
        disk.virtual_size,
        table,
        volumes,
        os_report,
        volumes[os_index] if os_index is not None else None,
        generation,
        scan.unclean,
        scan.warnings,
        scan.missing,
        root_machine,
    )


def _scan_partitions(disk: VirtualDisk, table: PartitionTable, scan: _Scan) -> None:
    """Probe every partition of the table; containers, reserved and tiny partitions are listed, not probed."""
    for part in table.partitions:
        if part.type_id in SKIPPED_TYPES or part.length < 4096:
            scan.volumes.append(VolumeReport(part, VolumeInfo(NOT_PROBED)))
        else:
            scan.add(disk, part.offset, part)


def _scan_logical_volumes(disk: VirtualDisk, table: PartitionTable, scan: _Scan) -> None:
    """Assemble the LVM logical volumes of the physical volumes found and probe each like a partition."""
    if not scan.physical_volumes:
        return
    lvs, problems = logical_volumes(scan.physical_volumes)
    scan.warnings.extend(problems)
    # Logical volumes are numbered after the partitions: 101, 102... on a disk with partitions 1-9.
    number = max((p.number for p in table.partitions), default=1) * 100
    for lv in lvs:
        number += 1
        part = Partition(number, lv.segments[0][2], lv.size, LVM_LV_TYPE, "LVM logical volume",
                         name=f"{lv.vg}/{lv.name}")
        scan.add(LogicalVolumeDisk(disk, lv), 0, part)


def _ntfs_unclean(scan: _Scan, os_index: int | None) -> None:
    """NTFS dirty flags, and a hibernated session in the Windows volume's hiberfil.sys."""
    for i, vol in enumerate(scan.volumes):
        tree = scan.trees.get(vol.partition.number)
        if vol.info.kind != NTFS or tree is None:
            continue
        if ntfs_dirty(tree):
            scan.unclean.append(f"partition {vol.partition.number} (ntfs): volume dirty flag is set")
        if i == os_index:
            header = tree.read_file("/hiberfil.sys", 4)
            if header is not None and header[:4] in HIBERNATION_SIGNATURES:
                scan.unclean.append(
                    f"partition {vol.partition.number} (ntfs): hiberfil.sys holds a "
                    "hibernated or Fast Startup session"
                )


def _generation(table: PartitionTable, volumes: list[VolumeReport], trees: dict[int, NodeTree],
                os_report: OsReport | None) -> GenerationReport:
    """The Hyper-V generations the disk boots as, from its table, ESP loaders and Windows BIOS files."""
    esp_loaders = _esp_loaders(volumes, trees)
    family = os_report.family if os_report else None
    bios_files = _windows_bios_files(volumes, trees) if family == "windows" and table.scheme == "mbr" else None
    return hyperv_generation(table, esp_loaders, family, bios_files)


def _find_os(
    volumes: list[VolumeReport], trees: dict[int, NodeTree], warnings: list[str]
) -> tuple[OsReport | None, int | None]:
    inspect_windows = _windows_inspector()
    for i, vol in enumerate(volumes):
        tree = trees.get(vol.partition.number)
        if tree is None:
            continue
        if vol.info.kind == NTFS and inspect_windows is not None:
            found = inspect_windows(tree)
            if found is not None:
                return found, i
        if vol.info.kind in LINUX_FILESYSTEMS and looks_like_linux(tree):
            full: FileTree = _with_mounts(tree, volumes, trees)
            found = inspect_linux(full)
            if found is not None:
                return found, i
    return None, None


def _volume_names(volumes: list[VolumeReport]) -> dict[str, VolumeReport]:
    """Every name fstab may use for a volume of this disk (lower-cased): UUID=, LABEL=, PARTUUID=,
    PARTLABEL=, and /dev/VG/LV, /dev/mapper/VG-LV for logical volumes."""
    names: dict[str, VolumeReport] = {}
    for vol in volumes:
        if vol.info.kind == NOT_PROBED:
            continue
        if vol.info.uuid:
            names.setdefault(f"UUID={vol.info.uuid}".lower(), vol)
        if vol.info.label:
            names.setdefault(f"LABEL={vol.info.label}".lower(), vol)
        if vol.partition.guid:
            names.setdefault(f"PARTUUID={vol.partition.guid}".lower(), vol)
        if vol.partition.type_id == LVM_LV_TYPE and vol.partition.name:
            vg, _, lv = vol.partition.name.partition("/")
            names.setdefault(f"/dev/{vg}/{lv}".lower(), vol)
            names.setdefault(f"/dev/mapper/{vg.replace('-', '--')}-{lv.replace('-', '--')}".lower(), vol)
        elif vol.partition.name:
            names.setdefault(f"PARTLABEL={vol.partition.name}".lower(), vol)
    return names


def _source_name(source: str) -> str:
    return (lookup_key(source) or source).lower()


def _with_mounts(root: NodeTree, volumes: list[VolumeReport], trees: dict[int, NodeTree]) -> FileTree:
    """The root tree with the other filesystems of this disk mounted where its fstab says."""
    names = _volume_names(volumes)
    mounts = {}
    for source, point in fstab_mounts(root):
        vol = names.get(_source_name(source))
        tree = trees.get(vol.partition.number) if vol is not None else None
        if point != "/" and tree is not None and tree is not root:
            mounts[point] = tree
    return MountTree(root, mounts) if mounts else root


def _describe(vol: VolumeReport) -> str:
    if vol.partition.type_id == LVM_LV_TYPE:
        return f"logical volume {vol.partition.name} ({vol.info.kind})"
    return f"partition {vol.partition.number} ({vol.info.kind})"


def _resolve_mounts(os_report: OsReport, volumes: list[VolumeReport]) -> None:
    """Name, for each mount the Linux boot asks for, the volume of this disk its source points at."""
    if os_report.linux is None:
        return
    names = _volume_names(volumes)
    resolved = []
    for entry in os_report.linux.mounts:
        vol = names.get(_source_name(entry.source)) if entry.looked_up else None
        resolved.append(replace(entry, target=_describe(vol)) if vol is not None else entry)
    os_report.linux = replace(os_report.linux, mounts=tuple(resolved))


def _find_bcd(volumes: list[VolumeReport], trees: dict[int, NodeTree], os_index: int | None) -> BcdSettings | None:
    """The BCD store Windows boots with: on the ESP, else the active partition, else the Windows volume."""

    order = [v for v in volumes if v.partition.is_esp] + [v for v in volumes if v.partition.bootable]
    if os_index is not None:
        order.append(volumes[os_index])
    order += [v for v in volumes if v.info.kind in (NTFS, FAT)]
    seen: set[int] = set()
    for vol in order:
        tree = trees.get(vol.partition.number)
        if tree is None or vol.partition.number in seen:
            continue
        seen.add(vol.partition.number)
        for path in BCD_PATHS:
            size = tree.file_size(path)
            if size is None:
                continue
            where = f"partition {vol.partition.number}: {path}"
            if size > MAX_BCD_SIZE:
                return BcdSettings(where, None, None, None, None, None, None, f"{size} bytes: too large to be a BCD")
            return read_bcd(tree.read_file(path, MAX_BCD_SIZE) or b"", where)
    return None


def _esp_loaders(volumes: list[VolumeReport], trees: dict[int, NodeTree]) -> list[str] | None:
    """Boot loaders on the (first readable) EFI System Partition, ``None`` if none could be read."""
    for vol in volumes:
        if not vol.partition.is_esp or vol.partition.number not in trees:
            continue
        tree = trees[vol.partition.number]
        found = [p for p in EFI_BOOT_FILES if tree.exists(p)]
        for vendor in tree.listdir("/EFI") or []:
            for name in tree.listdir(f"/EFI/{vendor}") or []:
                if name.lower() in EFI_VENDOR_LOADERS:
                    found.append(f"/EFI/{vendor}/{name}")
        return found
    return None


def _windows_bios_files(volumes: list[VolumeReport], trees: dict[int, NodeTree]) -> list[str] | None:
    """Which Windows BIOS boot files the active MBR partition holds, ``None`` if it was not read."""
    active = next((v for v in volumes if v.partition.bootable), None)
    if active is None or active.partition.number not in trees:
        return None
    tree = trees[active.partition.number]
    return [p for p in WINDOWS_BIOS_FILES if tree.exists(p)]
