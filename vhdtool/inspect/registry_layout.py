"""Binary layout of the Windows registry hive base block ("regf"), declarations only.

Source: the Windows NT registry file format specification (libyal/Maxim Suhanov, "Windows registry
file format specification", section "Base block"). Little-endian throughout. Cells, keys and values
are read by ``dissect.regf`` (an optional dependency); only the base block is ours, so that a hive's
identity, size and consistency are checked before the optional library is handed the bytes.
"""

from __future__ import annotations

from construct import Bytes, Int32ul, Int64ul, Padding, Struct

BASE_BLOCK_SIZE = 4096
CHECKSUMMED_SIZE = 508  # the checksum covers the first 508 bytes of the base block

# Base block (spec section "Base block"): the first 4096 bytes of a primary hive or a log file.
BaseBlock = Struct(
    "signature" / Bytes(4),  # b"regf"
    "primary_sequence_number" / Int32ul,
    "secondary_sequence_number" / Int32ul,  # differs from the primary while a write is incomplete
    "last_written_timestamp" / Int64ul,  # FILETIME
    "major_version" / Int32ul,  # 1
    "minor_version" / Int32ul,  # 3, 4, 5 or 6
    "file_type" / Int32ul,  # 0 primary, 1/2 transaction log, 6 log (new format)
    "file_format" / Int32ul,  # 1 direct memory load
    "root_cell_offset" / Int32ul,  # relative to the start of the hive bins data
    "hive_bins_data_size" / Int32ul,
    "clustering_factor" / Int32ul,
    "file_name" / Bytes(64),  # UTF-16LE, partial path, not NUL-terminated when full
    Padding(CHECKSUMMED_SIZE - 112),
    "checksum" / Int32ul,  # XOR-32 of the first 508 bytes, with 0 -> 1 and 0xFFFFFFFF -> 0xFFFFFFFE
)
assert BaseBlock.sizeof() == CHECKSUMMED_SIZE + 4
