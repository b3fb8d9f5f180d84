"""Which filesystem a volume holds (by signature), and a :class:`FileTree` over it via dissect.

Signatures are read with our own code, so the probe and the encryption / unclean-capture signals work
without the optional ``dissect`` readers; only walking files needs them (``vhdtool[inspect]``).
Path resolution is ours too: symlinks are followed inside the image only, with a bound and loop
detection, and never reach the host's files.
"""

from __future__ import annotations

import io
import stat
import struct
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar, cast

from vhdtool.disk.base import DiskReader, VirtualDisk
from vhdtool.errors import VhdtoolError
from vhdtool.inspect.xfs_log import xfs_log_state

T = TypeVar("T")
PROBE_SIZE = 0x11000  # covers the btrfs superblock at 64 KiB
MAX_SYMLINKS = 40  # as Linux's MAXSYMLINKS

# Filesystem kinds, as reported.
NTFS, FAT, EXT2, EXT3, EXT4, XFS, BTRFS = "ntfs", "fat", "ext2", "ext3", "ext4", "xfs", "btrfs"
BITLOCKER, LUKS, SWAP, LVM2, UNKNOWN = "bitlocker", "luks", "swap", "lvm2", "unknown"
NOT_PROBED = "none"  # a partition whose type holds no filesystem (MSR, BIOS boot, MBR extended), or < 4 KiB
LINUX_FILESYSTEMS = frozenset({EXT2, EXT3, EXT4, XFS, BTRFS})

# ext4 superblock (kernel Documentation/filesystems/ext4/super.rst), at byte 1024 of the volume.
EXT_MAGIC = 0xEF53
EXT_COMPAT_HAS_JOURNAL = 0x4
EXT_INCOMPAT_RECOVER = 0x4
EXT_INCOMPAT_EXT4 = 0x40 | 0x80 | 0x200  # extents, 64bit, flex_bg
EXT_RO_COMPAT_EXT4 = 0x8 | 0x10 | 0x20 | 0x40 | 0x400  # huge_file, gdt_csum, dir_nlink, extra_isize, csum
EXT_STATE_VALID = 0x1

# NTFS $VOLUME_INFORMATION flags ([MS-FSCC] 2.5 / ntfs-3g layout.h VOLUME_IS_DIRTY).
NTFS_VOLUME_DIRTY = 0x0001


@dataclass(frozen=True)
class VolumeInfo:
    """What a volume holds, from its signatures, and what that means for an upload."""

    kind: str
    label: str | None = None
    uuid: str | None = None
    encrypted: bool = False
    unclean: str | None = None  # why the filesystem was not cleanly unmounted, if it shows
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "label": self.label,
            "uuid": self.uuid,
            "encrypted": self.encrypted,
            "unclean": self.unclean,
            **self.details,
        }


def probe_bytes(head: bytes) -> VolumeInfo:
    """Name the filesystem whose first bytes are ``head`` (at least 4 KiB; 68 KiB finds btrfs)."""
    if head[3:11] == b"-FVE-FS-":
        return VolumeInfo(BITLOCKER, encrypted=True)
    if head[:6] == b"LUKS\xba\xbe":
        version = struct.unpack_from(">H", head, 6)[0]
        label = head[0x18:0x48].rstrip(b"\0").decode("ascii", "replace") if version >= 2 else None
        volume_uuid = head[0xA8:0xD0].rstrip(b"\0").decode("ascii", "replace") or None
        return VolumeInfo(LUKS, label or None, volume_uuid, encrypted=True, details={"luks_version": version})
    if head[3:11] == b"NTFS    ":
        serial = struct.unpack_from("<Q", head, 0x48)[0]
        return VolumeInfo(NTFS, uuid=f"{serial:016X}")
    if head[:4] == b"XFSB":
        return VolumeInfo(
            XFS,
            head[108:120].rstrip(b"\0").decode("ascii", "replace") or None,
            str(uuid.UUID(bytes=head[32:48])),
        )
    if len(head) >= 1024 + 0x100 and struct.unpack_from("<H", head, 1024 + 0x38)[0] == EXT_MAGIC:
        return _probe_ext(head[1024:2048])
    if len(head) >= 0x10048 and head[0x10040:0x10048] == b"_BHRfS_M":
        label = head[0x1012B : 0x1012B + 256].split(b"\0", 1)[0].decode("utf-8", "replace")
        return VolumeInfo(BTRFS, label or None, str(uuid.UUID(bytes=head[0x10020:0x10030])))
    for sector in range(4):  # LVM2 label: any of the first four sectors (lib/label/label.c)
        at = sector * 512
        if head[at : at + 8] == b"LABELONE" and head[at + 24 : at + 32] == b"LVM2 001":
            return VolumeInfo(LVM2, uuid=head[at + 32 : at + 64].decode("ascii", "replace"))
    if len(head) >= 4096 and head[4086:4096] in (b"SWAPSPACE2", b"SWAP-SPACE"):
        label = head[1024 + 28 : 1024 + 44].rstrip(b"\0").decode("utf-8", "replace")
        return VolumeInfo(SWAP, label or None, str(uuid.UUID(bytes=head[1024 + 12 : 1024 + 28])))
    if head[510:512] == b"\x55\xaa" and (
        head[54:59] == b"FAT12" or head[54:59] == b"FAT16" or head[82:87] == b"FAT32"
    ):
        fat32 = head[82:87] == b"FAT32"
        label_at, serial_at = (71, 67) if fat32 else (43, 39)
        label = head[label_at : label_at + 11].rstrip(b" \0").decode("ascii", "replace")
        serial = struct.unpack_from("<I", head, serial_at)[0]
        return VolumeInfo(
            FAT, None if label in ("", "NO NAME") else label, f"{serial >> 16:04X}-{serial & 0xFFFF:04X}"
        )
    return VolumeInfo(UNKNOWN)


def _probe_ext(sb: bytes) -> VolumeInfo:
    (state,) = struct.unpack_from("<H", sb, 0x3A)
    compat, incompat, ro_compat = struct.unpack_from("<III", sb, 0x5C)
    if incompat & EXT_INCOMPAT_EXT4 or ro_compat & EXT_RO_COMPAT_EXT4:
        kind = EXT4
    elif compat & EXT_COMPAT_HAS_JOURNAL:
        kind = EXT3
    else:
        kind = EXT2
    unclean = None
    if incompat & EXT_INCOMPAT_RECOVER:
        unclean = "ext4 journal needs_recovery is set (not cleanly unmounted)"
    elif not state & EXT_STATE_VALID:
        unclean = "ext superblock state is not 'clean'"
    label = sb[0x78:0x88].rstrip(b"\0").decode("utf-8", "replace")
    return VolumeInfo(
        kind,
        label or None,
        str(uuid.UUID(bytes=sb[0x68:0x78])),
        unclean=unclean,
        details={"needs_recovery": bool(incompat & EXT_INCOMPAT_RECOVER)},
    )


def probe_volume(disk: VirtualDisk, offset: int, length: int) -> VolumeInfo:
    """Probe the volume at ``[offset, offset + length)`` of ``disk``; adds XFS / NTFS cleanliness."""
    head = disk.read(offset, min(PROBE_SIZE, length))
    info = probe_bytes(head)
    if info.kind == XFS:

        state = xfs_log_state(disk, offset, length, head)
        if state == "dirty":
            info = VolumeInfo(
                info.kind,
                info.label,
                info.uuid,
                unclean="XFS log is not clean (needs recovery)",
                details={"log": state},
            )
        else:
            info = VolumeInfo(info.kind, info.label, info.uuid, details={"log": state})
    return info


# --------------------------------------------------------------------------------------------------
# File trees


def is_reader_error(err: Exception) -> bool:
    """Whether ``err`` is a filesystem reader failing on damaged contents (read as "absent").

    vhdtool's own errors (a damaged container, a truncated file) are not: they propagate.
    """
    if isinstance(err, VhdtoolError):
        return False
    if type(err).__module__.startswith("dissect"):  # dissect's own error types
        return True
    return isinstance(err, (OSError, ValueError, KeyError, IndexError, EOFError, NotImplementedError,
                            struct.error, UnicodeDecodeError, RecursionError))


class NodeTree(ABC):
    """A :class:`~vhdtool.inspect.model.FileTree` over one filesystem's nodes.

    Subclasses give the node primitives; this class resolves paths component by component, following
    symlinks inside the filesystem only (relative to the link's directory, absolute ones from this
    filesystem's root), at most :data:`MAX_SYMLINKS` per lookup so loops end.
    """

    case_insensitive = False

    @abstractmethod
    def _root(self) -> Any: ...

    @abstractmethod
    def _children(self, node: Any) -> dict[str, Any] | None:
        """Name -> child node of a directory, or ``None`` if ``node`` is not one."""

    @abstractmethod
    def _kind(self, node: Any) -> str:
        """``"dir"``, ``"file"``, ``"link"`` or ``"other"``."""

    @abstractmethod
    def _link(self, node: Any) -> str: ...

    @abstractmethod
    def _size(self, node: Any) -> int: ...

    @abstractmethod
    def _read(self, node: Any, limit: int) -> bytes: ...

    def _open(self, node: Any) -> Any:
        """A file-like object over ``node``'s data (the dissect readers' own ``open()``)."""
        return node.open()

    def _child(self, node: Any, name: str) -> Any | None:
        children = self._children(node)
        if children is None:
            return None
        if name in children:
            return children[name]
        if self.case_insensitive:
            folded = name.casefold()
            for key, value in children.items():
                if key.casefold() == folded:
                    return value
        return None

    def _resolve(self, path: str, follow_last: bool = True) -> Any | None:
        """The node at ``path``, or ``None``; errors of the underlying reader count as absent."""
        try:
            return self._walk(path, follow_last)
        except Exception as err:
            if is_reader_error(err):
                return None
            raise

    def _walk(self, path: str, follow_last: bool) -> Any | None:
        pending = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
        pending.reverse()
        stack: list[Any] = [self._root()]  # the directories from the root down to the current one
        links = 0
        while pending:
            name = pending.pop()
            if name == "..":
                if len(stack) > 1:
                    stack.pop()
                continue
            child = self._child(stack[-1], name)
            if child is None:
                return None
            if self._kind(child) == "link" and (pending or follow_last):
                links += 1
                if links > MAX_SYMLINKS:
                    return None
                target = self._link(child)
                parts = [p for p in target.replace("\\", "/").split("/") if p not in ("", ".")]
                if target.startswith("/"):
                    del stack[1:]
                pending.extend(reversed(parts))
                continue
            stack.append(child)
        return stack[-1]

    def _guarded(self, action: Callable[[], T], default: T) -> T:
        """Run one reader action; a reader failing on damaged contents gives ``default``."""
        try:
            return action()
        except Exception as err:
            if is_reader_error(err):
                return default
            raise

    def exists(self, path: str) -> bool:
        return self._resolve(path) is not None

    def is_dir(self, path: str) -> bool:
        node = self._resolve(path)
        return node is not None and self._guarded(lambda: self._kind(node) == "dir", False)

    def listdir(self, path: str) -> list[str] | None:
        node = self._resolve(path)
        if node is None:
            return None
        children = self._guarded(lambda: self._children(node), None)  # damaged: no directory
        return None if children is None else sorted(n for n in children if n not in (".", ".."))

    def read_file(self, path: str, limit: int = 16 * 1024 * 1024) -> bytes | None:
        node = self._resolve(path)
        if node is None:
            return None
        return self._guarded(lambda: self._read(node, limit) if self._kind(node) == "file" else None, None)

    def file_size(self, path: str) -> int | None:
        node = self._resolve(path)
        if node is None:
            return None
        return self._guarded(lambda: self._size(node) if self._kind(node) == "file" else None, None)

    def open_file(self, path: str) -> IO[bytes] | None:
        node = self._resolve(path)
        if node is None:
            return None
        inner = self._guarded(lambda: self._open(node) if self._kind(node) == "file" else None, None)
        if inner is None:
            return None
        size = self._guarded(lambda: self._size(node), 0)
        return cast(IO[bytes], ReaderStream(inner, size))

    def readlink(self, path: str) -> str | None:
        node = self._resolve(path, follow_last=False)
        if node is None:
            return None
        return self._guarded(lambda: self._link(node) if self._kind(node) == "link" else None, None)


class ReaderStream(io.RawIOBase):
    """A dissect file stream whose failures on damaged contents surface as :class:`OSError`.

    Callers then handle one exception type; vhdtool's own errors (a damaged container) propagate.
    """

    def __init__(self, inner: Any, size: int) -> None:
        super().__init__()
        self._inner = inner
        self.size = size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def _call(self, action: Callable[[], T]) -> T:
        try:
            return action()
        except OSError:
            raise
        except Exception as err:
            if is_reader_error(err):
                raise OSError(f"filesystem reader: {err!r}") from err
            raise

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._call(lambda: self._inner.read(len(view)))
        view[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return int(self._call(lambda: self._inner.seek(offset, whence)))

    def tell(self) -> int:
        return int(self._call(lambda: self._inner.tell()))


_MODE_KINDS = {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "link"}


class UnixTree(NodeTree):
    """ext2/3/4 and XFS (dissect inodes with ``filetype``, ``listdir``, ``link``, ``open``)."""

    def __init__(self, fs: Any) -> None:
        self.fs = fs

    def _root(self) -> Any:
        return self.fs.get("/")

    def _children(self, node: Any) -> dict[str, Any] | None:
        if node.filetype != stat.S_IFDIR:
            return None
        return dict(node.listdir())

    def _kind(self, node: Any) -> str:
        return _MODE_KINDS.get(node.filetype, "other")

    def _link(self, node: Any) -> str:
        return str(node.link)

    def _size(self, node: Any) -> int:
        return int(node.size)

    def _read(self, node: Any, limit: int) -> bytes:
        return bytes(node.open().read(min(limit, int(node.size))))


class BtrfsTree(UnixTree):
    """btrfs's default subvolume (dissect.btrfs inodes carry ``mode`` rather than ``filetype``)."""

    def _root(self) -> Any:
        return self.fs.get("/")

    def _children(self, node: Any) -> dict[str, Any] | None:
        if not node.is_dir():
            return None
        return dict(node.listdir())

    def _kind(self, node: Any) -> str:
        return _MODE_KINDS.get(stat.S_IFMT(node.mode), "other")


class NtfsTree(NodeTree):
    """NTFS via dissect.ntfs: case-insensitive; reparse points (junctions, symlinks) are not followed."""

    case_insensitive = True

    def __init__(self, fs: Any) -> None:
        self.fs = fs

    def _root(self) -> Any:
        return self.fs.mft.get("\\")

    def _children(self, node: Any) -> dict[str, Any] | None:
        if not node.is_dir():
            return None
        return {name: entry for name, entry in node.listdir(ignore_dos=True).items()}

    def _child(self, node: Any, name: str) -> Any | None:
        entry = super()._child(node, name)
        return None if entry is None else entry.dereference()

    def _kind(self, node: Any) -> str:
        if node.is_dir():
            return "dir"
        if node.is_reparse_point():
            return "other"
        return "file"

    def _link(self, node: Any) -> str:
        raise ValueError("NTFS reparse points are not followed")

    def _size(self, node: Any) -> int:
        return int(node.size())

    def _read(self, node: Any, limit: int) -> bytes:
        return bytes(node.open().read(min(limit, int(node.size()))))


class FatTree(NodeTree):
    """FAT (an EFI System Partition) via dissect.fat: case-insensitive, no links."""

    case_insensitive = True

    def __init__(self, fs: Any) -> None:
        self.fs = fs

    def _root(self) -> Any:
        return self.fs.root

    def _children(self, node: Any) -> dict[str, Any] | None:
        if not node.is_directory():
            return None
        result: dict[str, Any] = {}
        for child in node.iterdir():
            if child.is_volume_id():
                continue
            result[child.name] = child
        return result

    def _kind(self, node: Any) -> str:
        return "dir" if node.is_directory() else "file"

    def _link(self, node: Any) -> str:
        raise ValueError("FAT has no links")

    def _size(self, node: Any) -> int:
        return int(node.size)

    def _read(self, node: Any, limit: int) -> bytes:
        return bytes(node.open().read(min(limit, int(node.size))))


class DissectMissing(Exception):
    """The optional ``vhdtool[inspect]`` readers are not installed."""


def open_tree(disk: VirtualDisk, offset: int, length: int, kind: str) -> NodeTree | None:
    """A :class:`NodeTree` over the filesystem of ``kind`` at ``offset``; ``None`` if it cannot be read.

    Raises :class:`DissectMissing` when the reader for ``kind`` is not installed.
    """
    fh = DiskReader(disk, offset, length)
    try:
        if kind in (EXT2, EXT3, EXT4):
            from dissect.extfs import ExtFS

            return UnixTree(ExtFS(fh))
        if kind == XFS:
            from dissect.xfs import XFS as DissectXFS

            return UnixTree(DissectXFS(fh))
        if kind == BTRFS:
            from dissect.btrfs import Btrfs

            return BtrfsTree(Btrfs(fh))
        if kind == NTFS:
            from dissect.ntfs import NTFS as DissectNTFS

            return NtfsTree(DissectNTFS(fh))
        if kind == FAT:
            from dissect.fat import FATFS

            return FatTree(FATFS(fh))
    except ImportError as err:
        raise DissectMissing(
            f"reading {kind} needs the optional extra: pip install 'vhdtool[inspect]'"
        ) from err
    except Exception as err:
        if is_reader_error(err):
            return None
        raise
    return None


def ntfs_dirty(tree: NodeTree) -> bool | None:
    """The NTFS volume dirty flag from ``$Volume``'s $VOLUME_INFORMATION, or ``None`` if unreadable."""
    if not isinstance(tree, NtfsTree):
        return None
    try:
        from dissect.ntfs.c_ntfs import ATTRIBUTE_TYPE_CODE

        record = tree.fs.mft.get(3)  # $Volume is MFT record 3 ([MS-FSCC] / NTFS documentation)
        data = record.attributes[ATTRIBUTE_TYPE_CODE.VOLUME_INFORMATION][0].data()
        flags: int = struct.unpack_from("<H", data, 10)[0]
        return bool(flags & NTFS_VOLUME_DIRTY)
    except Exception:
        return None
