"""``VirtualDisk.source_id``: the id the format gives an image, read by attribute (never from ``details()``).

Oracles: the footer bytes qemu-img wrote (unique id at offset 68 of the footer, VHD spec), and the
DataWriteGuid the VHDX builder was told to write.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

from support.vhdx_builder import FULLY_PRESENT, Block, build_vhdx

from vhdtool.azure.upload import image_identity, source_id
from vhdtool.formats.open import open_image
from vhdtool.units import MiB


def test_vhd_source_id_is_the_footer_unique_id(tmp_path: Path) -> None:
    path = tmp_path / "q.vhd"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vpc", str(path), "8M"], check=True)
    footer = path.read_bytes()[-512:]
    assert footer[:8] == b"conectix"
    with open_image(path) as disk:
        assert disk.source_id == uuid.UUID(bytes=footer[68:84])
        assert source_id(disk) == f"vhd:{uuid.UUID(bytes=footer[68:84])}"


def test_vhdx_source_id_is_the_data_write_guid_and_names_the_contents(tmp_path: Path) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    path = tmp_path / "g.vhdx"
    build_vhdx(path, 3 * MiB, blocks={1: Block(FULLY_PRESENT, b"\x42" * MiB)}, data_write_guid=first)
    with open_image(path) as disk:
        assert disk.source_id == first and source_id(disk) == f"vhdx:{first}"
        before = image_identity(disk, 4 * MiB)
    stat = path.stat()
    build_vhdx(path, 3 * MiB, blocks={1: Block(FULLY_PRESENT, b"\x42" * MiB)}, data_write_guid=second)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same name, size and mtime: only the GUID differs
    again = path.stat()
    assert (again.st_ino, again.st_size, again.st_mtime_ns) == (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    with open_image(path) as disk:
        assert disk.source_id == second
        assert image_identity(disk, 4 * MiB) != before


def test_raw_has_no_source_id(tmp_path: Path) -> None:
    path = tmp_path / "plain.raw"
    path.write_bytes(b"\x01" * MiB)
    with open_image(path) as disk:
        assert disk.source_id is None and source_id(disk) == ""
