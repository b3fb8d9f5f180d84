"""Converting any readable disk to the fixed VHD Azure accepts (or to a plain raw image).

One walk over the source's allocated extents; zeros become holes in the output. Without whole-file
digests the walk is :func:`vhdtool.stream.filecopy.copy_into`: windows in parallel, stored runs copied by
the kernel, the sparse digest (when asked) from the same bytes. MD5 or SHA-256 of the whole file
need the bytes in order: then it is :func:`vhdtool.stream.pump.pump`, one chunk at a time, feeding the
hashers and the file sink. Memory is bounded by the buffers of either, whatever the disk size.

The output is renamed into place atomically; it is made durable first only with ``sync``.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from vhdtool.blockio.zeros import fill_zeros
from vhdtool.disk.base import Placement, VirtualDisk, append_placement
from vhdtool.errors import ImageError, OutputError, UsageError, VhdtoolError
from vhdtool.extents import Extent, allocated_bytes, check_cover
from vhdtool.formats.vhd.layout import FOOTER_SIZE
from vhdtool.stream.digest import NAME as SPARSE_DIGEST
from vhdtool.stream.digest import SparseDigest, SparseDigestSink
from vhdtool.stream.filecopy import copy_into
from vhdtool.stream.fixed_file import FixedFileSink
from vhdtool.stream.fixed_view import FixedVhdView, azure_virtual_size
from vhdtool.stream.hasher import HashSink
from vhdtool.stream.progress import NO_PROGRESS, Progress
from vhdtool.stream.pump import DEFAULT_CHUNK_SIZE, Sink, pump
from vhdtool.units import MiB

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
    # Bytes of allocated extents (read), and bytes known empty from metadata (neither read nor written).
    bytes_data: int = 0
    bytes_skipped: int = 0
    # The sparse digest (``"sparse-sha256"``) when asked, then any whole-file digests, by name.
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
            "bytes_data": self.bytes_data,
            "bytes_skipped": self.bytes_skipped,
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
            fill_zeros(view[n:])

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
    found = disk.source_id
    if found is None:
        raise UsageError(f"{disk.path}: a {disk.format} image has no disk id to keep; omit --keep-id")
    return found.bytes


def output_size(disk: VirtualDisk, output_format: OutputFormat = "vhd", size: int | None = None) -> int:
    """The length of the file :func:`convert` writes (for progress bars and space checks)."""
    if output_format == "vhd":
        return azure_virtual_size(disk.virtual_size, size, MiB) + FOOTER_SIZE
    return disk.virtual_size if size is None else azure_virtual_size(disk.virtual_size, size, MiB)


def convert(disk: VirtualDisk, out_path: str | os.PathLike[str], *, output_format: OutputFormat = "vhd",
            size: int | None = None, keep_id: bool = False, hashes: Sequence[str] = (),
            sparse_digest: bool = False, sync: bool = False, force: bool = False,
            progress: Progress = NO_PROGRESS, chunk_size: int = DEFAULT_CHUNK_SIZE,
            workers: int | None = None) -> ConvertResult:
    """Write ``disk`` to ``out_path`` as a fixed VHD (or raw image), atomically and sparsely.

    ``size`` grows the disk (rounded up to a MiB; shrinking raises :class:`UsageError`);
    ``sparse_digest`` computes the sparse digest of the output (:mod:`vhdtool.stream.digest`) and
    ``hashes`` names whole-file digests, all in the same pass; ``sync`` makes the output durable
    (fsync) before it is renamed into place; ``progress`` hears of the data read and the empty
    space skipped, which add up to the output's size. The output appears only on success.
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
    source: FixedVhdView | PaddedView | VirtualDisk
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
    extents = source.extents()
    data = allocated_bytes(extents)
    digest: SparseDigest | None = None
    writer = FixedFileSink(target, file_size, force=force, sync=sync)
    try:  # at once: a Ctrl-C from here on removes the temporary file
        if hasher is None:
            digest = SparseDigest(file_size) if sparse_digest else None
            copy_into(source, writer, file_size, digest=digest, workers=workers, progress=progress,
                      path=disk.path)
            writer.finish()
        else:
            # Whole-file digests need every byte in order: one ordered walk. The writer goes last:
            # its finish() renames the output into place once all else succeeded.
            digest_sink = SparseDigestSink(file_size) if sparse_digest else None
            digest = None if digest_sink is None else digest_sink.digest
            sinks: list[Sink] = [hasher] + ([digest_sink] if digest_sink else []) + [writer]
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
    digests = {} if digest is None else {SPARSE_DIGEST: digest.hexdigest()}
    if hasher is not None:
        digests.update(hasher.digests())
    return ConvertResult(
        output=target,
        format=output_format,
        source=disk.path,
        source_size=disk.virtual_size,
        virtual_size=virtual_size,
        file_size=file_size,
        bytes_written=writer.bytes_written,
        bytes_data=data,
        bytes_skipped=file_size - data,
        digests=digests,
        unique_id=str(uuid.UUID(bytes=unique_id)) if unique_id else None,
        seconds=time.monotonic() - started,
        warnings=tuple(disk.warnings),  # a differencing disk's include its parents'
    )
