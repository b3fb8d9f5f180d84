"""``vhdtool download`` against Azurite: only written ranges fetched, sparse output, resumable, digested.

Every request passes the recording proxy of ``tests/support/azurite.py`` (counted, faults injected). The
output is compared byte for byte with the blob as the SDK downloads it; its sparse digest with the
stand-alone reference script of docs/scripts/sparse_digest.py run on the output file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.azurite import Azurite, Recorded, RecordingProxy, Rule
from support.cli import cli_command, run_cli
from support.oracles import qemu_img
from support.remote_helpers import ROOT, MiB, Store, json_of, make_raw, sdk_upload

REFERENCE = ROOT / "docs" / "scripts" / "sparse_digest.py"
RATIO = 1.01  # bytes fetched / bytes written in the blob


@pytest.fixture(scope="module")
def store(azurite: Azurite, proxy: RecordingProxy) -> Store:
    return Store(azurite, proxy)


@pytest.fixture(autouse=True)
def fresh_proxy(proxy: RecordingProxy) -> None:
    proxy.clear()


def reference_digest(path: Path) -> str:
    proc = subprocess.run([sys.executable, str(REFERENCE), str(path)], capture_output=True, text=True, check=True)
    return proc.stdout.split()[0]


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def ranged_gets(proxy: RecordingProxy) -> list[Recorded]:
    return [r for r in proxy.requests if r.method == "GET" and not r.query.get("comp")]


@pytest.fixture(scope="module")
def uploaded(store: Store, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, bytes]]:
    """name -> (CONTAINER/BLOB, the blob's bytes as the SDK downloads them)."""
    tmp = tmp_path_factory.mktemp("dl")
    raw = make_raw(tmp / "disk.raw", 64 * MiB, seed=3)
    proc = run_cli("upload", str(raw), store.spec("vhdtool.vhd"), connection_string=store.connection_string)
    assert proc.returncode == 0, proc.stderr
    fixed = tmp / "disk.vhd"
    qemu_img("convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size=on", str(raw), str(fixed))
    sdk_upload(store.client("sdk.vhd"), fixed, whole=True)  # every page written, zeros too
    vhdx = tmp / "disk.vhdx"
    qemu_img("convert", "-f", "raw", "-O", "vhdx", str(raw), str(vhdx))
    sdk_upload(store.client("disk.vhdx"), vhdx, whole=True)
    return {name: (store.spec(name), store.client(name).download_blob().readall())
            for name in ("vhdtool.vhd", "sdk.vhd", "disk.vhdx")}


@pytest.mark.parametrize("name", ["vhdtool.vhd", "sdk.vhd"])
def test_download_fetches_only_written_ranges_and_writes_sparse(uploaded: dict[str, tuple[str, bytes]],
                                                                 store: Store, proxy: RecordingProxy,
                                                                 tmp_path: Path, name: str) -> None:
    spec, blob = uploaded[name]
    out = tmp_path / "out.vhd"
    proc = run_cli("download", spec, str(out), "--json", connection_string=store.connection_string)
    assert proc.returncode == 0, proc.stderr
    result = json_of(proc)
    assert out.read_bytes() == blob
    nonzero = sum(4096 for i in range(0, len(blob), 4096) if blob[i:i + 4096].count(0) != len(blob[i:i + 4096]))
    assert allocated(out) <= nonzero + 64 * 1024  # zero pages, even written ones, are holes
    assert result["sparse_digest"] == reference_digest(out)
    assert result["digest_of"] == "blob" and not result["converted"]
    fetched = sum(r.response_length for r in ranged_gets(proxy))
    assert result["bytes_read"] == fetched
    assert fetched <= RATIO * result["written_bytes"], (fetched, result["written_bytes"])
    assert {r.method for r in proxy.requests} <= {"GET", "HEAD"}
    assert not list(tmp_path.glob("*.vhdtool-partial*"))
    # raw: the disk without its footer, same digest (of the blob)
    raw_out = tmp_path / "out.raw"
    proc = run_cli("download", spec, str(raw_out), "--format", "raw", "--json",
                   connection_string=store.connection_string)
    assert proc.returncode == 0, proc.stderr
    assert raw_out.read_bytes() == blob[:-512]
    assert json_of(proc)["sparse_digest"] == result["sparse_digest"]
    # an existing output is refused without --force
    again = run_cli("download", spec, str(out), connection_string=store.connection_string)
    assert again.returncode == 1 and "--force" in again.stderr


def test_a_vhdx_blob_is_converted_on_the_way(uploaded: dict[str, tuple[str, bytes]], store: Store,
                                             tmp_path: Path) -> None:
    spec, _ = uploaded["disk.vhdx"]
    _, fixed = uploaded["vhdtool.vhd"]
    out = tmp_path / "out.vhd"
    proc = run_cli("download", spec, str(out), "--json", connection_string=store.connection_string)
    assert proc.returncode == 0, proc.stderr
    result = json_of(proc)
    assert result["converted"] and result["source_format"] == "vhdx-dynamic"
    data = out.read_bytes()
    assert data[:-512] == fixed[:-512]  # the same disk; the fresh footer has its own unique id
    assert result["sparse_digest"] == reference_digest(out) and result["digest_of"] == "output"
    qemu_img("compare", "-f", "vpc", "-F", "vpc", str(out), str(out))
    resumed = run_cli("download", spec, str(tmp_path / "x.vhd"), "--resume", connection_string=store.connection_string)
    assert resumed.returncode == 2 and "converted on the way" in resumed.stderr


def test_faults_are_retried(uploaded: dict[str, tuple[str, bytes]], store: Store, proxy: RecordingProxy,
                            tmp_path: Path) -> None:
    spec, blob = uploaded["vhdtool.vhd"]
    ranged = lambda r: r.method == "GET" and not r.query.get("comp")  # noqa: E731
    proxy.add_rule(Rule(ranged, "503", times=3, retry_after=0))
    proxy.add_rule(Rule(ranged, "drop", times=2))
    proxy.add_rule(Rule(ranged, "cut", times=2))
    out = tmp_path / "out.vhd"
    proc = run_cli("download", spec, str(out), "--json", "--threads", "4", connection_string=store.connection_string)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == blob
    assert json_of(proc)["retries"] == 7


def test_a_killed_download_resumes_and_refuses_a_changed_blob(uploaded: dict[str, tuple[str, bytes]],
                                                              store: Store, proxy: RecordingProxy,
                                                              tmp_path: Path) -> None:
    _, blob = uploaded["vhdtool.vhd"]
    store.client("resume.vhd").upload_blob(blob, blob_type="PageBlob")  # its own copy, changed below
    spec = store.spec("resume.vhd")
    out = tmp_path / "out.vhd"
    env = {k: v for k, v in os.environ.items() if k != "AZURE_STORAGE_CONNECTION_STRING"}
    env.update(PYTHONPATH=str(ROOT), AZURE_STORAGE_CONNECTION_STRING=store.connection_string)
    # Slow answers, so the kill lands after the first granules are recorded and before the last.
    proxy.add_rule(Rule(lambda r: r.method == "GET" and not r.query.get("comp"), "delay", times=1000,
                        seconds=0.4))
    child = subprocess.Popen(cli_command("download", spec, str(out), "--threads", "2"),
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    record = Path(str(out) + ".vhdtool-partial.json")
    deadline = time.monotonic() + 60
    while not record.exists() and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    proxy.wait_idle()
    assert not out.exists() and record.exists()
    done = {i for a, b in json.loads(record.read_text())["done"] for i in range(a, b)}
    assert 0 < len(done) < len(blob) // (4 * MiB)
    proxy.clear()
    proc = run_cli("download", spec, str(out), "--resume", "--json", connection_string=store.connection_string)
    assert proc.returncode == 0, proc.stderr
    result = json_of(proc)
    assert result["resumed"] and out.read_bytes() == blob
    # The granules the record did not name were fetched, and only those (plus the few KiB that tell
    # the blob's format).
    granule = 4 * MiB
    pending = 0
    for r in store.client("resume.vhd").list_page_ranges():
        for i in range(r.start // granule, r.end // granule + 1):
            if i not in done:
                pending += max(0, min(r.end + 1, (i + 1) * granule) - max(r.start, i * granule))
    assert pending <= result["bytes_read"] <= pending + 8192, (pending, result["bytes_read"])
    assert result["sparse_digest"] == reference_digest(out)
    # A partial download of a blob that changed since is refused.
    out2 = tmp_path / "out2.vhd"
    Path(str(out2) + ".vhdtool-partial").write_bytes(b"")
    Path(str(out2) + ".vhdtool-partial.json").write_text(record.read_text() if record.exists() else
                                                         _record_for(store, spec, len(blob)))
    store.client("resume.vhd").upload_page(b"\x09" * 512, 0, 512)
    proc = run_cli("download", spec, str(out2), "--resume", connection_string=store.connection_string)
    assert proc.returncode == 2 and "changed since the partial download" in proc.stderr, proc.stderr
    assert not out2.exists()


def _record_for(store: Store, spec: str, size: int) -> str:
    etag = store.client(spec.split("/", 1)[1]).get_blob_properties().etag
    return json.dumps({"version": 1, "source": f"{store.proxy.endpoint}/{spec}", "etag": etag, "size": size,
                       "length": size, "done": []})
