"""Binary layout of VHD structures (Virtual Hard Disk Image Format Specification, 2006).

Declarations and the spec's magic numbers, each defined here once; all logic lives in ``footer.py``
and ``reader.py``. Everything is big-endian.
"""

from __future__ import annotations

from construct import Bytes, Int8ub, Int16ub, Int32ub, Int64ub, Struct

from vhdtool.units import SECTOR_SIZE

FOOTER_SIZE = SECTOR_SIZE  # the footer fills one sector
VHD_COOKIE = b"conectix"  # spec: "Hard Disk Footer Format", Cookie
DYNAMIC_HEADER_COOKIE = b"cxsparse"  # spec: "Dynamic Disk Header Format", Cookie
DYNAMIC_HEADER_VERSION = 0x00010000
BAT_ENTRY_UNUSED = 0xFFFFFFFF  # spec: "Block Allocation Table", unused entry

# Hard disk footer (spec: "Hard Disk Footer Format").
Footer = Struct(
    "cookie" / Bytes(8),
    "features" / Int32ub,
    "file_format_version" / Int32ub,
    "data_offset" / Int64ub,
    "timestamp" / Int32ub,
    "creator_application" / Bytes(4),
    "creator_version" / Int32ub,
    "creator_host_os" / Bytes(4),
    "original_size" / Int64ub,
    "current_size" / Int64ub,
    "cylinders" / Int16ub,
    "heads" / Int8ub,
    "sectors_per_track" / Int8ub,
    "disk_type" / Int32ub,
    "checksum" / Int32ub,
    "unique_id" / Bytes(16),
    "saved_state" / Int8ub,
    "reserved" / Bytes(427),
)
assert Footer.sizeof() == FOOTER_SIZE

DYNAMIC_HEADER_SIZE = 1024
PARENT_LOCATOR_COUNT = 8

# One parent locator entry (spec: "Dynamic Disk Header Format", Parent Locator Entries).
# ``data_space`` is documented in sectors, but Windows writes a byte count: treat it as a hint only.
ParentLocatorEntry = Struct(
    "platform_code" / Bytes(4),
    "data_space" / Int32ub,
    "data_length" / Int32ub,
    "reserved" / Int32ub,
    "data_offset" / Int64ub,
)
assert ParentLocatorEntry.sizeof() == 24

# Dynamic disk header, found at the footer's data offset (spec: "Dynamic Disk Header Format").
DynamicHeader = Struct(
    "cookie" / Bytes(8),
    "data_offset" / Int64ub,
    "table_offset" / Int64ub,
    "header_version" / Int32ub,
    "max_table_entries" / Int32ub,
    "block_size" / Int32ub,
    "checksum" / Int32ub,
    "parent_unique_id" / Bytes(16),
    "parent_timestamp" / Int32ub,
    "reserved1" / Int32ub,
    "parent_unicode_name" / Bytes(512),
    "parent_locators" / ParentLocatorEntry[PARENT_LOCATOR_COUNT],
    "reserved2" / Bytes(256),
)
assert DynamicHeader.sizeof() == DYNAMIC_HEADER_SIZE
