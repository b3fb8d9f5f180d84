"""Format sniffing: foreign formats made by real tools are refused by name, with advice."""

from __future__ import annotations

import gzip
import lzma
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from vhdtool import UnsupportedImageError, open_image
from vhdtool.cli import main


@pytest.mark.parametrize(("fmt", "words"), [
    ("qcow2", "qcow2"),
    ("vmdk", "VMDK"),
    ("vdi", "VDI"),
])
def test_qemu_made_foreign_images_are_refused_by_name(tmp_path: Path, fmt: str, words: str) -> None:
    img = tmp_path / f"disk.{fmt}"
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(img), "8M"], check=True)
    with pytest.raises(UnsupportedImageError, match=words):
        open_image(img)


def test_compressed_files_are_refused_with_the_decompress_command(tmp_path: Path) -> None:
    payload = bytes(4096) + b"disk"
    gz = tmp_path / "disk.vhd.gz"
    gz.write_bytes(gzip.compress(payload))
    xz = tmp_path / "disk.vhd.xz"
    xz.write_bytes(lzma.compress(payload))
    with pytest.raises(UnsupportedImageError, match="gzip -dk"):
        open_image(gz)
    with pytest.raises(UnsupportedImageError, match="xz -dk"):
        open_image(xz)


def test_cli_reports_a_foreign_format_in_one_line(tmp_path: Path) -> None:
    img = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "8M"], check=True)
    proc = subprocess.run([sys.executable, "-m", "vhdtool", "info", str(img)], capture_output=True, text=True)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "qcow2" in lines[0] and "Traceback" not in proc.stderr


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["info", str(tmp_path / "nope.vhd")])
    assert result.exit_code != 0
    proc = subprocess.run([sys.executable, "-m", "vhdtool", "info", str(tmp_path / "nope.vhd")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "nope.vhd" in proc.stderr


def test_info_json_on_a_raw_image(tmp_path: Path) -> None:
    import json
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(10 * 1024 * 1024 + 512)
        f.seek(4096)
        f.write(b"x" * 4096)
    proc = subprocess.run([sys.executable, "-m", "vhdtool", "info", "--json", str(img)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts["format"] == "raw" and facts["type"] == "fixed"
    assert facts["virtual_size"] == 10 * 1024 * 1024 + 512
    assert 4096 <= facts["allocated_bytes"] < 1024 * 1024
    assert facts["block_size"] is None and facts["parent"] is None and facts["log"] is None
