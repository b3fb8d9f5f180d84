"""The one read loop: every allocated byte of a source is read once and handed to every sink.

Convert, hash and upload are the same walk with different sinks. The loop owns its buffers: a view
given to :meth:`Sink.data` is valid only during the call, and a sink that keeps data must copy it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from vhdtool.extents import Extent, split
from vhdtool.stream.progress import NO_PROGRESS, Progress
from vhdtool.units import MiB

DEFAULT_CHUNK_SIZE = 4 * MiB


class Source(Protocol):
    """What the pump reads: a :class:`~vhdtool.disk.base.VirtualDisk` or a
    :class:`~vhdtool.stream.fixed_view.FixedVhdView`."""

    def extents(self) -> list[Extent]: ...

    def readinto(self, offset: int, view: memoryview) -> None: ...


class Sink(Protocol):
    """A consumer of the byte stream, called in increasing offset order."""

    def data(self, offset: int, view: memoryview) -> None:
        """Bytes that may be non-zero (from an allocated extent); ``view`` is borrowed."""
        ...

    def zeros(self, offset: int, length: int) -> None:
        """A range known from metadata to read as zeros."""
        ...

    def finish(self) -> None:
        """All bytes were delivered: flush and complete (called only on success)."""
        ...


def pump(source: Source, sinks: Sequence[Sink], *, chunk_size: int = DEFAULT_CHUNK_SIZE,
         progress: Progress = NO_PROGRESS) -> None:
    """Walk ``source``'s extents once, reading allocated ones in ``chunk_size`` pieces into one buffer;
    ``progress`` hears of each piece read (data) and each unallocated extent (skipped)."""
    buffer = bytearray(chunk_size)
    whole = memoryview(buffer)
    for extent in source.extents():
        if not extent.allocated:
            for sink in sinks:
                sink.zeros(extent.offset, extent.length)
            progress.skipped(extent.length)
            continue
        for piece in split([extent], chunk_size):
            view = whole[:piece.length]
            source.readinto(piece.offset, view)
            for sink in sinks:
                sink.data(piece.offset, view)
            progress.data(piece.length)
    for sink in sinks:
        sink.finish()
