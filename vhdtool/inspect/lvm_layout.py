"""LVM2 on-disk layouts (declarations only; logic in ``lvm.py``).

Reference: LVM2 source ``lib/format_text/layout.h`` and ``lib/label/label.h`` (label_header, pv_header,
disk_locn, mda_header, raw_locn). All fields little-endian.
"""

from __future__ import annotations

from construct import Bytes, Const, Int32ul, Int64ul, Struct

LABEL_ID = b"LABELONE"
LABEL_TYPE = b"LVM2 001"
LABEL_SCAN_SECTORS = 4
MDA_MAGIC = b" LVM2 x[5A%r0N*>"
INITIAL_CRC = 0xF597A6CF
MDA_HEADER_SIZE = 512

LabelHeader = Struct(
    "id" / Const(LABEL_ID),
    "sector_xl" / Int64ul,
    "crc_xl" / Int32ul,  # over bytes [20, 512) of the label sector
    "offset_xl" / Int32ul,  # of the pv_header, from the label's start
    "type" / Bytes(8),
)

PvHeaderStart = Struct(
    "pv_uuid" / Bytes(32),
    "device_size_xl" / Int64ul,
)

DiskLocn = Struct(
    "offset" / Int64ul,
    "size" / Int64ul,
)

MdaHeaderStart = Struct(
    "checksum_xl" / Int32ul,  # over bytes [4, 512) of the header
    "magic" / Bytes(16),
    "version" / Int32ul,
    "start" / Int64ul,
    "size" / Int64ul,
)

RawLocn = Struct(
    "offset" / Int64ul,
    "size" / Int64ul,
    "checksum" / Int32ul,
    "flags" / Int32ul,
)
