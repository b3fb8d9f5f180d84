"""Patch uploads: a differencing chain sent as its base blob's copy plus only what the descendants own.

A golden image uploaded once becomes, month after month, the base of a differencing child. The
child's fixed VHD differs from the base's only where a descendant above the ancestor decides the
bytes itself (its BAT and sector bitmaps: data, and zeros a descendant wrote or a VHDX ZERO block)
and in the footer. So the base blob is copied (server-side where the service can, relayed
otherwise), the owned ranges are written (their non-zero pages) or cleared (their zero pages,
where the base has data), and a new footer is written.

Before anything is written the base is proved to be the fixed VHD of a disk of the local chain:
with vhdtool's metadata, by the recorded source id and sparse digest; without it, by the sparse
digest of the blob's data region (only its written ranges are read) against the local disk's.

Local cost: the ancestor's data is read once (its granules' hashes make both the proof and, with
the child's owned granules re-read, the patched blob's sparse digest and the bytes a full upload
would have sent); the network carries the owned non-zero data and the footer.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from vhdtool.azure.blob_digest import _Reader, sparse_digest_of_blob
from vhdtool.azure.pages import MAX_PUT_PAGE, page_runs, split_ranges, total
from vhdtool.azure.remote.blob_source import BlobSource
from vhdtool.azure.remote.copy import CopyResult, copy
from vhdtool.azure.retry import Retrier
from vhdtool.azure.storage import BlobState, Destination, PageBlobTarget
from vhdtool.azure.upload import (
    META_IDENTITY,
    META_SOURCE,
    META_SPARSE,
    META_STATE,
    STATE_COMPLETE,
    UploadOptions,
    _footer_from_metadata,
    _Plan,
    _set_metadata,
    image_identity,
    source_id,
)
from vhdtool.disk.base import VirtualDisk
from vhdtool.errors import TransferError, UsageError
from vhdtool.extents import Extent, MiB, merge_ranges, subtract_ranges
from vhdtool.formats.vhd.footer import vhd_timestamp
from vhdtool.formats.vhd.layout import FOOTER_SIZE
from vhdtool.stream.digest import GRANULE, SparseDigest, granules_touched
from vhdtool.stream.digest import NAME as SPARSE_DIGEST
from vhdtool.stream.fixed_view import FixedVhdView, azure_virtual_size
from vhdtool.stream.progress import NO_PROGRESS, Progress

PAGE = 512
STATE_PATCHING = "patching"
Range = tuple[int, int]


# -- planning (pure) -------------------------------------------------------------------------------

def chain_of(disk: VirtualDisk) -> list[VirtualDisk]:
    """The disk and its ancestors, child first."""
    chain: list[VirtualDisk] = []
    current: VirtualDisk | None = disk
    while current is not None:
        chain.append(current)
        current = current.parent
    return chain


def owned_above(child: VirtualDisk, ancestor: VirtualDisk) -> list[Range]:
    """The ranges some descendant of ``ancestor`` (up to ``child``) decides itself, 512-byte aligned."""
    ranges: list[Range] = []
    for disk in chain_of(child):
        if disk is ancestor:
            return merge_ranges((a - a % PAGE, -(-b // PAGE) * PAGE) for a, b in ranges)
        owned = getattr(disk, "owned_ranges", None)
        if owned is None:
            raise UsageError(f"{disk.path}: a {disk.format} {disk.disk_type} disk cannot be patched over its "
                             "parent (only VHD and VHDX differencing disks)")
        ranges.extend(owned())
    raise UsageError(f"{ancestor.path} is not an ancestor of {child.path}")


@dataclass(frozen=True)
class PatchPlan:
    """Where the patched blob differs from the base's: ranges the descendants own, the footer, the size."""

    base_virtual_size: int
    virtual_size: int
    owned: list[Range]  # in the new fixed VHD's data region, plus the old footer's page when it grew

    @property
    def blob_size(self) -> int:
        return self.virtual_size + FOOTER_SIZE

    @property
    def grows(self) -> bool:
        return self.virtual_size > self.base_virtual_size


def plan_patch(child: VirtualDisk, ancestor: VirtualDisk, base_virtual_size: int,
               size: int | None = None) -> PatchPlan:
    """The plan of patching a base blob of ``base_virtual_size`` (+ footer) into ``child``'s fixed VHD."""
    virtual_size = azure_virtual_size(child.virtual_size, max(size or 0, base_virtual_size, child.virtual_size))
    owned = owned_above(child, ancestor)
    if virtual_size > base_virtual_size:
        # The old footer lies inside the grown data region: the child's bytes (zeros) replace it.
        owned = merge_ranges([*owned, (base_virtual_size, base_virtual_size + FOOTER_SIZE)])
    return PatchPlan(base_virtual_size, virtual_size, owned)


def split_piece(offset: int, data: memoryview) -> tuple[list[Range], list[Range]]:
    """``(write, zero)``: the non-zero and the all-zero 512-byte page runs of ``data`` read at ``offset``."""
    write = page_runs(offset, data, PAGE)
    return write, subtract_ranges([(offset, offset + len(data))], write)


def to_clear(zero: Iterable[Range], base_written: list[Range]) -> list[Range]:
    """The zero runs that must be cleared: only where the base blob lists data."""
    zero = merge_ranges(zero)
    return merge_ranges((max(a, c), min(b, d)) for a, b in zero for c, d in base_written
                        if max(a, c) < min(b, d))


# -- local granule facts: one read gives the proof, the new digest and the full-upload size --------

@dataclass
class Granules:
    """Per 4 MiB granule of a fixed VHD: the SHA-256 of non-zero ones and the non-zero 512-byte pages."""

    leaves: dict[int, bytes] = field(default_factory=dict)
    pages: dict[int, int] = field(default_factory=dict)

    def digest(self, total_length: int) -> str:
        result = SparseDigest(total_length)
        for index, leaf in self.leaves.items():
            if index < result.granule_count:
                result.add_hashed(index, leaf)
        return result.hexdigest()

    def nonzero_bytes(self) -> int:
        return PAGE * sum(self.pages.values())


def scan_granules(view: FixedVhdView, indices: Iterable[int], end: int, *, threads: int) -> Granules:
    """Hash granules ``indices`` of ``view`` cut at ``end`` (the data region, or the whole file)."""
    facts = Granules()
    lock = threading.Lock()

    def one(index: int) -> None:
        start = index * GRANULE
        buffer = bytearray(min(GRANULE, end - start))
        view.readinto(start, memoryview(buffer))
        array = np.frombuffer(buffer, dtype=np.uint8)
        whole = len(buffer) - len(buffer) % PAGE  # a short last page counts as one (the end of a file)
        count = int(array[:whole].reshape(-1, PAGE).any(axis=1).sum()) + int(array[whole:].any())
        if count:
            leaf = hashlib.sha256(buffer).digest()
            with lock:
                facts.leaves[index] = leaf
                facts.pages[index] = count

    todo = [i for i in indices if i * GRANULE < end]
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="vhdtool-patch-scan") as pool:
        for start in range(0, len(todo), 4 * threads):  # bounded: 4 × threads granules queued at once
            list(pool.map(one, todo[start:start + 4 * threads]))
    return facts


def touched(ranges: Iterable[Range]) -> list[int]:
    return granules_touched([Extent(a, b - a, True) for a, b in ranges])


# -- the base's proof ------------------------------------------------------------------------------

@dataclass(frozen=True)
class BaseProof:
    ancestor: VirtualDisk
    how: str  # "metadata" (recorded source id and sparse digest) or "digest" (the blob's data read)
    granules: Granules  # of the ancestor's data region at the base's virtual size
    base_bytes_read: int


def prove_base(chain: list[VirtualDisk], state: BlobState, target: PageBlobTarget, retrier: Retrier,
               base_ranges: list[Range], *, threads: int) -> BaseProof:
    """Find the disk of ``chain`` (not the child) the base blob holds, or refuse naming what differs."""
    name = target.name
    if not state.exists:
        raise TransferError(f"{name}: the base blob does not exist")
    if state.blob_type not in (None, "PageBlob") or state.size < FOOTER_SIZE + PAGE or state.size % PAGE:
        raise TransferError(f"{name}: the base is not a page blob holding a fixed VHD ({state.size} bytes)")
    vsize = state.size - FOOTER_SIZE
    if vsize % MiB:
        raise TransferError(f"{name}: the base is {state.size} bytes, not an Azure fixed VHD (a whole number of "
                            "MiB and a footer); upload or copy it with vhdtool first")
    candidates = [d for d in chain[1:] if d.virtual_size <= vsize]
    if not candidates:
        raise TransferError(f"{name}: the base's data region is {vsize} bytes, smaller than every parent of "
                            f"{chain[0].path}")
    meta = state.metadata
    recorded = meta.get(META_SOURCE)
    footer = _footer_from_metadata(meta)
    if recorded and footer and meta.get(META_STATE) == STATE_COMPLETE and meta.get(META_SPARSE):
        match = [d for d in candidates if source_id(d) == recorded]
        if not match:
            ids = ", ".join(f"{d.path} {source_id(d) or 'no id'}" for d in chain[1:])
            raise TransferError(f"{name}: the base holds image {recorded}, which is no parent of "
                                f"{chain[0].path} ({ids})")
        ancestor = match[0]
        view = FixedVhdView(ancestor, size=vsize, unique_id=footer[0], timestamp=footer[1])
        facts = scan_granules(view, granules_touched(view.extents()), vsize, threads=threads)
        whole = Granules(dict(facts.leaves), dict(facts.pages))
        last = scan_granules(view, touched([(vsize, state.size)]), state.size, threads=threads)
        for index in touched([(vsize, state.size)]):
            whole.leaves.pop(index, None)
        whole.leaves.update(last.leaves)
        local = whole.digest(state.size)
        if local != meta[META_SPARSE]:
            raise TransferError(f"{name}: the base records sparse digest {meta[META_SPARSE]} for {recorded}, "
                                f"but the local {ancestor.path} gives {local} (the file changed since the upload)")
        return BaseProof(ancestor, "metadata", facts, 0)
    reader = _Reader(target, retrier)
    data_ranges = merge_ranges((a, min(b, vsize)) for a, b in base_ranges if a < vsize)
    remote = sparse_digest_of_blob(reader, vsize, data_ranges, threads=threads)
    seen: list[str] = []
    for ancestor in reversed(candidates):  # the root first: the usual base is the golden image
        view = FixedVhdView(ancestor, size=vsize)
        facts = scan_granules(view, granules_touched(view.extents()), vsize, threads=threads)
        local = facts.digest(vsize)
        if local == remote:
            return BaseProof(ancestor, "digest", facts, total(data_ranges))
        seen.append(f"{ancestor.path} {local}")
    raise TransferError(f"{name}: the base's data region has sparse digest {remote}, no parent of "
                        f"{chain[0].path} matches ({'; '.join(seen)})")


# -- the patch upload ------------------------------------------------------------------------------

@dataclass(frozen=True)
class PatchResult:
    """What a patch upload did; :meth:`to_json` is ``vhdtool upload --base --json``."""

    blob: str
    base: str
    ancestor: str
    proof: str
    levels: int  # descendants above the ancestor
    virtual_size: int
    blob_size: int
    copy_mode: str
    bytes_copied_by_service: int
    copy_bytes_sent: int  # relayed by this machine while copying the base
    bytes_sent: int  # the patch's Put Page bodies (owned non-zero data and the footer)
    bytes_cleared: int
    owned_bytes: int
    full_upload_bytes: int  # what a full upload of the child would have sent
    base_bytes_read: int
    requests: int
    sparse_sha256: str
    verified: str | None
    seconds: float
    warnings: tuple[str, ...] = ()
    # Seconds by step: "prove" (base proved, ancestor read), "plan" (changed granules re-read),
    # "copy" (the base copied), "patch" (owned ranges and footer sent, metadata, verify).
    phases: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        result = asdict(self)
        result["phases"] = {k: round(v, 3) for k, v in self.phases.items()}
        result["warnings"] = list(self.warnings)
        result["seconds"] = round(self.seconds, 3)
        return result


def patch_upload(child: VirtualDisk, dest: Destination, base: Destination, options: UploadOptions, *,
                 copy_mode: str = "auto", progress: Progress = NO_PROGRESS) -> PatchResult:
    """Upload ``child`` to ``dest`` as its base blob ``base`` copied plus the descendants' ranges.

    ``options`` are the upload's (:class:`~vhdtool.azure.upload.UploadOptions`): ``threads``,
    ``overwrite``, ``resume``, ``verify``, ``managed_disk``, ``size``, ``timeout``, ``retry`` and the
    footer's ``unique_id``/``timestamp`` apply; ``hashes`` are refused (the sparse digest is made from
    the base's granules and the re-read ones, so no pass sees every byte), and the request shape
    (``window``, ``max_put``) is the copy's and the patch's own. ``copy_mode`` is
    :func:`~vhdtool.azure.remote.copy.copy`'s ``mode`` for the base.

    ``resume`` continues an interrupted patch of this same image: an unfinished copy of the base goes
    on where it stopped, and once the copy is done the owned ranges are written again (each write and
    clear is idempotent) with the footer's recorded unique id and timestamp.
    """

    if options.hashes:
        raise UsageError("a patch upload does not combine with --hash (the sparse digest is recorded)")
    started = time.monotonic()
    chain = chain_of(child)
    if len(chain) < 2:
        raise UsageError(f"{child.path}: --base needs a differencing disk (this {child.disk_type} disk has no parent)")
    retrier = Retrier(options.retry, threading.Event())
    base_state, proof, base_name = _prove(chain, base, options, retrier)
    phases = {"prove": time.monotonic() - started}
    plan = plan_patch(child, proof.ancestor, base_state.size - FOOTER_SIZE, options.size)
    identity = image_identity(child, plan.virtual_size)
    uid = options.unique_id or uuid.uuid4().bytes
    stamp = vhd_timestamp() if options.timestamp is None else options.timestamp
    view = FixedVhdView(child, size=plan.virtual_size, unique_id=uid, timestamp=stamp)
    facts = _new_granules(proof.granules, view, plan, touched([*plan.owned, (plan.virtual_size, plan.blob_size)]),
                          options.threads)
    recorded = _copied_before(dest, options, retrier, plan, identity, base_state.size)
    phases["plan"] = time.monotonic() - started - sum(phases.values())
    copied: CopyResult | None = None
    if recorded is not None:
        uid, stamp = recorded  # the copy finished before: only the patch is done again, with the same footer
        view = FixedVhdView(child, size=plan.virtual_size, unique_id=uid, timestamp=stamp)
        facts = _new_granules(facts, view, plan, touched([(plan.virtual_size, plan.blob_size)]), options.threads)
    else:
        source = BlobSource(base, timeout=options.timeout, threads=options.threads)
        try:
            copied = copy(source, dest, replace(options, verify=None, size=None, unique_id=None, timestamp=None),
                          mode=copy_mode)
        finally:
            source.close()
    phases["copy"] = time.monotonic() - started - sum(phases.values())
    warnings = list(copied.warnings) if copied else []
    sparse = facts.digest(plan.blob_size)
    record = _Plan(uid, stamp, resumed=False, metadata_ok=True, source=source_id(child))
    written = _write_patch(dest, options, retrier, view, plan, record, identity, warnings, sparse, progress)
    phases["patch"] = time.monotonic() - started - sum(phases.values())
    return PatchResult(
        blob=written.blob, base=base_name, ancestor=proof.ancestor.path, proof=proof.how,
        levels=chain.index(proof.ancestor), virtual_size=plan.virtual_size, blob_size=plan.blob_size,
        copy_mode=copied.mode if copied else "resumed",
        bytes_copied_by_service=copied.bytes_copied_by_service if copied else 0,
        copy_bytes_sent=copied.bytes_sent if copied else 0,
        bytes_sent=written.sent, bytes_cleared=written.cleared, owned_bytes=total(plan.owned),
        full_upload_bytes=facts.nonzero_bytes(), base_bytes_read=proof.base_bytes_read,
        requests=written.requests, sparse_sha256=sparse, verified=written.verified,
        seconds=time.monotonic() - started, warnings=tuple(warnings), phases=phases)


def _prove(chain: list[VirtualDisk], base: Destination, options: UploadOptions,
           retrier: Retrier) -> tuple[BlobState, BaseProof, str]:
    """The base blob's state, the proof of which ancestor it holds, and its name (no token)."""
    target = PageBlobTarget(base, timeout=options.timeout, pool_size=options.threads + 4)
    try:
        state = retrier.call(target.state)
        ranges = merge_ranges(retrier.call(target.page_ranges)) if state.exists else []
        return state, prove_base(chain, state, target, retrier, ranges, threads=options.threads), target.name
    finally:
        target.close()


def _new_granules(known: Granules, view: FixedVhdView, plan: PatchPlan, changed: list[int], threads: int) -> Granules:
    """The new blob's granule facts: ``known`` ones, with the ``changed`` granules re-read from ``view``."""
    fresh = scan_granules(view, changed, plan.blob_size, threads=threads)
    stale = set(changed)
    facts = Granules({i: v for i, v in known.leaves.items() if i not in stale},
                     {i: v for i, v in known.pages.items() if i not in stale})
    facts.leaves.update(fresh.leaves)
    facts.pages.update(fresh.pages)
    return facts


def _copied_before(dest: Destination, options: UploadOptions, retrier: Retrier, plan: PatchPlan, identity: str,
                   base_size: int) -> tuple[bytes, int] | None:
    """With ``resume``, the footer (unique id, timestamp) of an earlier patch of this image whose copy of the
    base finished; ``None`` when the base must be copied (again). Refuses to grow a managed disk."""
    target = PageBlobTarget(dest, timeout=options.timeout, pool_size=options.threads + 4,
                            managed_disk=options.managed_disk)
    try:
        if plan.grows and target.managed_disk:
            raise UsageError(f"{target.name}: a managed disk cannot grow here; create it with "
                             f"--upload-size-bytes {base_size} and grow the disk after the upload")
        state = retrier.call(target.state)
    finally:
        target.close()
    recorded = _footer_from_metadata(state.metadata)
    if options.resume and state.exists and state.metadata.get(META_IDENTITY) == identity \
            and state.metadata.get(META_STATE) in (STATE_PATCHING, STATE_COMPLETE):
        return recorded
    return None


@dataclass(frozen=True)
class _Written:
    blob: str
    sent: int
    cleared: int
    verified: str | None
    requests: int


def _write_patch(dest: Destination, options: UploadOptions, retrier: Retrier, view: FixedVhdView, plan: PatchPlan,
                 record: _Plan, identity: str, warnings: list[str], sparse: str, progress: Progress) -> _Written:
    """On the copied base: mark the blob patching, grow it if asked, write the owned ranges and the footer,
    mark it complete with its sparse digest, and verify if asked."""
    target = PageBlobTarget(dest, timeout=options.timeout, pool_size=options.threads + 4,
                            managed_disk=options.managed_disk)
    try:
        _set_metadata(target, retrier, record, identity, STATE_PATCHING, warnings)
        if plan.grows and retrier.call(target.state).size != plan.blob_size:
            retrier.call(lambda: target.resize(plan.blob_size))
        written = merge_ranges(retrier.call(target.page_ranges))
        sent, cleared = _apply(target, retrier, view, plan, written, threads=options.threads, progress=progress)
        _set_metadata(target, retrier, record, identity, STATE_COMPLETE, warnings, {SPARSE_DIGEST: sparse})
        if options.verify:
            _verify(target, retrier, view, plan, full=options.verify == "full")
        return _Written(target.name, sent, cleared, options.verify, target.requests)
    finally:
        target.close()


def _apply(target: PageBlobTarget, retrier: Retrier, view: FixedVhdView, plan: PatchPlan,
           base_written: list[Range], *, threads: int, progress: Progress) -> tuple[int, int]:
    """Write the owned ranges' non-zero pages, clear their zero pages over the base's data, write the footer.

    ``progress`` learns the total once the ranges are planned: pages written count as data, the
    rest of the owned ranges (zero pages, cleared or left as the base has them) as skipped.
    """
    lock = threading.Lock()
    counts = [0, 0]

    def piece(span: Range) -> None:
        start, end = span
        buffer = bytearray(end - start)
        view.readinto(start, memoryview(buffer))
        write, zero = split_piece(start, memoryview(buffer))
        for a, b in write:
            body = bytes(buffer[a - start:b - start])
            retrier.call(lambda a=a, body=body: target.put_pages(a, body))  # type: ignore[misc]
        clear = to_clear(zero, base_written)
        for a, b in clear:
            retrier.call(lambda a=a, b=b: target.clear_pages(a, b - a))  # type: ignore[misc]
        with lock:
            counts[0] += total(write)
            counts[1] += total(clear)
        progress.data(total(write))
        progress.skipped(end - start - total(write))

    spans = list(split_ranges([*plan.owned, (plan.virtual_size, plan.blob_size)], MAX_PUT_PAGE))
    progress.stage("patch", total(spans))
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="vhdtool-patch") as pool:
        for first in range(0, len(spans), 2 * threads):  # bounded: 2 × threads pieces of 4 MiB at once
            list(pool.map(piece, spans[first:first + 2 * threads]))
    return counts[0], counts[1]


def _verify(target: PageBlobTarget, retrier: Retrier, view: FixedVhdView, plan: PatchPlan, *, full: bool) -> None:
    """Read the owned ranges and the footer back (``full``: the base's copied data too is compared)."""
    spans: list[Range] = [*plan.owned, (plan.virtual_size, plan.blob_size)]
    if full:
        spans = merge_ranges([*spans, *((a, min(b, plan.blob_size)) for a, b in retrier.call(target.page_ranges))])
    for start, end in split_ranges(spans, MAX_PUT_PAGE):
        remote = retrier.call(lambda start=start, end=end: target.read(start, end - start))  # type: ignore[misc]
        local = bytearray(end - start)
        view.readinto(start, memoryview(local))
        if remote != local:
            at = next(i for i in range(len(local)) if i >= len(remote) or remote[i] != local[i])
            raise TransferError(f"{target.name}: verification failed: the patched blob differs at byte {start + at}")
