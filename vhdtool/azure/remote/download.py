"""``download``: a blob's written ranges to a sparse local file, in parallel, resumable, digested once.

A blob that already is what the output should be (a fixed VHD, or a raw disk, for ``--format vhd``;
a fixed VHD's data for ``--format raw``) is fetched as it is: its written ranges are cut at the
sparse digest's 4 MiB granules, each granule's ranges are fetched by one of ``threads`` workers,
assembled, hashed into the digest (granules are independent, so the order of arrival does not
matter) and written; all-zero 4 KiB blocks are left as holes. Nothing unwritten is fetched, so the
bytes received are the written bytes. Memory is ``2 × threads`` granules at most.

The output is written to ``OUT.vhdtool-partial`` and renamed on success. Beside it,
``OUT.vhdtool-partial.json`` records the source's URL, ETag and size and the granules done (saved
after the data they name is synced); ``resume`` continues from it only if the blob's ETag is still
the same, re-hashing the finished granules from the local file instead of fetching them again.

Any other blob (a VHDX or dynamic VHD uploaded as it was) is converted on the way: read through its
format reader and the read-ahead cache, and written by the same sink as ``convert``.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from vhdtool.azure.remote.blob_source import BlobSource
from vhdtool.blockio import fileio
from vhdtool.blockio.fileio import describe_os_error
from vhdtool.blockio.zeros import nonzero_runs
from vhdtool.disk.base import BorrowedSource
from vhdtool.errors import OutputError, UsageError
from vhdtool.extents import extents_from_ranges
from vhdtool.formats.open import open_image
from vhdtool.stream.digest import GRANULE, NAME, SparseDigest, SparseDigestSink, granules_touched
from vhdtool.stream.fixed_file import FixedFileSink, check_target
from vhdtool.stream.fixed_view import FixedVhdView
from vhdtool.stream.progress import NO_PROGRESS, Progress
from vhdtool.stream.pump import Source, pump
from vhdtool.stream.window import run_windowed

FORMATS = ("vhd", "raw")
PARTIAL = ".vhdtool-partial"
STATE_VERSION = 1
SAVE_EVERY = 1.0  # seconds between saves of the resume record
HOLE = 4096  # the unit in which the output is left sparse


@dataclass(frozen=True)
class DownloadResult:
    """What a download did; :meth:`to_json` is the ``vhdtool download --json`` object."""

    source: str
    output: str
    format: str
    source_format: str
    size: int
    written_bytes: int
    bytes_read: int
    bytes_written: int
    requests: int
    retries: int
    resumed: bool
    converted: bool
    sparse_digest: str
    digest_of: str  # "blob": the blob's bytes as stored; "output": the converted file's
    seconds: float

    def to_json(self) -> dict[str, Any]:
        result = asdict(self)
        result["seconds"] = round(self.seconds, 3)
        result["digests"] = {NAME: self.sparse_digest}
        return result


def describe(source: BlobSource) -> tuple[str, str, int]:
    """``(format, type, virtual size)`` of the blob's contents, from its headers (a few KiB read)."""

    with open_image(BorrowedSource(source)) as disk:
        return disk.format, disk.disk_type, disk.virtual_size


def download(source: BlobSource, out: str | os.PathLike[str], *, output_format: str = "vhd", threads: int = 8,
             resume: bool = False, force: bool = False, progress: Progress = NO_PROGRESS) -> DownloadResult:
    """Write the blob ``source`` to ``out`` (see the module docstring); the output appears only on success."""
    if output_format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}")
    if threads < 1:
        raise UsageError("--threads must be at least 1")
    started = time.monotonic()
    target = os.fspath(out)
    fmt, disk_type, virtual_size = describe(source)
    as_is = fmt == "raw" or (fmt == "vhd" and disk_type == "fixed")
    if not as_is:
        if resume:
            raise UsageError(f"{source.path} is a {fmt} ({disk_type}) blob, converted on the way; "
                             "--resume applies to blobs downloaded as they are")
        return _convert(source, target, output_format, force, progress, started, fmt)
    length = virtual_size if output_format == "raw" and fmt == "vhd" else source.size
    engine = _Fetch(source, target, length, threads, force, progress)
    resumed = engine.run(resume)
    stats = source.stats()
    return DownloadResult(
        source=source.path, output=target, format=output_format, source_format=f"{fmt}-{disk_type}",
        size=length, written_bytes=source.written_bytes, bytes_read=stats.bytes,
        bytes_written=engine.bytes_written, requests=stats.requests, retries=stats.retries, resumed=resumed,
        converted=False, sparse_digest=engine.digest.hexdigest(), digest_of="blob",
        seconds=time.monotonic() - started)


def _convert(source: BlobSource, target: str, output_format: str, force: bool, progress: Progress,
             started: float, fmt: str) -> DownloadResult:

    with open_image(BorrowedSource(source)) as disk:
        stream: Source = FixedVhdView(disk) if output_format == "vhd" else disk
        size = stream.extents()[-1].end
        progress.stage("convert", size)
        sink = FixedFileSink(target, size, force=force)
        digest = SparseDigestSink(size)
        try:
            pump(stream, [sink, digest], progress=progress)
        except BaseException:
            sink.abort()
            raise
        stats = source.stats()
        return DownloadResult(
            source=source.path, output=target, format=output_format, source_format=f"{fmt}-{disk.disk_type}",
            size=size, written_bytes=source.written_bytes, bytes_read=stats.bytes,
            bytes_written=sink.bytes_written, requests=stats.requests, retries=stats.retries, resumed=False,
            converted=True, sparse_digest=digest.hexdigest(), digest_of="output",
            seconds=time.monotonic() - started)


def _index_ranges(indices: set[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for i in sorted(indices):
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return out


class _Fetch:
    """The as-is download: granules fetched in parallel into the partial file, with its resume record."""

    def __init__(self, source: BlobSource, target: str, length: int, threads: int, force: bool,
                 progress: Progress) -> None:
        self.source = source
        self.target = target
        self.length = length
        self.threads = threads
        self.force = force
        self.progress = progress
        self.partial = target + PARTIAL
        self.record = self.partial + ".json"
        self.digest = SparseDigest(source.size)
        self.bytes_written = 0
        self._done: set[int] = set()
        self._lock = threading.Lock()
        self._saved = time.monotonic()
        self.fd = -1

    # -- the resume record ------------------------------------------------------------------------

    def _identity(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "source": self.source.path, "etag": self.source.etag,
                "size": self.source.size, "length": self.length}

    def _load(self) -> set[int]:
        try:
            with open(self.record, encoding="utf-8") as f:
                state = json.load(f)
        except FileNotFoundError:
            raise UsageError(f"{self.target}: nothing to resume (no {os.path.basename(self.record)}); "
                             "run without --resume") from None
        except (OSError, ValueError) as err:
            raise OutputError(f"{self.record}: unreadable resume record ({err}); run without --resume") from None
        if not isinstance(state, dict) or not os.path.exists(self.partial):
            raise OutputError(f"{self.record}: no partial download beside it; run without --resume")
        mine = self._identity()
        for key in ("version", "source", "size", "length"):
            if state.get(key) != mine[key]:
                raise UsageError(f"{self.target}: the partial download is of another source or format "
                                 f"({key} differs); run without --resume")
        if state.get("etag") != mine["etag"]:
            raise UsageError(f"{self.source.path}: the blob changed since the partial download (ETag "
                             f"{state.get('etag')} then, {mine['etag']} now); run without --resume to start over")
        return {i for a, b in state.get("done", []) for i in range(int(a), int(b))}

    def _save(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if not force and now - self._saved < SAVE_EVERY:
                return
            self._saved = now
            done = set(self._done)
        os.fsync(self.fd)  # the record never names a granule whose bytes could still be lost
        temp = self.record + ".tmp"
        with open(temp, "w", encoding="utf-8") as f:
            json.dump({**self._identity(), "done": _index_ranges(done)}, f)
        os.replace(temp, self.record)

    # -- the run ----------------------------------------------------------------------------------

    def run(self, resume: bool) -> bool:
        done = self._load() if resume else set()
        check_target(self.target, self.force)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
        if not resume:
            flags |= os.O_TRUNC
        try:
            self.fd = os.open(self.partial, flags, 0o666)
            os.ftruncate(self.fd, self.length)
        except OSError as err:
            raise describe_os_error(self.target, err, "create the partial file beside it") from err
        try:
            extents = extents_from_ranges(self.source.ranges, self.source.size)
            work = granules_touched(extents)
            written_in_output = sum(e - s for s, e in self.source.data_ranges(self.length))
            self.progress.stage("download", self.length)
            self.progress.skipped(self.length - written_in_output)  # never written: nothing to fetch
            for index in work:
                if index in done:
                    self._rehash(index)
            self._done = set(done) & set(work)
            self._fetch_all([i for i in work if i not in self._done])
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1
            os.replace(self.partial, self.target)
        except BaseException:
            if self.fd >= 0:
                with contextlib.suppress(OSError):
                    self._save(force=True)
                    os.close(self.fd)
                self.fd = -1
            raise
        with contextlib.suppress(OSError):
            os.unlink(self.record)
        return resume

    def _granule_span(self, index: int) -> tuple[int, int]:
        start = index * GRANULE
        return start, start + self.digest.granule_length(index)

    def _rehash(self, index: int) -> None:
        """A granule finished before the interruption: hash it from the partial file (and the blob's footer)."""
        start, end = self._granule_span(index)
        buf = bytearray(end - start)
        local_end = min(end, self.length)
        if local_end > start:
            view = memoryview(buf)[:local_end - start]
            got = 0
            while got < len(view):
                n = fileio.preadinto(self.fd, view[got:], start + got)
                if n <= 0:
                    raise OutputError(f"{self.partial}: shorter than its resume record says; run without --resume")
                got += n
        for s, e in self.source.written_in(max(start, self.length), end):  # not in a raw output: fetch it
            buf[s - start:e - start] = self.source.fetch(s, e - s)
        self.digest.add_granule(index, buf)
        # In the partial file already (a resumed download): read locally, not fetched.
        self.progress.skipped(sum(e - s for s, e in self.source.written_in(start, min(end, self.length))))

    def _fetch_all(self, work: list[int]) -> None:
        run_windowed(work, self._one, threads=self.threads, name="vhdtool-get", stop=self.source.abort.set,
                     after_submit=self._save)

    def _one(self, index: int) -> None:
        start, end = self._granule_span(index)
        buf = bytearray(end - start)
        view = memoryview(buf)
        pieces = self.source.written_in(start, end)
        for s, e in pieces:
            view[s - start:e - start] = self.source.fetch(s, e - s)
        self.digest.add_granule(index, buf)
        wrote = 0
        for s, e in pieces:
            e = min(e, self.length)
            if s >= e:
                continue
            # Leave all-zero 4 KiB blocks as holes (a blob uploaded by upload_blob lists zero pages too).
            a0 = s - s % HOLE
            block = view[a0 - start:min(e - start, len(view))]
            for a, b in nonzero_runs(block, HOLE):
                lo, hi = max(s, a0 + a), min(e, a0 + b)
                if lo < hi:
                    self._write(view[lo - start:hi - start], lo)
                    wrote += hi - lo
        with self._lock:
            self.bytes_written += wrote
            self._done.add(index)
        self.progress.data(sum(min(e, self.length) - s for s, e in pieces if s < self.length))

    def _write(self, view: memoryview, offset: int) -> None:
        try:
            fileio.pwrite_all(self.fd, view, offset)
        except OSError as err:
            raise describe_os_error(self.target, err, "write the download") from err
