"""The stored fixture files (``fixtures/``, gzip'd), unpacked sparse for a test."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"


def unpack_fixture(name: str, dest_dir: Path) -> Path:
    """Copy ``fixtures/NAME`` (or ``NAME.gz``, decompressed, kept sparse) into ``dest_dir``."""
    src = FIXTURES / name
    dest = dest_dir / Path(name).name.removesuffix(".gz")
    if src.exists() and not name.endswith(".gz"):
        shutil.copyfile(src, dest)
        return dest
    gz = src if name.endswith(".gz") else src.with_name(src.name + ".gz")
    zero = bytes(1 << 20)
    with gzip.open(gz, "rb") as fin, open(dest, "wb") as fout:
        while chunk := fin.read(1 << 20):
            if chunk == zero[: len(chunk)]:
                fout.seek(len(chunk), 1)  # keep the copy sparse, like the original
            else:
                fout.write(chunk)
        fout.truncate()
    return dest
