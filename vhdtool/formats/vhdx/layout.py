"""Binary layout of VHDX structures ([MS-VHDX] section 2), declarations only.

Everything is little-endian. GUIDs are kept as their 16 raw bytes (the Microsoft mixed-endian
form, ``uuid.UUID(bytes_le=...)``); logic and validation live in ``reader.py`` and ``log.py``.
"""

from __future__ import annotations

import uuid

from construct import Bytes, BytesInteger, Int16ul, Int32ul, Int64ul, Struct

from vhdtool.units import KiB, MiB

# 2.1 File layout: the first MiB holds the identifier, two headers and two region tables.
FILE_IDENTIFIER_OFFSET = 0
HEADER1_OFFSET = 64 * KiB
HEADER2_OFFSET = 128 * KiB
REGION_TABLE1_OFFSET = 192 * KiB
REGION_TABLE2_OFFSET = 256 * KiB
HEADER_AREA_SIZE = 1 * MiB
HEADER_SIZE = 4 * KiB  # 2.2.2: the checksum covers 4 KiB
REGION_TABLE_SIZE = 64 * KiB  # 2.2.3: the checksum covers 64 KiB
METADATA_TABLE_SIZE = 64 * KiB  # 2.6.1
LOG_SECTOR_SIZE = 4 * KiB  # 2.3
ALIGNMENT = 1 * MiB  # regions, BAT offsets, log offset/length

FILE_SIGNATURE = b"vhdxfile"
HEADER_SIGNATURE = b"head"
REGION_SIGNATURE = b"regi"
METADATA_SIGNATURE = b"metadata"
LOG_ENTRY_SIGNATURE = b"loge"
ZERO_DESCRIPTOR_SIGNATURE = b"zero"
DATA_DESCRIPTOR_SIGNATURE = b"desc"
DATA_SECTOR_SIGNATURE = b"data"

MAX_TABLE_ENTRIES = 2047  # 2.2.3.1 region table, 2.6.1.1 metadata table

# 2.2.3.2 Known regions.
BAT_REGION_GUID = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA_REGION_GUID = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")

# 2.6.2 Known metadata items.
FILE_PARAMETERS_GUID = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
VIRTUAL_DISK_SIZE_GUID = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
PAGE83_DATA_GUID = uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
LOGICAL_SECTOR_SIZE_GUID = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
PHYSICAL_SECTOR_SIZE_GUID = uuid.UUID("CDA348C7-445D-4471-9CC9-E9885251C556")
PARENT_LOCATOR_GUID = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
# 2.6.2.6 The locator type of a VHDX parent.
VHDX_PARENT_LOCATOR_TYPE = uuid.UUID("B04AEFB7-D19E-4A81-B789-25B8E9445913")

Guid = Bytes(16)

# 2.2.1 File type identifier.
FileIdentifier = Struct(
    "signature" / Bytes(8),
    "creator" / Bytes(512),  # UTF-16LE, NUL padded
)

# 2.2.2 Header (the first 80 bytes of a 4 KiB structure; the rest is reserved).
Header = Struct(
    "signature" / Bytes(4),
    "checksum" / Int32ul,
    "sequence_number" / Int64ul,
    "file_write_guid" / Guid,
    "data_write_guid" / Guid,
    "log_guid" / Guid,
    "log_version" / Int16ul,
    "version" / Int16ul,
    "log_length" / Int32ul,
    "log_offset" / Int64ul,
)
HEADER_CHECKSUM_OFFSET = 4

# 2.2.3.1 Region table header, followed by ``entry_count`` entries.
RegionTableHeader = Struct(
    "signature" / Bytes(4),
    "checksum" / Int32ul,
    "entry_count" / Int32ul,
    "reserved" / Int32ul,
)
REGION_CHECKSUM_OFFSET = 4

# 2.2.3.2 Region table entry; bit 0 of ``flags`` is Required.
RegionTableEntry = Struct(
    "guid" / Guid,
    "file_offset" / Int64ul,
    "length" / Int32ul,
    "flags" / Int32ul,
)

# 2.6.1.1 Metadata table header, followed by ``entry_count`` entries.
MetadataTableHeader = Struct(
    "signature" / Bytes(8),
    "reserved" / Int16ul,
    "entry_count" / Int16ul,
    "reserved2" / Bytes(20),
)

# 2.6.1.2 Metadata table entry; ``flags`` bit 0 IsUser, bit 1 IsVirtualDisk, bit 2 IsRequired.
MetadataTableEntry = Struct(
    "item_id" / Guid,
    "offset" / Int32ul,
    "length" / Int32ul,
    "flags" / Int32ul,
    "reserved" / Int32ul,
)

# 2.6.2.1 File parameters: bit 0 LeaveBlockAllocated, bit 1 HasParent.
FileParameters = Struct(
    "block_size" / Int32ul,
    "flags" / Int32ul,
)

# 2.6.2.6 Parent locator header, followed by ``key_value_count`` entries.
ParentLocatorHeader = Struct(
    "locator_type" / Guid,
    "reserved" / Int16ul,
    "key_value_count" / Int16ul,
)
ParentLocatorEntry = Struct(
    "key_offset" / Int32ul,
    "value_offset" / Int32ul,
    "key_length" / Int16ul,
    "value_length" / Int16ul,
)

# 2.3.1.1 Log entry header.
LogEntryHeader = Struct(
    "signature" / Bytes(4),
    "checksum" / Int32ul,
    "entry_length" / Int32ul,
    "tail" / Int32ul,
    "sequence_number" / Int64ul,
    "descriptor_count" / Int32ul,
    "reserved" / Int32ul,
    "log_guid" / Guid,
    "flushed_file_offset" / Int64ul,
    "last_file_offset" / Int64ul,
)
LOG_ENTRY_HEADER_SIZE = 64
LOG_ENTRY_CHECKSUM_OFFSET = 4

# 2.3.1.2 Zero descriptor and 2.3.1.3 data descriptor share this shape: the second field is
# reserved (zero) or TrailingBytes, the third ZeroLength or LeadingBytes.
LogDescriptor = Struct(
    "signature" / Bytes(4),
    "trailing_bytes" / Bytes(4),
    "leading_or_length" / Bytes(8),
    "file_offset" / Int64ul,
    "sequence_number" / Int64ul,
)
LOG_DESCRIPTOR_SIZE = 32

# 2.3.1.4 Data sector.
DataSector = Struct(
    "signature" / Bytes(4),
    "sequence_high" / Int32ul,
    "data" / Bytes(4084),
    "sequence_low" / Int32ul,
)

# 2.5.1 BAT entry: State in bits 0-2, FileOffsetMB in bits 20-63 (kept as a raw 64-bit value).
BatEntry = BytesInteger(8, swapped=True)
BAT_ENTRY_SIZE = 8

assert Header.sizeof() == 80
assert RegionTableEntry.sizeof() == 32
assert MetadataTableHeader.sizeof() == 32
assert MetadataTableEntry.sizeof() == 32
assert LogEntryHeader.sizeof() == LOG_ENTRY_HEADER_SIZE
assert LogDescriptor.sizeof() == LOG_DESCRIPTOR_SIZE
assert DataSector.sizeof() == LOG_SECTOR_SIZE
