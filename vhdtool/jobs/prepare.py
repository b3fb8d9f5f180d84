"""``prepare``: the whole job for an image set — check, convert, name, record, upload.

An image is one OS disk plus its data disks (one per LUN). For each disk: open it read-only,
inspect and check it; if any check reports an error the run stops before anything is written
(unless ``force``). Then each disk is converted to a fixed VHD in the output folder with its sparse
digest (and MD5/SHA-256 when asked for) computed in the same pass, optionally uploaded, and the set
is recorded in a manifest (:mod:`vhdtool.jobs.manifest`). With ``no_local_copy`` each disk is uploaded
straight from its source (the digests from the upload's own walk of the source) and no file is
written but the manifest. Nothing waits for the disk unless ``sync``.

All or nothing locally: if a disk fails (or the run is interrupted), the files this run wrote are
removed, no manifest is written and an output folder the run created is removed again (blobs
already uploaded stay).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

from vhdtool import __version__
from vhdtool.azure.container import ContainerDestination
from vhdtool.azure.patch import patch_upload
from vhdtool.azure.remote import blob_of, open_remote
from vhdtool.azure.remote.address import is_url
from vhdtool.azure.remote.copy import copy_identity
from vhdtool.azure.storage import Destination, PageBlobTarget, public_url
from vhdtool.azure.upload import UploadOptions, upload
from vhdtool.disk.base import VirtualDisk
from vhdtool.errors import OutputError, TransferError, UsageError, VhdtoolError
from vhdtool.formats.open import open_image
from vhdtool.formats.vhd.reader import VhdDisk
from vhdtool.jobs.convert import convert
from vhdtool.jobs.disk_checks import CheckOutcome, check_disk
from vhdtool.jobs.manifest import (
    SPARSE,
    DiskRecord,
    FixedVhdRecord,
    Manifest,
    SourceRecord,
    gallery_definition,
)
from vhdtool.jobs.manifest_file import write_manifest
from vhdtool.jobs.naming import VHD_SUFFIX, SetNames, plan_names, validate_lun, validate_name
from vhdtool.readiness.tiers import billing_tier
from vhdtool.stream.fixed_view import FixedVhdView
from vhdtool.stream.progress import NO_PROGRESS, Progress, WithoutStages

EXPECT_STATES = ("generalized", "specialized")
WHOLE_FILE_HASHES = ("md5", "sha256")  # what --hash may add to the sparse digest


def disk_label(lun: int | None) -> str:
    """How messages and progress name a disk of the set: ``"OS disk"``, ``"data disk LUN 0"``."""
    return "OS disk" if lun is None else f"data disk LUN {lun}"


@dataclass(frozen=True)
class DiskInput:
    """One disk of the set as asked for: ``lun`` is ``None`` for the OS disk."""

    path: str
    lun: int | None = None

    @property
    def role(self) -> str:
        return "os" if self.lun is None else "data"

    @property
    def label(self) -> str:
        return disk_label(self.lun)


@dataclass(frozen=True)
class PrepareRequest:
    """What ``vhdtool prepare`` was asked to do."""

    name: str
    os_image: str
    data_images: tuple[tuple[int, str], ...] = ()
    output_dir: str = "."
    expect: str | None = None  # "generalized" | "specialized"
    destination: ContainerDestination | None = None  # the container to upload to (see parse_destination)
    no_local_copy: bool = False
    force: bool = False
    day: date | None = None  # the date in the names; today (UTC) by default
    hashes: tuple[str, ...] = ()  # whole-file digests to record too: "md5", "sha256"
    sync: bool = False  # fsync each fixed VHD before it is renamed into place
    # Patch uploads: (LUN, or None for the OS disk) -> the blob holding the fixed VHD of the disk's base.
    bases: tuple[tuple[int | None, Destination], ...] = ()

    def base_for(self, item: DiskInput) -> Destination | None:
        return next((dest for lun, dest in self.bases if lun == item.lun), None)

    def disks(self) -> list[DiskInput]:
        return [DiskInput(self.os_image), *(DiskInput(path, lun) for lun, path in sorted(self.data_images))]



class ChecksFailedError(VhdtoolError):
    """A check found errors on at least one disk and ``force`` was not given; nothing was written."""

    def __init__(self, failed: Sequence[tuple[DiskInput, CheckOutcome]]) -> None:
        self.failed = list(failed)
        count = sum(len(o.errors) for _, o in self.failed)
        first_disk, first = self.failed[0]
        first_error = first.errors[0]
        super().__init__(f"{count} check error(s), nothing written (use --force to go on anyway); first: "
                         f"{first_disk.path}: [{first_error.rule}] {first_error.message}")


@dataclass(frozen=True)
class PrepareResult:
    """The manifest written and where."""

    manifest: Manifest
    manifest_path: str
    outcomes: tuple[CheckOutcome, ...] = field(default_factory=tuple)


# ----------------------------------------------------------------------------------------------
# uploads: adapters over vhdtool.azure.upload


def blob_exists(destination: ContainerDestination, blob_name: str) -> bool:
    """Whether the destination already holds ``blob_name`` (so the name counts as taken)."""

    target = PageBlobTarget(destination.for_blob(blob_name))
    try:
        return target.state().exists
    finally:
        target.close()


def upload_file(path: str, destination: ContainerDestination, blob_name: str, progress: Progress,
                hashes: tuple[str, ...] = ()) -> tuple[str, dict[str, str]]:
    """Upload the fixed VHD file ``path`` as the page blob ``blob_name``; return its URL (no token)
    and the digests of what was sent (the sparse digest, and ``hashes``).

    The upload rebuilds the footer from the file's own unique id and timestamp, so the blob holds
    the very bytes of the file (the caller compares the digests).
    """

    with open_image(path) as disk:
        if not isinstance(disk, VhdDisk) or disk.disk_type != "fixed":
            raise OutputError(f"{path}: not the fixed VHD prepare wrote")
        options = UploadOptions(unique_id=disk.footer.unique_id, timestamp=disk.footer.timestamp, hashes=hashes)
        result = upload(disk, destination.for_blob(blob_name), options,
                        progress=progress)
    return public_url(result.blob), result.digests


def upload_disk(disk: VirtualDisk, destination: ContainerDestination, blob_name: str,
                progress: Progress, hashes: tuple[str, ...] = ()) -> tuple[str, dict[str, str], int]:
    """Upload ``disk`` as a fixed VHD page blob straight from the source (no local file).

    Returns the blob URL without token, the digests of the fixed VHD (the sparse digest and
    ``hashes``), and the blob size. They come from the upload's own walk: nothing is read twice.
    """

    blob = blob_of(disk)  # read from a blob: no files to name the resume key after
    options = UploadOptions(hashes=hashes, identity=None if blob is None else copy_identity(blob))
    result = upload(disk, destination.for_blob(blob_name), options,
                    progress=progress)
    return public_url(result.blob), result.digests, result.blob_size


def patch_disk(disk: VirtualDisk, destination: ContainerDestination, blob_name: str, base: Destination,
               progress: Progress, footer: tuple[bytes, int] | None = None,
               ) -> tuple[str, dict[str, str], int]:
    """Upload the differencing ``disk`` as its ``base`` blob copied plus what the descendants own
    (:mod:`vhdtool.azure.patch`); ``footer`` fixes the unique id and timestamp (those of the local file)."""

    options = UploadOptions(unique_id=None if footer is None else footer[0],
                            timestamp=None if footer is None else footer[1])
    result = patch_upload(disk, destination.for_blob(blob_name), base, options, progress=progress)
    return public_url(result.blob), {SPARSE: result.sparse_sha256}, result.blob_size


# ----------------------------------------------------------------------------------------------
# the run


class _Tracker:
    """Progress over the whole set: each step is named (``"convert OS disk"``) with the set's total;
    the step's own job reports its bytes through, its own stage names dropped."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.progress = progress
        self.total = total
        self.inner = WithoutStages(progress)

    def stage(self, disk: str, stage: str) -> Progress:
        self.progress.stage(f"{stage} {disk}", self.total)
        return self.inner


def _validate(request: PrepareRequest) -> None:
    validate_name(request.name)
    unknown = [name for name in request.hashes if name not in WHOLE_FILE_HASHES]
    if unknown:
        raise UsageError(f"--hash {unknown[0]!r}: prepare records {', '.join(WHOLE_FILE_HASHES)} "
                         "(the sparse digest always)")
    luns = [lun for lun, _ in request.data_images]
    for lun in luns:
        validate_lun(lun)
    if len(set(luns)) != len(luns):
        raise UsageError("each data disk needs its own LUN")
    if request.expect is not None and request.expect not in EXPECT_STATES:
        raise UsageError(f"--expect must be one of {', '.join(EXPECT_STATES)}")
    if request.no_local_copy and request.destination is None:
        raise UsageError("--no-local-copy needs --upload DEST")
    if request.bases and request.destination is None:
        raise UsageError("--base-os and --base-data need --upload DEST")
    if request.bases and request.no_local_copy and request.hashes:
        raise UsageError("--base-os/--base-data with --no-local-copy record the sparse digest only (drop --hash)")
    unknown_luns = [lun for lun, _ in request.bases if lun is not None and lun not in luns]
    if unknown_luns:
        raise UsageError(f"--base-data {unknown_luns[0]}=URL: there is no --data {unknown_luns[0]}=IMAGE")
    if os.path.exists(request.output_dir) and not os.path.isdir(request.output_dir):
        raise UsageError(f"{request.output_dir}: not a folder (-o names the folder for the VHDs and the manifest)")


def _open_input(path: str) -> Any:
    """A local image's path as it is; a blob URL (a disk already in Azure) opened as a remote source."""

    if not is_url(path):
        return path

    return open_remote(path)


def _source_record(disk: VirtualDisk) -> SourceRecord:

    blob = blob_of(disk)
    if blob is not None:  # a disk already in Azure: its URL (never a token) and the blob's size
        return SourceRecord(blob.path, disk.format, disk.disk_type, disk.virtual_size, blob.size)
    path = os.path.abspath(disk.path)
    return SourceRecord(path, disk.format, disk.disk_type, disk.virtual_size, os.stat(path).st_size)


def _missing_folders(path: str) -> list[str]:
    """The folders ``os.makedirs(path)`` would create, deepest first."""
    missing: list[str] = []
    while path and not os.path.lexists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def _remove_empty(folders: list[str]) -> None:
    """Remove ``folders`` (deepest first) as far as they are empty."""
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:
            return


@contextmanager
def _cleanup_on_failure() -> Iterator[list[str]]:
    """Remove the files listed in the yielded list if the block fails."""
    written: list[str] = []
    try:
        yield written
    except BaseException:
        for path in written:
            with suppress(OSError):
                os.unlink(path)
        raise


def prepare(request: PrepareRequest, *, progress: Progress = NO_PROGRESS,
            now: datetime | None = None) -> PrepareResult:
    """Run the whole job for ``request``; see the module docstring. Returns the manifest written."""
    _validate(request)
    created = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    day = request.day or created.date()
    out_dir = os.path.abspath(request.output_dir)
    items = request.disks()
    with ExitStack() as stack:
        disks: list[VirtualDisk] = []
        for item in items:
            disks.append(stack.enter_context(open_image(_open_input(item.path))))
        views = [FixedVhdView(d) for d in disks]
        passes = (0 if request.no_local_copy else 1) + (1 if request.destination else 0)
        tracker = _Tracker(progress, sum(v.size for v in views) * passes)

        outcomes: list[CheckOutcome] = []
        for item, disk in zip(items, disks, strict=True):
            tracker.stage(item.label, "check")
            outcomes.append(check_disk(disk, item.role, item.path, request.expect))
        failed = [(i, o) for i, o in zip(items, outcomes, strict=True) if o.errors]
        if failed and not request.force:
            raise ChecksFailedError(failed)
        new_folders = _missing_folders(out_dir)
        try:
            os.makedirs(out_dir, exist_ok=True)
        except OSError as err:
            _remove_empty(new_folders)
            raise OutputError(f"{out_dir}: cannot create the output folder: {err.strerror or err}") from err

        records: list[DiskRecord] = []
        try:
            names = _plan(request, out_dir, day)
            with _cleanup_on_failure() as written:
                for item, disk, outcome in zip(items, disks, outcomes, strict=True):
                    name = names.os if item.lun is None else names.data[item.lun]
                    records.append(_make_disk(request, item, disk, outcome, name, out_dir, tracker, written))
                manifest = Manifest(
                    name=request.name, created=created.isoformat(timespec="seconds").replace("+00:00", "Z"),
                    vhdtool_version=__version__, expect=request.expect, forced=bool(failed),
                    gallery_image_definition=gallery_definition(records[0]), disks=tuple(records),
                    destination=None if request.destination is None else request.destination.describe())
                manifest_path = os.path.join(out_dir, names.manifest)
                write_manifest(manifest, manifest_path, sync=request.sync)
        except BaseException:
            _remove_empty(new_folders)  # a failed run leaves no output folder it made itself
            raise
        return PrepareResult(manifest, manifest_path, tuple(outcomes))


def _plan(request: PrepareRequest, out_dir: str, day: date) -> SetNames:
    def taken(name: str) -> bool:
        if name.endswith(".json"):
            return os.path.lexists(os.path.join(out_dir, name))
        if not request.no_local_copy and os.path.lexists(os.path.join(out_dir, name + VHD_SUFFIX)):
            return True
        return request.destination is not None and blob_exists(request.destination, name + VHD_SUFFIX)

    return plan_names(request.name, [lun for lun, _ in request.data_images], day, taken)


def _make_disk(request: PrepareRequest, item: DiskInput, disk: VirtualDisk, outcome: CheckOutcome, name: str,
               out_dir: str, tracker: _Tracker, written: list[str]) -> DiskRecord:
    """Convert (and upload) one disk; return its manifest record."""

    blob_name = name + VHD_SUFFIX
    blob_url: str | None = None
    if request.no_local_copy:
        if request.destination is None:
            raise UsageError("--no-local-copy needs --upload DEST")
        base = request.base_for(item)
        if base is not None:
            blob_url, digests, file_size = patch_disk(disk, request.destination, blob_name, base,
                                                      tracker.stage(item.label, "upload"))
        else:
            blob_url, digests, file_size = upload_disk(disk, request.destination, blob_name,
                                                       tracker.stage(item.label, "upload"), request.hashes)
        fixed = FixedVhdRecord(None, file_size - 512, file_size, digests[SPARSE], digests.get("md5"),
                               digests.get("sha256"))
    else:
        out_path = os.path.join(out_dir, blob_name)
        advance = tracker.stage(item.label, "convert")
        # convert() writes beside out_path and renames into place only on success, never over a file.
        result = convert(disk, out_path, hashes=request.hashes, sparse_digest=True, sync=request.sync,
                         progress=advance)
        written.append(out_path)
        fixed = FixedVhdRecord(blob_name, result.virtual_size, result.file_size, result.digests[SPARSE],
                               result.digests.get("md5"), result.digests.get("sha256"))
        base = request.base_for(item)
        if request.destination is not None and base is not None:
            with open_image(out_path) as written_vhd:  # the blob gets the very footer of the file
                if not isinstance(written_vhd, VhdDisk):
                    raise OutputError(f"{out_path}: not the fixed VHD prepare wrote")
                footer = (written_vhd.footer.unique_id, written_vhd.footer.timestamp)
            blob_url, sent, _ = patch_disk(disk, request.destination, blob_name, base,
                                           tracker.stage(item.label, "upload"), footer)
            if sent[SPARSE] != fixed.sparse_sha256:
                raise TransferError(f"{blob_url}: the patched blob (sparse digest {sent[SPARSE]}) differs from "
                                    f"{out_path} ({fixed.sparse_sha256})")
        elif request.destination is not None:
            # MD5 again only if asked for: the blob then stores it as its Content-MD5.
            blob_url, sent = upload_file(out_path, request.destination, blob_name,
                                         tracker.stage(item.label, "upload"),
                                         tuple(name for name in request.hashes if name == "md5"))
            for algorithm, value in sent.items():
                recorded = fixed.digests.get(algorithm)
                if recorded is not None and value != recorded:
                    raise TransferError(f"{blob_url}: the uploaded bytes ({algorithm} {value}) differ from "
                                        f"{out_path} ({algorithm} {recorded}); was the file changed during "
                                        "the upload?")
    return DiskRecord(
        role=item.role, lun=item.lun, name=name, source=_source_record(disk), fixed_vhd=fixed,
        os=outcome.os, hyper_v_generation=outcome.hyper_v_generation, architecture=outcome.architecture,
        billing_tier=billing_tier(fixed.virtual_size), findings=outcome.findings,
        blob_url=None if blob_url is None else public_url(blob_url))
