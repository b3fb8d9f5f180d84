"""Every job reports through the one progress protocol, and data + skipped add up to what it walks.

Real jobs on real images: convert (both of its loops), upload, download and copy against the
session Azurite. Each count is checked against something the job did not report itself: the file
on disk, the blob as the SDK reads it, the Put Page bodies the recording proxy saw.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
from support.azurite import ACCOUNT, Azurite, RecordingProxy
from support.oracles import qemu_img
from support.remote_helpers import MiB, Store, make_raw, sdk_upload

from vhdtool import open_image
from vhdtool.azure.remote import open_remote
from vhdtool.azure.remote.copy import copy
from vhdtool.azure.remote.download import download
from vhdtool.azure.storage import Destination
from vhdtool.azure.upload import UploadOptions, upload
from vhdtool.cli.bars import BarProgress
from vhdtool.jobs.convert import convert, output_size
from vhdtool.stream.progress import NO_PROGRESS, ProgressTally, WithoutStages


def test_tally_counts_from_many_threads_and_without_stages_drops_only_stages() -> None:
    tally = ProgressTally()

    def work() -> None:
        for _ in range(2000):
            tally.data(3)
            tally.skipped(5)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (tally.data_bytes, tally.skipped_bytes, tally.done) == (8 * 2000 * 3, 8 * 2000 * 5, 8 * 2000 * 8)
    inner = WithoutStages(tally)
    inner.stage("patch", 10)
    inner.data(1)
    inner.skipped(2)
    tally.stage("upload", 20)
    assert tally.stages == [("upload", 20)] and tally.done == 8 * 2000 * 8 + 3
    NO_PROGRESS.data(1)  # the default takes every call and keeps nothing
    NO_PROGRESS.stage("x", 1)


def test_bar_counts_data_and_skipped_from_many_threads(capsys: pytest.CaptureFixture[str]) -> None:
    bar = BarProgress(0, "up", True, data_label="sent")

    def work() -> None:
        for _ in range(50):
            bar.data(MiB)
            bar.skipped(2 * MiB)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bar.stage("upload", 4 * 50 * 3 * MiB)  # the total known late, as a patch learns it: drawn at once
    bar.close()
    shown = capsys.readouterr().err
    assert re.search(r"upload: 100%.*sent 200 MiB, empty 400 MiB", shown), shown[-300:]


def test_stage_lines_only_where_no_bar_is_drawn_and_output_is_wanted(capsys: pytest.CaptureFixture[str]) -> None:
    with BarProgress(0, show=None, stage_lines=True) as lines:  # stderr is not a terminal here
        lines.stage("check OS disk", 200)
        lines.data(30)
        lines.skipped(20)
        lines.stage("convert OS disk", 200)
    assert capsys.readouterr().err == "[  0%] check    OS disk\n[ 25%] convert  OS disk\n"
    with BarProgress(0, show=False, stage_lines=True) as quiet:
        quiet.stage("check OS disk", 200)
        quiet.data(30)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("hashes", [(), ("md5",)])  # the parallel copy loop; the ordered pump
@pytest.mark.parametrize("output_format", ["vhd", "raw"])
def test_convert_reports_data_and_skipped_adding_up_to_the_output(sample: dict[str, Path], tmp_path: Path,
                                                                  hashes: tuple[str, ...],
                                                                  output_format: str) -> None:
    tally = ProgressTally()
    out = tmp_path / "out.img"
    with open_image(sample["os"]) as disk:
        total = output_size(disk, output_format)  # type: ignore[arg-type]
        result = convert(disk, out, output_format=output_format, hashes=hashes,  # type: ignore[arg-type]
                         progress=tally)
    assert tally.done == total == out.stat().st_size == result.file_size
    assert (tally.data_bytes, tally.skipped_bytes) == (result.bytes_data, result.bytes_skipped)
    assert 0 < tally.data_bytes < total // 2  # a mostly empty disk: the empty space was skipped
    assert tally.stages == []  # the caller knows the total: output_size()


@pytest.fixture
def store(azurite: Azurite, proxy: RecordingProxy) -> Store:
    proxy.clear()
    return Store(azurite, proxy, ACCOUNT)


def destination(store: Store, blob: str) -> Destination:
    return Destination(connection_string=store.connection_string, container=store.container, blob=blob)


def test_upload_reports_sent_and_skipped_adding_up_to_the_fixed_vhd(sample: dict[str, Path], store: Store,
                                                                    proxy: RecordingProxy) -> None:
    tally = ProgressTally()
    with open_image(sample["os"]) as disk:
        fixed_size = output_size(disk)
        result = upload(disk, destination(store, "os.vhd"), UploadOptions(threads=4), progress=tally)
    blob = store.client("os.vhd").download_blob().readall()
    assert tally.done == fixed_size == result.blob_size == len(blob)
    bodies = sum(r.body_length for r in proxy.put_pages())
    assert tally.data_bytes == result.bytes_sent == bodies > 0
    assert tally.skipped_bytes == result.bytes_skipped > tally.data_bytes


@pytest.mark.slow  # four transfers
def test_download_and_copy_report_the_size_they_write(tmp_path: Path, store: Store) -> None:
    raw = make_raw(tmp_path / "disk.raw", 40 * MiB, seed=3)
    with open_image(raw) as disk:
        upload(disk, destination(store, "disk.vhd"))
    written = sum(r.end + 1 - r.start for r in store.client("disk.vhd").list_page_ranges())
    for output_format in ("vhd", "raw"):  # raw: the output is shorter than the blob, by its footer
        tally = ProgressTally()
        out = tmp_path / f"down.{output_format}"
        source = open_remote(store.spec("disk.vhd"), connection_string=store.connection_string)
        try:
            download(source, out, output_format=output_format, progress=tally)
        finally:
            source.close()
        assert tally.stages == [("download", out.stat().st_size)]
        assert tally.done == out.stat().st_size
        assert 0 < tally.data_bytes <= written

    tally = ProgressTally()
    source = open_remote(store.spec("disk.vhd"), connection_string=store.connection_string)
    try:
        result = copy(source, destination(store, "copy.vhd"), UploadOptions(), mode="relay", progress=tally)
    finally:
        source.close()
    assert tally.done == result.size == len(store.client("copy.vhd").download_blob().readall())
    assert tally.data_bytes == result.written_bytes == written

    vhdx = tmp_path / "disk.vhdx"
    qemu_img("convert", "-f", "raw", "-O", "vhdx", str(raw), str(vhdx))
    sdk_upload(store.client("disk.vhdx"), vhdx, whole=True)
    tally = ProgressTally()
    source = open_remote(store.spec("disk.vhdx"), connection_string=store.connection_string)
    try:
        result = copy(source, destination(store, "converted.vhd"), UploadOptions(), progress=tally)
    finally:
        source.close()
    size = len(store.client("converted.vhd").download_blob().readall())
    assert result.converted and tally.stages == [("convert", size)] and tally.done == size
    assert tally.data_bytes == result.bytes_sent
