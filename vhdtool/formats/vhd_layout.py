"""Binary layout of VHD structures (Virtual Hard Disk Image Format Specification, 2006).

Declarations only; all logic lives in ``vhd_footer.py`` and ``vhd.py``. Everything is big-endian.
"""

from __future__ import annotations

from construct import Bytes, Int8ub, Int16ub, Int32ub, Int64ub, Struct

FOOTER_SIZE = 512

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
