"""The initramfs walker on archives made by GNU cpio and the real compressors, damaged and hostile ones too."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest
from support.linux_images import make_linux

from vhdtool.inspect.initramfs import scan_initramfs
from vhdtool.inspect.linux_readiness import _module_name

TOOLS = ("cpio", "gzip", "xz", "zstd", "lz4", "bzip2", "lzma")
pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS), reason="cpio or a compressor missing")
WANTED = ["hv_storvsc", "hv_vmbus"]
COMMANDS = {
    "gzip": ["gzip", "-n"],
    "xz": ["xz", "--check=crc32"],
    "lzma": ["lzma"],
    "bzip2": ["bzip2"],
    "zstd": ["zstd", "-q"],
    "lz4-legacy": ["lz4", "-l", "-q"],
    "lz4": ["lz4", "-q"],
}


def compress(name: str, data: bytes) -> bytes:
    return subprocess.run(COMMANDS[name], input=data, capture_output=True, check=True).stdout


def archive(tmp_path: Path, drivers: bool) -> tuple[bytes, bytes]:
    """(early-microcode cpio, main cpio) as make_linux writes them."""
    make_linux.write(tmp_path / "early", "kernel/x86/microcode/AuthenticAMD.bin", b"ucode")
    early = make_linux.cpio_archive(tmp_path / "early")
    main = tmp_path / "main"
    make_linux.write(main, "usr/lib/modules/6.1/kernel/fs/ext4/ext4.ko", b"x" * 5000)
    if drivers:
        make_linux.write(main, "usr/lib/modules/6.1/kernel/drivers/scsi/hv_storvsc.ko.xz", b"s" * 3001)
        make_linux.write(main, "usr/lib/modules/6.1/kernel/drivers/hv/hv_vmbus.ko", b"v" * 7)
    return early, make_linux.cpio_archive(main)


@pytest.mark.parametrize("codec", sorted(COMMANDS))
@pytest.mark.parametrize("drivers", [True, False])
def test_each_compressor_behind_an_early_archive(tmp_path: Path, codec: str, drivers: bool) -> None:
    early, main = archive(tmp_path, drivers)
    scan = scan_initramfs(io.BytesIO(early + compress(codec, main)), _module_name, WANTED)
    assert scan.problem is None
    assert scan.formats == ("cpio", f"{codec}+cpio")
    assert sorted(scan.found) == (WANTED if drivers else [])
    assert scan.complete is not drivers  # stops as soon as both are seen; walks to the end otherwise


def test_plain_archives_padding_and_several_segments(tmp_path: Path) -> None:
    early, main = archive(tmp_path, True)
    data = early + bytes(512) + compress("zstd", early) + bytes(4) + compress("gzip", main) + bytes(100)
    scan = scan_initramfs(io.BytesIO(data), _module_name)
    assert scan.formats == ("cpio", "zstd+cpio", "gzip+cpio") and scan.complete and scan.problem is None
    assert sorted(scan.found) == WANTED
    assert scan_initramfs(io.BytesIO(main), _module_name).formats == ("cpio",)


@pytest.mark.parametrize("codec", ["gzip", "xz", "zstd", "lz4-legacy", "bzip2"])
def test_truncated_archives_say_so(tmp_path: Path, codec: str) -> None:
    early, main = archive(tmp_path, True)
    packed = compress(codec, main + bytes(200_000))
    scan = scan_initramfs(io.BytesIO(early + packed[: len(packed) // 2]), _module_name, ["absent"])
    assert scan.problem is not None and not scan.complete


@pytest.mark.parametrize("codec", ["gzip", "xz", "zstd", "lz4-legacy"])
def test_a_decompression_bomb_stops_at_the_output_bound(codec: str) -> None:
    bomb = compress(codec, bytes(64 << 20))  # 64 MiB of zeros in a few KiB
    scan = scan_initramfs(io.BytesIO(bomb), _module_name, max_output=8 << 20)
    assert scan.problem is not None and "MiB" in scan.problem and not scan.complete


def test_garbage_and_damaged_headers(tmp_path: Path) -> None:
    assert "neither cpio" in (scan_initramfs(io.BytesIO(b"\x7fELF" + bytes(100)), _module_name).problem or "")
    early, main = archive(tmp_path, True)
    broken = bytearray(main)
    broken[6 + 8 * 11: 6 + 8 * 12] = b"FFFFFFFF"  # name size of the first entry
    assert "name size" in (scan_initramfs(io.BytesIO(bytes(broken)), _module_name).problem or "")
    assert scan_initramfs(io.BytesIO(b""), _module_name).formats == ()
    assert "bound" in (scan_initramfs(io.BytesIO(main), _module_name, max_input=1024).problem or "")


def test_module_names() -> None:
    assert _module_name("usr/lib/modules/6.1/kernel/drivers/scsi/hv_storvsc.ko.zst") == "hv_storvsc"
    assert _module_name("lib/modules/x/hv-vmbus.ko") == "hv_vmbus"
    assert _module_name("hv_storvsc.ko.sig") is None and _module_name("etc/hv_vmbus.conf") is None


BLOCK = """
import io, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("zstandard", "lz4"):
            raise ImportError("blocked for the test: " + name)
        return None
sys.meta_path.insert(0, Block())
from vhdtool.inspect.initramfs import scan_initramfs
from vhdtool.inspect.linux_readiness import _module_name
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        print(scan_initramfs(f, _module_name).problem)
"""


def test_without_the_optional_decompressors(tmp_path: Path) -> None:
    """zstd and lz4 need the extra; the walk says so in one line and gzip still reads."""
    import sys

    early, main = archive(tmp_path, True)
    paths = []
    for codec in ("zstd", "lz4-legacy", "gzip"):
        path = tmp_path / f"initrd.{codec}"
        path.write_bytes(early + compress(codec, main))
        paths.append(str(path))
    proc = subprocess.run([sys.executable, "-c", BLOCK, *paths], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "vhdtool[inspect]" in lines[0] and "vhdtool[inspect]" in lines[1] and lines[2] == "None"
