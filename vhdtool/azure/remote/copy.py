"""``copy``: a page blob, managed disk or snapshot to a page blob or managed disk, only written ranges moved.

Two ways to move a range, chosen per copy:

* **server-side**: Put Page From URL (≤ 4 MiB a request) has the destination's service read the
  source range itself; no data crosses this machine. The source is authorized by its SAS or an
  Entra ID token (:mod:`.copy_source`).
* **relay**: vhdtool fetches the range (ranged Get Blob) and sends its non-zero pages (Put Page),
  with at most ``2 × threads`` granules of 4 MiB in memory. Used when the service answers Put Page
  From URL with 501 (not implemented, e.g. Azurite) or cannot read the source (a 4xx naming the copy
  source: a network rule, ``allowedCopyScope``, a token it does not accept), and for a source that
  is not yet what Azure needs (a VHDX, dynamic or raw blob, or a fixed VHD not a whole number of
  MiB), which is converted on the way by the upload engine reading the blob through its reader.

Work is cut at the sparse digest's 4 MiB granules, so a relay that saw every granule also yields the
source's sparse digest. The destination is prepared by the upload's rules (created at the right
size, or a managed disk of exactly that size; existing data cleared with ``overwrite``, an
interrupted copy of the same source continued with ``resume``), and the source's ETag is the
resume key: a source changed since is a new copy.
"""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from vhdtool.azure.pages import MAX_PAGE_BLOB, RangeSet, page_runs, total
from vhdtool.azure.remote.blob_source import BlobSource
from vhdtool.azure.remote.copy_source import CopySource, copy_source
from vhdtool.azure.remote.download import describe
from vhdtool.azure.retry import Retrier
from vhdtool.azure.storage import Destination, PageBlobTarget, PermanentError, scrub
from vhdtool.azure.upload import (
    STATE_COMPLETE,
    UploadOptions,
    _prepare,
    _set_metadata,
    upload,
)
from vhdtool.disk.base import BorrowedSource
from vhdtool.errors import TransferError, UsageError
from vhdtool.extents import MiB, extents_from_ranges, merge_ranges
from vhdtool.formats.open import open_image
from vhdtool.formats.vhd.layout import FOOTER_SIZE
from vhdtool.stream.digest import GRANULE, SparseDigest, granules_touched
from vhdtool.stream.fixed_view import azure_virtual_size
from vhdtool.stream.progress import NO_PROGRESS, Progress
from vhdtool.stream.window import run_windowed

MODES = ("auto", "server", "relay")


@dataclass(frozen=True)
class CopyResult:
    """What a copy did; :meth:`to_json` is the ``vhdtool copy --json`` object."""

    source: str
    dest: str
    mode: str  # "server", "relay", or "server+relay" when the copy fell back part way
    relay_reason: str | None
    converted: bool
    size: int
    written_bytes: int
    bytes_copied_by_service: int
    bytes_read: int  # fetched from the source by the relay (and to tell its format)
    bytes_sent: int
    bytes_cleared: int
    requests: int
    retries: int
    resumed: bool
    verified: str | None
    sparse_digest: str | None
    seconds: float
    warnings: tuple[str, ...] = field(default_factory=tuple)
    bytes_verified: int = 0  # read back from both blobs by --verify=full

    def to_json(self) -> dict[str, Any]:
        result = asdict(self)
        result["warnings"] = list(self.warnings)
        result["seconds"] = round(self.seconds, 3)
        return result


def copy_identity(source: BlobSource) -> str:
    """The resume key of a copy: the source's name, ETag and size."""
    text = f"copy\n{source.path}\n{source.etag}\n{source.size}"
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def relay_reason(err: PermanentError) -> str | None:
    """Why a failed Put Page From URL calls for the relay, or ``None`` if the failure is the destination's."""
    text = str(err).lower().replace("_", "")  # CannotVerifyCopySource, or the SDK's CANNOT_VERIFY_COPY_SOURCE
    if err.status == 501:
        return "the destination's service does not implement Put Page From URL (HTTP 501)"
    if err.status is not None and 400 <= err.status < 500 and "copysource" in text:
        return (f"the destination's service could not read the source (HTTP {err.status} CannotVerifyCopySource: "
                "a network rule, allowedCopyScope, or a source token it does not accept)")
    return None


def copy(source: BlobSource, dest: Destination, options: UploadOptions, *, mode: str = "auto",
         progress: Progress = NO_PROGRESS) -> CopyResult:
    """Copy the blob ``source`` to ``dest`` (see the module docstring).

    ``options`` are the upload's (:class:`~vhdtool.azure.upload.UploadOptions`): ``threads``,
    ``overwrite``, ``resume``, ``verify``, ``managed_disk``, ``timeout`` and ``retry`` apply to every
    copy; the rest only where the source must be converted (then it is an upload). ``mode`` is
    ``auto``, ``server`` or ``relay``.
    """
    if mode not in MODES:
        raise UsageError(f"--mode must be one of {', '.join(MODES)}")
    started = time.monotonic()
    if source.path.rstrip("/") == dest.describe().rstrip("/"):
        raise UsageError(f"{source.path}: the source and the destination are the same blob")
    fmt, disk_type, virtual_size = describe(source)
    as_is = (fmt == "vhd" and disk_type == "fixed" and virtual_size % MiB == 0
             and source.size == virtual_size + 512)
    if not as_is:
        what = f"a {fmt} ({disk_type})" if fmt != "vhd" or disk_type != "fixed" else \
            "a fixed VHD that is not a whole number of MiB"
        if mode == "server":
            raise UsageError(f"{source.path} is {what}: it must be converted to Azure's fixed VHD, which only the "
                             "relay can do (drop --mode server)")
        return _convert(source, dest, what, options, progress=progress, started=started)
    engine = _Copy(source, dest, options, mode=mode, progress=progress)
    try:
        return engine.run(started=started)
    finally:
        engine.close()


def _convert(source: BlobSource, dest: Destination, what: str, options: UploadOptions, *, progress: Progress,
             started: float) -> CopyResult:

    with open_image(BorrowedSource(source)) as disk:
        progress.stage("convert", azure_virtual_size(disk.virtual_size) + FOOTER_SIZE)  # the new blob's size
        result = upload(disk, dest, replace(options, identity=copy_identity(source)), progress=progress)
    stats = source.stats()
    return CopyResult(
        source=source.path, dest=result.blob, mode="relay", relay_reason=f"the source is {what}: converted to a "
        "fixed VHD on the way", converted=True, size=result.blob_size, written_bytes=source.written_bytes,
        bytes_copied_by_service=0, bytes_read=stats.bytes, bytes_sent=result.bytes_sent,
        bytes_cleared=result.bytes_cleared, requests=stats.requests + result.requests,
        retries=stats.retries + result.retries, resumed=result.resumed, verified=result.verified,
        sparse_digest=None, seconds=time.monotonic() - started, warnings=result.warnings)


class _Copy:
    """An as-is copy: the source's written ranges, granule by granule, server-side or relayed."""

    def __init__(self, source: BlobSource, dest: Destination, options: UploadOptions, *, mode: str,
                 progress: Progress) -> None:
        self.source = source
        self.options = options
        self.threads = threads = options.threads
        self.mode = mode
        self.progress = progress
        self.abort = threading.Event()
        self.retrier = Retrier(options.retry, self.abort)
        self.target = PageBlobTarget(dest, timeout=options.timeout, pool_size=threads + 4,
                                     managed_disk=options.managed_disk)
        self.copy_source: CopySource | None = None
        self._secrets = dest.secrets() + source.address.secrets()
        self._lock = threading.Lock()
        self.relaying = mode == "relay"
        self.reason: str | None = "asked for (--mode relay)" if self.relaying else None
        self.used_server = False
        self.used_relay = False
        self.digest = SparseDigest(source.size)
        self.digest_complete = True
        self.written: list[tuple[int, int]] = []  # every range written, in any order
        self.copied_by_service = 0
        self.sent = 0
        self.verify_read = 0

    def close(self) -> None:
        self.abort.set()
        self.target.close()

    # -- the run ----------------------------------------------------------------------------------

    def run(self, *, started: float) -> CopyResult:
        source, target, retrier = self.source, self.target, self.retrier
        verify = self.options.verify
        size = source.size
        if not target.managed_disk and size > MAX_PAGE_BLOB:
            raise UsageError(f"a page blob holds at most {MAX_PAGE_BLOB} bytes; this disk needs {size}")
        warnings: list[str] = []
        identity = copy_identity(source)
        state = retrier.call(target.state)
        plan = _prepare(target, retrier, state, identity, size, self.options, warnings)
        present = RangeSet(retrier.call(target.page_ranges)) if plan.resumed else RangeSet()
        if present:
            self.digest_complete = False  # granules already there are not read again
            self.written += present.ranges
        if not self.relaying:
            try:
                self.copy_source = copy_source(source.address)
                self._secrets += self.copy_source.secrets()
            except Exception as err:  # no token to be had: the relay still works with our own reads
                self._fall_back(f"no authorization for the service to read the source ({type(err).__name__})")
        work = granules_touched(extents_from_ranges(source.ranges, size))
        self.progress.skipped(size - source.written_bytes)  # never written: nothing to copy
        self._run_all(work, present)
        stats = source.stats()
        verified = None
        if verify:
            self._verify(full=verify == "full")
            verified = verify
        verified_bytes = source.stats().bytes - stats.bytes + self.verify_read
        _set_metadata(target, retrier, plan, identity, STATE_COMPLETE, warnings)
        mode = "server+relay" if self.used_server and self.used_relay else \
            "relay" if self.used_relay or self.relaying else "server"
        return CopyResult(
            source=source.path, dest=target.name, mode=mode, relay_reason=self.reason if self.used_relay else None,
            converted=False, size=size, written_bytes=source.written_bytes,
            bytes_copied_by_service=self.copied_by_service, bytes_read=stats.bytes, bytes_sent=self.sent,
            bytes_cleared=plan.bytes_cleared, requests=source.stats().requests + target.requests,
            retries=source.stats().retries + retrier.retries, resumed=plan.resumed, verified=verified,
            sparse_digest=self.digest.hexdigest() if self.digest_complete else None,
            seconds=time.monotonic() - started, warnings=tuple(warnings), bytes_verified=verified_bytes)

    def _run_all(self, work: list[int], present: RangeSet) -> None:
        def stop() -> None:
            self.abort.set()
            self.source.abort.set()

        run_windowed(work, lambda index: self._granule(index, present), threads=self.threads, name="vhdtool-copy",
                     stop=stop)

    def _fall_back(self, reason: str) -> None:
        with self._lock:
            if not self.relaying:
                self.relaying = True
                self.reason = reason

    def _granule(self, index: int, present: RangeSet) -> None:
        start = index * GRANULE
        end = start + self.digest.granule_length(index)
        written = self.source.written_in(start, end)
        pieces = [p for s, e in written for p in present.missing(s, e)]
        self.progress.skipped(total(written) - total(pieces))  # already at the destination (resumed)
        if not pieces:
            return
        if not self.relaying and self.copy_source is not None:
            try:
                for s, e in pieces:
                    self._server(s, e)
                    self.progress.data(e - s)
                    pieces = pieces[1:]
                self.used_server = True
                self.digest_complete = False
                return
            except PermanentError as err:
                reason = relay_reason(err)
                if reason is None or self.mode == "server":
                    raise
                self._fall_back(reason)
        self._relay(index, start, end, pieces)

    def _server(self, s: int, e: int) -> None:
        assert self.copy_source is not None
        src = self.copy_source

        def put() -> None:
            self.target.put_pages_from_url(s, e - s, src.url, s, src.authorization)
        try:
            self.retrier.call(put)
        except PermanentError as err:
            raise PermanentError(scrub(str(err), self._secrets), err.status) from None
        except TransferError as err:
            raise TransferError(scrub(str(err), self._secrets)) from None
        with self._lock:
            self.copied_by_service += e - s
            self.written.append((s, e))

    def _relay(self, index: int, start: int, end: int, pieces: list[tuple[int, int]]) -> None:
        self.used_relay = True
        buf = bytearray(end - start)
        view = memoryview(buf)
        whole = pieces == self.source.written_in(start, end)
        for s, e in pieces:
            view[s - start:e - start] = self.source.fetch(s, e - s)
            for a, b in page_runs(s, view[s - start:e - start]):
                body = bytes(view[a - start:b - start])
                self.retrier.call(lambda a=a, body=body: self.target.put_pages(a, body))  # type: ignore[misc]
                with self._lock:
                    self.sent += len(body)
                    self.written.append((a, b))
        if whole:
            self.digest.add_granule(index, buf)
        else:
            self.digest_complete = False
        self.progress.data(total(pieces))

    # -- verification -----------------------------------------------------------------------------

    def _verify(self, *, full: bool) -> None:
        """The destination's page ranges are what was written; with ``full``, its bytes are the source's."""

        listed = merge_ranges(self.retrier.call(self.target.page_ranges))
        expected = merge_ranges(self.written)
        if listed != expected:
            raise TransferError(f"{self.target.name}: verification failed: the blob lists {total(listed)} "
                                f"written bytes, {total(expected)} expected")
        if not full:
            return
        digest = SparseDigest(self.source.size)
        check = RangeSet(expected)

        def compare(index: int) -> None:
            start = index * GRANULE
            end = start + digest.granule_length(index)
            src = bytearray(end - start)
            dst = bytearray(end - start)
            for s, e in self.source.written_in(start, end):
                src[s - start:e - start] = self.source.fetch(s, e - s)
            for s, e in expected_in(check, start, end):
                dst[s - start:e - start] = self.retrier.call(lambda s=s, e=e: self.target.read(s, e - s))  # type: ignore[misc]
                with self._lock:
                    self.verify_read += e - s
            if src != dst:
                at = next(i for i in range(len(src)) if src[i] != dst[i])
                raise TransferError(f"{self.target.name}: verification failed: differs from the source at byte "
                                    f"{start + at}")
            digest.add_granule(index, dst)

        with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="vhdtool-verify") as pool:
            work = granules_touched(extents_from_ranges(self.source.ranges, self.source.size))
            for i in range(0, len(work), self.threads):
                list(pool.map(compare, work[i:i + self.threads]))
        self.digest = digest
        self.digest_complete = True


def expected_in(ranges: RangeSet, start: int, end: int) -> list[tuple[int, int]]:
    """The parts of ``[start, end)`` that ``ranges`` covers."""
    gaps = ranges.missing(start, end)
    out: list[tuple[int, int]] = []
    position = start
    for a, b in gaps:
        if a > position:
            out.append((position, a))
        position = b
    if position < end:
        out.append((position, end))
    return out

