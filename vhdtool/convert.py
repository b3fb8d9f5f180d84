"""Converting any readable disk to the fixed VHD Azure accepts (or to a plain raw image).

One walk over the source (:func:`vhdtool.pump.pump`): allocated extents are read once, in large
chunks, and handed to the file sink (which leaves holes for zeros) and, when asked, to the hasher.
Memory is bounded by the pump's buffers whatever the disk size.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from .disk import Placement, VirtualDisk, append_placement
from .errors import ImageError, OutputError, UsageError, VhdtoolError
from .extents import Extent, MiB, check_cover
from .fixed import FixedVhdView, azure_virtual_size
from .formats.vhd_layout import FOOTER_SIZE
from .pump import DEFAULT_CHUNK_SIZE, Progress, Sink, Source, pump
from .sinks.fixed_file import FixedFileSink
from .sinks.hasher import HashSink

OutputFormat = Literal["vhd", "raw"]


@dataclass(frozen=True)
class ConvertResult:
    """What :func:`convert` produced (the ``convert --json`` summary)."""

    output: str
    format: str
    source: str
    source_size: int
    virtual_size: int
    file_size: int
    bytes_written: int
    digests: dict[str, str] = field(default_factory=dict)
    unique_id: str | None = None
    seconds: float = 0.0
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "output": self.output,
            "format": self.format,
            "source": self.source,
            "source_size": self.source_size,
            "virtual_size": self.virtual_size,
            "file_size": self.file_size,
            "bytes_written": self.bytes_written,
            "digests": dict(self.digests),
            "unique_id": self.unique_id,
            "seconds": round(self.seconds, 3),
            "warnings": list(self.warnings),
        }


class PaddedView:
    """A disk followed by zeros up to ``size``: the raw output of ``--format raw --size``."""

    def __init__(self, disk: VirtualDisk, size: int) -> None:
        self.disk = disk
        self.size = size

    def extents(self) -> list[Extent]:
        result = list(self.disk.extents())
        if self.size > self.disk.virtual_size:
            result.append(Extent(self.disk.virtual_size, self.size - self.disk.virtual_size, False))
        check_cover(result, self.size)
        return result

    def readinto(self, offset: int, view: memoryview) -> None:
        data_end = min(self.size, self.disk.virtual_size)
        n = max(0, min(len(view), data_end - offset))
        if n:
            self.disk.readinto(offset, view[:n])
        if n < len(view):
            view[n:] = bytes(len(view) - n)

    def placements(self, offset: int, length: int) -> list[Placement]:
        result: list[Placement] = []
        data_end = min(self.size, self.disk.virtual_size)
        if offset < data_end:
            for piece in self.disk.placements(offset, min(offset + length, data_end) - offset):
                append_placement(result, piece)
        lo = max(offset, data_end)
        if lo < offset + length:
            append_placement(result, Placement(lo, offset + length - lo, "zero"))
        return result


def chain_paths(disk: VirtualDisk) -> list[str]:
    """The files a disk is read from: the image and its parents."""
    paths: list[str] = []
    current: VirtualDisk | None = disk
    while current is not None:
        paths.append(current.path)
        current = current.parent
    return paths


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def source_unique_id(disk: VirtualDisk) -> bytes:
    """The id a ``--keep-id`` output reuses: a VHD's footer unique id, a VHDX's data write GUID."""
    facts = disk.details()
    if disk.format == "vhd":
        footer = facts.get("footer") or {}
        text = footer.get("unique_id")
        if isinstance(text, str):
            return uuid.UUID(text).bytes
        raise UsageError(f"{disk.path}: the VHD footer has no unique id to keep")
    if disk.format == "vhdx":
        for holder in (facts, facts.get("vhdx") or {}, facts.get("header") or {}):
            text = holder.get("data_write_guid") if isinstance(holder, dict) else None
            if isinstance(text, str):
                return uuid.UUID(text).bytes
        raise UsageError(f"{disk.path}: no data write GUID found in the VHDX header; omit --keep-id")
    raise UsageError(f"{disk.path}: a {disk.format} image has no disk id to keep; omit --keep-id")


def output_size(disk: VirtualDisk, output_format: OutputFormat = "vhd", size: int | None = None) -> int:
    """The length of the file :func:`convert` writes (for progress bars and space checks)."""
    if output_format == "vhd":
        return azure_virtual_size(disk.virtual_size, size, MiB) + FOOTER_SIZE
    return disk.virtual_size if size is None else azure_virtual_size(disk.virtual_size, size, MiB)


def convert(disk: VirtualDisk, out_path: str | os.PathLike[str], *, output_format: OutputFormat = "vhd",
            size: int | None = None, keep_id: bool = False, hashes: Sequence[str] = (),
            force: bool = False, progress: Progress | None = None,
            chunk_size: int = DEFAULT_CHUNK_SIZE) -> ConvertResult:
    """Write ``disk`` to ``out_path`` as a fixed VHD (or raw image), atomically and sparsely.

    ``size`` grows the disk (rounded up to a MiB; shrinking raises :class:`UsageError`);
    ``hashes`` names digests of the output bytes computed in the same pass; ``progress`` is
    called with ``(bytes, was_data)`` as the walk advances. The output appears only on success.
    """
    started = time.monotonic()
    target = os.fspath(out_path)
    if output_format not in ("vhd", "raw"):
        raise UsageError(f"unknown output format {output_format!r}; choose vhd or raw")
    if disk.virtual_size == 0 and not size:
        raise ImageError(disk.path, "disk", None, "is empty (0 bytes): there is nothing to convert "
                                                  "(--size SIZE makes a blank disk of that size)")
    for path in chain_paths(disk):
        if _same_file(path, target):
            raise OutputError(f"{target}: is the input image {path}; write the output elsewhere")
    hasher = HashSink(hashes) if hashes else None
    unique_id: bytes | None = None
    source: Source
    if output_format == "vhd":
        unique_id = source_unique_id(disk) if keep_id else None
        view = FixedVhdView(disk, size=size, unique_id=unique_id)
        unique_id = view.footer.unique_id
        source, file_size, virtual_size = view, view.size, view.virtual_size
    else:
        if keep_id:
            raise UsageError("--keep-id applies to VHD output only")
        virtual_size = disk.virtual_size if size is None else azure_virtual_size(disk.virtual_size, size, MiB)
        source = disk if virtual_size == disk.virtual_size else PaddedView(disk, virtual_size)
        file_size = virtual_size
    writer = FixedFileSink(target, file_size, force=force)
    try:  # at once: a Ctrl-C from here on removes the temporary file
        # The writer goes last: its finish() renames the output into place once all else succeeded.
        sinks: list[Sink] = ([hasher] if hasher else []) + [writer]
        pump(source, sinks, chunk_size=chunk_size, progress=progress)
    except VhdtoolError:
        writer.abort()
        raise
    except OSError as err:
        # The sink turns its own failures into OutputError, so this one came from reading the source.
        writer.abort()
        raise ImageError(disk.path, "disk data", None,
                         f"reading the image failed: {err.strerror or err}") from err
    except BaseException:
        writer.abort()
        raise
    return ConvertResult(
        output=target,
        format=output_format,
        source=disk.path,
        source_size=disk.virtual_size,
        virtual_size=virtual_size,
        file_size=file_size,
        bytes_written=writer.bytes_written,
        digests=hasher.digests() if hasher else {},
        unique_id=str(uuid.UUID(bytes=unique_id)) if unique_id else None,
        seconds=time.monotonic() - started,
        warnings=tuple(disk.warnings),  # a differencing disk's include its parents'
    )
