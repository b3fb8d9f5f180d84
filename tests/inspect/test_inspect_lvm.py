"""LVM2: our label / metadata reader against the fixture script's independent writer, and LV mapping."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.linux_images import ImageCache, make_linux, shared_cache

from vhdtool.disk.base import ImageFile, VirtualDisk
from vhdtool.extents import Extent, MiB
from vhdtool.formats.raw import RawDisk
from vhdtool.inspect.lvm import LogicalVolume, LogicalVolumeDisk, lvm_crc, parse_config
from vhdtool.inspect.model import SPECIALIZED
from vhdtool.inspect.report import LVM_LV_TYPE, inspect_disk


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> ImageCache:
    return shared_cache(tmp_path_factory)


@given(st.binary(max_size=2048))
def test_crc_matches_the_table_driven_one(data: bytes) -> None:
    assert lvm_crc(data) == make_linux.lvm_calc_crc(data)


def test_lvm_root_and_swap(images: ImageCache) -> None:
    with RawDisk(ImageFile(images.get("gpt-lvm", SPECIALIZED))) as disk:
        report = inspect_disk(disk)
    assert report.warnings == []
    lvs = [
        (v.partition.number, v.partition.name, v.info.kind, v.info.label)
        for v in report.volumes
        if v.partition.type_id == LVM_LV_TYPE
    ]
    assert lvs == [(201, "rhel/root", "ext4", "root"), (202, "rhel/swap", "swap", "lvswap")]
    assert report.os is not None and report.os.state == SPECIALIZED
    assert report.os_volume is not None and report.os_volume.partition.name == "rhel/root"
    assert report.os.facts.fstab_swap == ("/dev/rhel/swap none swap defaults 0 0",)


def test_damaged_metadata_is_a_warning(images: ImageCache, tmp_path: Path) -> None:
    src = images.get("gpt-lvm", SPECIALIZED)
    path = tmp_path / "bad.img"
    path.write_bytes(src.read_bytes())
    with open(path, "r+b") as f:
        f.seek(33 * MiB + 4096 + 512 + 10)  # inside the metadata text: its checksum no longer matches
        f.write(b"X")
    with RawDisk(ImageFile(path)) as disk:
        report = inspect_disk(disk)
    assert any("metadata text checksum mismatch" in w for w in report.warnings)
    assert all(v.partition.type_id != LVM_LV_TYPE for v in report.volumes)


def test_parse_config() -> None:
    text = '# c\nvg { id = "a-b"\nsize = 5 list = [ "pv0", 3, ] nested { x = "q\\"uote" } }\nversion = 1\n'
    assert parse_config(text) == {
        "vg": {"id": "a-b", "size": 5, "list": ["pv0", 3], "nested": {"x": 'q"uote'}},
        "version": 1,
    }
    assert parse_config("unterminated { a = ") == {"unterminated": {}}


class BytesDisk(VirtualDisk):
    format, disk_type = "raw", "fixed"

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.data, self.path, self.virtual_size = data, "mem", len(data)

    def extents(self) -> list[Extent]:
        return [Extent(0, self.virtual_size, True)]

    def readinto(self, offset: int, view: memoryview) -> None:
        view[:] = self.data[offset : offset + len(view)]

    def details(self) -> dict[str, object]:
        return {}


@given(st.integers(0, 40 * 512 - 1), st.integers(0, 40 * 512))
def test_logical_volume_reads_through_its_segments(offset: int, length: int) -> None:
    rng = random.Random(7)
    parent = rng.randbytes(64 * 512)
    segments = ((0, 10 * 512, 30 * 512), (10 * 512, 20 * 512, 0), (30 * 512, 10 * 512, 50 * 512))
    lv = LogicalVolumeDisk(BytesDisk(parent), LogicalVolume("vg", "lv", 40 * 512, segments))
    expected = parent[30 * 512 : 40 * 512] + parent[0 : 20 * 512] + parent[50 * 512 : 60 * 512]
    length = min(length, lv.virtual_size - offset)
    assert lv.read(offset, length) == expected[offset : offset + length]
