"""A page blob (or managed disk, or snapshot) read where it is, as a :class:`~vhdtool.disk.base.ByteSource`.

The format readers, ``inspect`` and ``check`` read it exactly as they read a local file. What the
blob holds comes from Get Page Ranges (paged with continuation markers, so a fragmented 4 TiB blob
is listed in several bounded answers): unwritten pages read as zeros without a request, which is
the blob's counterpart of a sparse file's holes. Written bytes come from ranged Get Blob requests
through :class:`~vhdtool.azure.remote.cache.GranuleCache`; a large read (the pump's 4 MiB pieces) goes
straight into the caller's buffer instead. Every request is conditional on the ETag seen when the
blob was opened, so a blob that changes under the reader stops the command instead of mixing two
versions. Only HEAD and GET requests are sent: a source is never written.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from vhdtool.azure.remote.cache import DEFAULT_CAPACITY, DEFAULT_GRANULE, DEFAULT_MAX_AHEAD, GranuleCache
from vhdtool.azure.retry import Retrier, RetryPolicy
from vhdtool.azure.storage import Destination, PageBlobTarget, PermanentError
from vhdtool.errors import ImageError, TransferError
from vhdtool.extents import merge_ranges

DIRECT_READ = 1024 * 1024  # reads at least this long bypass the cache
MAX_GET = 4 * 1024 * 1024  # the largest single ranged Get Blob this source sends
PAGE_BLOB = "PageBlob"
T = TypeVar("T")


@dataclass(frozen=True)
class ReadStats:
    """What reading a blob cost: data bytes received and HTTP requests sent (every attempt)."""

    bytes: int
    requests: int
    retries: int

    def to_json(self) -> dict[str, int]:
        return {"bytes": self.bytes, "requests": self.requests, "retries": self.retries}


class BlobSource:
    """One blob opened read-only: its size, ETag, written ranges and cached positional reads."""

    def __init__(self, address: Destination, *, retry: RetryPolicy | None = None, timeout: float = 120.0,
                 threads: int = 8, granule: int = DEFAULT_GRANULE, capacity: int = DEFAULT_CAPACITY,
                 max_ahead: int = DEFAULT_MAX_AHEAD, ranges_per_page: int | None = None,
                 abort: threading.Event | None = None) -> None:
        self.address = address
        self.abort = abort or threading.Event()
        self.retrier = Retrier(retry or RetryPolicy(), self.abort)
        self.target = PageBlobTarget(address, timeout=timeout, pool_size=threads + 4)
        self.path = self.target.name
        self._lock = threading.Lock()
        self._bytes = 0
        self._closed = False
        try:
            state = self.retrier.call(self.target.state)
            if not state.exists:
                raise TransferError(f"{self.path}: no such blob (or no read access to it)")
            self.size = state.size
            self.etag = state.etag
            self.blob_type = state.blob_type or PAGE_BLOB
            self.metadata = dict(state.metadata)
            self.identity = (-1, int.from_bytes(hashlib.sha256(f"{self.path}\n{self.etag}".encode()).digest()[:8],
                                                "big"))
            self.ranges = self._list_ranges(ranges_per_page) if self.blob_type == PAGE_BLOB else \
                ([(0, self.size)] if self.size else [])
        except BaseException:
            self.target.close()
            raise
        self.cache = GranuleCache(granule, capacity, max_ahead)
        self._starts = [s for s, _ in self.ranges]

    # -- metadata ---------------------------------------------------------------------------------

    def _list_ranges(self, per_page: int | None) -> list[tuple[int, int]]:
        found: list[tuple[int, int]] = []
        marker: str | None = None
        while True:
            def one(m: str | None = marker) -> tuple[list[tuple[int, int]], str | None]:
                return self.target.page_ranges_page(m, per_page=per_page, etag=self.etag)
            page, marker = self._call(one)
            found += page
            if not marker:
                break
        clipped = [(max(0, s), min(e, self.size)) for s, e in found if s < self.size]
        return merge_ranges([r for r in clipped if r[0] < r[1]])

    @property
    def written_bytes(self) -> int:
        return sum(e - s for s, e in self.ranges)

    def data_ranges(self, limit: int) -> list[tuple[int, int]]:
        """The written ranges inside ``[0, limit)``: everything else reads as zeros."""
        return [(s, min(e, limit)) for s, e in self.ranges if s < limit]

    def holes(self) -> list[tuple[int, int]]:
        """The ranges no page was written to."""
        result: list[tuple[int, int]] = []
        position = 0
        for s, e in self.ranges:
            if s > position:
                result.append((position, s))
            position = e
        if position < self.size:
            result.append((position, self.size))
        return result

    def written_in(self, start: int, end: int) -> list[tuple[int, int]]:
        """The written ranges clipped to ``[start, end)``."""
        import bisect

        i = max(0, bisect.bisect_right(self._starts, start) - 1)
        out: list[tuple[int, int]] = []
        while i < len(self.ranges) and self.ranges[i][0] < end:
            s, e = self.ranges[i]
            if e > start:
                out.append((max(s, start), min(e, end)))
            i += 1
        return out

    def stats(self) -> ReadStats:
        with self._lock:
            return ReadStats(self._bytes, self.target.requests, self.retrier.retries)

    # -- reads ------------------------------------------------------------------------------------

    def _call(self, call: Callable[[], T]) -> T:
        """Run one service call with the retry policy; a 412 means the blob changed since it was opened."""
        try:
            return self.retrier.call(call)
        except PermanentError as err:
            if err.status == 412:
                raise TransferError(f"{self.path}: the blob changed while it was being read (ETag "
                                    f"{self.etag} no longer matches); run the command again") from None
            raise

    def fetch(self, offset: int, length: int) -> bytes:
        """One ranged Get Blob (retried), conditional on the ETag; counts the bytes received."""
        data = self._call(lambda: self.target.read(offset, length, if_match=self.etag))
        with self._lock:
            self._bytes += len(data)
        return data

    def pread(self, offset: int, length: int, structure: str) -> bytes:
        buf = bytearray(length)
        self.preadinto(offset, memoryview(buf), structure)
        return bytes(buf)

    def preadinto(self, offset: int, view: memoryview, structure: str) -> None:
        """Fill ``view`` from ``offset``: zeros where nothing was written, cached or fetched bytes elsewhere."""
        length = len(view)
        if offset < 0 or offset + length > self.size:
            raise ImageError(self.path, structure, offset,
                             f"needs {length} bytes but the blob ends at byte {self.size} (truncated?)")
        if length == 0:
            return
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        if length >= DIRECT_READ:
            self._read_direct(offset, view)
            return
        g = self.cache.granule
        window = self.cache.window(offset, length)
        end = offset + length
        index = offset // g
        while index * g < end:
            data = self.cache.get(index)
            if data is None:
                data = self._fill(index, max(end, offset - offset % g + window))
            lo = max(offset, index * g)
            hi = min(end, index * g + len(data))
            view[lo - offset:hi - offset] = data[lo - index * g:hi - index * g]
            index += 1

    def _read_direct(self, offset: int, view: memoryview) -> None:
        end = offset + len(view)
        position = offset
        for s, e in self.written_in(offset, end):
            if s > position:
                view[position - offset:s - offset] = bytes(s - position)
            for a in range(s, e, MAX_GET):
                b = min(e, a + MAX_GET)
                view[a - offset:b - offset] = self.fetch(a, b - a)
            position = e
        if position < end:
            view[position - offset:] = bytes(end - position)

    def _fill(self, first: int, want_end: int) -> bytes:
        """Fetch granule ``first`` and those after it up to ``want_end`` not cached yet; cache them all."""
        g = self.cache.granule
        start = first * g
        stop = min(self.size, -(-want_end // g) * g)
        index = first + 1
        while index * g < stop and self.cache.get(index) is None:
            index += 1
        stop = min(stop, index * g)
        buf = bytearray(stop - start)
        written = self.written_in(start, stop)
        # One request across gaps shorter than a granule; separate requests across longer ones.
        runs: list[list[int]] = []
        for s, e in written:
            if runs and s - runs[-1][1] < g:
                runs[-1][1] = e
            else:
                runs.append([s, e])
        for s, e in runs:
            buf[s - start:e - start] = self.fetch(s, e - s)
        data = bytes(buf)
        for i in range(first, first + -(-(stop - start) // g)):
            self.cache.put(i, data[(i - first) * g:(i - first + 1) * g])
        return data[:g]

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.target.close()

