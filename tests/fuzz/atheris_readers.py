"""Coverage-guided fuzzing of the VHD and VHDX readers with atheris (optional: ``pip install atheris``).

The fuzz input is read as patches onto valid base images (so that coverage-guided search starts past
the signatures): byte 0 picks the base (dynamic VHD, differencing VHD, fixed VHD, VHDX, VHDX with a
pending log), the rest is a list of ``(offset: u32, length: u8, bytes)`` patches, offsets taken modulo
the metadata area. Each input goes through open, extents, info and two reads; anything but success or a
VhdtoolError is reported by atheris as a crash (with the input saved as crash-*).

    python tests/fuzz/atheris_readers.py -max_total_time=600 -rss_limit_mb=3072
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
for entry in (str(HERE.parent), str(HERE.parent.parent)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

import atheris  # noqa: E402

with atheris.instrument_imports():
    import vhdtool.formats.parent  # noqa: F401
    import vhdtool.formats.vhd.footer  # noqa: F401
    import vhdtool.formats.vhd.reader  # noqa: F401
    import vhdtool.formats.vhdx.log  # noqa: F401
    import vhdtool.formats.vhdx.reader  # noqa: F401
    from vhdtool.errors import VhdtoolError
    from vhdtool.formats.open import open_image

from support.strategies import Case, _build_vhd, _build_vhdx  # noqa: E402

FOLDER = Path(tempfile.mkdtemp(prefix="vhdtool-atheris-"))


def _bases() -> list[tuple[bytes, int, str]]:
    """(file bytes, metadata span patched, suffix) of each base image, plus their parents on disk."""
    out: list[tuple[bytes, int, str]] = []
    vhd = {"size": 8 * 4096, "block_size": 4096, "seed": 1, "sectors": 6, "empty": [3], "kinds": ("W2ru",),
           "extra_locators": (), "parent_name": "parent.vhd"}
    for kind in ("dynamic", "differencing", "fixed"):
        folder = FOLDER / f"vhd-{kind}"
        folder.mkdir()
        path = Case("vhd", {**vhd, "type": kind}, (), _build_vhd).build(folder)
        data = path.read_bytes()
        out.append((data, len(data), str(folder / "child.vhd")))
    vhdx = {"size": 4 << 20, "block_size": 1 << 20, "sector": 512, "seed": 2,
            "blocks": ((0, 6), (1, 6), (2, 7), (3, 2)), "parent": True, "relative": "parent.vhdx", "extra_keys": ()}
    for log in (0, 2):
        folder = FOLDER / f"vhdx-{log}"
        folder.mkdir()
        path = Case("vhdx", {**vhdx, "log": log}, (), _build_vhdx).build(folder)
        data = path.read_bytes()
        out.append((data, len(data), str(folder / "child.vhdx")))
    return out


BASES = _bases()


def one_input(raw: bytes) -> None:
    if not raw:
        return
    data, span, path = BASES[raw[0] % len(BASES)]
    buf = bytearray(data)
    position = 1
    while position + 5 <= len(raw):
        offset, length = struct.unpack_from("<IB", raw, position)
        position += 5
        patch = raw[position:position + length]
        position += length
        at = offset % span
        buf[at:at + len(patch)] = patch
    work = path + ".fuzz"
    with open(work, "wb") as f:
        f.write(buf)
    os.replace(work, path + ".case" + os.path.splitext(path)[1])
    try:
        with open_image(path + ".case" + os.path.splitext(path)[1]) as disk:
            disk.extents()
            disk.info()
            if disk.virtual_size:
                disk.read(0, min(disk.virtual_size, 1 << 20))
                disk.read(max(0, disk.virtual_size - 4096), 4096)
    except VhdtoolError:
        pass


def main() -> None:
    # The differencing bases name "parent.*" beside them: the case file is written there too.
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
