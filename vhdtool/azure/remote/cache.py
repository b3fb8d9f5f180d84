"""The read-ahead cache of a remote byte source: fixed granules, least recently used out, memory flat.

Format and filesystem readers make many small reads (a footer, a header, an inode, a directory
block); each would be a request of its own. The cache turns them into few requests: a miss fetches
whole granules, and more of them ahead while reads keep running on sequentially (the read-ahead
window doubles on each sequential read, up to ``max_ahead``, and falls back to one granule on a
jump). At most ``capacity`` bytes of granules are held, whatever the disk size. This module only
keeps the books; the caller fetches.
"""

from __future__ import annotations

import collections
import threading

DEFAULT_GRANULE = 64 * 1024
DEFAULT_CAPACITY = 16 * 1024 * 1024
DEFAULT_MAX_AHEAD = 1024 * 1024


class GranuleCache:
    """Granules of ``granule`` bytes by index, at most ``capacity`` bytes of them, LRU evicted."""

    def __init__(self, granule: int = DEFAULT_GRANULE, capacity: int = DEFAULT_CAPACITY,
                 max_ahead: int = DEFAULT_MAX_AHEAD) -> None:
        if granule <= 0 or capacity < granule or max_ahead < granule:
            raise ValueError("need 0 < granule <= capacity and granule <= max_ahead")
        self.granule = granule
        self.max_granules = capacity // granule
        self.max_ahead = max_ahead
        self._items: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._last_end = -1
        self._ahead = granule
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, index: int) -> bytes | None:
        with self._lock:
            data = self._items.get(index)
            if data is not None:
                self._items.move_to_end(index)
                self.hits += 1
            else:
                self.misses += 1
            return data

    def put(self, index: int, data: bytes) -> None:
        with self._lock:
            self._items[index] = data
            self._items.move_to_end(index)
            while len(self._items) > self.max_granules:
                self._items.popitem(last=False)

    def window(self, offset: int, length: int) -> int:
        """Bytes to fetch from the granule holding ``offset`` for a read of ``length`` there.

        Sequential reads (starting where the previous one ended) double the read-ahead; any other
        read resets it to one granule.
        """
        with self._lock:
            if offset == self._last_end:
                self._ahead = min(self.max_ahead, self._ahead * 2)
            else:
                self._ahead = self.granule
            self._last_end = offset + length
            start = offset - offset % self.granule
            return max(self._ahead, offset + length - start)
