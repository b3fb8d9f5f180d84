"""``prepare`` of a set whose disks are already in Azure, and ``verify`` of a set after it was copied.

The sample set (a Linux OS disk as VHDX, a data disk as dynamic VHD) is put in an Azurite account
with the SDK as it is; ``prepare`` reads both where they are (SAS URLs), checks them, and uploads
them as fixed VHDs with no local copy. Then ``vhdtool copy`` takes each blob to a second account, as
when a set moves to another region, and ``verify --dest`` checks the copies against the manifest.
"""

from __future__ import annotations

import json
from pathlib import Path

from support.azurite import ACCOUNT, SECOND_ACCOUNT, Azurite, RecordingProxy
from support.cli import run_cli
from support.fixture_files import unpack_fixture
from support.remote_helpers import Store, json_of, sdk_upload, sig_of


def test_prepare_reads_disks_in_azure_and_verify_checks_a_copied_set(azurite: Azurite, proxy: RecordingProxy,
                                                                     tmp_path: Path) -> None:
    disks = Store(azurite, proxy, ACCOUNT)  # where someone left the disks
    images = Store(azurite, proxy, ACCOUNT)  # where prepare uploads the set
    region2 = Store(azurite, proxy, SECOND_ACCOUNT)  # where the set is copied to
    sdk_upload(disks.client("os.vhdx"), unpack_fixture("sample/linux-os.vhdx.gz", tmp_path))
    data = unpack_fixture("sample/data.vhd.gz", tmp_path)
    sdk_upload(disks.client("data.vhd"), data)
    os_url, data_url = disks.sas_url("os.vhdx"), disks.sas_url("data.vhd")
    out = tmp_path / "out"
    proc = run_cli("prepare", "--name", "web", "--os", os_url, "--data", f"0={data_url}", "-o", str(out),
                   "--upload", images.container, "--no-local-copy", "--json", "-q",
                   connection_string=images.connection_string)
    assert proc.returncode == 0, proc.stderr
    manifest = json_of(proc)
    text = next(out.glob("*.manifest.json")).read_text()
    for secret in (sig_of(os_url), sig_of(data_url)):
        assert secret not in text and secret not in proc.stdout + proc.stderr
    os_disk, data_disk = manifest["disks"]
    assert os_disk["source"]["path"] == f"{disks.endpoint}/{disks.container}/os.vhdx"
    assert os_disk["source"]["format"] == "vhdx" and os_disk["os"]["state"] == "generalized"
    assert data_disk["source"]["type"] == "dynamic" and data_disk["fixed_vhd"]["path"] is None
    manifest_path = next(out.glob("*.manifest.json"))
    ok = run_cli("verify", str(manifest_path), "--dest", images.container, "--json",
                 connection_string=images.connection_string)
    assert ok.returncode == 0 and json_of(ok)["ok"], ok.stdout

    # The set moves to another account (another region): blob by blob, with vhdtool copy.
    for disk in manifest["disks"]:
        blob = disk["name"] + ".vhd"
        moved = run_cli("copy", images.spec(blob), region2.spec(blob), "--source-connection-string",
                        images.connection_string, "--connection-string", region2.connection_string)
        assert moved.returncode == 0, moved.stderr
    there = run_cli("verify", str(manifest_path), "--dest", region2.container, "--json",
                    connection_string=region2.connection_string)
    assert there.returncode == 0 and json_of(there)["ok"], there.stdout
    # A copy that went wrong is drift.
    region2.client(os_disk["name"] + ".vhd").upload_page(b"\x01" * 512, 512 * 100, 512)
    drift = run_cli("verify", str(manifest_path), "--dest", region2.container, "--json",
                    connection_string=region2.connection_string)
    assert drift.returncode == 1
    verdicts = {d["name"]: d["status"] for d in json.loads(drift.stdout)["disks"]}
    assert verdicts == {os_disk["name"]: "drift", data_disk["name"]: "ok"}
