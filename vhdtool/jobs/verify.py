"""``verify``: re-hash the fixed VHDs a manifest describes (its files, or the uploaded blobs) and
report drift.

Files are read through ``SEEK_DATA`` (holes cost no I/O) and blobs by their written page ranges only;
the sparse digest is compared, or for a version 1 manifest (which has none) MD5 and SHA-256. Whole-file
digests are recomputed too only when asked for, as they hash every zero.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vhdtool.azure.blob_digest import blob_digests
from vhdtool.azure.container import ContainerDestination, parse_destination
from vhdtool.azure.storage import PageBlobTarget
from vhdtool.disk.base import ImageFile
from vhdtool.formats.raw import RawDisk
from vhdtool.jobs.manifest import SPARSE, WHOLE_FILE, DiskRecord, Manifest
from vhdtool.jobs.naming import VHD_SUFFIX
from vhdtool.stream.filecopy import sparse_digest_of
from vhdtool.stream.hasher import HashSink
from vhdtool.stream.progress import NO_PROGRESS, Progress
from vhdtool.stream.pump import pump


@dataclass(frozen=True)
class Observed:
    """What was found at a disk's target: its size and the digests computed, by name."""

    size: int
    digests: dict[str, str]


@dataclass(frozen=True)
class DiskVerdict:
    """The result of checking one disk against its manifest record."""

    name: str
    target: str  # a file path or a blob URL (without token)
    status: str  # "ok" | "drift" | "missing" | "skipped"
    problems: tuple[str, ...] = field(default_factory=tuple)
    compared: tuple[str, ...] = field(default_factory=tuple)  # the digests compared

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "target": self.target, "status": self.status,
                "problems": list(self.problems), "compared": list(self.compared)}


@dataclass(frozen=True)
class VerifyResult:
    """Every disk's verdict; ``ok`` only if every checked disk matched and none was missing."""

    manifest: str
    verdicts: tuple[DiskVerdict, ...]

    @property
    def ok(self) -> bool:
        return all(v.status in ("ok", "skipped") for v in self.verdicts) and any(
            v.status == "ok" for v in self.verdicts)

    def to_json(self) -> dict[str, Any]:
        return {"manifest": self.manifest, "ok": self.ok, "disks": [v.to_json() for v in self.verdicts]}


# (disk record, digest names, progress) -> what the destination holds for that disk, or None if absent
BlobHasher = Callable[[DiskRecord, "tuple[str, ...]", Progress], "tuple[str, Observed | None]"]

_LABELS = {SPARSE: "sparse digest", "md5": "MD5", "sha256": "SHA-256"}


def wanted_digests(record: DiskRecord, hashes: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The digests to recompute for ``record``: its sparse digest (which costs only the data), or for
    a version 1 record its MD5 and SHA-256; plus those of ``hashes`` the record holds."""
    recorded = record.fixed_vhd.digests
    base = (SPARSE,) if SPARSE in recorded else tuple(name for name in WHOLE_FILE if name in recorded)
    return base + tuple(name for name in hashes if name in recorded and name not in base)


def hash_file(path: str, names: tuple[str, ...], progress: Progress = NO_PROGRESS) -> Observed:
    """Digests ``names`` of a file, reading only its data (``SEEK_DATA``: holes cost no I/O).

    The sparse digest hashes the data ranges in parallel windows; MD5 and SHA-256 need one ordered
    pass that also feeds every zero of the holes to the hash (no I/O for them, but CPU).
    """

    image = ImageFile(path)
    disk = RawDisk(image)
    try:
        digests: dict[str, str] = {}
        whole = tuple(name for name in names if name != SPARSE)
        if SPARSE in names:

            digests[SPARSE] = sparse_digest_of(disk, disk.virtual_size, path=path,
                                               progress=NO_PROGRESS if whole else progress)
        if whole:

            sink = HashSink(whole)
            pump(disk, [sink], progress=progress)
            digests.update(sink.digests())
        return Observed(disk.virtual_size, digests)
    finally:
        disk.close()


def compare(record: DiskRecord, target: str, observed: Observed | None) -> DiskVerdict:
    """The verdict for one disk given what was found at ``target``."""
    if observed is None:
        return DiskVerdict(record.name, target, "missing", ("not found",))
    expected = record.fixed_vhd
    problems: list[str] = []
    if observed.size != expected.file_size:
        problems.append(f"size {observed.size} bytes, manifest says {expected.file_size}")
    recorded = expected.digests
    compared = tuple(name for name in observed.digests if name in recorded)
    for name in compared:
        if observed.digests[name] != recorded[name]:
            problems.append(f"{_LABELS.get(name, name)} {observed.digests[name]}, manifest says {recorded[name]}")
    if not compared:
        problems.append("no recorded digest was recomputed")
    return DiskVerdict(record.name, target, "drift" if problems else "ok", tuple(problems), compared)


def verify_files(manifest: Manifest, manifest_path: str, progress: Progress = NO_PROGRESS,
                 hashes: tuple[str, ...] = ()) -> VerifyResult:
    """Re-hash each disk's fixed VHD file (found relative to the manifest) and compare.

    ``hashes`` adds whole-file digests to recompute where the manifest records them.
    """
    base = os.path.dirname(os.path.abspath(manifest_path))
    verdicts: list[DiskVerdict] = []
    for record in manifest.disks:
        rel = record.fixed_vhd.path
        if rel is None:
            verdicts.append(DiskVerdict(record.name, "-", "skipped",
                                        ("no local copy was made; verify against the destination",)))
            continue
        path = os.path.join(base, rel)
        if not os.path.isfile(path):
            verdicts.append(compare(record, path, None))
            continue
        try:
            observed = hash_file(path, wanted_digests(record, hashes), progress)
        except OSError as err:
            verdicts.append(DiskVerdict(record.name, path, "missing", (err.strerror or str(err),)))
            continue
        verdicts.append(compare(record, path, observed))
    return VerifyResult(manifest_path, tuple(verdicts))


def verify_blobs(manifest: Manifest, manifest_path: str, blob_hasher: BlobHasher,
                 progress: Progress = NO_PROGRESS, hashes: tuple[str, ...] = ()) -> VerifyResult:
    """Compare each disk with what ``blob_hasher`` finds at the destination."""
    verdicts = []
    for record in manifest.disks:
        target, observed = blob_hasher(record, wanted_digests(record, hashes), progress)
        verdicts.append(compare(record, target, observed))
    return VerifyResult(manifest_path, tuple(verdicts))


def hash_blob(destination: ContainerDestination, blob_name: str, names: tuple[str, ...] = (SPARSE,),
              progress: Progress = NO_PROGRESS) -> tuple[str, Observed | None]:
    """The digests ``names`` of a blob, read back from its written page ranges only."""
    dest = destination.for_blob(blob_name)
    target = PageBlobTarget(dest)
    try:
        found = blob_digests(target, names, progress=progress)
        return dest.describe(), None if found is None else Observed(found.size, found.digests)
    finally:
        target.close()


def blob_hasher(destination: str, *, connection_string: str | None = None,
                account_url: str | None = None) -> BlobHasher:
    """A :data:`BlobHasher` reading each disk's blob back from the container ``destination``."""
    parsed = parse_destination(destination, connection_string=connection_string, account_url=account_url)

    def hasher(record: DiskRecord, names: tuple[str, ...],
               progress: Progress) -> tuple[str, Observed | None]:
        return hash_blob(parsed, record.name + VHD_SUFFIX, names, progress)

    return hasher
