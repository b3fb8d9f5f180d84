"""Format sniffing: foreign formats made by real tools are refused by name, with advice."""

from __future__ import annotations

import gzip
import lzma
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.cli import run_cli

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
    proc = run_cli("info", str(img))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "qcow2" in lines[0] and "Traceback" not in proc.stderr


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["info", str(tmp_path / "nope.vhd")])
    assert result.exit_code != 0
    proc = run_cli("info", str(tmp_path / "nope.vhd"))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "nope.vhd" in proc.stderr


def test_info_json_on_a_raw_image(tmp_path: Path) -> None:
    import json
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(10 * 1024 * 1024 + 512)
        f.seek(4096)
        f.write(b"x" * 4096)
    proc = run_cli("info", "--json", str(img))
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts["format"] == "raw" and facts["type"] == "fixed"
    assert facts["virtual_size"] == 10 * 1024 * 1024 + 512
    assert 4096 <= facts["allocated_bytes"] < 1024 * 1024
    assert facts["block_size"] is None and facts["parent"] is None and facts["log"] is None


@pytest.mark.parametrize(("fmt", "options"), [("qcow2", []), ("vmdk", []), ("vmdk", ["-o", "subformat=monolithicFlat"]),
                                              ("vmdk", ["-o", "subformat=streamOptimized"]), ("vdi", [])])
def test_the_advice_for_a_refused_format_works(tmp_path: Path, fmt: str, options: list[str]) -> None:
    """Run the qemu-img command the refusal names, then vhdtool convert as it says: the disk's bytes."""
    import re
    import shlex

    from vhdtool.jobs.convert import convert

    source = bytearray(5 * 1024 * 1024)
    source[1536:1536 + 4096] = b"\x6a" * 4096
    source[-512:] = b"\x6b" * 512
    (tmp_path / "source.raw").write_bytes(source)
    img = tmp_path / f"disk.{fmt}"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, *options, str(tmp_path / "source.raw"), str(img)],
                   check=True)
    with pytest.raises(UnsupportedImageError) as err:
        open_image(img)
    found = re.search(r"(qemu-img convert [^,(]*)", str(err.value))
    assert found, str(err.value)
    command = [str(img) if a == "IN" else str(tmp_path / "OUT.raw") if a == "OUT.raw" else a
               for a in shlex.split(found.group(1))]
    subprocess.run(command, check=True)
    assert "then: vhdtool convert OUT.raw OUT.vhd" in str(err.value)
    with open_image(tmp_path / "OUT.raw") as disk:
        convert(disk, tmp_path / "OUT.vhd")
    with open_image(tmp_path / "OUT.vhd") as out:
        assert out.virtual_size == 5 * 1024 * 1024
        assert out.read(1536, 4096) == b"\x6a" * 4096 and out.read(5242368, 512) == b"\x6b" * 512
        assert out.read(0, 1536) == bytes(1536)
