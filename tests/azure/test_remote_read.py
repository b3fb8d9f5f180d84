"""``info``, ``inspect`` and ``check`` of disks already in Azure, read where they are.

Azurite holds the blobs (no mock); every request goes through the recording proxy of
``tests/support/azurite.py``, which counts requests and answer bytes and injects faults. Each remote
result is compared with the same command run on a local copy of the blob's bytes: the output must
be the same but for the image's name and the line that says what was read. Blobs come from
``vhdtool upload`` and from the Azure SDK alone (``upload_blob``), including a VHDX uploaded as it
is, the commonest mistake, which ``check`` must name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.azurite import Azurite, RecordingProxy, Rule
from support.cli import run_cli
from support.linux_images import make_linux
from support.oracles import qemu_img
from support.remote_helpers import MiB, Store, json_of, sdk_upload, sig_of

from vhdtool.azure.remote.blob_source import BlobSource
from vhdtool.azure.remote.cache import GranuleCache
from vhdtool.azure.retry import RetryPolicy
from vhdtool.azure.storage import Destination
from vhdtool.errors import TransferError
from vhdtool.inspect.model import GENERALIZED

GiB = 1 << 30
READ_BYTES_BUDGET = 16 * MiB  # check --role os of a 30 GiB OS disk (docs/azure-disks.md)
READ_REQUESTS_BUDGET = 300
FAST_RETRY = RetryPolicy(attempts=6, base_delay=0.05, max_delay=0.2)


@pytest.fixture(scope="module")
def store(azurite: Azurite, proxy: RecordingProxy) -> Store:
    return Store(azurite, proxy)


@pytest.fixture(autouse=True)
def fresh_proxy(proxy: RecordingProxy) -> Iterator[None]:
    proxy.clear()
    proxy.page_list_limit = None
    yield
    # A source is never written: only HEAD and GET reach the service from the readers.
    proxy.clear()


def write_sparse(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        for i in range(0, len(data), 4096):
            chunk = data[i:i + 4096]
            if chunk.count(0) != len(chunk):
                f.seek(i)
                f.write(chunk)
        f.truncate(len(data))


def only_reads(proxy: RecordingProxy) -> None:
    assert proxy.requests
    assert {r.method for r in proxy.requests} <= {"GET", "HEAD"}, {r.method for r in proxy.requests}


def without(facts: Any, *keys: str) -> Any:
    return {k: v for k, v in facts.items() if k not in keys}


def human_body(text: str) -> list[str]:
    """Human output without the lines that name the image or say what was read from Azure."""
    return [line for line in text.splitlines()
            if not line.startswith(("image ", "read from Azure:", "allocated ")) and line.strip()]


@pytest.fixture(scope="module")
def blobs(store: Store, sample: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, Path]]:
    """name -> (CONTAINER/BLOB, local file with the blob's exact bytes)."""
    tmp = tmp_path_factory.mktemp("remote")
    out: dict[str, tuple[str, Path]] = {}
    # 1. The OS disk uploaded by vhdtool (a fixed VHD made on the fly); its bytes fetched back directly.
    proc = run_cli("upload", str(sample["os"]), store.spec("os.vhd"), connection_string=store.connection_string)
    assert proc.returncode == 0, proc.stderr
    local = tmp / "os.vhd"
    write_sparse(local, store.client("os.vhd").download_blob().readall())
    out["vhdtool-fixed"] = (store.spec("os.vhd"), local)
    # 2. The VHDX uploaded as it is with the SDK (what azcopy does with a .vhdx).
    sdk_upload(store.client("os.vhdx"), sample["os"])
    out["sdk-vhdx"] = (store.spec("os.vhdx"), sample["os"])
    # 3. A dynamic VHD data disk, also uploaded as it is.
    data = tmp / "data.vhd"
    data.write_bytes(sample["data"].read_bytes() + bytes(-sample["data"].stat().st_size % 512))
    sdk_upload(store.client("data.vhd"), data)
    out["sdk-dynamic"] = (store.spec("data.vhd"), data)
    return out


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from support.fixture_files import unpack_fixture

    src = tmp_path_factory.mktemp("sample")
    return {"os": unpack_fixture("sample/linux-os.vhdx.gz", src),
            "data": unpack_fixture("sample/data.vhd.gz", src)}


@pytest.mark.parametrize("name", ["vhdtool-fixed", "sdk-vhdx", "sdk-dynamic"])
def test_remote_info_inspect_check_match_local(blobs: dict[str, tuple[str, Path]], store: Store,
                                               proxy: RecordingProxy, name: str) -> None:
    spec, local = blobs[name]
    role = "data" if name == "sdk-dynamic" else "os"
    for command in (["info"], ["inspect"], ["check", "--role", role]):
        here = run_cli(*command, "--json", str(local))
        proxy.clear()
        there = run_cli(*command, "--json", spec, connection_string=store.connection_string)
        only_reads(proxy)
        assert there.returncode == here.returncode, there.stderr
        remote, facts = json_of(there), json_of(here)
        assert remote["read"]["requests"] == len(proxy.requests)
        assert 0 < remote["read"]["bytes"] <= sum(r.response_length for r in proxy.requests)
        # Allocation is the container's: a file's holes are filesystem blocks, a blob's unwritten
        # pages (upload_blob writes every page, zeros too; vhdtool writes only non-zero ones).
        assert without(remote, "path", "read", "allocated_bytes") == without(facts, "path", "allocated_bytes")
        if "path" in remote:
            assert remote["path"] == f"{store.proxy.endpoint}/{spec}"
    human_here = run_cli(*command, str(local))
    human_there = run_cli(*command, spec, connection_string=store.connection_string)
    assert human_body(human_there.stdout) == human_body(human_here.stdout)
    assert "read from Azure:" in human_there.stdout
    if name == "sdk-vhdx":
        findings = {f["id"] for f in json_of(there)["findings"] if f["severity"] == "error"}
        assert "format-fixed-vhd" in findings  # the VHDX uploaded by mistake is named as such
    assert (json_of(there)["ready"]) is (name == "vhdtool-fixed")


def test_a_sas_url_is_read_and_its_token_never_shown(blobs: dict[str, tuple[str, Path]], store: Store,
                                                     proxy: RecordingProxy) -> None:
    spec, _ = blobs["vhdtool-fixed"]
    url = store.sas_url(spec.split("/", 1)[1])
    proc = run_cli("check", url)
    assert proc.returncode == 0, proc.stderr
    assert sig_of(url) not in proc.stdout + proc.stderr
    assert "ready for Azure" in proc.stdout
    # A token without read permission: one line, no token, non-zero exit.
    bad = store.sas_url(spec.split("/", 1)[1], write=True)
    proc = run_cli("info", bad)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "403" in proc.stderr, proc.stderr
    assert sig_of(bad) not in proc.stdout + proc.stderr
    missing = run_cli("info", store.sas_url("nothing-here.vhd"))
    assert missing.returncode == 1 and "no such blob" in missing.stderr


def test_a_block_blob_is_read_and_named(blobs: dict[str, tuple[str, Path]], store: Store) -> None:
    _, local = blobs["sdk-dynamic"]
    store.client("block.vhd").upload_blob(local.read_bytes(), overwrite=True)  # a block blob, by mistake
    proc = run_cli("info", "--json", store.spec("block.vhd"), connection_string=store.connection_string)
    assert proc.returncode == 0, proc.stderr
    assert json_of(proc)["type"] == "dynamic"
    assert "BlockBlob" in proc.stderr and "page blobs only" in proc.stderr


def test_a_local_file_wins_over_container_slash_blob(blobs: dict[str, tuple[str, Path]], store: Store,
                                                     tmp_path: Path, proxy: RecordingProxy) -> None:
    spec, local = blobs["sdk-dynamic"]
    folder = tmp_path / spec.split("/")[0]
    folder.mkdir()
    (folder / spec.split("/")[1]).write_bytes(local.read_bytes())
    proc = run_cli("info", "--json", spec, connection_string=store.connection_string, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "read" not in json_of(proc) and not proxy.requests


def test_faults_are_retried_and_change_nothing(blobs: dict[str, tuple[str, Path]], store: Store,
                                               proxy: RecordingProxy) -> None:
    spec, local = blobs["sdk-vhdx"]
    expected = json_of(run_cli("inspect", "--json", str(local)))
    ranged = lambda r: r.method == "GET" and not r.query.get("comp")  # noqa: E731
    proxy.add_rule(Rule(lambda r: r.method == "HEAD", "503", retry_after=0))
    proxy.add_rule(Rule(lambda r: r.query.get("comp") == "pagelist", "cut"))
    proxy.add_rule(Rule(ranged, "drop", times=2))
    proxy.add_rule(Rule(ranged, "503", times=1, retry_after=0))
    proc = run_cli("inspect", "--json", spec, connection_string=store.connection_string)
    assert proc.returncode == 0, proc.stderr
    got = json_of(proc)
    assert got["read"]["retries"] == 5
    assert without(got, "path", "read") == without(expected, "path")
    only_reads(proxy)


def test_a_blob_that_changes_while_read_stops_the_read(store: Store, proxy: RecordingProxy) -> None:
    client = store.client("changing.vhd")
    client.create_page_blob(8 * MiB)
    client.upload_page(b"\x01" * 8 * MiB, 0, 8 * MiB)
    source = BlobSource(Destination(connection_string=store.connection_string, container=store.container,
                                    blob="changing.vhd"), retry=FAST_RETRY)
    try:
        assert source.pread(0, 4, "first bytes") == b"\x01" * 4
        client.upload_page(b"\x02" * 512, 4 * MiB, 512)
        with pytest.raises(TransferError, match="changed while it was being read"):
            source.pread(4 * MiB, 4, "later bytes")
    finally:
        source.close()


def test_page_ranges_are_listed_across_continuation_markers(store: Store, proxy: RecordingProxy) -> None:
    client = store.client("fragmented.vhd")
    size = 64 * MiB
    client.create_page_blob(size)
    written = [(i * 32 * 1024, i * 32 * 1024 + 512) for i in range(1024)]  # in the first 32 MiB
    for start, end in written:
        client.upload_page(bytes([7]) * (end - start), start, end - start)
    proxy.clear()
    proxy.page_list_limit = 100  # the stand-in pages the listing as the service does
    source = BlobSource(Destination(connection_string=store.connection_string, container=store.container,
                                    blob="fragmented.vhd"), ranges_per_page=5000, retry=FAST_RETRY)
    try:
        assert source.ranges == written
        listings = [r for r in proxy.requests if r.query.get("comp") == "pagelist"]
        assert len(listings) == 11
        assert [r.query.get("marker") for r in listings[1:]] == [str(written[100 * i][0]) for i in range(1, 11)]
        # Unwritten pages cost no request; a read across written ones returns their bytes.
        before = len(proxy.requests)
        assert source.pread(40 * MiB, 100 * 1024, "a gap") == bytes(100 * 1024)
        assert source.pread(36 * MiB, 2 * MiB, "a large gap") == bytes(2 * MiB)
        assert len(proxy.requests) == before
        assert source.pread(0, 32 * 1024 + 512, "two pages") == (bytes([7]) * 512 + bytes(32 * 1024 - 512)
                                                                  + bytes([7]) * 512)
    finally:
        source.close()
    proc = run_cli("info", "--json", store.spec("fragmented.vhd"), connection_string=store.connection_string)
    assert json_of(proc)["allocated_bytes"] == 512 * len(written)


def test_the_cache_holds_a_bounded_number_of_granules(store: Store, proxy: RecordingProxy) -> None:
    cache = GranuleCache(granule=4096, capacity=16384, max_ahead=16384)
    for i in range(10):
        cache.put(i, bytes(4096))
    assert len(cache) == 4 and cache.get(5) is None and cache.get(9) is not None
    cache.put(10, bytes(4096))
    assert cache.get(9) is not None and cache.get(6) is None  # least recently used went first
    assert cache.window(0, 100) == 4096 and cache.window(100, 100) == 8192  # sequential: doubled
    assert cache.window(50000, 10) == 4096  # a jump: back to one granule

    client = store.client("scattered.vhd")
    client.create_page_blob(64 * MiB)
    for i in range(16):
        client.upload_page(bytes([i + 1]) * 4 * MiB, i * 4 * MiB, 4 * MiB)
    source = BlobSource(Destination(connection_string=store.connection_string, container=store.container,
                                    blob="scattered.vhd"), capacity=1 * MiB, retry=FAST_RETRY)
    try:
        for i in range(0, 64 * MiB, 96 * 1024):
            assert source.pread(i, 700, "scattered")[0] == i // (4 * MiB) + 1
            assert len(source.cache) * source.cache.granule <= 1 * MiB  # granules held
        big = source.pread(3 * MiB, 2 * MiB, "direct")
        assert big == bytes([1]) * MiB + bytes([2]) * MiB
    finally:
        source.close()


@pytest.fixture(scope="module")
def large_disks(tmp_path_factory: pytest.TempPathFactory, store: Store) -> dict[str, str]:
    """30 GiB fixed VHDs holding an ext4 and an NTFS OS (sparse; put in Azurite by the SDK)."""
    from support.windows_images import builder

    tmp = tmp_path_factory.mktemp("large")
    raws = {"ext4": make_linux.build_large(tmp / "lin.img", GENERALIZED, size=30 * GiB, filler=16 * MiB),
            "ntfs": builder.build_large_gen2_disk(tmp / "win.img", filler=16 * MiB)}
    out: dict[str, str] = {}
    for name, raw in raws.items():
        vhd = tmp / f"{name}.vhd"
        qemu_img("convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size=on", str(raw), str(vhd))
        raw.unlink()
        sdk_upload(store.client(f"{name}-30g.vhd"), vhd)
        vhd.unlink()
        out[name] = store.spec(f"{name}-30g.vhd")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("fs", ["ext4", "ntfs"])
def test_check_of_a_30_gib_os_disk_reads_within_budget(large_disks: dict[str, str], store: Store,
                                                       proxy: RecordingProxy, fs: str) -> None:
    proc = run_cli("check", "--role", "os", "--json", large_disks[fs], connection_string=store.connection_string)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json_of(proc)
    assert result["ready"] and result["os"]["state"] == GENERALIZED
    answered = sum(r.response_length for r in proxy.requests)
    assert len(proxy.requests) <= READ_REQUESTS_BUDGET, len(proxy.requests)
    assert answered <= READ_BYTES_BUDGET, answered
    assert result["read"]["requests"] == len(proxy.requests)
    only_reads(proxy)
