"""Shared test helpers: fixture files (stored gzip'd) and independent oracle tools."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


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


@pytest.fixture
def fixture_file(tmp_path: Path):  # type: ignore[no-untyped-def]
    """``fixture_file("vhd/dynamic.vhd")`` -> a fresh, writable copy of that fixture."""
    return lambda name: unpack_fixture(name, tmp_path)


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


@pytest.fixture
def sample(tmp_path: Path) -> dict[str, Path]:
    """The sample set of ``fixtures/sample`` (a generalized Linux OS disk as VHDX, a data disk as VHD)."""
    src = tmp_path / "src"
    src.mkdir()
    return {"os": unpack_fixture("sample/linux-os.vhdx.gz", src),
            "data": unpack_fixture("sample/data.vhd.gz", src)}


REFERENCE_DIGEST = Path(__file__).resolve().parent.parent / "docs" / "scripts" / "sparse_digest.py"


def reference_sparse_digest(path: Path, length: int | None = None) -> str:
    """The sparse digest of a file as the published stand-alone script computes it (run as a program)."""
    import sys

    args = [sys.executable, str(REFERENCE_DIGEST), str(path)] + ([] if length is None else [str(length)])
    proc = subprocess.run(args, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def reference_sparse_digest_of_bytes(data: bytes) -> str:
    """The reference script's digest of ``data`` (written to a sparse temporary file first)."""
    import tempfile

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
