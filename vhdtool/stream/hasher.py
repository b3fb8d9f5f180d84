"""Digests of the logical output bytes, computed in the same pass as the write (no second read).

Zero ranges known from metadata are fed from one shared, small zero buffer, so hashing a sparse
127 GiB disk allocates no more memory than hashing a small one (it still costs CPU per byte:
MD5 and SHA-256 have no shortcut for runs of zeros).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from vhdtool.blockio.zeros import zero_pieces
from vhdtool.errors import UsageError

SUPPORTED = ("md5", "sha1", "sha256", "sha512")


def parse_algorithms(text: str, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """``"md5,sha256"`` -> ``("md5", "sha256")``; unknown names raise :class:`UsageError`.

    ``extra`` names digests the caller computes itself (e.g. ``"sparse-sha256"``), accepted as given.
    """
    names: list[str] = []
    for part in text.split(","):
        given = part.strip().lower()
        name = given if given in extra else given.replace("-", "")
        if not name:
            continue
        if name not in SUPPORTED and name not in extra:
            raise UsageError(f"unknown hash {part.strip()!r}; choose from {', '.join((*extra, *SUPPORTED))}")
        if name not in names:
            names.append(name)
    return tuple(names)


class HashSink:
    """A :class:`~vhdtool.stream.pump.Sink` that hashes every byte of the stream, in order."""

    def __init__(self, algorithms: Iterable[str]) -> None:
        names = list(dict.fromkeys(algorithms))
        for name in names:
            if name not in SUPPORTED:
                raise UsageError(f"unknown hash {name!r}; choose from {', '.join(SUPPORTED)}")
        # usedforsecurity=False: MD5 here is an integrity check (Azure's Content-MD5), and
        # FIPS-mode Pythons refuse MD5 without it.
        self._hashes = {name: hashlib.new(name, usedforsecurity=False) for name in names}
        self.position = 0

    def _expect(self, offset: int) -> None:
        # A digest is only meaningful over the bytes in order; a gap is a caller bug.
        if offset != self.position:
            raise ValueError(f"hash sink expected offset {self.position}, got {offset}")

    def data(self, offset: int, view: memoryview) -> None:
        self._expect(offset)
        for h in self._hashes.values():
            h.update(view)
        self.position += len(view)

    def zeros(self, offset: int, length: int) -> None:
        self._expect(offset)
        for piece in zero_pieces(length):
            for h in self._hashes.values():
                h.update(piece)
        self.position += length

    def finish(self) -> None:
        """Nothing to flush: the digests are ready."""

    def digests(self) -> dict[str, str]:
        """Hex digests by algorithm name, in the order asked for."""
        return {name: h.hexdigest() for name, h in self._hashes.items()}
