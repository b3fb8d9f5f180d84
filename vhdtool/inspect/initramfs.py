"""Which files an initramfs holds: cpio ``newc`` archives, compressed or not, read as a stream.

The kernel unpacks an initramfs as a sequence of cpio archives (``070701``/``070702``), each either plain
or compressed (gzip, xz, lzma, bzip2, zstd, lz4), with zero padding between them: an uncompressed
early-microcode archive usually comes first, the compressed main archive after it (kernel
``init/initramfs.c``, Documentation/driver-api/early-userspace/buffer-format.rst).

Bounded by design: input is read in 1 MiB pieces, every decompressor is asked for at most 1 MiB at a
time and the whole decompressed output is capped, so an archive that expands without end (a zip bomb)
costs time up to the cap and never memory; file contents are skipped, only names are kept, and the
walk stops as soon as every wanted name is seen. zstd and lz4 need the optional ``zstandard`` and
``lz4`` packages (``vhdtool[inspect]``); without them such an archive is reported as unreadable.
"""

from __future__ import annotations

import bz2
import lzma
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any

CHUNK = 1 << 20
MAX_INPUT = 512 << 20  # compressed bytes read from the file at most
MAX_OUTPUT = 1 << 30  # decompressed bytes produced at most (a real one is 50-300 MiB)
MAX_NAME = 4096  # PATH_MAX: a longer name is damage
MAX_ENTRIES = 200_000
CPIO_MAGICS = (b"070701", b"070702")
CPIO_HEADER = 110
TRAILER = "TRAILER!!!"
LZ4_LEGACY_MAGIC = 0x184C2102
LZ4_LEGACY_BLOCK = 8 << 20  # the legacy format's fixed uncompressed block size

# Leading bytes of each compressed format the kernel can unpack (lib/decompress.c).
MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\x1f\x9e", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x02\x21\x4c\x18", "lz4"),  # legacy frame, what `lz4 -l` and the kernel build write
    (b"\x04\x22\x4d\x18", "lz4"),  # frame format
    (b"BZh", "bzip2"),
    (b"\x5d\x00\x00", "lzma"),
    (b"\x89LZO", "lzo"),
)


class InitramfsError(Exception):
    """The archive cannot be read further (damaged, unsupported compression, over a bound)."""


@dataclass(frozen=True)
class InitramfsScan:
    """What one walk over an initramfs found."""

    formats: tuple[str, ...]  # per archive segment, in order: "cpio", "gzip+cpio", "zstd+cpio"...
    found: tuple[str, ...]  # the wanted names seen (see :func:`scan_initramfs`)
    entries: int  # cpio entries walked
    complete: bool  # every segment was read to its end (False: stopped early or failed)
    problem: str | None  # why the walk stopped before the end, if it did not stop by choice


class _Source:
    """A byte stream with push-back, counting what it takes from its input."""

    def __init__(self, read: Callable[[int], bytes], limit: int, what: str) -> None:
        self._read = read
        self._buffer = bytearray()
        self.limit = limit
        self.taken = 0
        self.what = what
        self.eof = False

    def _fill(self, want: int) -> None:
        while len(self._buffer) < want and not self.eof:
            if self.taken >= self.limit:
                raise InitramfsError(f"{self.what} exceeds the {self.limit >> 20} MiB bound")
            piece = self._read(min(CHUNK, self.limit - self.taken))
            if not piece:
                self.eof = True
                break
            self.taken += len(piece)
            self._buffer += piece

    def peek(self, n: int) -> bytes:
        self._fill(n)
        return bytes(self._buffer[:n])

    def take(self, n: int) -> bytes:
        self._fill(n)
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    def skip(self, n: int) -> int:
        """Drop ``n`` bytes (fewer at the end); returns how many were dropped."""
        dropped = 0
        while dropped < n:
            if not self._buffer:
                self._fill(1)
                if not self._buffer:
                    break
            step = min(n - dropped, len(self._buffer))
            del self._buffer[:step]
            dropped += step
        return dropped

    def skip_zeros(self) -> int:
        """Drop NUL padding; returns how many bytes were dropped."""
        dropped = 0
        while True:
            self._fill(1)
            if not self._buffer:
                return dropped
            run = len(self._buffer) - len(self._buffer.lstrip(b"\0"))
            if run == 0:
                return dropped
            del self._buffer[:run]
            dropped += run

    def unread(self, data: bytes) -> None:
        self._buffer[:0] = data


def _optional(module: str) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        return None


class _Decoder:
    """Incremental decompression of one compressed segment, at most ``CHUNK`` output per call."""

    def __init__(self, codec: str, source: _Source, budget: list[int]) -> None:
        self.codec = codec
        self.source = source
        self.budget = budget  # [bytes of output left], shared by all segments
        self.done = False
        self._pending = b""  # input handed to the decompressor but not consumed yet
        self._obj: Any = None
        self._lz4_left = b""  # legacy lz4: output of the current block not yet returned
        if codec == "gzip":
            self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif codec == "xz":
            self._obj = lzma.LZMADecompressor(lzma.FORMAT_XZ)
        elif codec == "lzma":
            self._obj = lzma.LZMADecompressor(lzma.FORMAT_ALONE)
        elif codec == "bzip2":
            self._obj = bz2.BZ2Decompressor()
        elif codec == "zstd":
            zstandard = _optional("zstandard")
            if zstandard is None:
                raise InitramfsError("zstd-compressed: reading it needs the optional extra: "
                                     "pip install 'vhdtool[inspect]'")
            self._zstd = zstandard.ZstdDecompressor()
            self._obj = self._zstd
        elif codec == "lz4":
            self._lz4 = _optional("lz4.block")
            self._lz4_frame = _optional("lz4.frame")
            if self._lz4 is None or self._lz4_frame is None:
                raise InitramfsError("lz4-compressed: reading it needs the optional extra: "
                                     "pip install 'vhdtool[inspect]'")
            magic = struct.unpack("<I", source.peek(4))[0]
            if magic == LZ4_LEGACY_MAGIC:
                self.codec = "lz4-legacy"
                source.skip(4)
            else:
                self._obj = self._lz4_frame.LZ4FrameDecompressor()
        else:
            raise InitramfsError(f"{codec}-compressed: not supported")

    def _charge(self, data: bytes) -> bytes:
        self.budget[0] -= len(data)
        if self.budget[0] < 0:
            raise InitramfsError(f"decompresses to more than {MAX_OUTPUT >> 20} MiB: not read further")
        return data

    def read(self) -> bytes:
        """The next piece of output (at most about ``CHUNK``); ``b""`` once the segment has ended."""
        if self.done:
            return b""
        if self.codec == "lz4-legacy":
            return self._charge(self._read_lz4_legacy())
        if self.codec == "zstd":
            return self._charge(self._read_zstd())
        if self.codec == "gzip":
            return self._charge(self._read_gzip())
        return self._charge(self._read_other())

    def _read_gzip(self) -> bytes:
        while True:
            if not self._pending:
                self._pending = self.source.take(CHUNK)
                if not self._pending:
                    raise InitramfsError("gzip stream ends early (truncated archive)")
            try:
                data = self._obj.decompress(self._pending, CHUNK)
            except zlib.error as err:
                raise InitramfsError(f"gzip stream damaged: {err}") from err
            self._pending = self._obj.unconsumed_tail
            if self._obj.eof:
                self.done = True
                self.source.unread(self._pending + self._obj.unused_data)
                self._pending = b""
                return bytes(data)
            if data:
                return bytes(data)

    def _read_other(self) -> bytes:
        """xz, lzma, bzip2 and the lz4 frame format: new input only once the decompressor asks for it."""
        while True:
            piece = b""
            if self._obj.needs_input:
                piece = self.source.take(CHUNK)
                if not piece:
                    raise InitramfsError(f"{self.codec} stream ends early (truncated archive)")
            try:
                data = self._obj.decompress(piece, CHUNK)
            except Exception as err:  # LZMAError, OSError, EOFError, lz4's RuntimeError
                raise InitramfsError(f"{self.codec} stream damaged: {err}") from err
            if self._obj.eof:
                self.done = True
                self.source.unread(self._obj.unused_data or b"")
                return bytes(data)
            if data:
                return bytes(data)

    def _read_zstd(self) -> bytes:
        # zstandard's decompressobj has no output bound per call; read_to_iter has (write_size), but
        # reads its input ahead: it is given exactly one frame, whose end _ZstdFrame finds.
        if self._obj is not None and not hasattr(self, "_zstd_iter"):
            self._zstd_iter = self._zstd.read_to_iter(_ZstdFrame(self.source), read_size=64 * 1024,
                                                      write_size=CHUNK)
        try:
            return bytes(next(self._zstd_iter))
        except StopIteration:
            self.done = True
            return b""
        except InitramfsError:
            raise
        except Exception as err:  # zstandard.ZstdError
            raise InitramfsError(f"zstd stream damaged: {err}") from err

    def _read_lz4_legacy(self) -> bytes:
        while True:
            head = self.source.take(4)
            if len(head) < 4:
                self.done = True
                return b""
            (size,) = struct.unpack("<I", head)
            if size == LZ4_LEGACY_MAGIC:  # a following legacy stream: the same segment goes on
                continue
            if size == 0 or size > LZ4_LEGACY_BLOCK + LZ4_LEGACY_BLOCK // 255 + 16:
                self.done = True  # not a block size: the segment has ended, hand the bytes back
                self.source.unread(head)
                return b""
            block = self.source.take(size)
            if len(block) < size:
                raise InitramfsError("lz4 stream ends early (truncated archive)")
            try:
                return bytes(self._lz4.decompress(block, uncompressed_size=LZ4_LEGACY_BLOCK))
            except Exception as err:  # lz4.block.LZ4BlockError
                raise InitramfsError(f"lz4 block damaged: {err}") from err


class _ZstdFrame:
    """Hands out the bytes of exactly one zstd frame, found by walking its block headers (RFC 8878 §3.1.1)."""

    def __init__(self, source: _Source) -> None:
        self.source = source
        self.left = 0  # bytes to pass on before the next structure
        self.state = "header"
        self.checksum = False

    def _structure(self) -> None:
        if self.state == "header":
            head = self.source.peek(6)
            if len(head) < 6:
                raise InitramfsError("zstd frame header cut short")
            descriptor = head[4]
            single = descriptor >> 5 & 1
            self.checksum = bool(descriptor >> 2 & 1)
            content_size = (1 if single else 0, 2, 4, 8)[descriptor >> 6]
            self.left = 5 + (0 if single else 1) + (0, 1, 2, 4)[descriptor & 3] + content_size
            self.state = "block"
        elif self.state == "block":
            head = self.source.peek(3)
            if len(head) < 3:
                raise InitramfsError("zstd block header cut short")
            value = int.from_bytes(head, "little")
            kind, size = value >> 1 & 3, value >> 3
            if kind == 3:
                raise InitramfsError("zstd block of the reserved type")
            self.left = 3 + (1 if kind == 1 else size)
            if value & 1:
                self.state = "checksum"
        elif self.state == "checksum":
            self.left = 4 if self.checksum else 0
            self.state = "end"

    def read(self, n: int = -1) -> bytes:
        n = CHUNK if n is None or n < 0 else n
        out = bytearray()
        while len(out) < n:
            if self.left:
                piece = self.source.take(min(self.left, n - len(out)))
                if not piece:
                    raise InitramfsError("zstd stream ends early (truncated archive)")
                out += piece
                self.left -= len(piece)
            elif self.state == "end":
                break
            else:
                self._structure()
        return bytes(out)


def _detect(head: bytes) -> str | None:
    for magic, codec in MAGICS:
        if head.startswith(magic):
            return codec
    return None


class _Walk:
    """State shared by the segments of one initramfs."""

    def __init__(self, wanted: Callable[[str], str | None], want_all: frozenset[str]) -> None:
        self.wanted = wanted
        self.want_all = want_all
        self.found: list[str] = []
        self.entries = 0

    @property
    def satisfied(self) -> bool:
        return bool(self.want_all) and self.want_all <= set(self.found)

    def cpio(self, src: _Source) -> bool:
        """Walk cpio archives from ``src`` until its end; ``True`` if stopped because all was found."""
        while True:
            src.skip_zeros()
            head = src.peek(CPIO_HEADER)
            if not head:
                return False
            if head[:6] not in CPIO_MAGICS:
                if _detect(head) is not None:  # a compressed archive follows the plain one
                    raise _Nested()
                raise InitramfsError(f"no cpio header (found {head[:6]!r})")
            if len(head) < CPIO_HEADER:
                raise InitramfsError("cpio header cut short")
            src.skip(CPIO_HEADER)
            try:
                fields = [int(head[6 + 8 * i: 14 + 8 * i], 16) for i in range(13)]
            except ValueError as err:
                raise InitramfsError("cpio header has non-hex fields") from err
            file_size, name_size = fields[6], fields[11]
            if not 0 < name_size <= MAX_NAME:
                raise InitramfsError(f"cpio name size {name_size} out of range")
            raw_name = src.take(name_size)
            if len(raw_name) < name_size:
                raise InitramfsError("cpio name cut short")
            src.skip((-(CPIO_HEADER + name_size)) % 4)
            name = raw_name.rstrip(b"\0").decode("utf-8", "replace")
            if name == TRAILER:
                src.skip((-file_size) % 4)
                continue  # another archive may follow (after padding)
            self.entries += 1
            if self.entries > MAX_ENTRIES:
                raise InitramfsError(f"more than {MAX_ENTRIES} cpio entries")
            hit = self.wanted(name)
            if hit is not None and hit not in self.found:
                self.found.append(hit)
                if self.satisfied:
                    return True
            padded = file_size + (-file_size) % 4
            if src.skip(padded) < padded:
                raise InitramfsError(f"cpio data of {name!r} cut short")


class _Nested(Exception):
    """A compressed stream starts where a cpio header was expected."""


def _pieces(decoder: _Decoder) -> Callable[[int], bytes]:
    """A read function over a decoder's output (it hands out what it decoded, whatever size is asked)."""

    def read(_size: int) -> bytes:
        return decoder.read()

    return read


def scan_initramfs(
    stream: IO[bytes],
    wanted: Callable[[str], str | None],
    want_all: Iterable[str] = (),
    max_input: int = MAX_INPUT,
    max_output: int = MAX_OUTPUT,
) -> InitramfsScan:
    """Walk the initramfs in ``stream`` and collect ``wanted(name)`` of every entry where it is not ``None``.

    The walk stops once every name of ``want_all`` was collected (unless ``want_all`` is empty). Never
    raises for bad content: a damaged or over-bound archive ends the walk with ``problem`` set.
    """
    walk = _Walk(wanted, frozenset(want_all))
    raw = _Source(stream.read, max_input, "the initramfs file")
    budget = [max_output]
    formats: list[str] = []
    problem: str | None = None
    stopped = False
    try:
        while not stopped:
            raw.skip_zeros()
            head = raw.peek(8)
            if not head:
                break
            if head[:6] in CPIO_MAGICS:
                formats.append("cpio")
                try:
                    stopped = walk.cpio(raw)
                except _Nested:
                    continue
                continue
            codec = _detect(head)
            if codec is None:
                raise InitramfsError(f"neither cpio nor a known compression (starts {head[:6].hex()})")
            decoder = _Decoder(codec, raw, budget)
            formats.append(f"{decoder.codec}+cpio")
            inner = _Source(_pieces(decoder), max_output, f"the {codec} archive")
            try:
                stopped = walk.cpio(inner)
            except _Nested:
                raise InitramfsError(f"a compressed archive inside the {codec} archive") from None
    except InitramfsError as err:
        problem = str(err)
    except OSError as err:
        problem = f"read failed: {err}"
    return InitramfsScan(tuple(formats), tuple(walk.found), walk.entries, not stopped and problem is None,
                         problem)
