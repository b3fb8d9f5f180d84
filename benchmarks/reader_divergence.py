"""How qemu-img and libvhdi read the images of tests/support/divergences.py, beside vhdtool: the columns of the
table in docs/formats.md. ``python benchmarks/reader_divergence.py [--markdown]``."""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyvhdi  # noqa: E402
from support.divergences import CONDITIONS  # noqa: E402
from support.oracles import libvhdi_chain  # noqa: E402

from vhdtool import open_image  # noqa: E402
from vhdtool.errors import VhdtoolError  # noqa: E402

CHUNK = 16 * 1024 * 1024
Digest = tuple[int, str]  # (size, sha256): images reach 4 GiB, so readers are compared by digest


def _digest(size: int, read: Callable[[int, int], bytes]) -> Digest:
    h = hashlib.sha256()
    for offset in range(0, size, CHUNK):
        h.update(read(offset, min(CHUNK, size - offset)))
    return size, h.hexdigest()


def vhdtool_read(path: Path) -> tuple[str, Digest | None]:
    try:
        with open_image(path) as disk:
            digest = _digest(disk.virtual_size, disk.read)
            return ("read, warning" if disk.warnings else "read"), digest
    except VhdtoolError as err:
        return f"refused: {err}", None


def compare(theirs: Digest, ours: Digest | None) -> str:
    if ours is None:
        return "reads"
    if theirs == ours:
        return "reads the same"
    if theirs[0] != ours[0]:
        return f"reads {theirs[0]} bytes, not {ours[0]}"
    return "reads other bytes"


def qemu_read(path: Path, fmt: str, ours: Digest | None, folder: Path) -> str:
    out = folder / "qemu.raw"
    proc = subprocess.run(["qemu-img", "convert", "-f", "vpc" if fmt == "vhd" else "vhdx", "-O", "raw",
                           str(path), str(out)], capture_output=True, text=True)
    if proc.returncode:
        return "refuses: " + proc.stderr.strip().splitlines()[-1].split(": ", 1)[-1]
    with open(out, "rb") as f:
        return compare(_digest(out.stat().st_size, lambda offset, n: os.pread(f.fileno(), n, offset)), ours)


def libvhdi_read(chain: list[Path], ours: Digest | None) -> str:
    try:
        with libvhdi_chain(chain) as top:
            return compare(_digest(top.get_media_size(), lambda offset, n: top.read_buffer_at_offset(n, offset)),
                           ours)
    except OSError as err:
        return "refuses: " + str(err).split(". ")[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--markdown", action="store_true", help="rows for the docs table")
    args = parser.parse_args()
    version = subprocess.run(["qemu-img", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    print(f"{version}; libvhdi {pyvhdi.get_version()}")
    for condition in CONDITIONS:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            chain = condition.build(folder)
            ours, data = vhdtool_read(chain[-1])
            qemu = qemu_read(chain[-1], condition.fmt, data, folder)
            lib = libvhdi_read(chain, data)
        if args.markdown:
            print(f"| {condition.text} | {ours.split(':')[0]} | {qemu} | {lib} |")
        else:
            print(f"{condition.key}\n  vhdtool: {ours}\n  qemu-img: {qemu}\n  libvhdi: {lib}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
