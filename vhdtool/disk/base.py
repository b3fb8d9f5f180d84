"""The virtual disk every format reader produces, the byte sources it reads, and a file-like view.

A format reader reads its container through a :class:`ByteSource`: a local file
(:class:`ImageFile`) or a page blob (:class:`vhdtool.azure.remote.blob_source.BlobSource`), so every
format reads the same from either. Reads are positional (:mod:`vhdtool.blockio.fileio`: ``pread`` where
the OS has it) so many threads can share one open image; nothing here keeps a seek cursor except
:class:`DiskReader`, which each thread creates for itself.
"""

from __future__ import annotations

import io
import os
import stat
import threading
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from vhdtool.blockio import fileio
from vhdtool.errors import ImageError
from vhdtool.extents import Extent, allocated_bytes
from vhdtool.units import SECTOR_SIZE


class ByteSource(Protocol):
    """What a format reader reads: a read-only sequence of ``size`` bytes, and where its data lies.

    ``path`` names it in messages (a file path, or a blob URL without its query string);
    ``identity`` tells two opened sources apart (parent-chain loops). ``data_ranges`` and ``holes``
    come from metadata (``SEEK_DATA``/``SEEK_HOLE``, Get Page Ranges): bytes outside the data
    ranges read as zeros.
    """

    path: str
    size: int
    identity: tuple[int, int]

    def pread(self, offset: int, length: int, structure: str) -> bytes: ...

    def preadinto(self, offset: int, view: memoryview, structure: str) -> None: ...

    def data_ranges(self, limit: int) -> list[tuple[int, int]]: ...

    def holes(self) -> list[tuple[int, int]]: ...

    def close(self) -> None: ...


class BorrowedSource:
    """A byte source lent to a reader: the reader's ``close`` leaves it open for the lender."""

    def __init__(self, inner: ByteSource) -> None:
        self.inner = inner
        self.path = inner.path
        self.size = inner.size
        self.identity = inner.identity

    def pread(self, offset: int, length: int, structure: str) -> bytes:
        return self.inner.pread(offset, length, structure)

    def preadinto(self, offset: int, view: memoryview, structure: str) -> None:
        self.inner.preadinto(offset, view, structure)

    def data_ranges(self, limit: int) -> list[tuple[int, int]]:
        return self.inner.data_ranges(limit)

    def holes(self) -> list[tuple[int, int]]:
        return self.inner.holes()

    def close(self) -> None:
        pass


class ImageFile:
    """An image file opened read-only, read with complete positional reads.

    Short reads are errors naming the structure being read, never silent zeros.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        # O_RDONLY always: vhdtool never changes an input image. O_NONBLOCK so that opening a FIFO
        # (or a device that waits for a carrier) returns at once and is refused below instead of hanging.
        self.fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
                          | getattr(os, "O_NONBLOCK", 0))
        try:
            st = os.fstat(self.fd)
            if not stat.S_ISREG(st.st_mode) and not stat.S_ISBLK(st.st_mode):
                raise ImageError(self.path, "file", None, "not a regular file or block device")
            if hasattr(os, "O_NONBLOCK"):
                os.set_blocking(self.fd, True)
            self.size = st.st_size if stat.S_ISREG(st.st_mode) else os.lseek(self.fd, 0, os.SEEK_END)
            self.identity = (st.st_dev, st.st_ino)
        except BaseException:
            os.close(self.fd)
            raise
        self._closed = False
        self._lock = threading.Lock()

    def pread(self, offset: int, length: int, structure: str) -> bytes:
        """Read exactly ``length`` bytes at ``offset``; a short read raises :class:`ImageError`."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ImageError(self.path, structure, offset,
                             f"needs {length} bytes but the file ends at byte {self.size} (truncated?)")
        try:
            data = fileio.pread(self.fd, length, offset)
            while len(data) < length:  # pread may return less on some platforms; loop until done
                more = fileio.pread(self.fd, length - len(data), offset + len(data))
                if not more:
                    raise ImageError(self.path, structure, offset + len(data), "unexpected end of file")
                data += more
        except OSError as err:  # EIO from a failing disk, EISDIR, ...: name what was being read
            raise ImageError(self.path, structure, offset, f"read failed: {err.strerror or err}") from err
        return data

    def preadinto(self, offset: int, view: memoryview, structure: str) -> None:
        """Fill ``view`` from ``offset``; a short read raises :class:`ImageError`."""
        length = len(view)
        if offset < 0 or offset + length > self.size:
            raise ImageError(self.path, structure, offset,
                             f"needs {length} bytes but the file ends at byte {self.size} (truncated?)")
        done = 0
        while done < length:
            try:
                n = fileio.preadinto(self.fd, view[done:], offset + done)
            except OSError as err:
                raise ImageError(self.path, structure, offset + done,
                                 f"read failed: {err.strerror or err}") from err
            if n <= 0:
                raise ImageError(self.path, structure, offset + done, "unexpected end of file")
            done += n

    def data_ranges(self, limit: int) -> list[tuple[int, int]]:
        """The ``(start, end)`` ranges of ``[0, limit)`` that hold data (the whole range where unknown)."""
        return fileio.data_ranges(self.fd, limit)

    def holes(self) -> list[tuple[int, int]]:
        """The ranges of the file that are holes (read as zeros, no storage)."""
        return fileio.file_holes(self.fd, self.size)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                fileio.forget(self.fd)
                os.close(self.fd)


PlacementKind = Literal["file", "zero", "read"]


@dataclass(frozen=True, slots=True)
class Placement:
    """Where the disk's bytes ``[offset, offset + length)`` come from, so a copier can pick its tool.

    ``"file"``: stored as they are in ``image`` from ``file_offset`` on (the kernel can copy them
    file to file, and they can be mapped); ``"zero"``: they read as zeros; ``"read"``: anything
    else (assembled, replayed, or a format that says nothing), to be fetched with ``readinto``.
    """

    offset: int
    length: int
    kind: PlacementKind
    image: ImageFile | None = None
    file_offset: int = 0

    @property
    def end(self) -> int:
        return self.offset + self.length


def stored_placement(offset: int, length: int, source: ByteSource, file_offset: int) -> Placement:
    """Bytes stored as they are in ``source`` at ``file_offset``: a ``"file"`` placement when the
    source is a local file (kernel copies, mapping), ``"read"`` for any other source (a blob)."""
    inner: ByteSource = source
    while isinstance(inner, BorrowedSource):
        inner = inner.inner
    if isinstance(inner, ImageFile):
        return Placement(offset, length, "file", inner, file_offset)
    return Placement(offset, length, "read")


def append_placement(result: list[Placement], piece: Placement) -> None:
    """Append ``piece``, merging it into the last one when both are one contiguous run of one kind."""
    if piece.length <= 0:
        return
    if result:
        last = result[-1]
        if last.kind == piece.kind and last.end == piece.offset and last.image is piece.image and (
                piece.kind != "file" or last.file_offset + last.length == piece.file_offset):
            result[-1] = Placement(last.offset, last.length + piece.length, last.kind, last.image,
                                   last.file_offset)
            return
    result.append(piece)


class VirtualDisk(ABC):
    """A disk image seen as its logical bytes: a size, extents from metadata, positional reads.

    Subclasses set the attributes in ``__init__`` and implement :meth:`extents`,
    :meth:`readinto` and :meth:`details`.
    """

    path: str
    format: str  # "vhd" | "vhdx" | "raw"
    disk_type: str  # "fixed" | "dynamic" | "differencing"
    virtual_size: int
    logical_sector_size: int = SECTOR_SIZE
    physical_sector_size: int = SECTOR_SIZE
    block_size: int | None = None

    def __init__(self) -> None:
        self.warnings: list[str] = []

    @abstractmethod
    def extents(self) -> list[Extent]:
        """Ordered extents covering ``[0, virtual_size)``, from metadata only (no data read)."""

    @abstractmethod
    def readinto(self, offset: int, view: memoryview) -> None:
        """Fill ``view`` with the disk's bytes from ``offset``; thread-safe, no shared cursor."""

    @abstractmethod
    def details(self) -> dict[str, Any]:
        """Format-specific facts for ``vhdtool info`` (JSON-serialisable)."""

    def placements(self, offset: int, length: int) -> list[Placement]:
        """Where ``[offset, offset + length)`` is stored: ordered, covering the range exactly.

        Readers whose bytes sit contiguously in their file override this, so that ``convert`` can
        let the kernel copy them (``copy_file_range``); the default says "read it".
        """
        self.check_range(offset, length)
        return [Placement(offset, length, "read")] if length else []

    @property
    def parent(self) -> VirtualDisk | None:
        """The parent disk of a differencing disk, else ``None``."""
        return None

    @property
    def source_id(self) -> uuid.UUID | None:
        """The id the format gives this image (a VHD footer's unique id, a VHDX's DataWriteGuid), or
        ``None`` for formats without one: what ``convert --keep-id`` reuses and uploads record."""
        return None

    @property
    def log_state(self) -> str | None:
        """``"clean"`` or ``"dirty"`` for VHDX, ``None`` for formats without a log."""
        return None

    def read(self, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at ``offset`` (clipped to the disk size)."""
        length = max(0, min(length, self.virtual_size - offset))
        buf = bytearray(length)
        if length:
            self.readinto(offset, memoryview(buf))
        return bytes(buf)

    def check_range(self, offset: int, length: int) -> None:
        """Raise ``ValueError`` for a read outside the disk (a caller bug, not bad input)."""
        if offset < 0 or length < 0 or offset + length > self.virtual_size:
            raise ValueError(f"read [{offset}, {offset + length}) outside disk of {self.virtual_size} bytes")

    def info(self) -> dict[str, Any]:
        """The ``vhdtool info --json`` object: common fields first, then :meth:`details`."""
        parent = self.parent
        result: dict[str, Any] = {
            "path": self.path,
            "format": self.format,
            "type": self.disk_type,
            "virtual_size": self.virtual_size,
            "allocated_bytes": allocated_bytes(self.extents()),
            "logical_sector_size": self.logical_sector_size,
            "physical_sector_size": self.physical_sector_size,
            "block_size": self.block_size,
            "parent": None if parent is None else self.parent_info(),
            "log": self.log_state,
            "warnings": list(self.warnings),
        }
        result.update(self.details())
        return result

    def parent_info(self) -> dict[str, Any] | None:
        """``{"path", "id"}`` of the resolved parent; differencing formats override."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op for disks that hold no file
        """Release the files this disk holds (and its parents')."""

    def __enter__(self) -> VirtualDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DiskReader(io.RawIOBase):
    """A read-only, seekable file object over a :class:`VirtualDisk` (for filesystem readers).

    Each instance has its own position; create one per thread.
    """

    def __init__(self, disk: VirtualDisk, start: int = 0, length: int | None = None) -> None:
        super().__init__()
        self.disk = disk
        self.start = start
        self.length = disk.virtual_size - start if length is None else length
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self.position = offset
        elif whence == io.SEEK_CUR:
            self.position += offset
        elif whence == io.SEEK_END:
            self.position = self.length + offset
        else:
            raise ValueError(f"bad whence {whence}")
        if self.position < 0:
            raise ValueError("negative seek position")
        return self.position

    def read(self, size: int | None = -1) -> bytes:
        """Read at most ``size`` bytes, never allocating past the end of the volume.

        ``RawIOBase.read`` allocates ``size`` bytes before reading; filesystem readers pass sizes
        taken from on-disk fields (an NTFS MFT record size of 2**57), so clip to what is left first.
        """
        remaining = max(0, self.length - self.position)
        if size is None or size < 0 or size > remaining:
            size = remaining
        buf = bytearray(size)
        n = self.readinto(buf)
        del buf[n:]
        return bytes(buf)

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = max(0, min(len(view), self.length - self.position))
        if n:
            self.disk.readinto(self.start + self.position, view[:n])
            self.position += n
        return n
