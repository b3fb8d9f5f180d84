"""Binary layouts of the MBR and GPT partition tables (declarations only; logic in ``partitions.py``).

References: UEFI Specification 2.10 §5.2.1 (legacy MBR), §5.2.3 (protective MBR), §5.3.2 (GPT header),
§5.3.3 (GPT partition entry array).
"""

from __future__ import annotations

from construct import Array, Bytes, Const, Int8ul, Int16ul, Int32ul, Int64ul, Struct

MBR_SIGNATURE = b"\x55\xaa"
GPT_SIGNATURE = b"EFI PART"
GPT_HEADER_MIN_SIZE = 92
MBR_TYPE_GPT_PROTECTIVE = 0xEE
MBR_EXTENDED_TYPES = frozenset({0x05, 0x0F, 0x85})
MBR_ACTIVE = 0x80

# UEFI §5.2.1 Table 5-2: one legacy MBR partition record.
MbrPartitionRecord = Struct(
    "boot_indicator" / Int8ul,
    "starting_chs" / Bytes(3),
    "os_type" / Int8ul,
    "ending_chs" / Bytes(3),
    "starting_lba" / Int32ul,
    "size_in_lba" / Int32ul,
)

# UEFI §5.2.1 Table 5-1: the first sector of the disk.
Mbr = Struct(
    "boot_code" / Bytes(440),
    "disk_signature" / Int32ul,
    "unknown" / Int16ul,
    "partitions" / Array(4, MbrPartitionRecord),
    "signature" / Bytes(2),
)

# UEFI §5.3.2 Table 5-5: the GPT header (the first 92 bytes; header_size may say more).
GptHeader = Struct(
    "signature" / Const(GPT_SIGNATURE),
    "revision" / Int32ul,
    "header_size" / Int32ul,
    "header_crc32" / Int32ul,
    "reserved" / Int32ul,
    "my_lba" / Int64ul,
    "alternate_lba" / Int64ul,
    "first_usable_lba" / Int64ul,
    "last_usable_lba" / Int64ul,
    "disk_guid" / Bytes(16),
    "partition_entry_lba" / Int64ul,
    "number_of_partition_entries" / Int32ul,
    "size_of_partition_entry" / Int32ul,
    "partition_entry_array_crc32" / Int32ul,
)

# UEFI §5.3.3 Table 5-6: one partition entry (entries may be larger; the rest is reserved).
GptEntry = Struct(
    "partition_type_guid" / Bytes(16),
    "unique_partition_guid" / Bytes(16),
    "starting_lba" / Int64ul,
    "ending_lba" / Int64ul,
    "attributes" / Int64ul,
    "partition_name" / Bytes(72),
)
GPT_ENTRY_MIN_SIZE = 128
