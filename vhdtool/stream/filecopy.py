"""The converter's copy loop: a source into a sparse file, windows in parallel, by the kernel where it clones.

The pump (:mod:`vhdtool.stream.pump`) reads every allocated byte into one buffer and hands it to sinks in
order, which ordered digests (MD5, SHA-256 of the whole file) need. A plain conversion needs no
order: this loop cuts the allocated extents into aligned windows and lets a few threads work on
different windows at once, so reading, zero scanning, hashing and writing overlap on every core.

In a window, each run is handled by where :meth:`~vhdtool.disk.base.VirtualDisk.placements` says it is:

- zeros: nothing (a hole in the output);
- stored as it is in the image file, where ``copy_file_range`` copies file to file without moving
  the bytes (XFS, Btrfs and bcachefs share the blocks; NFS 4.2 and SMB copy on the server): the
  run is mapped (``mmap``, faulted in by ``MADV_POPULATE_READ``, so a read error is an error, not
  SIGBUS), scanned for all-zero blocks in place, and its non-zero blocks are copied by the kernel;
- anything else (and everywhere on ext4 or tmpfs, where ``copy_file_range`` is a ``splice`` through
  a pipe): ``pread`` (or ``readinto``) into the thread's buffer a MiB at a time, scanned, and its
  non-zero blocks written with ``pwrite``. On ext4 (``benchmarks/copy_paths.py``: 1 GiB, two
  threads) this was faster than scanning a mapping and writing from it in 1 MiB runs (0.47 and
  0.53 s against 0.70 and 0.59 s in two runs) and even in 8 MiB runs: the buffer stays in the CPU's
  cache between the scan and the write, and a mapping costs an ``mmap``, a populate and an
  ``munmap`` (with its TLB flush on every core) per run.

Zero blocks stay holes. The sparse digest, when asked, is computed from the same bytes.

Memory: per thread one 1 MiB buffer (or a mapping of at most one window); nothing grows with the disk.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Protocol

from vhdtool.blockio.fileio import filesystem_type
from vhdtool.blockio.zeros import nonzero_runs_at
from vhdtool.disk.base import Placement
from vhdtool.extents import Extent
from vhdtool.stream.digest import GRANULE, SparseDigest, SparseDigestSink
from vhdtool.stream.fixed_file import FixedFileSink
from vhdtool.stream.progress import NO_PROGRESS, Progress

WINDOW = 2 * GRANULE  # 8 MiB: large enough that per-window costs vanish, small enough to spread
QUEUED = 8  # windows waiting per thread: enough that no thread idles while the loop refills
# Each thread's buffer: runs are read, scanned and written this much at a time. Measured in fresh
# processes (the CLI, 1 GiB of data in 1-5 MiB runs, 12 rotated rounds): 8 MiB 1.77 s, 2 MiB 1.45 s,
# 1 MiB 0.81 s, 512 KiB 0.76 s, 256 KiB 1.10 s. A small buffer stays in the CPU's cache from the
# read to the write, and a new process pays for every page of memory it touches first.
READ_CHUNK = 1024 * 1024
MAP_AT_LEAST = 256 * 1024  # shorter stored runs are read with pread: a mapping costs more than it saves
# Filesystems (as /proc/self/mountinfo names them) where copy_file_range shares blocks or copies on
# the server instead of moving the bytes through the page cache.
KERNEL_COPY_FILESYSTEMS = frozenset({"xfs", "btrfs", "bcachefs", "ocfs2", "zfs", "nfs", "nfs4", "cifs",
                                     "smb3", "ceph"})


class PlacedSource(Protocol):
    """What :func:`copy_into` reads: extents, placements and reads (a disk, or a fixed-VHD view)."""

    def extents(self) -> list[Extent]: ...

    def placements(self, offset: int, length: int) -> list[Placement]: ...

    def readinto(self, offset: int, view: memoryview) -> None: ...


def default_workers() -> int:
    """Threads for a copy: one per core, at least two (reads and writes overlap even on one), at most 4."""
    return max(2, min(4, os.cpu_count() or 2))


def windows(extents: list[Extent], window: int = WINDOW) -> Iterator[tuple[int, list[tuple[int, int]], int]]:
    """``(window start, allocated (start, end) runs in it, unallocated bytes passed before it)``.

    Windows are the aligned ``window``-byte stretches that hold allocated bytes; the others are
    never visited.
    """
    current = -1
    runs: list[tuple[int, int]] = []
    skipped = 0
    for e in extents:
        if not e.allocated:
            skipped += e.length
            continue
        position = e.offset
        while position < e.end:
            index = position // window
            stop = min(e.end, (index + 1) * window)
            if index != current:
                if runs:
                    yield current * window, runs, skipped
                    skipped = 0
                current, runs = index, []
            runs.append((position, stop))
            position = stop
    if runs:
        yield current * window, runs, skipped
    elif skipped:
        yield -1, [], skipped


# Linux 5.14+: fault a mapping in at once, and report a read error (EIO, a file cut short) as an error
# where touching the page would kill the process with SIGBUS. Without it, stored runs are read instead.
_POPULATE_READ: int | None = getattr(mmap, "MADV_POPULATE_READ", 22 if sys.platform.startswith("linux") else None)


class _Unmappable(Exception):
    """This run cannot be mapped safely (or at all): read it instead."""


class _Mapped:
    """A read-only mapping of ``[offset, offset + length)`` of a file, faulted in; ``view`` is those bytes."""

    def __init__(self, fd: int, offset: int, length: int) -> None:
        global _POPULATE_READ
        if _POPULATE_READ is None:
            raise _Unmappable()
        base = offset - offset % mmap.ALLOCATIONGRANULARITY
        try:
            self._map = mmap.mmap(fd, length + offset - base, access=mmap.ACCESS_READ, offset=base)
        except (OSError, ValueError, OverflowError) as err:  # a filesystem without mmap, a file cut short
            raise _Unmappable() from err
        try:
            self._map.madvise(_POPULATE_READ)
        except OSError as err:
            self._map.close()
            if err.errno != errno.EFAULT:  # not supported here: never map again
                _POPULATE_READ = None
            raise _Unmappable() from err
        self._whole = memoryview(self._map)
        self.view = self._whole[offset - base:]

    def close(self) -> None:
        self.view.release()
        self._whole.release()
        with contextlib.suppress(BufferError):  # a view still exported somewhere: the mapping goes with it
            self._map.close()


def kernel_copies(src_fd: int, dst_fd: int) -> bool:
    """Whether ``copy_file_range`` from ``src_fd`` to ``dst_fd`` spares moving the bytes (see the module)."""
    if not hasattr(os, "copy_file_range"):
        return False
    try:
        same = os.fstat(src_fd).st_dev == os.fstat(dst_fd).st_dev
    except OSError:
        return False
    return same and filesystem_type(dst_fd) in KERNEL_COPY_FILESYSTEMS


class _Copier:
    """The per-window work, shared by the threads (each has its own buffer)."""

    def __init__(self, source: PlacedSource, writer: FixedFileSink | None, size: int, window: int,
                 digest: SparseDigest | None, path: str, kernel_copy: bool | None) -> None:
        self.source = source
        self.writer = writer
        self.size = size
        self.window = window
        self.digest = digest
        self.path = path
        self.granularity = writer.granularity if writer is not None else 4096
        self._local = threading.local()
        self._kernel_copy = kernel_copy
        self._kernel: dict[int, bool] = {}  # per image file descriptor

    def _kernel_copies(self, fd: int) -> bool:
        if self.writer is None:
            return False
        if self._kernel_copy is not None:
            return self._kernel_copy
        known = self._kernel.get(fd)
        if known is None:
            known = self._kernel[fd] = kernel_copies(fd, self.writer.fd)
        return known

    def _buffer(self) -> memoryview:
        buf: memoryview | None = getattr(self._local, "buffer", None)
        if buf is None:
            buf = self._local.buffer = memoryview(bytearray(READ_CHUNK))
        return buf

    def run(self, start: int, runs: list[tuple[int, int]]) -> int:
        """Copy the allocated ``runs`` of the window at ``start``; return the bytes they hold."""
        end = min(self.size, start + self.window)
        sink = None if self.digest is None else SparseDigestSink(self.size, start=start, end=end,
                                                                 into=self.digest)
        position = start
        for lo, hi in runs:
            if sink is not None and lo > position:
                sink.zeros(position, lo - position)
            for piece in self.source.placements(lo, hi - lo):
                self._piece(piece, sink)
            position = hi
        if sink is not None:
            if end > position:
                sink.zeros(position, end - position)
            sink.finish()
        return sum(hi - lo for lo, hi in runs)

    def _piece(self, piece: Placement, sink: SparseDigestSink | None) -> None:
        if piece.kind == "zero":
            if sink is not None:
                sink.zeros(piece.offset, piece.length)
            return
        writer = self.writer
        if (writer is not None and piece.kind == "file" and piece.image is not None
                and piece.length >= MAP_AT_LEAST and self._kernel_copies(piece.image.fd)):
            try:
                self._stored(piece, piece.image.fd, writer, sink)
                return
            except _Unmappable:
                pass  # read it below, which also names any read error properly
        buffer = self._buffer()
        position, end = piece.offset, piece.offset + piece.length
        while position < end:  # in pieces of the buffer, cut at multiples of its size
            view = buffer[:min(end, (position // len(buffer) + 1) * len(buffer)) - position]
            if piece.kind == "file" and piece.image is not None:
                piece.image.preadinto(piece.file_offset + position - piece.offset, view, "disk data")
            else:
                self.source.readinto(position, view)
            self._write(position, view)
            if sink is not None:
                sink.data(position, view)
            position += len(view)

    def _stored(self, piece: Placement, fd: int, writer: FixedFileSink, sink: SparseDigestSink | None) -> None:
        """A stored run the kernel copies: its non-zero blocks by ``copy_file_range`` from the image."""
        mapped = _Mapped(fd, piece.file_offset, piece.length)
        try:
            view = mapped.view
            for a, b in nonzero_runs_at(view, piece.offset, self.granularity):
                if not writer.copy_at(fd, piece.file_offset + a, piece.offset + a, b - a):
                    writer.write_at(piece.offset + a, view[a:b])
            if sink is not None:
                sink.data(piece.offset, view)
            del view
        finally:
            mapped.close()

    def _write(self, offset: int, view: memoryview) -> None:
        if self.writer is None:
            return
        for a, b in nonzero_runs_at(view, offset, self.granularity):
            self.writer.write_at(offset + a, view[a:b])


def copy_into(source: PlacedSource, writer: FixedFileSink | None, size: int, *,
              digest: SparseDigest | None = None,
              workers: int | None = None, progress: Progress = NO_PROGRESS, window: int = WINDOW,
              path: str = "", kernel_copy: bool | None = None) -> int:
    """Write ``source`` (``size`` bytes) into ``writer``'s file, leaving zeros as holes; return the
    allocated bytes visited. ``digest`` (over ``size`` bytes) gets the sparse digest's leaves;
    without a ``writer`` nothing is written (a digest of the source alone).

    ``writer.finish()`` is the caller's, on success; on failure the caller aborts it. ``path``
    names the image in errors. ``kernel_copy`` forces (or forbids) ``copy_file_range`` for mapped
    runs; by default it is used where :func:`kernel_copies` says so. At most
    ``QUEUED × workers`` windows are queued at once (a queued window holds no data, only its runs).
    """
    if window % GRANULE:
        raise ValueError("the window must be a whole number of digest granules")
    count = workers or default_workers()
    copier = _Copier(source, writer, size, window, digest, path, kernel_copy)
    data = 0
    pending: set[Future[int]] = set()

    def settle(done: set[Future[int]]) -> None:
        nonlocal data
        for future in done:
            n = future.result()
            data += n
            progress.data(n)

    with ThreadPoolExecutor(max_workers=count, thread_name_prefix="vhdtool-copy") as pool:
        try:
            for start, runs, skipped in windows(source.extents(), window):
                if skipped:
                    progress.skipped(skipped)
                if not runs:
                    continue
                if len(pending) >= QUEUED * count:
                    # Refill as soon as any window is done (not the oldest): no thread waits for a slow one.
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    settle(done)
                pending.add(pool.submit(copier.run, start, runs))
            done, pending = wait(pending)
            settle(done)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return data


def sparse_digest_of(source: PlacedSource, size: int, *, workers: int | None = None,
                     progress: Progress = NO_PROGRESS, path: str = "") -> str:
    """The sparse digest of ``source``'s ``size`` bytes, hashing only what its extents allocate."""
    digest = SparseDigest(size)
    copy_into(source, None, size, digest=digest, workers=workers, progress=progress, path=path)
    return digest.hexdigest()
