#!/usr/bin/env python3
"""Reference implementation of vhdtool's sparse digest (sparse-sha256-v1), standard library only.

Usage: python3 sparse_digest.py FILE [LENGTH]

Prints the sparse digest of the first LENGTH bytes of FILE (default: all of it). For a fixed VHD
file or a downloaded page blob, FILE is the whole file, footer included. Holes in a sparse file
are skipped with SEEK_DATA where the system has it, so the run costs what the data costs.
"""

import hashlib
import os
import sys

GRANULE = 4 * 1024 * 1024


def data_granules(fd, length):
    """Indices of granules that may hold data (all of them where SEEK_DATA is missing)."""
    count = -(-length // GRANULE)
    if not hasattr(os, "SEEK_DATA"):
        yield from range(count)
        return
    index = 0
    while index < count:
        try:
            data = os.lseek(fd, index * GRANULE, os.SEEK_DATA)
        except OSError:  # ENXIO: no data after this point
            return
        index = max(index, data // GRANULE)
        if index >= count:
            return
        yield index
        index += 1


def sparse_digest(path, length=None):
    fd = os.open(path, os.O_RDONLY)
    try:
        if length is None:
            length = os.fstat(fd).st_size
        top = hashlib.sha256(b"vhdtool-sparse-sha256-v1\n")
        top.update(length.to_bytes(8, "big"))
        top.update(GRANULE.to_bytes(8, "big"))
        for index in data_granules(fd, length):
            size = min(GRANULE, length - index * GRANULE)
            chunk = os.pread(fd, size, index * GRANULE)
            chunk += bytes(size - len(chunk))  # a file shorter than LENGTH reads as zeros past its end
            if chunk.count(0) == size:
                continue  # an all-zero granule contributes nothing
            top.update(index.to_bytes(8, "big"))
            top.update(hashlib.sha256(chunk).digest())
        return top.hexdigest()
    finally:
        os.close(fd)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__.strip().splitlines()[2])
    print(sparse_digest(sys.argv[1], int(sys.argv[2]) if len(sys.argv) == 3 else None))
