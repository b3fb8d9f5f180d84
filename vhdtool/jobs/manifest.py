"""The provenance manifest of an image set: what each disk is, where it came from, its digests.

This module is the model only: frozen dataclasses, no I/O. ``prepare`` builds one per set;
:mod:`vhdtool.jobs.manifest_file` writes it as ``NAME.manifest.json`` and reads it back (checked
against its JSON Schema), and :mod:`vhdtool.jobs.verify` re-hashes the disks it describes.

``schema`` names the version. Version 2 records the sparse digest of each fixed VHD (what ``verify``
compares, at the cost of the data only) and MD5/SHA-256 only when they were asked for; version 1
(MD5 and SHA-256 always, no sparse digest) is still read and verified by its MD5 and SHA-256. Paths
of output files are relative to the manifest's folder so a set can be moved as a whole; blob URLs
are stored without their query string, so no token is ever written.
"""

from __future__ import annotations

from dataclasses import dataclass

from vhdtool.readiness.rules import Finding
from vhdtool.readiness.tiers import BillingTier

SCHEMA = "vhdtool.jobs.manifest/2"
SCHEMA_V1 = "vhdtool.jobs.manifest/1"
SCHEMAS = (SCHEMA, SCHEMA_V1)
SPARSE = "sparse-sha256"  # vhdtool.stream.digest.NAME (not imported: the manifest stays free of numpy)
WHOLE_FILE = ("md5", "sha256")


@dataclass(frozen=True)
class SourceRecord:
    """The image a disk was made from, as it was when read."""

    path: str  # absolute
    format: str  # "vhd" | "vhdx" | "raw"
    disk_type: str  # "fixed" | "dynamic" | "differencing"
    virtual_size: int
    file_size: int


@dataclass(frozen=True)
class FixedVhdRecord:
    """The fixed VHD made for Azure: its size and digests of all its bytes, footer included."""

    path: str | None  # relative to the manifest's folder; None when uploaded without a local copy
    virtual_size: int
    file_size: int  # = virtual_size + 512 = the blob's size
    sparse_sha256: str | None  # hex (docs/sparse-digest.md); None only in a version 1 manifest
    md5: str | None = None  # hex, when asked for (always in version 1)
    sha256: str | None = None  # hex, when asked for (always in version 1)

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
    billing_tier: BillingTier
    findings: tuple[Finding, ...]  # what ``check`` found, as the readiness rules report it
    blob_url: str | None = None  # without token


@dataclass(frozen=True)
class GalleryDefinition:
    """The fields an Azure Compute Gallery image definition needs (docs/azure-rules.md §5)."""

    os_type: str | None  # "Linux" | "Windows"
    os_state: str | None  # "Generalized" | "Specialized"
    hyper_v_generation: str | None  # "V1" | "V2"
    architecture: str | None  # "x64" | "Arm64"


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


def gallery_definition(os_disk: DiskRecord) -> GalleryDefinition:
    """Gallery image definition fields from the OS disk's findings (``None`` where unknown)."""
    os_type = None
    state = None
    if os_disk.os is not None:
        os_type = {"linux": "Linux", "windows": "Windows"}.get(os_disk.os.family or "")
        state = {"generalized": "Generalized", "specialized": "Specialized"}.get(os_disk.os.state)
    return GalleryDefinition(os_type, state, os_disk.hyper_v_generation, os_disk.architecture)
