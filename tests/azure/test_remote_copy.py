"""``vhdtool copy`` between two Azurite accounts: only written ranges move, server-side or relayed.

Azurite answers Put Page From URL with 501, so against Azurite itself the copy relays the bytes.
The server-side path runs against a stand-in that the recording proxy of ``tests/support/azurite.py`` puts in
front of Azurite (``copy_from_url_keys``): it implements Put Page From URL as the REST reference
describes it for x-ms-version 2020-10-02 and later, by reading the source range from Azurite and
writing it with an ordinary Put Page. It is a stand-in, not the service: it checks the request's
shape (ranges, ≤ 4 MiB, empty body) and reads the source with its SAS, nothing more. Every copy is
compared byte for byte with its source as the SDK downloads both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from support.azurite import ACCOUNT, SECOND_ACCOUNT, Azurite, RecordingProxy, Rule
from support.cli import cli_command, run_cli
from support.oracles import qemu_img
from support.remote_helpers import ROOT, MiB, Store, json_of, make_raw, sdk_upload, sig_of

from vhdtool.stream.digest import SparseDigest

RATIO = 1.01


@pytest.fixture(scope="module")
def src(azurite: Azurite, proxy: RecordingProxy) -> Store:
    return Store(azurite, proxy, ACCOUNT)


@pytest.fixture
def dst(azurite: Azurite, proxy: RecordingProxy) -> Store:
    return Store(azurite, proxy, SECOND_ACCOUNT)


@pytest.fixture(autouse=True)
def fresh_proxy(proxy: RecordingProxy) -> Iterator[None]:
    proxy.clear()
    proxy.copy_from_url_keys = None
    yield
    proxy.copy_from_url_keys = None


@pytest.fixture(scope="module")
def blobs(src: Store, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Blob name in ``src`` -> its bytes: a fixed VHD by vhdtool, one by the SDK, and a VHDX as uploaded."""
    tmp = tmp_path_factory.mktemp("copy")
    raw = make_raw(tmp / "disk.raw", 48 * MiB, seed=11)
    proc = run_cli("upload", str(raw), src.spec("disk.vhd"), connection_string=src.connection_string)
    assert proc.returncode == 0, proc.stderr
    fixed = tmp / "sdk.vhd"
    qemu_img("convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size=on", str(raw), str(fixed))
    sdk_upload(src.client("sdk.vhd"), fixed, whole=True)
    vhdx = tmp / "disk.vhdx"
    qemu_img("convert", "-f", "raw", "-O", "vhdx", str(raw), str(vhdx))
    sdk_upload(src.client("disk.vhdx"), vhdx, whole=True)
    return {name: src.client(name).download_blob().readall() for name in ("disk.vhd", "sdk.vhd", "disk.vhdx")}


def written(store: Store, blob: str) -> int:
    return sum(r.end + 1 - r.start for r in store.client(blob).list_page_ranges())


def digest_of(data: bytes) -> str:
    d = SparseDigest(len(data))
    for i in range(d.granule_count):
        d.add_granule(i, data[i * 4 * MiB:(i + 1) * 4 * MiB])
    return d.hexdigest()


def cross(src: Store, dst: Store, name: str, dest_name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """``vhdtool copy`` of ``src``'s blob to ``dst``'s, both given as CONTAINER/BLOB with their connection strings."""
    return run_cli("copy", src.spec(name), dst.spec(dest_name), "--source-connection-string",
                   src.connection_string, "--connection-string", dst.connection_string, *extra)


def copy_requests(proxy: RecordingProxy) -> list[object]:
    return [r for r in proxy.requests if r.copy_source is not None]


@pytest.mark.parametrize("name", ["disk.vhd", "sdk.vhd"])
def test_relay_against_azurite_moves_only_written_data(blobs: dict[str, bytes], src: Store, dst: Store,
                                                       proxy: RecordingProxy, name: str) -> None:
    proc = cross(src, dst, name, "copy.vhd", "--json", "--verify=full")
    assert proc.returncode == 0, proc.stderr
    result = json_of(proc)
    assert dst.client("copy.vhd").download_blob().readall() == blobs[name]
    assert result["mode"] == "relay" and "501" in result["relay_reason"]
    assert result["verified"] == "full" and result["sparse_digest"] == digest_of(blobs[name])
    data = written(src, name)
    assert result["written_bytes"] == data
    assert result["bytes_read"] <= RATIO * data  # describe's few KiB, then each written byte once
    assert result["bytes_sent"] <= data  # zero pages are not sent
    fetched = [r for r in proxy.requests if r.method == "GET" and r.path.startswith(f"/{ACCOUNT}/")
               and not r.query.get("comp")]
    # --verify=full reads the source a second time; the copy itself read it once.
    assert sum(r.response_length for r in fetched) <= RATIO * 2 * data
    assert result["bytes_verified"] >= 2 * result["bytes_sent"]
    puts = [r for r in proxy.requests if r.is_put_page and r.copy_source is None]
    assert puts and all(r.length is not None and r.length <= 4 * MiB and r.md5_ok for r in puts)
    # The relay is said, in the human form too.
    again = cross(src, dst, name, "copy2.vhd")
    assert again.returncode == 0 and "relaying through this machine" in again.stderr


def test_server_side_copy_through_the_stand_in(blobs: dict[str, bytes], src: Store, dst: Store,
                                               proxy: RecordingProxy) -> None:
    proxy.copy_from_url_keys = dict(src.azurite.accounts)
    url = src.sas_url("disk.vhd")
    proc = run_cli("copy", url, dst.spec("server.vhd"), "--json", "--connection-string", dst.connection_string)
    assert proc.returncode == 0, proc.stderr
    result = json_of(proc)
    assert result["mode"] == "server" and result["relay_reason"] is None
    assert dst.client("server.vhd").download_blob().readall() == blobs["disk.vhd"]
    data = written(src, "disk.vhd")
    assert result["bytes_copied_by_service"] == data
    assert result["bytes_read"] <= 16 * 1024 and result["bytes_sent"] == 0  # no data crossed this machine
    copies = copy_requests(proxy)
    assert copies and all(r.length is not None and r.length <= 4 * MiB for r in copies)  # type: ignore[attr-defined]
    assert sig_of(url) not in proc.stdout + proc.stderr
    # A source by connection string: vhdtool signs a read SAS for the service to use.
    proxy.clear()
    proc = cross(src, dst, "sdk.vhd", "server2.vhd", "--json", "--verify")
    assert proc.returncode == 0, proc.stderr
    assert json_of(proc)["mode"] == "server"
    assert dst.client("server2.vhd").download_blob().readall() == blobs["sdk.vhd"]
    assert all("sig=" in (r.copy_source or "") for r in copy_requests(proxy))  # type: ignore[attr-defined]
    # SAS URLs on both sides, as in the README.
    proxy.clear()
    dest_url = dst.sas_url("server4.vhd", read=True, write=True, create=True)
    proc = run_cli("copy", url, dest_url, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json_of(proc)["mode"] == "server" and sig_of(dest_url) not in proc.stdout + proc.stderr
    assert dst.client("server4.vhd").download_blob().readall() == blobs["disk.vhd"]
    forced = cross(src, dst, "disk.vhdx", "server3.vhd", "--mode", "server")
    assert forced.returncode == 2 and "converted" in forced.stderr


def test_a_refused_copy_source_falls_back_to_the_relay(blobs: dict[str, bytes], src: Store, dst: Store,
                                                       proxy: RecordingProxy) -> None:
    proxy.copy_from_url_keys = dict(src.azurite.accounts)
    proxy.add_rule(Rule(lambda r: r.copy_source is not None, "403", times=1000, code="CannotVerifyCopySource"))
    proc = cross(src, dst, "disk.vhd", "fallback.vhd", "--json", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    result = json_of(proc)
    assert result["mode"] == "relay" and "CannotVerifyCopySource" in result["relay_reason"]
    assert dst.client("fallback.vhd").download_blob().readall() == blobs["disk.vhd"]
    # A 403 that is the destination's own (no write permission) stops the copy: no fallback.
    proxy.clear()
    proxy.add_rule(Rule(lambda r: r.copy_source is not None, "403", times=1000,
                        code="AuthorizationPermissionMismatch"))
    proc = cross(src, dst, "disk.vhd", "denied.vhd")
    assert proc.returncode == 1 and "AuthorizationPermissionMismatch" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_faults_are_retried_on_both_paths(blobs: dict[str, bytes], src: Store, dst: Store,
                                          proxy: RecordingProxy) -> None:
    proxy.copy_from_url_keys = dict(src.azurite.accounts)
    proxy.add_rule(Rule(lambda r: r.copy_source is not None, "503", times=3, retry_after=0))
    proxy.add_rule(Rule(lambda r: r.copy_source is not None, "drop", times=1))
    proc = cross(src, dst, "disk.vhd", "faults.vhd", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json_of(proc)["retries"] == 4
    assert dst.client("faults.vhd").download_blob().readall() == blobs["disk.vhd"]
    proxy.clear()
    proxy.copy_from_url_keys = None
    proxy.add_rule(Rule(lambda r: r.is_put_page, "503", times=2, retry_after=0))
    proxy.add_rule(Rule(lambda r: r.method == "GET" and not r.query.get("comp") and r.path.startswith(f"/{ACCOUNT}/"),
                        "cut", times=2))
    proc = cross(src, dst, "disk.vhd", "faults2.vhd", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json_of(proc)["retries"] == 4
    assert dst.client("faults2.vhd").download_blob().readall() == blobs["disk.vhd"]


def test_destination_rules(blobs: dict[str, bytes], src: Store, dst: Store, proxy: RecordingProxy) -> None:
    size = len(blobs["disk.vhd"])
    # An existing blob holding other data: refused, then overwritten with its stale ranges cleared.
    stale = dst.client("busy.vhd")
    stale.create_page_blob(size)
    stale.upload_page(b"\x5a" * 4 * MiB, 40 * MiB, 4 * MiB)  # where the source holds (almost) nothing
    same = run_cli("copy", src.spec("disk.vhd"), src.spec("disk.vhd"), "--overwrite",
                   connection_string=src.connection_string)
    assert same.returncode == 2 and "same blob" in same.stderr
    refused = cross(src, dst, "disk.vhd", "busy.vhd")
    assert refused.returncode == 1 and "--overwrite" in refused.stderr
    proc = cross(src, dst, "disk.vhd", "busy.vhd", "--overwrite", "--json", "--verify")
    assert proc.returncode == 0, proc.stderr
    assert json_of(proc)["bytes_cleared"] >= 4 * MiB
    assert stale.download_blob().readall() == blobs["disk.vhd"]
    # A managed disk (emulated: a page blob created beforehand) must have exactly the source's size.
    wrong = dst.client("md-wrong.vhd")
    wrong.create_page_blob(size + 1024 * 1024)
    proc = cross(src, dst, "disk.vhd", "md-wrong.vhd", "--managed-disk")
    assert proc.returncode == 1 and "bytes" in proc.stderr and "upload-size-bytes" in proc.stderr
    right = dst.client("md-right.vhd")
    right.create_page_blob(size)
    proc = cross(src, dst, "disk.vhd", "md-right.vhd", "--managed-disk", "--json")
    assert proc.returncode == 0, proc.stderr
    assert right.download_blob().readall() == blobs["disk.vhd"]


def test_a_vhdx_blob_is_converted_by_the_relay(blobs: dict[str, bytes], src: Store, dst: Store,
                                               proxy: RecordingProxy) -> None:
    proc = cross(src, dst, "disk.vhdx", "converted.vhd", "--json", "--verify=full")
    assert proc.returncode == 0, proc.stderr
    result = json_of(proc)
    assert result["converted"] and result["mode"] == "relay" and "vhdx" in result["relay_reason"]
    copied = dst.client("converted.vhd").download_blob().readall()
    assert copied[:-512] == blobs["disk.vhd"][:-512] and len(copied) == len(blobs["disk.vhd"])
    check = run_cli("check", "--role", "data", "--json", dst.spec("converted.vhd"),
                    connection_string=dst.connection_string)
    assert check.returncode == 0 and json_of(check)["ready"], check.stdout


def test_a_killed_copy_resumes(blobs: dict[str, bytes], src: Store, dst: Store, proxy: RecordingProxy) -> None:
    env = {k: v for k, v in os.environ.items() if k != "AZURE_STORAGE_CONNECTION_STRING"}
    env["PYTHONPATH"] = str(ROOT)
    args = cli_command("copy", src.spec("sdk.vhd"), dst.spec("resumed.vhd"),
                       "--source-connection-string", src.connection_string,
                       "--connection-string", dst.connection_string, "--threads", "2")
    seen = [0]
    child = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill_after_some_puts(rec: object) -> None:
        if getattr(rec, "is_put_page", False):
            seen[0] += 1
            if seen[0] == 6:
                child.send_signal(signal.SIGKILL)
    proxy.on_request = kill_after_some_puts
    child.wait(timeout=120)
    proxy.on_request = None
    proxy.wait_idle()
    assert child.returncode == -signal.SIGKILL
    partial = written(dst, "resumed.vhd")
    data = written(src, "sdk.vhd")
    assert 0 < partial < data
    time.sleep(0.1)
    proxy.clear()
    proc = run_cli("copy", src.spec("sdk.vhd"), dst.spec("resumed.vhd"), "--source-connection-string",
                   src.connection_string, "--connection-string", dst.connection_string, "--resume", "--json",
                   "--verify=full")
    assert proc.returncode == 0, proc.stderr
    result = json_of(proc)
    assert result["resumed"]
    assert dst.client("resumed.vhd").download_blob().readall() == blobs["sdk.vhd"]
    assert result["bytes_read"] <= data - partial + 4 * MiB + 8192  # what was missing, and the granule in flight
