"""Filesystem signatures, unclean-capture signals and the FileTree's symlink handling, on real volumes."""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import pytest

from vhdtool.disk.base import ImageFile
from vhdtool.extents import MiB
from vhdtool.formats.raw import RawDisk
from vhdtool.inspect import filesystems as fs
from vhdtool.inspect.xfs_log import xfs_log_state


def volume(tmp_path: Path, name: str, size: int, *mkfs: str) -> Path:
    path = tmp_path / name
    with open(path, "wb") as f:
        f.truncate(size)
    subprocess.run([*mkfs, str(path)], check=True, capture_output=True)
    return path


def probe(path: Path) -> fs.VolumeInfo:
    with RawDisk(ImageFile(path)) as disk:
        return fs.probe_volume(disk, 0, disk.virtual_size)


@pytest.mark.parametrize(
    ("mkfs", "kind", "label"),
    [
        (["mke2fs", "-q", "-t", "ext2", "-L", "two"], fs.EXT2, "two"),
        (["mke2fs", "-q", "-t", "ext3", "-L", "three"], fs.EXT3, "three"),
        (["mke2fs", "-q", "-t", "ext4", "-L", "four"], fs.EXT4, "four"),
        (["mkfs.vfat", "-n", "ESP"], fs.FAT, "ESP"),
        (["mkfs.vfat", "-F", "32", "-n", "BIG"], fs.FAT, "BIG"),
        (["mkswap", "-L", "sw"], fs.SWAP, "sw"),
        (["mkntfs", "-q", "-F", "-f", "-L", "win"], fs.NTFS, None),
    ],
)
def test_probe_names_real_filesystems(tmp_path: Path, mkfs: list[str], kind: str, label: str | None) -> None:
    info = probe(volume(tmp_path, "v.img", 40 * MiB, *mkfs))
    assert (info.kind, info.label, info.encrypted, info.unclean) == (kind, label, False, None)


def test_probe_uuid_matches_blkid(tmp_path: Path) -> None:
    path = volume(tmp_path, "v.img", 16 * MiB, "mke2fs", "-q", "-t", "ext4")
    blkid = subprocess.run(["blkid", "-o", "value", "-s", "UUID", str(path)], capture_output=True, text=True)
    if blkid.returncode != 0:
        pytest.skip("blkid not available")
    assert probe(path).uuid == blkid.stdout.strip()


def test_xfs_fresh_log_is_clean_and_a_torn_one_dirty(tmp_path: Path) -> None:
    path = volume(tmp_path, "x.img", 300 * MiB, "mkfs.xfs", "-q", "-L", "data")
    info = probe(path)
    assert (info.kind, info.label, info.details["log"], info.unclean) == (fs.XFS, "data", "clean", None)
    # Turn the unmount record into an ordinary transaction record, as a crash leaves the log.
    with open(path, "r+b") as f:
        sb = f.read(512)
        (block_size,) = struct.unpack_from(">I", sb, 4)
        (log_start,) = struct.unpack_from(">Q", sb, 48)
        (ag_blocks,) = struct.unpack_from(">I", sb, 84)
        agblklog = sb[124]
        base = ((log_start >> agblklog) * ag_blocks + (log_start & ((1 << agblklog) - 1))) * block_size
        f.seek(base)
        assert struct.unpack(">I", f.read(4))[0] == 0xFEEDBABE
        f.seek(base + 512 + 9)  # oh_flags of the record's first operation
        flags = f.read(1)[0]
        assert flags & 0x20
        f.seek(base + 512 + 9)
        f.write(bytes([flags & ~0x20]))
    with RawDisk(ImageFile(path)) as disk:
        assert xfs_log_state(disk, 0, disk.virtual_size, disk.read(0, 4096)) == "dirty"
    assert probe(path).unclean is not None


def test_ext4_needs_recovery(tmp_path: Path) -> None:
    path = volume(tmp_path, "e.img", 16 * MiB, "mke2fs", "-q", "-t", "ext4")
    subprocess.run(
        ["debugfs", "-w", "-R", "feature needs_recovery", str(path)], check=True, capture_output=True
    )
    info = probe(path)
    assert info.details["needs_recovery"] is True
    assert info.unclean is not None and "needs_recovery" in info.unclean


def test_encryption_signatures() -> None:
    head = bytearray(68 * 1024)
    head[0:8] = b"LUKS\xba\xbe\x00\x02"
    head[0x18:0x1D] = b"crypt"
    assert (fs.probe_bytes(bytes(head)).kind, fs.probe_bytes(bytes(head)).encrypted) == (fs.LUKS, True)
    bitlocker = bytearray(4096)
    bitlocker[3:11] = b"-FVE-FS-"
    assert fs.probe_bytes(bytes(bitlocker)) == fs.VolumeInfo(fs.BITLOCKER, encrypted=True)
    lvm = bytearray(4096)
    lvm[512:520] = b"LABELONE"
    lvm[536:544] = b"LVM2 001"
    assert fs.probe_bytes(bytes(lvm)).kind == fs.LVM2
    assert fs.probe_bytes(bytes(4096)).kind == fs.UNKNOWN


def test_ntfs_tree_is_case_insensitive_and_clean(tmp_path: Path) -> None:
    path = volume(tmp_path, "n.img", 40 * MiB, "mkntfs", "-q", "-F", "-f")
    with RawDisk(ImageFile(path)) as disk:
        tree = fs.open_tree(disk, 0, disk.virtual_size, fs.NTFS)
        assert tree is not None
        assert tree.exists("/$mft") and tree.exists("/$MFT")
        assert fs.ntfs_dirty(tree) is False


@pytest.fixture(scope="module")
def ext4_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ext4 volume with the symlink shapes real root filesystems have, and hostile ones."""
    base = tmp_path_factory.mktemp("symlinks")
    root = base / "root"
    (root / "usr/lib/modules").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "run/systemd/resolve").mkdir(parents=True)
    (root / "run/systemd/resolve/stub-resolv.conf").write_text("nameserver 127.0.0.53\n")
    (root / "etc/hostname").write_text("inside-the-image\n")
    os.symlink("usr/lib", root / "lib")
    os.symlink("../run/systemd/resolve/stub-resolv.conf", root / "etc/resolv.conf")
    os.symlink("loop-b", root / "loop-a")
    os.symlink("loop-a", root / "loop-b")
    os.symlink("../../../../../../etc/hostname", root / "etc/escape")  # climbs above / : stays in the image
    os.symlink("/etc/hostname", root / "etc/absolute")  # absolute: the image's /etc, not the host's
    os.symlink("/nonexistent/host/path", root / "dangling")
    image = base / "e.img"
    subprocess.run(
        ["mke2fs", "-q", "-t", "ext4", "-d", str(root), str(image), "16M"], check=True, capture_output=True
    )
    return image


def test_symlinks_stay_inside_the_image(ext4_tree: Path) -> None:
    with RawDisk(ImageFile(ext4_tree)) as disk:
        tree = fs.open_tree(disk, 0, disk.virtual_size, fs.EXT4)
        assert tree is not None
        assert tree.is_dir("/lib/modules")
        assert tree.read_file("/etc/resolv.conf") == b"nameserver 127.0.0.53\n"
        assert tree.readlink("/etc/resolv.conf") == "../run/systemd/resolve/stub-resolv.conf"
        assert tree.read_file("/etc/escape") == b"inside-the-image\n"
        assert tree.read_file("/etc/absolute") == b"inside-the-image\n"
        assert not tree.exists("/loop-a") and tree.readlink("/loop-a") == "loop-b"
        assert not tree.exists("/dangling")
        assert tree.read_file("/etc") is None and tree.listdir("/etc/hostname") is None
        assert tree.file_size("/etc/hostname") == len("inside-the-image\n")
        assert tree.read_file("/etc/hostname", limit=6) == b"inside"
        assert tree.listdir("/") == ["dangling", "etc", "lib", "loop-a", "loop-b", "lost+found", "run", "usr"]


def _set_ntfs_dirty(path: Path) -> None:
    """Set VOLUME_IS_DIRTY in $Volume's $VOLUME_INFORMATION, located by hand from the boot sector."""
    with open(path, "r+b") as f:
        boot = f.read(512)
        bytes_per_sector, = struct.unpack_from("<H", boot, 0x0B)
        cluster = bytes_per_sector * boot[0x0D]
        mft_lcn, = struct.unpack_from("<Q", boot, 0x30)
        per_record = struct.unpack_from("<b", boot, 0x40)[0]
        record_size = 1 << -per_record if per_record < 0 else per_record * cluster
        record_at = mft_lcn * cluster + 3 * record_size  # $Volume is MFT record 3
        f.seek(record_at)
        record = f.read(record_size)
        assert record[:4] == b"FILE"
        at, = struct.unpack_from("<H", record, 0x14)
        while True:
            kind, length = struct.unpack_from("<II", record, at)
            assert kind != 0xFFFFFFFF, "no $VOLUME_INFORMATION"
            if kind == 0x70:
                value_at, = struct.unpack_from("<H", record, at + 0x14)
                flags_at = at + value_at + 10
                assert flags_at % 512 < 510  # not under an update-sequence fixup
                f.seek(record_at + flags_at)
                flags, = struct.unpack("<H", f.read(2))
                f.seek(record_at + flags_at)
                f.write(struct.pack("<H", flags | 1))
                return
            at += length


def test_ntfs_dirty_flag(tmp_path: Path) -> None:
    path = volume(tmp_path, "n.img", 40 * MiB, "mkntfs", "-q", "-F", "-f")
    _set_ntfs_dirty(path)
    with RawDisk(ImageFile(path)) as disk:
        tree = fs.open_tree(disk, 0, disk.virtual_size, fs.NTFS)
        assert tree is not None and fs.ntfs_dirty(tree) is True


def test_dirty_ntfs_partition_is_reported_by_inspect(tmp_path: Path) -> None:
    from vhdtool.inspect.report import inspect_disk

    part = volume(tmp_path, "n.img", 40 * MiB, "mkntfs", "-q", "-F", "-f")
    _set_ntfs_dirty(part)
    disk_path = tmp_path / "disk.img"
    with open(disk_path, "wb") as f:
        f.truncate(48 * MiB)
    subprocess.run(["sfdisk", "-q", str(disk_path)], input=b"label: dos\nstart=2048, size=40M, type=7\n",
                   check=True, capture_output=True)
    subprocess.run(["dd", f"if={part}", f"of={disk_path}", "bs=1M", "seek=1", "conv=notrunc,sparse"],
                   check=True, capture_output=True)
    with RawDisk(ImageFile(disk_path)) as disk:
        report = inspect_disk(disk)
    assert report.unclean == ["partition 1 (ntfs): volume dirty flag is set"]
