"""Digests of a page blob read back: Get Page Ranges, then only the written ranges, in parallel.

A page blob (or a managed disk opened for reading) reads as zeros wherever no page was written, and
the service lists the written ranges. The sparse digest needs no byte of the rest, so a 127 GiB blob
holding 10 GiB costs the time of its 10 GiB: each 4 MiB granule that holds a written range is
fetched (only those ranges, one ranged Get Blob each) and hashed by one of ``threads`` workers.
MD5 or SHA-256 of the whole blob, when asked for, need the bytes in order and hash every zero
too; they come from one ordered walk over the same ranges.

Memory: at most ``threads`` granules (4 MiB each) are held at once.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from vhdtool.azure.pages import MAX_PUT_PAGE
from vhdtool.azure.retry import Retrier, RetryPolicy
from vhdtool.azure.storage import PageBlobTarget
from vhdtool.errors import TransferError
from vhdtool.extents import Extent, extents_from_ranges, merge_ranges
from vhdtool.stream.digest import GRANULE, SparseDigest, SparseDigestSink
from vhdtool.stream.digest import NAME as SPARSE_DIGEST
from vhdtool.stream.hasher import HashSink
from vhdtool.stream.progress import NO_PROGRESS, Progress
from vhdtool.stream.pump import pump

DEFAULT_THREADS = 8


@dataclass(frozen=True)
class BlobDigests:
    """What was read: the blob's size, its written bytes, and the digests by name."""

    size: int
    written: int
    digests: dict[str, str]


def granule_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, list[tuple[int, int]]]]:
    """``(granule index, the written ranges inside it)`` for every granule a written range touches."""
    result: list[tuple[int, list[tuple[int, int]]]] = []
    for start, end in merge_ranges(ranges):
        position = start
        while position < end:
            index = position // GRANULE
            stop = min(end, (index + 1) * GRANULE)
            if result and result[-1][0] == index:
                result[-1][1].append((position, stop))
            else:
                result.append((index, [(position, stop)]))
            position = stop
    return result


class _Reader:
    """Ranged reads of the blob, retried, checked for length."""

    def __init__(self, target: PageBlobTarget, retrier: Retrier) -> None:
        self.target = target
        self.retrier = retrier

    def read(self, start: int, length: int) -> bytes:
        data = self.retrier.call(lambda: self.target.read(start, length))
        if len(data) != length:
            raise TransferError(f"{self.target.name}: short read at byte {start}")
        return data


def sparse_digest_of_blob(reader: _Reader, size: int, ranges: list[tuple[int, int]], *,
                          threads: int = DEFAULT_THREADS, progress: Progress = NO_PROGRESS) -> str:
    """The sparse digest of a blob of ``size`` bytes whose written ranges are ``ranges``."""
    digest = SparseDigest(size)

    def granule(index: int, parts: list[tuple[int, int]]) -> None:
        start = index * GRANULE
        end = min(size, start + GRANULE)
        sink = SparseDigestSink(size, start=start, end=end, into=digest)
        position = start
        read = 0
        for lo, hi in parts:
            if lo > position:
                sink.zeros(position, lo - position)
            sink.data(lo, memoryview(reader.read(lo, hi - lo)))
            read += hi - lo
            position = hi
        if end > position:
            sink.zeros(position, end - position)
        sink.finish()
        progress.data(read)
        progress.skipped(end - start - read)

    pending: list[Future[None]] = []
    done_bytes = 0
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="vhdtool-verify") as pool:
        try:
            for index, parts in granule_ranges(ranges):
                while len(pending) >= threads:  # the memory bound: ``threads`` granules in flight
                    pending.pop(0).result()
                pending.append(pool.submit(granule, index, parts))
                done_bytes += min(size, (index + 1) * GRANULE) - index * GRANULE
            while pending:
                pending.pop(0).result()
        except BaseException:
            reader.retrier.abort.set()
            for future in pending:
                future.cancel()
            raise
    if size > done_bytes:
        progress.skipped(size - done_bytes)  # the granules no written range touches: known empty
    return digest.hexdigest()


def whole_digests_of_blob(reader: _Reader, size: int, ranges: list[tuple[int, int]], names: Sequence[str],
                          progress: Progress = NO_PROGRESS) -> dict[str, str]:
    """MD5/SHA-256 (``names``) of every byte of the blob: written ranges read in order, zeros fed between."""

    class Written:
        def extents(self) -> list[Extent]:
            return extents_from_ranges(ranges, size)

        def readinto(self, offset: int, view: memoryview) -> None:
            view[:] = reader.read(offset, len(view))

    sink = HashSink(names)
    pump(Written(), [sink], chunk_size=MAX_PUT_PAGE, progress=progress)
    return sink.digests()


def blob_digests(target: PageBlobTarget, names: Sequence[str], *, threads: int = DEFAULT_THREADS,
                 progress: Progress = NO_PROGRESS, retry: RetryPolicy | None = None) -> BlobDigests | None:
    """The digests ``names`` (``sparse-sha256``, ``md5``, ``sha256``, ...) of the blob at ``target``,
    or ``None`` if it does not exist."""
    retrier = Retrier(retry or RetryPolicy(), threading.Event())
    state = retrier.call(target.state)
    if not state.exists:
        return None
    size = state.size
    ranges = merge_ranges((max(0, a), min(size, b)) for a, b in retrier.call(target.page_ranges))
    reader = _Reader(target, retrier)
    digests: dict[str, str] = {}
    whole = [name for name in names if name != SPARSE_DIGEST]
    if SPARSE_DIGEST in names:
        digests[SPARSE_DIGEST] = sparse_digest_of_blob(reader, size, ranges, threads=threads,
                                                       progress=NO_PROGRESS if whole else progress)
    if whole:
        digests.update(whole_digests_of_blob(reader, size, ranges, whole, progress))
    return BlobDigests(size, sum(b - a for a, b in ranges), digests)
