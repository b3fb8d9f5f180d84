"""The provenance manifest of an image set: what each disk is, where it came from, its digests.

``prepare`` writes one manifest per set (``NAME.manifest.json``); ``verify`` reads it back and
re-hashes the fixed VHD files (or the uploaded blobs) to report drift. The JSON schema is
documented in ``docs/prepare.md``; ``schema`` names its version, and readers refuse versions they do
not know rather than guess. Version 2 records the sparse digest of each fixed VHD (what ``verify``
compares, at the cost of the data only) and MD5/SHA-256 only when they were asked for; version 1
manifests (MD5 and SHA-256 always, no sparse digest) are still read and verified by their MD5 and
SHA-256. Paths of output files are stored relative to the manifest's folder so a set can be moved
as a whole; blob URLs are stored without their query string, so no token is ever written.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vhdtool.disk.base import ImageFile
from vhdtool.errors import OutputError, UsageError
from vhdtool.formats.raw import RawDisk
from vhdtool.readiness.rules import TIERS  # docs/azure-rules.md §1: (tier size in GiB, tier number), smallest first
from vhdtool.stream.filecopy import sparse_digest_of
from vhdtool.stream.hasher import HashSink
from vhdtool.stream.progress import NO_PROGRESS, Progress
from vhdtool.stream.pump import pump

SCHEMA = "vhdtool.jobs.manifest/2"
SCHEMA_V1 = "vhdtool.jobs.manifest/1"
SCHEMAS = (SCHEMA, SCHEMA_V1)
SPARSE = "sparse-sha256"  # vhdtool.stream.digest.NAME (not imported: the manifest stays free of numpy)
WHOLE_FILE = ("md5", "sha256")
GiB = 1024 ** 3

def billing_tier(virtual_size: int) -> dict[str, Any]:
    """The managed-disk size and tier names a disk of ``virtual_size`` bytes is billed as.

    Sizes over the largest tier (32,767 GiB) have no tier: the names are ``None``.
    """

    size_gib = -(-virtual_size // GiB)
    for tier_gib, number in TIERS:
        if size_gib <= tier_gib:
            hdd = f"S{number}" if tier_gib >= 32 else "S4"
            return {"size_gib": size_gib, "tier_size_gib": tier_gib, "premium_ssd": f"P{number}",
                    "standard_ssd": f"E{number}", "standard_hdd": hdd}
    return {"size_gib": size_gib, "tier_size_gib": None, "premium_ssd": None, "standard_ssd": None,
            "standard_hdd": None}


def strip_token(url: str) -> str:
    """``url`` without its query string and fragment (where SAS tokens live) or user info."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True)
class Finding:
    """One result of a ``check`` rule, as recorded for the disk."""

    id: str
    severity: str  # "error" | "warning" | "info"
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "severity": self.severity, "message": self.message}


@dataclass(frozen=True)
class SourceRecord:
    """The image a disk was made from, as it was when read."""

    path: str  # absolute
    format: str  # "vhd" | "vhdx" | "raw"
    disk_type: str  # "fixed" | "dynamic" | "differencing"
    virtual_size: int
    file_size: int

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "type": self.disk_type,
                "virtual_size": self.virtual_size, "file_size": self.file_size}


@dataclass(frozen=True)
class FixedVhdRecord:
    """The fixed VHD made for Azure: its size and digests of all its bytes, footer included."""

    path: str | None  # relative to the manifest's folder; None when uploaded without a local copy
    virtual_size: int
    file_size: int  # = virtual_size + 512 = the blob's size
    sparse_sha256: str | None  # hex (docs/sparse-digest.md); None only in a version 1 manifest
    md5: str | None = None  # hex, when asked for (always in version 1)
    sha256: str | None = None  # hex, when asked for (always in version 1)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "virtual_size": self.virtual_size, "file_size": self.file_size,
                "sparse_sha256": self.sparse_sha256, "md5": self.md5, "sha256": self.sha256}

    @property
    def digests(self) -> dict[str, str]:
        """The recorded digests by name (``sparse-sha256``, ``md5``, ``sha256``)."""
        found = {SPARSE: self.sparse_sha256, "md5": self.md5, "sha256": self.sha256}
        return {name: value for name, value in found.items() if value is not None}


@dataclass(frozen=True)
class OsRecord:
    """The operating system found on the OS disk."""

    family: str | None  # "linux" | "windows" | None (not found)
    name: str | None
    version: str | None
    state: str  # generalized | specialized | in-between | unknown

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "name": self.name, "version": self.version, "state": self.state}


@dataclass(frozen=True)
class DiskRecord:
    """One disk of the set."""

    role: str  # "os" | "data"
    lun: int | None  # None for the OS disk
    name: str  # capture-convention name, also the blob name without ".vhd"
    source: SourceRecord
    fixed_vhd: FixedVhdRecord
    os: OsRecord | None  # OS disk only
    hyper_v_generation: str | None  # "V1" | "V2" | None (data disks, or unknown)
    architecture: str | None  # "x64" | "Arm64" | None
    billing_tier: dict[str, Any]
    findings: tuple[Finding, ...]
    blob_url: str | None = None  # without token

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role, "lun": self.lun, "name": self.name,
            "source": self.source.to_json(), "fixed_vhd": self.fixed_vhd.to_json(),
            "os": None if self.os is None else self.os.to_json(),
            "hyper_v_generation": self.hyper_v_generation, "architecture": self.architecture,
            "billing_tier": dict(self.billing_tier),
            "findings": [f.to_json() for f in self.findings],
            "blob_url": self.blob_url,
        }


@dataclass(frozen=True)
class GalleryDefinition:
    """The fields an Azure Compute Gallery image definition needs (docs/azure-rules.md §5)."""

    os_type: str | None  # "Linux" | "Windows"
    os_state: str | None  # "Generalized" | "Specialized"
    hyper_v_generation: str | None  # "V1" | "V2"
    architecture: str | None  # "x64" | "Arm64"

    def to_json(self) -> dict[str, Any]:
        return {"os_type": self.os_type, "os_state": self.os_state,
                "hyper_v_generation": self.hyper_v_generation, "architecture": self.architecture}


@dataclass(frozen=True)
class Manifest:
    """The whole set: an OS disk first, then data disks by LUN."""

    name: str
    created: str  # ISO 8601 UTC
    vhdtool_version: str
    expect: str | None
    forced: bool
    gallery_image_definition: GalleryDefinition
    disks: tuple[DiskRecord, ...]
    destination: str | None = None  # the container URL, without token
    schema: str = SCHEMA

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": self.schema, "name": self.name, "created": self.created,
            "vhdtool_version": self.vhdtool_version, "expect": self.expect, "forced": self.forced,
            "destination": self.destination,
            "gallery_image_definition": self.gallery_image_definition.to_json(),
            "disks": [d.to_json() for d in self.disks],
        }


def gallery_definition(os_disk: DiskRecord) -> GalleryDefinition:
    """Gallery image definition fields from the OS disk's findings (``None`` where unknown)."""
    os_type = None
    state = None
    if os_disk.os is not None:
        os_type = {"linux": "Linux", "windows": "Windows"}.get(os_disk.os.family or "")
        state = {"generalized": "Generalized", "specialized": "Specialized"}.get(os_disk.os.state)
    return GalleryDefinition(os_type, state, os_disk.hyper_v_generation, os_disk.architecture)


def write_manifest(manifest: Manifest, path: str | os.PathLike[str], *, sync: bool = False) -> None:
    """Write ``manifest`` as JSON, complete or not at all, never replacing an existing file.

    The text goes to a temporary file in the same folder, which is then hard-linked to ``path``
    (an atomic create that fails if ``path`` exists); where links are not supported it is renamed.
    With ``sync`` the text is flushed to the disk before it is linked (as ``prepare --sync`` does
    for the VHDs it describes).
    """
    target = os.fspath(path)
    text = json.dumps(manifest.to_json(), indent=2) + "\n"
    folder = os.path.dirname(os.path.abspath(target))
    temp: str | None = None
    try:
        fd, temp = tempfile.mkstemp(prefix=".manifest-", suffix=".partial", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            if sync:
                os.fsync(out.fileno())
        os.chmod(temp, 0o644)  # mkstemp makes it 0600; a manifest is meant to be shared
        try:
            os.link(temp, target)
        except FileExistsError:
            raise
        except OSError:  # no hard links here (FAT, some network shares): check, then rename
            if os.path.lexists(target):
                raise FileExistsError(errno.EEXIST, "File exists", target) from None
            os.replace(temp, target)
            temp = None
    except OSError as err:
        raise OutputError(f"{err.filename or target}: cannot write the manifest: "
                          f"{err.strerror or err}") from err
    finally:
        if temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp)


def _need(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise UsageError(f"{where}: field {key!r} is missing or not a {getattr(kind, '__name__', kind)}")
    return value


def _opt(obj: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = obj.get(key)
    if value is not None and not isinstance(value, kind):
        raise UsageError(f"{where}: field {key!r} is not a {kind.__name__}")
    return value


def manifest_from_json(data: Any, where: str) -> Manifest:
    """Parse a manifest JSON object; wrong shapes raise :class:`UsageError` naming ``where``."""
    if not isinstance(data, dict):
        raise UsageError(f"{where}: not a manifest (expected a JSON object)")
    schema = data.get("schema")
    if schema not in SCHEMAS:
        raise UsageError(f"{where}: not a vhdtool manifest of schema {SCHEMA!r} or {SCHEMA_V1!r} "
                         f"(found {schema!r})")
    disks: list[DiskRecord] = []
    for index, d in enumerate(_need(data, "disks", list, where)):
        at = f"{where}: disks[{index}]"
        if not isinstance(d, dict):
            raise UsageError(f"{at}: not an object")
        s = _need(d, "source", dict, at)
        f = _need(d, "fixed_vhd", dict, at)
        o = _opt(d, "os", dict, at)
        items = _need(d, "findings", list, at)
        if not all(isinstance(x, dict) for x in items):
            raise UsageError(f"{at}: every finding must be an object")
        findings = tuple(Finding(_need(x, "id", str, at), _need(x, "severity", str, at),
                                 _need(x, "message", str, at)) for x in items)
        path = _opt(f, "path", str, at)
        if path is not None and (path in ("", ".", "..") or "/" in path or "\\" in path):
            raise UsageError(f"{at}: fixed_vhd path {path!r} is not a file name beside the manifest")
        disks.append(DiskRecord(
            role=_need(d, "role", str, at), lun=_opt(d, "lun", int, at), name=_need(d, "name", str, at),
            source=SourceRecord(_need(s, "path", str, at), _need(s, "format", str, at),
                                _need(s, "type", str, at),
                                _need(s, "virtual_size", int, at), _need(s, "file_size", int, at)),
            fixed_vhd=_fixed_record(f, path, schema, at),
            os=None if o is None else OsRecord(_opt(o, "family", str, at), _opt(o, "name", str, at),
                                               _opt(o, "version", str, at), _need(o, "state", str, at)),
            hyper_v_generation=_opt(d, "hyper_v_generation", str, at),
            architecture=_opt(d, "architecture", str, at),
            billing_tier=_need(d, "billing_tier", dict, at),
            findings=findings,
            blob_url=_opt(d, "blob_url", str, at),
        ))
    g = _need(data, "gallery_image_definition", dict, where)
    manifest = Manifest(
        name=_need(data, "name", str, where), created=_need(data, "created", str, where),
        vhdtool_version=_need(data, "vhdtool_version", str, where), expect=_opt(data, "expect", str, where),
        forced=_need(data, "forced", bool, where),
        gallery_image_definition=GalleryDefinition(
            _opt(g, "os_type", str, where), _opt(g, "os_state", str, where),
            _opt(g, "hyper_v_generation", str, where), _opt(g, "architecture", str, where)),
        disks=tuple(disks), destination=_opt(data, "destination", str, where), schema=schema,
    )
    _check_roles(disks, where)
    return manifest


def _hex(obj: Mapping[str, Any], key: str, digits: int, at: str, required: bool) -> str | None:
    value: str | None = _need(obj, key, str, at) if required else _opt(obj, key, str, at)
    if value is not None and (len(value) != digits or any(c not in "0123456789abcdef" for c in value)):
        raise UsageError(f"{at}: field {key!r} is not {digits} lower-case hex digits")
    return value


def _fixed_record(f: Mapping[str, Any], path: str | None, schema: str, at: str) -> FixedVhdRecord:
    """``fixed_vhd``: version 1 has MD5 and SHA-256 always; version 2 the sparse digest, the others if asked."""
    v1 = schema == SCHEMA_V1
    return FixedVhdRecord(path, _need(f, "virtual_size", int, at), _need(f, "file_size", int, at),
                          None if v1 else _hex(f, "sparse_sha256", 64, at, True),
                          _hex(f, "md5", 32, at, v1), _hex(f, "sha256", 64, at, v1))


def _check_roles(disks: list[DiskRecord], where: str) -> None:
    """One OS disk first (no LUN), then data disks, each with its own LUN of 0..63."""
    if not disks or disks[0].role != "os" or disks[0].lun is not None:
        raise UsageError(f"{where}: the first disk must be the OS disk (role \"os\", no LUN)")
    luns: set[int] = set()
    for index, d in enumerate(disks[1:], start=1):
        if d.role != "data" or d.lun is None or not 0 <= d.lun <= 63 or d.lun in luns:
            raise UsageError(f"{where}: disks[{index}]: a data disk needs role \"data\" and its own LUN (0-63)")
        luns.add(d.lun)


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate a manifest file."""
    where = os.fspath(path)
    try:
        with open(where, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as err:
        raise UsageError(f"{where}: cannot read the manifest: {err.strerror or err}") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"{where}: not JSON: {err}") from err
    return manifest_from_json(data, where)


# ----------------------------------------------------------------------------------------------
# verify


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
