"""Upload any virtual disk to an Azure page blob as the fixed VHD Azure needs, in one pass.

The disk is walked once through :class:`~vhdtool.stream.fixed_view.FixedVhdView` (padding and footer made on
the fly, no temporary file) by the pump into :class:`~vhdtool.azure.sink.PageBlobSink`, which
sends only non-zero 512-byte pages in Put Page requests of at most 4 MiB (each with its own
Content-MD5, which the service checks). The same bytes feed, on a thread of their own, the sparse
digest of the fixed VHD (:mod:`vhdtool.stream.digest`, recorded in the blob's metadata) and, only when
asked, whole-file digests: MD5 (then stored as the blob's Content-MD5) or SHA-256, which must hash
every zero of the disk too.

Memory is bounded by ``window × 4 MiB`` request bodies plus one 4 MiB read buffer (about 72 MiB
with the defaults), independent of the disk size.

Retries are :mod:`vhdtool.azure.retry`'s, and only its: the SDK and urllib3 are told not to retry.

Resume: the blob's metadata records an identity digest of the source image (names, sizes, mtimes,
formats and ids of the whole parent chain, and the fixed size) and the generated footer's unique id
and timestamp; the service's own page-range list is the record of completed Put Page requests (each
is atomic). ``resume`` continues only when the identity matches, re-reads the source's data (the
digests need it) and sends only pages the blob does not list yet. Overwriting first clears every
range the blob lists, so a listed range is always one this upload wrote. An upload that finished
sets the state ``complete`` with its sparse digest; no step depends on an MD5.
"""

from __future__ import annotations

import collections
import enum
import hashlib
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from vhdtool import __version__
from vhdtool.azure.failures import PermanentError
from vhdtool.azure.pages import MAX_PAGE_BLOB, MAX_PUT_PAGE, RangeSet, align_extents, split_ranges, total
from vhdtool.azure.retry import Retrier, RetryPolicy
from vhdtool.azure.sink import PageBlobSink
from vhdtool.azure.storage import DEFAULT_TIMEOUT, BlobState, Destination, PageBlobTarget, md5_base64
from vhdtool.disk.base import VirtualDisk
from vhdtool.errors import TransferError, UsageError
from vhdtool.extents import Extent, merge_ranges
from vhdtool.formats.vhd.footer import vhd_timestamp
from vhdtool.formats.vhd.layout import FOOTER_SIZE
from vhdtool.stream.digest import NAME as SPARSE_DIGEST
from vhdtool.stream.digest import SparseDigestSink
from vhdtool.stream.fixed_view import FixedVhdView, azure_virtual_size
from vhdtool.stream.hasher import HashSink
from vhdtool.stream.progress import NO_PROGRESS, Progress
from vhdtool.stream.pump import Sink, pump

DEFAULT_THREADS = 8
META_IDENTITY = "vhdtool_identity"
META_FOOTER = "vhdtool_footer"
META_STATE = "vhdtool_state"
META_MD5 = "vhdtool_md5"
META_SPARSE = "vhdtool_sparse_sha256"
META_VERSION = "vhdtool_version"
META_SOURCE = "vhdtool_source"  # the image's own id: "vhd:<unique id>" or "vhdx:<DataWriteGuid>"
STATE_CLEARING = "clearing"
STATE_UPLOADING = "uploading"
STATE_COMPLETE = "complete"
VERIFY_MODES = ("pages", "full")


@dataclass(frozen=True)
class UploadOptions:
    """How to upload: one frozen value for the library call and ``vhdtool upload`` alike.

    ``threads`` requests run at once and at most ``window`` (default ``2 × threads``) request bodies
    of ``max_put`` bytes exist at once. An existing blob is refused unless ``overwrite`` (its written
    ranges are cleared first) or ``resume`` (continue an interrupted upload of this same image). A
    managed disk opened for upload (``managed_disk``, detected from the URL when ``None``) must
    already have exactly the fixed VHD's size. ``verify`` is ``None``, ``"pages"`` (page ranges
    compared) or ``"full"`` (bytes read back too). ``size`` grows the virtual size.
    ``unique_id``/``timestamp`` fix the footer's fields (a resumed upload reuses the ones recorded
    on the blob). ``hashes`` names whole-file digests to compute besides the sparse digest (with
    ``md5`` it is stored as the blob's Content-MD5). ``identity`` replaces the resume key made from
    the image's files (a disk read from a blob has none). Invalid values are refused as they are
    given, with :class:`~vhdtool.errors.UsageError`.
    """

    threads: int = DEFAULT_THREADS
    window: int | None = None
    overwrite: bool = False
    resume: bool = False
    verify: str | None = None
    managed_disk: bool | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float = DEFAULT_TIMEOUT
    size: int | None = None
    unique_id: bytes | None = None
    timestamp: int | None = None
    max_put: int = MAX_PUT_PAGE
    hashes: tuple[str, ...] = ()
    identity: str | None = None

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise UsageError("--threads must be at least 1")
        if self.verify not in (None, *VERIFY_MODES):
            raise UsageError(f"--verify must be one of {', '.join(VERIFY_MODES)}")
        if self.max_put % 512 or not 512 <= self.max_put <= MAX_PUT_PAGE:
            raise UsageError("a Put Page request holds 512 bytes to 4 MiB, in whole 512-byte pages")
        object.__setattr__(self, "hashes", tuple(self.hashes))  # a list given is kept as a tuple

    @property
    def requests_window(self) -> int:
        """Request bodies alive at once: ``window``, at least ``threads`` (default twice that)."""
        return max(self.threads, self.window if self.window is not None else 2 * self.threads)


@dataclass(frozen=True)
class UploadResult:
    """What an upload did; :meth:`to_json` is the ``vhdtool upload --json`` object."""

    blob: str
    virtual_size: int
    blob_size: int
    bytes_sent: int
    bytes_skipped: int
    bytes_cleared: int
    requests: int
    retries: int
    sparse_sha256: str  # the sparse digest of the fixed VHD (docs/sparse-digest.md), always computed
    md5: str | None  # hex, with ``hashes`` naming md5 only
    content_md5: str | None  # the same in the Content-MD5 header's base64
    md5_stored: bool  # whether the blob's Content-MD5 property now holds it
    resumed: bool
    verified: str | None
    seconds: float
    warnings: tuple[str, ...] = field(default_factory=tuple)
    # Every digest computed in the pass by name (hex): ``sparse-sha256``, then those asked for.
    digests: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        result = asdict(self)
        result["warnings"] = list(self.warnings)
        result["seconds"] = round(self.seconds, 3)
        return result


class _PageAligned:
    """The fixed VHD view with extents widened to whole pages, so every piece is page-aligned."""

    def __init__(self, view: FixedVhdView) -> None:

        self.view = view
        self._extents = align_extents(view.extents(), view.size)

    def extents(self) -> list[Extent]:
        return self._extents

    def readinto(self, offset: int, buffer: memoryview) -> None:
        self.view.readinto(offset, buffer)


class _HashInBackground:
    """Digest sinks fed from their own thread, so hashing (sequential within a digest) overlaps the rest.

    Hashing the data of a disk costs CPU (SHA-256 about 1.7 GB/s, MD5 0.7 GB/s on one core here);
    done inline it would stall the read loop and, through it, the requests. The sinks are fed
    through the page-blob sink's tap: the same ``bytes`` objects as the request bodies, and zero runs
    as plain lengths, so nothing is copied for them. At most ``max_bytes`` of data (and
    ``max_items`` items) wait in the queue.
    """

    def __init__(self, sinks: Sequence[Sink], max_bytes: int = 16 * 1024 * 1024, max_items: int = 4096) -> None:
        self.sinks = list(sinks)
        self._items: collections.deque[tuple[int, bytes | int] | None] = collections.deque()
        self._queued_bytes = 0
        self._max_bytes = max_bytes
        self._max_items = max_items
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="vhdtool-digest", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items:
                    self._cond.wait()
                item = self._items.popleft()
            if item is None:
                return
            offset, payload = item
            if self._error is None:
                try:
                    for sink in self.sinks:
                        if isinstance(payload, int):
                            sink.zeros(offset, payload)
                        else:
                            sink.data(offset, memoryview(payload))
                except BaseException as err:  # handed to the caller in finish()
                    self._error = err
            with self._cond:
                if not isinstance(payload, int):
                    self._queued_bytes -= len(payload)
                self._cond.notify_all()

    def _put(self, item: tuple[int, bytes | int] | None) -> None:
        size = len(item[1]) if item is not None and not isinstance(item[1], int) else 0
        with self._cond:
            while self._items and (self._queued_bytes + size > self._max_bytes
                                   or len(self._items) >= self._max_items):
                self._cond.wait()
            self._items.append(item)
            self._queued_bytes += size
            self._cond.notify_all()

    def feed(self, offset: int, payload: bytes | int) -> None:
        """The page-blob sink's tap: ``payload`` is data (``bytes``) or a number of zero bytes."""
        self._put((offset, payload))

    def finish(self) -> None:
        self.close()
        if self._error is not None:
            raise self._error
        for sink in self.sinks:
            sink.finish()

    def close(self) -> None:
        if self._thread.is_alive():
            self._put(None)
            self._thread.join()


def image_identity(disk: VirtualDisk, virtual_size: int) -> str:
    """A digest naming this image's contents for resume: a changed image gets a new identity.

    It covers every file of the chain (name, size, mtime, inode, format, type, virtual size and the
    format's own id, :attr:`~vhdtool.disk.base.VirtualDisk.source_id`) and the fixed VHD's virtual size.
    """
    chain: list[dict[str, Any]] = []
    current: VirtualDisk | None = disk
    while current is not None:
        st = os.stat(current.path)
        chain.append({"name": os.path.basename(current.path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                      "inode": st.st_ino, "format": current.format, "type": current.disk_type,
                      "virtual_size": current.virtual_size, "id": source_id(current)})
        current = current.parent
    text = json.dumps({"chain": chain, "fixed_virtual_size": virtual_size}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def source_id(disk: VirtualDisk) -> str:
    """The id the image's format gives it (a VHD footer's unique id, a VHDX's DataWriteGuid), or ""."""
    found = disk.source_id
    return "" if found is None else f"{disk.format}:{found}"


def _footer_from_metadata(metadata: dict[str, str]) -> tuple[bytes, int] | None:
    value = metadata.get(META_FOOTER, "")
    match = re.fullmatch(r"([0-9a-f]{32})-(\d{1,10})", value)
    if not match:
        return None
    return bytes.fromhex(match.group(1)), int(match.group(2))


def _metadata(identity: str, unique_id: bytes, timestamp: int, state: str,
              digests: dict[str, str] | None = None, source: str = "") -> dict[str, str]:
    result = {META_IDENTITY: identity, META_FOOTER: f"{unique_id.hex()}-{timestamp}", META_STATE: state,
              META_VERSION: __version__}
    if source:
        result[META_SOURCE] = source
    for name, key in ((SPARSE_DIGEST, META_SPARSE), ("md5", META_MD5)):
        if digests and name in digests:
            result[key] = digests[name]
    return result


def upload(disk: VirtualDisk, dest: Destination, options: UploadOptions | None = None, *,
           progress: Progress = NO_PROGRESS) -> UploadResult:
    """Upload ``disk`` to the page blob ``dest`` as a fixed VHD (virtual size rounded up to a MiB + footer).

    ``options`` says how (:class:`UploadOptions`; the defaults when ``None``); ``progress`` is told
    the bytes sent and skipped as they go. The sparse digest of the fixed VHD is always computed;
    it and the digests ``options.hashes`` asks for are returned in ``UploadResult.digests``.
    """
    options = options or UploadOptions()
    threads = options.threads
    started = time.monotonic()
    virtual_size = azure_virtual_size(disk.virtual_size, options.size)
    blob_size = virtual_size + FOOTER_SIZE
    identity = options.identity or image_identity(disk, virtual_size)
    abort = threading.Event()
    retrier = Retrier(options.retry, abort)
    warnings: list[str] = []

    target = PageBlobTarget(dest, timeout=options.timeout, pool_size=threads + 4, managed_disk=options.managed_disk)
    try:
        if not target.managed_disk and blob_size > MAX_PAGE_BLOB:
            raise UsageError(f"a page blob holds at most {MAX_PAGE_BLOB} bytes; this disk needs {blob_size}")
        state = retrier.call(target.state)
        plan = _prepare(target, retrier, state, identity, blob_size, options, warnings)
        plan.source = source_id(disk)
        view = FixedVhdView(disk, size=options.size, unique_id=plan.unique_id, timestamp=plan.timestamp)
        present = RangeSet(retrier.call(target.page_ranges)) if plan.resumed else RangeSet()

        sparse = SparseDigestSink(blob_size)
        hasher = HashSink(options.hashes) if options.hashes else None
        background = _HashInBackground([sparse] + ([hasher] if hasher else []))
        sink = PageBlobSink(lambda offset, body: retrier.call(lambda: target.put_pages(offset, body)),
                            threads=threads, window=options.requests_window, present=present,
                            max_put=options.max_put, progress=progress, abort=abort, tap=background.feed)
        try:
            pump(_PageAligned(view), [sink], chunk_size=options.max_put)
            background.finish()
        except BaseException:
            sink.abort()
            raise
        finally:
            background.close()
        digests = {SPARSE_DIGEST: sparse.hexdigest(), **(hasher.digests() if hasher else {})}
        md5 = bytes.fromhex(digests["md5"]) if "md5" in digests else None
        md5_stored = _finish(target, retrier, plan, identity, digests, md5, warnings)
        verified = options.verify
        if verified:
            _verify(target, retrier, view, sink.data_runs.ranges, full=verified == "full", threads=threads)
        return UploadResult(
            blob=target.name, virtual_size=virtual_size, blob_size=blob_size, bytes_sent=sink.bytes_sent,
            bytes_skipped=sink.bytes_skipped, bytes_cleared=plan.bytes_cleared, requests=target.requests,
            retries=retrier.retries, sparse_sha256=digests[SPARSE_DIGEST], md5=None if md5 is None else md5.hex(),
            content_md5=None if md5 is None else md5_base64(md5), md5_stored=md5_stored,
            resumed=plan.resumed, verified=verified, seconds=time.monotonic() - started,
            warnings=tuple(warnings), digests=digests)
    finally:
        abort.set()
        target.close()


@dataclass
class _Plan:
    unique_id: bytes
    timestamp: int
    resumed: bool
    metadata_ok: bool
    bytes_cleared: int = 0
    reused: bool = False  # an existing blob cleared and rewritten in place: its old properties remain
    source: str = ""  # recorded as META_SOURCE: which image the blob holds


class Start(enum.Enum):
    """How an upload begins on the blob it found."""

    RESUME = "resume"  # continue an interrupted upload of this image: send what the blob does not list
    CREATE = "create"  # Put Blob: a new all-zero page blob (none there, or one of another type or size)
    REWRITE = "rewrite"  # an existing page blob of the right size: clear what it holds, write into it


def choose_start(state: BlobState, identity: str, blob_size: int, *, managed_disk: bool, overwrite: bool,
                 resume: bool, name: str, written: Callable[[], list[tuple[int, int]]]) -> Start:
    """Which :class:`Start` the blob's ``state`` calls for; a start the options do not allow is refused.

    ``written`` lists the blob's written ranges (asked only of a managed disk, which always exists).
    """
    if managed_disk:
        if not state.exists:
            raise PermanentError(f"{name}: the managed disk's upload blob does not exist "
                                 "(has the `az disk grant-access` SAS expired?)")
        if state.size != blob_size:
            raise TransferError(
                f"{name}: the managed disk is {state.size} bytes but this image as a fixed VHD is "
                f"{blob_size} bytes; create the disk with "
                f"`az disk create --for-upload --upload-size-bytes {blob_size}`")
    elif state.exists and state.blob_type not in (None, "PageBlob") and not overwrite:
        raise TransferError(f"{name}: exists as a {state.blob_type}, not a page blob; pass --overwrite to "
                            "replace it")
    ours = state.exists and state.metadata.get(META_IDENTITY) == identity \
        and _footer_from_metadata(state.metadata) is not None and state.size == blob_size
    if resume and ours:
        return Start.RESUME
    if not state.exists:
        return Start.CREATE
    if managed_disk:
        if written() and not overwrite:
            raise TransferError(f"{name}: the managed disk already holds data; pass --overwrite to clear it"
                                + (" (or --resume, if an upload of this image was interrupted)"
                                   if not resume else "; its recorded image is not this one"))
        return Start.REWRITE
    if not overwrite:
        if resume:
            raise TransferError(f"{name}: exists but holds no interrupted upload of this image (it changed, "
                                "or another image was uploaded there); pass --overwrite to replace it")
        raise TransferError(f"{name}: already exists; pass --overwrite to replace it, or --resume to "
                            "continue an interrupted upload of the same image")
    if state.blob_type != "PageBlob" or state.size != blob_size:
        return Start.CREATE
    return Start.REWRITE


def _prepare(target: PageBlobTarget, retrier: Retrier, state: BlobState, identity: str, blob_size: int,
             options: UploadOptions, warnings: list[str]) -> _Plan:
    """Begin as :func:`choose_start` says and leave the blob ready for pages."""
    listed: list[list[tuple[int, int]]] = []

    def written() -> list[tuple[int, int]]:  # listed once, used by the choice and the clearing
        if not listed:
            listed.append(retrier.call(target.page_ranges))
        return listed[0]

    start = choose_start(state, identity, blob_size, managed_disk=target.managed_disk,
                         overwrite=options.overwrite, resume=options.resume, name=target.name, written=written)
    if start is Start.RESUME:
        recorded = _footer_from_metadata(state.metadata)
        assert recorded is not None  # choose_start resumes only a blob with a recorded footer
        plan = _Plan(recorded[0], recorded[1], resumed=True, metadata_ok=True)
        if state.metadata.get(META_STATE) == STATE_CLEARING:
            _clear_ranges(target, retrier, plan, written())  # an interrupted --overwrite: finish clearing first
            _set_metadata(target, retrier, plan, identity, STATE_UPLOADING, warnings)
        return plan
    plan = _Plan(options.unique_id or uuid.uuid4().bytes,
                 vhd_timestamp() if options.timestamp is None else options.timestamp,
                 resumed=False, metadata_ok=True)
    if start is Start.CREATE:
        retrier.call(lambda: target.create(blob_size, _metadata(identity, plan.unique_id, plan.timestamp,
                                                                STATE_UPLOADING)))
        return plan
    # Start.REWRITE: mark the blob as being cleared, so an interruption is finished by --resume.
    plan.reused = True
    if not target.managed_disk or written():  # a blob's listing comes after the mark
        _set_metadata(target, retrier, plan, identity, STATE_CLEARING, warnings)
        _clear_ranges(target, retrier, plan, written())
    _set_metadata(target, retrier, plan, identity, STATE_UPLOADING, warnings)
    return plan


def _clear_ranges(target: PageBlobTarget, retrier: Retrier, plan: _Plan,
                  ranges: list[tuple[int, int]]) -> None:
    """Clear Pages over every written range: they read as zeros after, never assumed so before."""
    for start, end in merge_ranges(ranges):
        def clear(start: int = start, end: int = end) -> None:
            target.clear_pages(start, end - start)
        retrier.call(clear)
        plan.bytes_cleared += end - start


def _set_metadata(target: PageBlobTarget, retrier: Retrier, plan: _Plan, identity: str, state: str,
                  warnings: list[str], digests: dict[str, str] | None = None) -> None:
    """Record the upload's state; a managed disk may refuse metadata, which only costs resume."""
    if not plan.metadata_ok:
        return
    try:
        metadata = _metadata(identity, plan.unique_id, plan.timestamp, state, digests, plan.source)
        retrier.call(lambda: target.set_metadata(metadata))
    except PermanentError as err:
        if not target.managed_disk:
            raise
        plan.metadata_ok = False
        warnings.append(f"the service keeps no metadata on this blob, so --resume cannot be used ({err})")


def _finish(target: PageBlobTarget, retrier: Retrier, plan: _Plan, identity: str, digests: dict[str, str],
            md5: bytes | None, warnings: list[str]) -> bool:
    """Mark the upload complete with its digests; store an MD5 (if computed) as Content-MD5 where the
    service allows. Returns whether it was stored."""
    stored = False
    if md5 is not None:
        try:
            retrier.call(lambda: target.set_content_md5(md5))
            stored = True
        except PermanentError as err:
            if not target.managed_disk:
                raise
            warnings.append(f"the service did not accept the blob's Content-MD5 ({err})")
    elif plan.reused or plan.resumed:
        # The blob existed before this upload (cleared in place, or resumed after such a start): a
        # Content-MD5 from its earlier life would describe other bytes. Clear it.
        try:
            retrier.call(lambda: target.set_content_md5(None))
        except PermanentError:
            if not target.managed_disk:
                raise
    _set_metadata(target, retrier, plan, identity, STATE_COMPLETE, warnings, digests)
    return stored


def _verify(target: PageBlobTarget, retrier: Retrier, view: FixedVhdView, data_runs: list[tuple[int, int]], *,
            full: bool, threads: int) -> None:
    """Compare the blob's page ranges with the non-zero runs (and, if ``full``, their bytes)."""
    listed = merge_ranges(retrier.call(target.page_ranges))
    expected = merge_ranges(data_runs)
    if listed != expected:
        missing = RangeSet(listed)
        extra = RangeSet(expected)
        gap = next((g for a, b in expected for g in missing.missing(a, b)), None)
        stale = next((g for a, b in listed for g in extra.missing(a, b)), None)
        detail = f"data at bytes [{gap[0]}, {gap[1]}) is missing" if gap else \
            f"bytes [{stale[0]}, {stale[1]}) hold pages that should be zero" if stale else "ranges differ"
        raise TransferError(f"{target.name}: verification failed: {detail} "
                            f"({total(listed)} bytes listed, {total(expected)} expected)")
    if not full:
        return

    def compare(piece: tuple[int, int]) -> None:
        start, end = piece
        remote = retrier.call(lambda: target.read(start, end - start))
        local = bytearray(end - start)
        view.readinto(start, memoryview(local))
        if remote != local:
            at = next(i for i in range(len(local)) if i >= len(remote) or remote[i] != local[i])
            raise TransferError(f"{target.name}: verification failed: blob differs at byte {start + at}")

    # Bounded: at most ``threads`` pieces of 4 MiB (twice: remote and local) are alive at once.
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="vhdtool-verify") as pool:
        pieces = split_ranges(expected, MAX_PUT_PAGE)
        batch: list[tuple[int, int]] = []
        for piece in pieces:
            batch.append(piece)
            if len(batch) == threads:
                list(pool.map(compare, batch))
                batch = []
        list(pool.map(compare, batch))
