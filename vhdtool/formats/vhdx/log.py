"""The VHDX metadata log ([MS-VHDX] 2.3): finding the active sequence and replaying it in memory.

A VHDX whose header carries a non-zero LogGuid may hold metadata updates (BAT, metadata region)
that were logged but never written to their final place. Readers must apply them before trusting
any metadata (2.3.3). vhdtool never writes to an input image, so the replay is an overlay: a map
from file offsets to replacement bytes that :class:`ReplayedFile` consults on every read.
"""

from __future__ import annotations

import bisect
import struct
import uuid
from dataclasses import dataclass

from construct import ConstructError

from vhdtool.disk.base import ByteSource
from vhdtool.errors import ImageError
from vhdtool.formats.vhdx.crc import crc32c
from vhdtool.formats.vhdx.layout import (
    ALIGNMENT,
    DATA_DESCRIPTOR_SIGNATURE,
    DATA_SECTOR_SIGNATURE,
    LOG_DESCRIPTOR_SIZE,
    LOG_ENTRY_CHECKSUM_OFFSET,
    LOG_ENTRY_HEADER_SIZE,
    LOG_ENTRY_SIGNATURE,
    LOG_SECTOR_SIZE,
    ZERO_DESCRIPTOR_SIGNATURE,
    LogDescriptor,
    LogEntryHeader,
)
from vhdtool.units import MiB

# Reading the whole log at once is fine up to this size; larger logs are scanned in chunks.
_SCAN_CHUNK = MiB


@dataclass(frozen=True)
class DataWrite:
    """A 4 KiB sector written by a data descriptor (2.3.1.3): its bytes sit in a log data sector.

    The sector's first 8 and last 4 bytes are stored in the descriptor (``leading``,
    ``trailing``) because the data sector keeps its signature and sequence number there.
    """

    file_offset: int
    data_sector_offset: int  # absolute offset of the data sector in the image file
    leading: bytes
    trailing: bytes


@dataclass(frozen=True)
class ZeroWrite:
    """A zero descriptor (2.3.1.2): ``length`` bytes of zeros at ``file_offset``."""

    file_offset: int
    length: int


@dataclass(frozen=True)
class LogEntry:
    """A log entry that passed every validity check of 2.3.1."""

    position: int  # offset of the entry inside the log, a multiple of 4 KiB
    entry_length: int
    tail: int
    sequence_number: int
    flushed_file_offset: int
    last_file_offset: int
    writes: tuple[DataWrite | ZeroWrite, ...]


@dataclass(frozen=True)
class LogSequence:
    """The active sequence of 2.3.3: entries from the head's tail up to the head, in order."""

    entries: tuple[LogEntry, ...]

    @property
    def head(self) -> LogEntry:
        return self.entries[-1]


class _LogArea:
    """Reads from the circular log at ``log_offset`` (2.3: the log wraps to its start)."""

    def __init__(self, image: ByteSource, log_offset: int, log_length: int) -> None:
        self.image = image
        self.offset = log_offset
        self.length = log_length

    def absolute(self, position: int) -> int:
        return self.offset + position % self.length

    def read(self, position: int, length: int) -> bytes:
        position %= self.length
        first = min(length, self.length - position)
        data = self.image.pread(self.offset + position, first, "VHDX log")
        if first < length:
            data += self.image.pread(self.offset, length - first, "VHDX log")
        return data


class _ChecksumBudget:
    """Bytes the scan may still checksum: keeps the log scan linear in the log's length.

    Every sector may start a candidate entry claiming the whole log as its length, which would make
    checksumming them quadratic (8,192 candidates × 32 MiB for a 32 MiB log). A real log's
    candidates cover it about once (entries of the active sequence plus stale ones not yet
    overwritten), so four times the log, plus slack for small logs, is ample.
    """

    def __init__(self, area: _LogArea) -> None:
        self.area = area
        self.left = 4 * area.length + 16 * _SCAN_CHUNK

    def spend(self, position: int, length: int) -> None:
        self.left -= length
        if self.left < 0:
            raise ImageError(self.area.image.path, "VHDX log", self.area.absolute(position),
                             "its candidate entries claim far more bytes than the log holds "
                             "(damaged or hostile log); the disk cannot be read consistently")


def _parse_entry(area: _LogArea, position: int, log_guid: uuid.UUID,
                 budget: _ChecksumBudget | None = None) -> LogEntry | None:
    """The entry at ``position`` if it is valid (2.3.1), else ``None``: invalid entries are skipped."""
    try:
        raw_header = area.read(position, LOG_ENTRY_HEADER_SIZE)
        hdr = LogEntryHeader.parse(raw_header)
    except ConstructError:
        return None
    if hdr.signature != LOG_ENTRY_SIGNATURE:
        return None
    length = hdr.entry_length
    if (length == 0 or length % LOG_SECTOR_SIZE or length > area.length or hdr.sequence_number == 0
            or hdr.tail % LOG_SECTOR_SIZE or hdr.tail >= area.length
            or uuid.UUID(bytes_le=hdr.log_guid) != log_guid):
        return None
    count = hdr.descriptor_count
    descriptor_bytes = LOG_ENTRY_HEADER_SIZE + count * LOG_DESCRIPTOR_SIZE
    descriptor_sectors = -(-descriptor_bytes // LOG_SECTOR_SIZE)
    if descriptor_sectors * LOG_SECTOR_SIZE > length:
        return None
    # The checksum covers the whole entry with its checksum field zeroed (2.3.1.1); the entry
    # is read in pieces so a hostile length cannot make us hold it all at once.
    if budget is not None:
        budget.spend(position, length)
    crc = 0
    piece = 0
    while piece < length:
        n = min(_SCAN_CHUNK, length - piece)
        chunk = area.read(position + piece, n)
        if piece == 0:
            chunk = (chunk[:LOG_ENTRY_CHECKSUM_OFFSET] + b"\0\0\0\0"
                     + chunk[LOG_ENTRY_CHECKSUM_OFFSET + 4:])
        crc = crc32c(chunk, crc)
        piece += n
    if crc != hdr.checksum:
        return None
    table = area.read(position, descriptor_sectors * LOG_SECTOR_SIZE)
    writes: list[DataWrite | ZeroWrite] = []
    data_position = position + descriptor_sectors * LOG_SECTOR_SIZE
    data_end = position + length
    for i in range(count):
        start = LOG_ENTRY_HEADER_SIZE + i * LOG_DESCRIPTOR_SIZE
        desc = LogDescriptor.parse(table[start:start + LOG_DESCRIPTOR_SIZE])
        if desc.sequence_number != hdr.sequence_number or desc.file_offset % LOG_SECTOR_SIZE:
            return None
        if desc.signature == ZERO_DESCRIPTOR_SIGNATURE:
            zero_length = struct.unpack("<Q", desc.leading_or_length)[0]
            if zero_length % LOG_SECTOR_SIZE:
                return None
            writes.append(ZeroWrite(desc.file_offset, zero_length))
        elif desc.signature == DATA_DESCRIPTOR_SIGNATURE:
            if data_position + LOG_SECTOR_SIZE > data_end:
                return None
            sector_head = area.read(data_position, 8)
            sector_tail = area.read(data_position + LOG_SECTOR_SIZE - 4, 4)
            sequence = (struct.unpack("<I", sector_head[4:8])[0] << 32) | struct.unpack("<I", sector_tail)[0]
            if sector_head[:4] != DATA_SECTOR_SIGNATURE or sequence != hdr.sequence_number:
                return None
            writes.append(DataWrite(desc.file_offset, area.absolute(data_position),
                                    desc.leading_or_length, desc.trailing_bytes))
            data_position += LOG_SECTOR_SIZE
        else:
            return None
    return LogEntry(position=position, entry_length=length, tail=hdr.tail,
                    sequence_number=hdr.sequence_number, flushed_file_offset=hdr.flushed_file_offset,
                    last_file_offset=hdr.last_file_offset, writes=tuple(writes))


def _candidate_positions(area: _LogArea) -> list[int]:
    """Sector offsets in the log that start with the entry signature (a fast pre-filter)."""
    positions: list[int] = []
    for base in range(0, area.length, _SCAN_CHUNK):
        chunk = area.image.pread(area.offset + base, min(_SCAN_CHUNK, area.length - base), "VHDX log")
        at = chunk.find(LOG_ENTRY_SIGNATURE)
        while at != -1:
            if at % LOG_SECTOR_SIZE == 0:
                positions.append(base + at)
                at = chunk.find(LOG_ENTRY_SIGNATURE, at + LOG_SECTOR_SIZE)
            else:
                at = chunk.find(LOG_ENTRY_SIGNATURE, at - at % LOG_SECTOR_SIZE + LOG_SECTOR_SIZE)
    return positions


def find_active_sequence(image: ByteSource, log_offset: int, log_length: int,
                         log_guid: uuid.UUID) -> LogSequence | None:
    """The active log sequence (2.3.3), or ``None`` when the log holds no valid sequence.

    Valid entries that follow each other (the next starts where the previous ends, wrapping,
    with a sequence number one higher) form sequences. A sequence counts only if its head
    entry's Tail points at one of its own entries; the one whose head has the highest sequence
    number is active, and replay runs from that tail entry to the head.
    """
    area = _LogArea(image, log_offset, log_length)
    budget = _ChecksumBudget(area)
    entries: dict[int, LogEntry] = {}
    for position in _candidate_positions(area):
        entry = _parse_entry(area, position, log_guid, budget)
        if entry is not None:
            entries[position] = entry
    successor: dict[int, int] = {}
    for position, entry in entries.items():
        nxt = (position + entry.entry_length) % log_length
        follower = entries.get(nxt)
        if follower is not None and follower.sequence_number == entry.sequence_number + 1:
            successor[position] = nxt
    has_predecessor = set(successor.values())
    best: LogSequence | None = None
    for start in sorted(entries):
        if start in has_predecessor:
            continue
        chain = [entries[start]]
        position = start
        while position in successor and len(chain) <= len(entries):
            position = successor[position]
            chain.append(entries[position])
        head = chain[-1]
        starts = [e.position for e in chain]
        if head.tail not in starts:
            continue
        active = tuple(chain[starts.index(head.tail):])
        if best is None or head.sequence_number > best.head.sequence_number:
            best = LogSequence(active)
    return best


class ReplayedFile:
    """An image file as it is after the log replay, without writing anything.

    Offers the read interface of :class:`~vhdtool.disk.base.ByteSource` (``path``, ``size``,
    ``pread``, ``preadinto``); reads are positional and thread-safe. The size is the larger of
    the real size and the LastFileOffset the log recorded (the replay would extend the file);
    bytes past the real end read as zeros.
    """

    def __init__(self, image: ByteSource, sequence: LogSequence | None = None) -> None:
        self.image = image
        self.path = image.path
        self.size = image.size
        self._data: dict[int, DataWrite] = {}
        self._data_keys: list[int] = []
        self._zero_starts: list[int] = []
        self._zero_ends: list[int] = []
        if sequence is None:
            return
        for entry in sequence.entries:
            # File structures are allocated in 1 MiB units (2.2), so the extended file is too.
            self.size = max(self.size, -(-entry.last_file_offset // ALIGNMENT) * ALIGNMENT)
        # Later writes win. Walk the writes backwards: a sector keeps the first (= latest) write
        # seen, unless a later zero descriptor already covers it.
        zeros: list[tuple[int, int]] = []
        for entry in reversed(sequence.entries):
            for write in reversed(entry.writes):
                if isinstance(write, DataWrite):
                    if write.file_offset not in self._data and not _covered(zeros, write.file_offset):
                        self._data[write.file_offset] = write
                elif write.length:
                    _insert_range(zeros, write.file_offset, write.file_offset + write.length)
        self._data_keys = sorted(self._data)
        self._zero_starts = [s for s, _ in zeros]
        self._zero_ends = [e for _, e in zeros]

    @property
    def replayed(self) -> bool:
        """Whether any log write is applied."""
        return bool(self._data or self._zero_starts)

    def pread(self, offset: int, length: int, structure: str) -> bytes:
        """Exactly ``length`` bytes at ``offset`` as replayed; outside the file is an :class:`ImageError`."""
        buf = bytearray(length)
        self.preadinto(offset, memoryview(buf), structure)
        return bytes(buf)

    def preadinto(self, offset: int, view: memoryview, structure: str) -> None:
        """Fill ``view`` from ``offset`` as replayed."""
        length = len(view)
        end = offset + length
        if offset < 0 or end > self.size:
            raise ImageError(self.path, structure, offset,
                             f"needs {length} bytes but the file ends at byte {self.size} (truncated?)")
        real_end = min(end, self.image.size)
        if real_end > offset:
            self.image.preadinto(offset, view[:real_end - offset], structure)
        if real_end < end:
            start = max(offset, real_end)
            view[start - offset:] = bytes(end - start)
        if not self._data_keys and not self._zero_starts:
            return
        # Zero ranges first, then data sectors: the two sets never disagree (see __init__).
        i = bisect.bisect_right(self._zero_ends, offset)
        while i < len(self._zero_starts) and self._zero_starts[i] < end:
            lo, hi = max(offset, self._zero_starts[i]), min(end, self._zero_ends[i])
            if lo < hi:
                view[lo - offset:hi - offset] = bytes(hi - lo)
            i += 1
        j = bisect.bisect_left(self._data_keys, offset - LOG_SECTOR_SIZE + 1)
        while j < len(self._data_keys) and self._data_keys[j] < end:
            write = self._data[self._data_keys[j]]
            sector = self._sector(write, structure)
            lo, hi = max(offset, write.file_offset), min(end, write.file_offset + LOG_SECTOR_SIZE)
            view[lo - offset:hi - offset] = sector[lo - write.file_offset:hi - write.file_offset]
            j += 1

    def _sector(self, write: DataWrite, structure: str) -> bytes:
        middle = self.image.pread(write.data_sector_offset + 8, LOG_SECTOR_SIZE - 12,
                                  f"{structure} (log data)")
        return write.leading + middle + write.trailing


def _covered(ranges: list[tuple[int, int]], offset: int) -> bool:
    """Whether the sector at ``offset`` lies wholly inside one of the sorted, disjoint ``ranges``."""
    i = bisect.bisect_right(ranges, (offset, 1 << 80)) - 1
    return i >= 0 and ranges[i][0] <= offset and offset + LOG_SECTOR_SIZE <= ranges[i][1]


def _insert_range(ranges: list[tuple[int, int]], start: int, end: int) -> None:
    """Add ``[start, end)`` to the sorted, disjoint ``ranges``, merging what it touches."""
    i = bisect.bisect_left(ranges, (start, start))
    if i > 0 and ranges[i - 1][1] >= start:
        i -= 1
    j = i
    while j < len(ranges) and ranges[j][0] <= end:
        start = min(start, ranges[j][0])
        end = max(end, ranges[j][1])
        j += 1
    ranges[i:j] = [(start, end)]
