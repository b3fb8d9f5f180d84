"""Independent tools the tests hold vhdtool's results against: qemu-img, libvhdi and the published digest script."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import pyvhdi

from support.fixture_files import ROOT

REFERENCE_DIGEST = ROOT / "docs" / "scripts" / "sparse_digest.py"


def qemu_img(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``qemu-img`` and fail the test with its stderr if it fails."""
    proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"qemu-img {' '.join(args)} failed: {proc.stderr}")
    return proc


def qemu_raw_bytes(path: Path, tmp_path: Path, fmt: str | None = None) -> bytes:
    """The logical bytes of ``path`` as qemu-img reads them (``convert -O raw``)."""
    out = tmp_path / (path.name + ".oracle.raw")
    args = ["convert"] + (["-f", fmt] if fmt else []) + ["-O", "raw", str(path), str(out)]
    qemu_img(*args)
    return out.read_bytes()


@contextmanager
def libvhdi_chain(chain: Sequence[Path]) -> Iterator[Any]:
    """libvhdi (pyvhdi) with every file of ``chain`` (base first) open and each child's parent attached:
    yields the last one's ``pyvhdi.file``. A refused image raises pyvhdi's ``OSError``."""
    files: list[Any] = []
    try:
        for path in chain:
            f = pyvhdi.file()
            f.open(str(path))
            files.append(f)
        for child, parent in zip(files[1:], files, strict=False):
            child.set_parent(parent)
        yield files[-1]
    finally:
        for f in reversed(files):
            f.close()


def reference_sparse_digest(path: Path, length: int | None = None) -> str:
    """The sparse digest of a file as the published stand-alone script computes it (run as a program)."""
    args = [sys.executable, str(REFERENCE_DIGEST), str(path)] + ([] if length is None else [str(length)])
    proc = subprocess.run(args, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def reference_sparse_digest_of_bytes(data: bytes) -> str:
    """The reference script's digest of ``data`` (written to a sparse temporary file first)."""
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        zero = bytes(1 << 20)
        for i in range(0, len(data), 1 << 20):
            chunk = data[i:i + (1 << 20)]
            if chunk == zero[:len(chunk)]:
                f.seek(len(chunk), 1)
            else:
                f.write(chunk)
        f.truncate(len(data))
        f.flush()
        return reference_sparse_digest(Path(f.name))
