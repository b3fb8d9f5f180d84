"""Byte-level mutations of image files, applied to sparse copies, with optional checksum repair.

An image is held as its data extents (offset -> bytes), so a 64 MiB sparse fixture costs only the
bytes it holds; each case writes a fresh sparse copy and applies its operations in order. Operations
are plain tuples so that hypothesis can print them and a failing case can be written down:

- ``("write", offset, data)``: overwrite bytes (past the end extends the file);
- ``("flip", offset, bit)``: flip one bit;
- ``("truncate", size)`` / ``("extend", size)``: cut or grow the file;
- ``("vhd_sum", start, length, field)``: recompute a VHD ones' complement checksum over
  ``[start, start + length)`` stored big-endian at ``start + field``;
- ``("crc32c", start, length, field)``: recompute a VHDX CRC-32C stored little-endian at ``start + field``;
- ``("crc32", start, length, field)``: recompute a GPT CRC-32 stored little-endian at ``start + field``;
- ``("crc32_to", start, length, dest)``: the CRC-32 of ``[start, start + length)`` stored at ``dest``;
- ``("copy", src, dst, length)``: copy bytes inside the file.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import crc32c

Op = tuple  # type: ignore[type-arg]
CHUNK = 1 << 20


@dataclass(frozen=True)
class SparseImage:
    """A file's non-zero 64 KiB pieces and its size."""

    size: int
    pieces: tuple[tuple[int, bytes], ...]

    @classmethod
    def from_bytes(cls, data: bytes) -> SparseImage:
        pieces = []
        step = 65536
        zero = bytes(step)
        for at in range(0, len(data), step):
            part = data[at:at + step]
            if part != zero[:len(part)]:
                pieces.append((at, part))
        return cls(len(data), tuple(pieces))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> SparseImage:
        opener = gzip.open if os.fspath(path).endswith(".gz") else open
        with opener(path, "rb") as f:
            return cls.from_bytes(f.read())

    def write(self, path: str | os.PathLike[str]) -> None:
        with open(path, "wb") as f:
            for at, part in self.pieces:
                f.seek(at)
                f.write(part)
            f.truncate(self.size)

    def data_offsets(self) -> list[int]:
        return [at for at, _ in self.pieces]


def _read(f: BinaryIO, offset: int, length: int) -> bytes:
    f.seek(offset)
    return bytes(f.read(length)).ljust(length, b"\0")


def apply(path: str | os.PathLike[str], ops: Sequence[Op]) -> None:
    """Apply ``ops`` to the file at ``path`` in place."""
    with open(path, "r+b") as f:
        apply_to(f, ops)


def apply_bytes(data: bytes, ops: Sequence[Op]) -> bytes:
    """``data`` with ``ops`` applied."""
    buf = io.BytesIO(data)
    apply_to(buf, ops)
    return buf.getvalue()


def apply_to(f: BinaryIO, ops: Sequence[Op]) -> None:
    """Apply ``ops`` to an open, writable, seekable binary file."""
    for op in ops:
        kind = op[0]
        if kind == "write":
            _, offset, data = op
            f.seek(offset)
            f.write(data)
        elif kind == "flip":
            _, offset, bit = op
            byte = _read(f, offset, 1)[0] ^ (1 << bit)
            f.seek(offset)
            f.write(bytes([byte]))
        elif kind in ("truncate", "extend"):
            f.truncate(op[1])
        elif kind == "copy":
            _, src, dst, length = op
            data = _read(f, src, length)
            f.seek(dst)
            f.write(data)
        elif kind == "crc32_to":
            _, start, length, dest = op
            value = (zlib.crc32(_read(f, start, length)) & 0xFFFFFFFF).to_bytes(4, "little")
            f.seek(dest)
            f.write(value)
        elif kind in ("vhd_sum", "crc32c", "crc32"):
            _, start, length, field = op
            raw = bytearray(_read(f, start, length))
            raw[field:field + 4] = b"\0\0\0\0"
            if kind == "vhd_sum":
                value = ((~sum(raw)) & 0xFFFFFFFF).to_bytes(4, "big")
            elif kind == "crc32c":
                value = crc32c.crc32c(bytes(raw)).to_bytes(4, "little")
            else:
                value = (zlib.crc32(bytes(raw)) & 0xFFFFFFFF).to_bytes(4, "little")
            f.seek(start + field)
            f.write(value)
        else:
            raise ValueError(f"unknown mutation {op!r}")


def make_case(base: SparseImage, ops: Sequence[Op], dest: str | os.PathLike[str]) -> Path:
    """Write ``base`` to ``dest`` and apply ``ops``; returns the path."""
    base.write(dest)
    apply(dest, ops)
    return Path(dest)


def store_regression(path: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Keep a crashing input as ``dest`` (gzip'd, sparse-friendly since zeros compress to nothing)."""
    with open(path, "rb") as fin, open(dest, "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as fout:
        while chunk := fin.read(CHUNK):
            fout.write(chunk)
