"""Partition tables: our MBR / GPT parsers against sfdisk's own reading, damage and odd layouts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vhdtool.disk.base import ImageFile
from vhdtool.errors import ImageError
from vhdtool.extents import MiB
from vhdtool.formats.raw import RawDisk
from vhdtool.inspect.partitions import ESP_GUID, LINUX_SWAP_GUID, read_partition_table


def raw_disk(path: Path) -> RawDisk:
    return RawDisk(ImageFile(path))


def blank(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def sfdisk_json(path: Path) -> dict:  # type: ignore[type-arg]
    out = subprocess.run(["sfdisk", "--json", str(path)], check=True, capture_output=True, text=True).stdout
    return json.loads(out)["partitiontable"]  # type: ignore[no-any-return]


def test_gpt_matches_sfdisk(tmp_path: Path) -> None:
    img = blank(tmp_path / "gpt.img", 64 * MiB)
    subprocess.run(
        [
            "sgdisk",
            "-n",
            "1:2048:+8M",
            "-t",
            "1:ef00",
            "-c",
            "1:EFI system partition",
            "-n",
            "2:0:+20M",
            "-t",
            "2:8300",
            "-c",
            "2:root",
            "-n",
            "3:0:0",
            "-t",
            "3:8200",
            str(img),
        ],
        check=True,
        capture_output=True,
    )
    oracle = sfdisk_json(img)
    with raw_disk(img) as disk:
        table = read_partition_table(disk)
    assert table.scheme == "gpt" and table.problems == ()
    assert table.disk_guid == oracle["id"].lower()
    assert [(p.offset // 512, p.length // 512, p.type_id, p.guid) for p in table.partitions] == [
        (o["start"], o["size"], o["type"].lower(), o["uuid"].lower()) for o in oracle["partitions"]
    ]
    assert [p.type_name for p in table.partitions] == ["EFI System", "Linux filesystem", "Linux swap"]
    assert table.partitions[0].name == "EFI system partition" and table.partitions[0].is_esp
    assert table.partitions[2].type_id == LINUX_SWAP_GUID


def test_mbr_with_logical_partitions_matches_sfdisk(tmp_path: Path) -> None:
    img = blank(tmp_path / "mbr.img", 64 * MiB)
    layout = (
        "label: dos\nstart=2048, size=16M, type=7, bootable\nstart=34816, type=5\n"
        "size=8M, type=83\nsize=8M, type=82\ntype=8e\n"
    )
    subprocess.run(["sfdisk", "-q", str(img)], input=layout.encode(), check=True, capture_output=True)
    oracle = sfdisk_json(img)
    with raw_disk(img) as disk:
        table = read_partition_table(disk)
    assert table.scheme == "mbr" and table.problems == ()
    got = [
        (f"{img}{p.number}", p.offset // 512, p.length // 512, int(p.type_id, 16)) for p in table.partitions
    ]
    want = [(o["node"], o["start"], o["size"], int(o["type"], 16)) for o in oracle["partitions"]]
    assert got == want
    assert [p.bootable for p in table.partitions] == [True, False, False, False, False]
    assert table.partitions[0].type_name == "HPFS/NTFS/exFAT"


def _gpt(tmp_path: Path, size: int = 32 * MiB) -> Path:
    img = blank(tmp_path / "g.img", size)
    subprocess.run(
        ["sgdisk", "-n", "1:2048:+4M", "-t", f"1:{ESP_GUID}", "-n", "2:0:0", str(img)],
        check=True,
        capture_output=True,
    )
    return img


def test_damaged_primary_header_falls_back_to_backup(tmp_path: Path) -> None:
    img = _gpt(tmp_path)
    with open(img, "r+b") as f:
        f.seek(512 + 24)  # MyLBA inside the header: the CRC no longer matches
        f.write(b"\x07")
    with raw_disk(img) as disk:
        table = read_partition_table(disk)
    assert table.scheme == "gpt" and len(table.partitions) == 2
    assert any("header CRC32 mismatch" in p for p in table.problems)
    assert "using the backup GPT header" in table.problems


def test_damaged_entry_array_and_backup(tmp_path: Path) -> None:
    img = _gpt(tmp_path)
    with open(img, "r+b") as f:
        f.seek(1024 + 56)  # inside entry 1's name: array CRC mismatch in the primary
        f.write(b"X")
    with raw_disk(img) as disk:
        table = read_partition_table(disk)
    assert any("partition entry array CRC32 mismatch" in p for p in table.problems)
    assert len(table.partitions) == 2  # read from the intact backup


def test_grown_disk_reports_misplaced_backup(tmp_path: Path) -> None:
    img = _gpt(tmp_path)
    with open(img, "r+b") as f:
        f.truncate(48 * MiB)  # as a raw image padded by hand: the backup header is no longer last
    with raw_disk(img) as disk:
        table = read_partition_table(disk)
    assert table.scheme == "gpt"
    assert any("backup GPT header expected at the last LBA" in p for p in table.problems)


def test_no_table_is_one_whole_disk_volume(tmp_path: Path) -> None:
    img = blank(tmp_path / "fs.img", 8 * MiB)
    subprocess.run(["mkfs.vfat", str(img)], check=True, capture_output=True)  # a VBR ends in 55 AA too
    with raw_disk(img) as disk:
        table = read_partition_table(disk)
    assert table.scheme == "none"
    assert [(p.offset, p.length) for p in table.partitions] == [(0, 8 * MiB)]


def test_protective_mbr_without_gpt(tmp_path: Path) -> None:
    img = _gpt(tmp_path)
    with open(img, "r+b") as f:
        f.seek(512)
        f.write(bytes(512))
        f.seek(32 * MiB - 512)
        f.write(bytes(512))
    with raw_disk(img) as disk:
        table = read_partition_table(disk)
    assert table.scheme == "mbr" and table.partitions == ()
    assert "no valid GPT header" in table.problems[0]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    mbr=st.binary(min_size=512, max_size=512), header=st.binary(min_size=512, max_size=512), gpt=st.booleans()
)
def test_random_tables_never_crash(tmp_path: Path, mbr: bytes, header: bytes, gpt: bool) -> None:
    """Hostile sectors give a table or an ImageError, never another exception or a huge allocation."""
    img = tmp_path / "r.img"
    first = bytearray(mbr)
    first[510:512] = b"\x55\xaa"
    second = bytearray(header)
    if gpt:
        second[:8] = b"EFI PART"
        second[12:16] = (92).to_bytes(4, "little")
    with open(img, "wb") as f:
        f.write(first + second)
        f.truncate(1 * MiB)
    with raw_disk(img) as disk:
        try:
            table = read_partition_table(disk)
        except ImageError as err:
            assert str(img) in str(err)  # the one-line error names the file
            return
    assert table.scheme in ("gpt", "mbr", "none")
    if table.scheme == "none":
        assert [(p.offset, p.length) for p in table.partitions] == [(0, 1 * MiB)]
    for p in table.partitions:
        assert p.offset >= 0 and p.length > 0 and p.offset % 512 == 0
        if p.offset + p.length > 1 * MiB:  # a partition past the disk's end is reported, not hidden
            assert any(f"partition {p.number} " in problem for problem in table.problems), table.problems


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    records=st.lists(
        st.tuples(
            st.sampled_from([0x00, 0x80]),
            st.sampled_from([0x07, 0x83, 0x8E, 0x05, 0xEF]),
            st.integers(0, 5000),
            st.integers(1, 5000),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_inspect_survives_partitions_anywhere(
    tmp_path: Path, records: list[tuple[int, int, int, int]]
) -> None:
    """Partitions overlapping, past the end or in a loop of EBRs: a report or an ImageError."""
    from vhdtool.inspect.report import inspect_disk

    img = tmp_path / "p.img"
    sector = bytearray(512)
    for i, (boot, kind, start, size) in enumerate(records):
        sector[446 + 16 * i : 446 + 16 * (i + 1)] = (
            bytes([boot, 0, 0, 0, kind, 0, 0, 0]) + start.to_bytes(4, "little") + size.to_bytes(4, "little")
        )
    sector[510:512] = b"\x55\xaa"
    with open(img, "wb") as f:
        f.write(sector)
        f.seek(1024)
        f.write(sector)  # the same table again as an EBR target: extended partitions may loop
        f.truncate(2 * MiB)
    with raw_disk(img) as disk:
        try:
            report = inspect_disk(disk)
        except ImageError:
            return
    assert report.table.scheme in ("mbr", "none")


def test_inspect_lists_every_partition(tmp_path: Path) -> None:
    """Partitions that hold no filesystem (an extended container here) are listed too, unprobed."""
    from vhdtool.inspect.report import inspect_disk

    img = blank(tmp_path / "mbr.img", 64 * MiB)
    layout = "label: dos\nstart=2048, size=16M, type=83\nstart=34816, type=5\nsize=8M, type=82\n"
    subprocess.run(["sfdisk", "-q", str(img)], input=layout.encode(), check=True, capture_output=True)
    oracle = [int(o["node"].removeprefix(str(img))) for o in sfdisk_json(img)["partitions"]]
    with raw_disk(img) as disk:
        report = inspect_disk(disk)
    assert [v.partition.number for v in report.volumes] == oracle == [1, 2, 5]
    assert [(v.partition.type_name, v.info.kind) for v in report.volumes] == [
        ("Linux", "unknown"),
        ("Extended", "none"),
        ("Linux swap", "unknown"),  # an empty partition: nothing written in it yet
    ]
