"""The VHD hard disk footer: parsing, validation, CHS geometry and building a fixed-disk footer.

Azure reads ``current_size`` and requires a fixed disk whose size is a whole number of MiB;
geometry is informational and computed the way Hyper-V does (spec appendix "CHS Calculation").
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from construct import ConstructError

from vhdtool.errors import ImageError
from vhdtool.formats.vhd.layout import FOOTER_SIZE, VHD_COOKIE, Footer
from vhdtool.units import SECTOR_SIZE

FEATURES_RESERVED = 0x2  # spec: "This bit must always be set to 1"
FILE_FORMAT_VERSION = 0x00010000
FIXED_DATA_OFFSET = 0xFFFFFFFFFFFFFFFF
DISK_TYPE_FIXED = 2
DISK_TYPE_DYNAMIC = 3
DISK_TYPE_DIFFERENCING = 4
DISK_TYPE_NAMES = {0: "none", 1: "reserved", 2: "fixed", 3: "dynamic", 4: "differencing"}
VHD_EPOCH = 946684800  # 2000-01-01T00:00:00Z as a Unix time
MAX_CHS_SECTORS = 65535 * 16 * 255
HOST_OS_NAMES = {b"Wi2k": "Windows", b"Mac ": "Macintosh"}


@dataclass(frozen=True)
class Geometry:
    """Cylinders, heads and sectors per track as stored in the footer."""

    cylinders: int
    heads: int
    sectors_per_track: int

    @property
    def size(self) -> int:
        """The byte size the geometry describes (what qemu-img uses without ``force_size``)."""
        return self.cylinders * self.heads * self.sectors_per_track * SECTOR_SIZE


@dataclass(frozen=True)
class VhdFooter:
    """A parsed VHD footer; ``checksum_valid`` tells whether the stored checksum matched."""

    cookie: bytes
    features: int
    file_format_version: int
    data_offset: int
    timestamp: int
    creator_application: bytes
    creator_version: int
    creator_host_os: bytes
    original_size: int
    current_size: int
    geometry: Geometry
    disk_type: int
    checksum: int
    unique_id: bytes
    saved_state: int
    checksum_valid: bool

    @property
    def disk_type_name(self) -> str:
        return DISK_TYPE_NAMES.get(self.disk_type, f"unknown ({self.disk_type})")

    def to_json(self) -> dict[str, Any]:
        """The footer fields as ``vhdtool info`` reports them."""
        return {
            "cookie": self.cookie.decode("latin-1"),
            "features": self.features,
            "file_format_version": f"{self.file_format_version >> 16}.{self.file_format_version & 0xFFFF}",
            "data_offset": self.data_offset,
            "timestamp": self.timestamp,
            "timestamp_iso": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(VHD_EPOCH + self.timestamp)),
            "creator_application": self.creator_application.decode("latin-1"),
            "creator_version": f"{self.creator_version >> 16}.{self.creator_version & 0xFFFF}",
            "creator_host_os": HOST_OS_NAMES.get(self.creator_host_os,
                                                 self.creator_host_os.decode("latin-1")),
            "original_size": self.original_size,
            "current_size": self.current_size,
            "geometry": {"cylinders": self.geometry.cylinders, "heads": self.geometry.heads,
                         "sectors_per_track": self.geometry.sectors_per_track,
                         "size": self.geometry.size},
            "disk_type": self.disk_type_name,
            "checksum": f"0x{self.checksum:08x}",
            "checksum_valid": self.checksum_valid,
            "unique_id": str(uuid.UUID(bytes=self.unique_id)),
            "saved_state": bool(self.saved_state),
        }


def footer_checksum(raw: bytes) -> int:
    """Ones' complement of the byte sum of a 512-byte footer with its checksum field zeroed."""
    total = sum(raw[:64]) + sum(raw[68:FOOTER_SIZE])
    return (~total) & 0xFFFFFFFF


def parse_footer(raw: bytes, path: str, offset: int) -> VhdFooter:
    """Parse 512 footer bytes read at ``offset``; raise :class:`ImageError` if it is not a footer.

    A wrong checksum is not raised here: callers decide (a dynamic disk can fall back to its copy).
    """
    if len(raw) < FOOTER_SIZE:
        raw = raw + bytes(FOOTER_SIZE - len(raw))  # 511-byte footers of old tools
    try:
        c = Footer.parse(raw)
    except ConstructError as err:
        raise ImageError(path, "VHD footer", offset, f"cannot be parsed ({err})") from err
    if c.cookie != VHD_COOKIE:
        raise ImageError(path, "VHD footer", offset, f"cookie is {bytes(c.cookie)!r}, expected b'conectix'")
    return VhdFooter(
        cookie=bytes(c.cookie),
        features=c.features,
        file_format_version=c.file_format_version,
        data_offset=c.data_offset,
        timestamp=c.timestamp,
        creator_application=bytes(c.creator_application),
        creator_version=c.creator_version,
        creator_host_os=bytes(c.creator_host_os),
        original_size=c.original_size,
        current_size=c.current_size,
        geometry=Geometry(c.cylinders, c.heads, c.sectors_per_track),
        disk_type=c.disk_type,
        checksum=c.checksum,
        unique_id=bytes(c.unique_id),
        saved_state=c.saved_state,
        checksum_valid=footer_checksum(raw) == c.checksum,
    )


def chs_geometry(size: int) -> Geometry:
    """CHS geometry for a disk of ``size`` bytes, per the VHD spec's CHS calculation (rounds down)."""
    total_sectors = min(size // SECTOR_SIZE, MAX_CHS_SECTORS)
    if total_sectors >= 65535 * 16 * 63:
        sectors_per_track = 255
        heads = 16
        cylinder_times_heads = total_sectors // sectors_per_track
    else:
        sectors_per_track = 17
        cylinder_times_heads = total_sectors // sectors_per_track
        heads = max(4, (cylinder_times_heads + 1023) // 1024)
        if cylinder_times_heads >= heads * 1024 or heads > 16:
            sectors_per_track = 31
            heads = 16
            cylinder_times_heads = total_sectors // sectors_per_track
        if cylinder_times_heads >= heads * 1024:
            sectors_per_track = 63
            heads = 16
            cylinder_times_heads = total_sectors // sectors_per_track
    return Geometry(cylinder_times_heads // heads, heads, sectors_per_track)


def vhd_timestamp(unix_time: float | None = None) -> int:
    """Seconds since 2000-01-01 UTC, the VHD footer's clock."""
    now = time.time() if unix_time is None else unix_time
    return max(0, int(now) - VHD_EPOCH) & 0xFFFFFFFF


def build_footer(footer: VhdFooter) -> bytes:
    """Serialise ``footer`` with a freshly computed checksum (the stored one is ignored)."""
    raw = bytearray(Footer.build(dict(
        cookie=footer.cookie,
        features=footer.features,
        file_format_version=footer.file_format_version,
        data_offset=footer.data_offset,
        timestamp=footer.timestamp,
        creator_application=footer.creator_application,
        creator_version=footer.creator_version,
        creator_host_os=footer.creator_host_os,
        original_size=footer.original_size,
        current_size=footer.current_size,
        cylinders=footer.geometry.cylinders,
        heads=footer.geometry.heads,
        sectors_per_track=footer.geometry.sectors_per_track,
        disk_type=footer.disk_type,
        checksum=0,
        unique_id=footer.unique_id,
        saved_state=footer.saved_state,
        reserved=bytes(427),
    )))
    raw[64:68] = footer_checksum(bytes(raw)).to_bytes(4, "big")
    return bytes(raw)


# Written as Hyper-V writes it ("win ", 10.0, "Wi2k"): readers such as qemu trust the footer's
# current size only for creators they know (win, qem2, d2v, ...) and fall back to the smaller CHS
# size for unknown ones, so a creator of our own would make those tools see a truncated disk.
CREATOR_APPLICATION = b"win "
CREATOR_VERSION = 0x000A0000


def fixed_footer(size: int, unique_id: bytes | None = None, timestamp: int | None = None) -> VhdFooter:
    """A fixed-disk footer for ``size`` bytes, written the way Hyper-V writes one.

    Current size = original size = ``size`` (never the CHS-derived size); geometry the nearest fit.
    """
    if size % SECTOR_SIZE:
        raise ValueError("a VHD size must be a multiple of 512 bytes")
    footer = VhdFooter(
        cookie=VHD_COOKIE,
        features=FEATURES_RESERVED,
        file_format_version=FILE_FORMAT_VERSION,
        data_offset=FIXED_DATA_OFFSET,
        timestamp=vhd_timestamp() if timestamp is None else timestamp,
        creator_application=CREATOR_APPLICATION,
        creator_version=CREATOR_VERSION,
        creator_host_os=b"Wi2k",
        original_size=size,
        current_size=size,
        geometry=chs_geometry(size),
        disk_type=DISK_TYPE_FIXED,
        checksum=0,
        unique_id=uuid.uuid4().bytes if unique_id is None else unique_id,
        saved_state=0,
        checksum_valid=True,
    )
    raw = build_footer(footer)
    return replace(footer, checksum=int.from_bytes(raw[64:68], "big"))
