"""No header field drives an allocation larger than the file justifies (issue 7), under a hard cap.

The structured cases run in a child process whose address space is capped (RLIMIT_AS), so an
allocation sized from a damaged field fails loudly as a MemoryError crash instead of slowing the
machine; plus the regression for the one such bug the campaign found (an NTFS MFT record size of
2**57 read through :class:`vhdtool.disk.base.DiskReader`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vhdtool.disk.base import DiskReader
from vhdtool.formats.open import open_image
from vhdtool.formats.raw import RawDisk

pytestmark = pytest.mark.slow  # left out of scripts/test.sh --fast

ROOT = Path(__file__).resolve().parents[2]


def test_campaign_under_memory_cap(tmp_path: Path) -> None:
    """Damaged VHD / VHDX / partition tables with every entry point, in 1.5 GiB of address space."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fuzz_campaign.py"), "--examples", "150", "--batch", "30",
         "--targets", "vhd,vhdx,tables", "--seed", "20261123", "--max-memory", "1536M",
         "--keep", str(tmp_path / "crashes")],
        capture_output=True, text=True, timeout=300)
    assert "failures: 0" in proc.stdout, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0
    assert "examples run: " in proc.stdout


def test_disk_reader_read_is_clipped_to_the_volume(tmp_path: Path) -> None:
    """``read(2**57)`` near the end of a volume allocates only what is left (was: MemoryError)."""
    image = tmp_path / "disk.raw"
    image.write_bytes(bytes(range(256)) * 64)
    with open_image(image) as disk:
        assert isinstance(disk, RawDisk)
        reader = DiskReader(disk, 4096, 8192)
        reader.seek(8000)
        assert reader.read(1 << 57) == (bytes(range(256)) * 64)[4096 + 8000:4096 + 8192]
        assert reader.read(1 << 57) == b""
        reader.seek(1 << 60)
        assert reader.read(1 << 57) == b""
        reader.seek(0)
        assert reader.read() == (bytes(range(256)) * 64)[4096:4096 + 8192]
        reader.seek(10)
        assert reader.read(5) == (bytes(range(256)) * 64)[4106:4111]


@pytest.mark.parametrize("value", [128, 199, 0x80 | 57])
def test_ntfs_absurd_mft_record_size(tmp_path: Path, value: int) -> None:
    """Regression (campaign seed 1): clusters-per-MFT-record byte set so the record size is 2**57 or more."""
    from support.strategies import _build_table, make_volumes

    volumes = make_volumes(tmp_path / "vol")
    if "ntfs" not in volumes.images:
        pytest.skip("mkntfs / wimtools not installed")
    path, regions, _ = _build_table(tmp_path, {"scheme": "gpt", "filesystems": ("ntfs",)}, volumes)
    with open(path, "r+b") as f:
        f.seek(regions["part_boot"] + 64)
        f.write(bytes([value]))
    from vhdtool.inspect.report import inspect_disk

    with open_image(path) as disk:
        report = inspect_disk(disk)  # must not raise MemoryError
    assert report.volumes
