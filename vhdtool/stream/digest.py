"""The sparse digest: an integrity digest of a disk's bytes whose cost follows the data, not the size.

MD5 or SHA-256 of a whole disk must hash every zero of a 127 GiB disk holding 10 GiB. The sparse
digest instead cuts the bytes into fixed 4 MiB granules, hashes only the granules that hold a
non-zero byte, and binds them together with the total length:

    leaf(i)  = uint64_be(i) || SHA-256(granule i)            for every granule i with a non-zero byte
    digest   = SHA-256(b"vhdtool-sparse-sha256-v1\\n" || uint64_be(total length) || uint64_be(4 MiB)
                       || leaf(i0) || leaf(i1) || ...)        leaves in increasing i

The last granule is the remainder (shorter than 4 MiB when the length is not a multiple). The
digest depends on the bytes alone, never on how a format allocated them: a granule that a reader
allocated but that holds only zeros is skipped exactly like one known empty from metadata. Granules
are independent, so they can be hashed in any order and in parallel (a download hashes ranges as
they arrive), and a range known to be empty costs nothing to hash. ``docs/sparse-digest.md`` holds
the definition and a stand-alone reference script.
"""

from __future__ import annotations

import hashlib
import struct
import threading

from vhdtool.blockio.zeros import ZERO_MiB, is_zero, zero_pieces
from vhdtool.extents import Extent
from vhdtool.units import MiB

GRANULE = 4 * MiB
NAME = "sparse-sha256"
_DOMAIN = b"vhdtool-sparse-sha256-v1\n"
_U64 = struct.Struct(">Q")


class SparseDigest:
    """Accumulates the hashes of non-zero granules, in any order and from any thread."""

    def __init__(self, total_length: int) -> None:
        if total_length < 0:
            raise ValueError("negative length")
        self.total_length = total_length
        self._leaves: dict[int, bytes] = {}
        self._lock = threading.Lock()

    @property
    def granule_count(self) -> int:
        return -(-self.total_length // GRANULE)

    def granule_length(self, index: int) -> int:
        """The length of granule ``index`` (the last one may be short)."""
        return min(GRANULE, self.total_length - index * GRANULE)

    def add_granule(self, index: int, data: bytes | bytearray | memoryview) -> None:
        """Record granule ``index`` from its complete bytes; an all-zero granule is dropped."""
        if not 0 <= index < self.granule_count:
            raise ValueError(f"granule {index} outside a stream of {self.total_length} bytes")
        if len(data) != self.granule_length(index):
            raise ValueError(f"granule {index} has {len(data)} bytes, expected {self.granule_length(index)}")
        if is_zero(data):
            return
        leaf = hashlib.sha256(data).digest()
        with self._lock:
            self._leaves[index] = leaf

    def add_hashed(self, index: int, leaf: bytes) -> None:
        """Record the SHA-256 of a non-zero granule hashed elsewhere (e.g. incrementally)."""
        with self._lock:
            self._leaves[index] = leaf

    @property
    def nonzero_granules(self) -> int:
        return len(self._leaves)

    def hexdigest(self) -> str:
        """The digest as lowercase hex."""
        h = hashlib.sha256(_DOMAIN)
        h.update(_U64.pack(self.total_length))
        h.update(_U64.pack(GRANULE))
        for index in sorted(self._leaves):
            h.update(_U64.pack(index))
            h.update(self._leaves[index])
        return h.hexdigest()


class SparseDigestSink:
    """A pump sink computing the sparse digest of the stream: hashes only granules holding data.

    Data arrives in offset order in pieces of any size; each granule gets an incremental SHA-256
    only once a non-zero byte shows up in it (leading zeros are fed from a shared buffer then), so
    zero ranges, and allocated pieces that turn out to be zero, cost a zero scan at most.

    A sink may cover only the window ``[start, end)`` of the stream (``start`` on a granule
    boundary, ``end`` on one or at the end) and record ``into`` a digest shared with the sinks of
    other windows: that is how windows are hashed in parallel.
    """

    def __init__(self, total_length: int, *, start: int = 0, end: int | None = None,
                 into: SparseDigest | None = None) -> None:
        self.digest = into if into is not None else SparseDigest(total_length)
        if self.digest.total_length != total_length:
            raise ValueError("the shared digest is over another length")
        self.end = total_length if end is None else end
        if start % GRANULE or not 0 <= start <= self.end <= total_length or (
                self.end % GRANULE and self.end != total_length):
            raise ValueError(f"window [{start}, {self.end}) is not on granule boundaries")
        self.position = start
        self._granule = -1
        self._hash: hashlib._Hash | None = None
        self._granule_start = 0

    def _advance_to(self, offset: int) -> None:
        """Close the granules that end at or before ``offset``."""
        while self._granule >= 0 and offset >= self._granule_start + self.digest.granule_length(self._granule):
            self._close_granule()

    def _close_granule(self) -> None:
        if self._hash is not None:
            end = self._granule_start + self.digest.granule_length(self._granule)
            if self.position < end:
                _feed_zeros(self._hash, end - self.position)
            self.digest.add_hashed(self._granule, self._hash.digest())
        self._granule = -1
        self._hash = None

    def _expect(self, offset: int) -> None:
        if offset != self.position:
            raise ValueError(f"digest sink expected offset {self.position}, got {offset}")

    def data(self, offset: int, view: memoryview) -> None:
        self._expect(offset)
        position = offset
        end = offset + len(view)
        while position < end:
            index = position // GRANULE
            granule_start = index * GRANULE
            granule_end = granule_start + self.digest.granule_length(index)
            piece_end = min(end, granule_end)
            piece = view[position - offset:piece_end - offset]
            if self._granule != index:
                self._close_granule()
                self._granule, self._granule_start = index, granule_start
            if self._hash is None and not is_zero(piece):
                self._hash = _zero_prefix(position - granule_start)
            if self._hash is not None:
                self._hash.update(piece)
            position = piece_end
            self.position = position
            if position == granule_end:
                self._close_granule()

    def zeros(self, offset: int, length: int) -> None:
        self._expect(offset)
        end = offset + length
        if self._hash is not None:
            granule_end = self._granule_start + self.digest.granule_length(self._granule)
            n = min(end, granule_end) - offset
            _feed_zeros(self._hash, n)
            self.position = offset + n
            if self.position == granule_end:
                self._close_granule()
        self.position = end
        self._advance_to(end)

    def finish(self) -> None:
        if self.position != self.end:
            raise ValueError(f"digest sink stopped at byte {self.position}, not at {self.end}")
        self._close_granule()

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


def _feed_zeros(h: hashlib._Hash, length: int) -> None:
    for piece in zero_pieces(length):
        h.update(piece)


def granules_touched(extents: list[Extent]) -> list[int]:
    """Indices of the granules that an allocated extent overlaps: the only ones worth reading."""
    result: list[int] = []
    for e in extents:
        if not e.allocated or e.length == 0:
            continue
        first, last = e.offset // GRANULE, (e.end - 1) // GRANULE
        start = first if not result or result[-1] < first else result[-1] + 1
        result.extend(range(start, last + 1))
    return result


_PREFIX_STEP = 64 * 1024
_prefixes: list[hashlib._Hash] = []  # [k]: SHA-256 state after k × 64 KiB of zeros
_prefixes_lock = threading.Lock()


def _zero_prefix(length: int) -> hashlib._Hash:
    """A SHA-256 object that has hashed ``length`` zero bytes.

    A granule's leading zeros are the same bytes from the same initial state every time, so the
    states after whole 64 KiB steps are kept (64 of them cover a granule: a few KiB) and copied;
    only the remainder is hashed. Scattered data leaves most granules zero before their first
    non-zero byte, which then costs nothing.
    """
    steps, rest = divmod(length, _PREFIX_STEP)
    with _prefixes_lock:
        if not _prefixes:
            _prefixes.append(hashlib.sha256())
        while len(_prefixes) <= steps:
            following = _prefixes[-1].copy()
            following.update(ZERO_MiB[:_PREFIX_STEP])
            _prefixes.append(following)
        h = _prefixes[steps].copy()
    if rest:
        _feed_zeros(h, rest)
    return h
