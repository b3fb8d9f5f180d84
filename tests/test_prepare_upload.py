"""``prepare --upload`` and ``verify --dest`` against a real Azurite blob service on loopback.

Oracle: the blobs are downloaded with the Azure SDK and hashed with hashlib, independently of
vhdtool's own read-back.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import urllib.parse
from datetime import date
from pathlib import Path

import pytest
from azurite import ACCOUNT, ACCOUNT_KEY, Azurite

from vhdtool.prepare import PrepareRequest, parse_destination, prepare

pytestmark = pytest.mark.slow  # left out of scripts/test.sh --fast

pytest.importorskip("azure.storage.blob")
DAY = date(2026, 11, 23)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def container(azurite: Azurite, request: pytest.FixtureRequest) -> str:
    """A fresh container per test."""
    from azure.storage.blob import BlobServiceClient

    name = "t" + hashlib.md5(request.node.name.encode()).hexdigest()[:20]
    BlobServiceClient.from_connection_string(azurite.connection_string()).create_container(name)
    return name


def blob_bytes(azurite: Azurite, container: str, blob: str) -> bytes:
    from azure.storage.blob import BlobClient

    client = BlobClient.from_connection_string(azurite.connection_string(), container, blob)
    return client.download_blob().readall()


def test_upload_after_conversion_and_verify_against_blobs(azurite: Azurite, container: str,
                                                          sample: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "o"
    dest = parse_destination(container, connection_string=azurite.connection_string())
    result = prepare(PrepareRequest("up", str(sample["os"]), ((0, str(sample["data"])),), str(out),
                                    expect="generalized", destination=dest, day=DAY))
    manifest = result.manifest
    assert manifest.destination == f"{azurite.endpoint}/{container}"
    text = Path(result.manifest_path).read_text()
    assert "AccountKey" not in text and "sig=" not in text
    for disk in manifest.disks:
        assert disk.blob_url == f"{azurite.endpoint}/{container}/{disk.name}.vhd"
        content = blob_bytes(azurite, container, disk.name + ".vhd")
        assert content == (out / str(disk.fixed_vhd.path)).read_bytes()
        assert hashlib.md5(content).hexdigest() == disk.fixed_vhd.md5
        assert hashlib.sha256(content).hexdigest() == disk.fixed_vhd.sha256

    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    env.update(PYTHONPATH=str(ROOT), AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string())
    ok = subprocess.run([sys.executable, "-m", "vhdtool", "verify", result.manifest_path, "--dest", container,
                         "--json"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert [d["status"] for d in json.loads(ok.stdout)["disks"]] == ["ok", "ok"]

    # Change one page of the OS disk's blob: verify --dest reports drift for that disk only.
    from azure.storage.blob import BlobClient

    client = BlobClient.from_connection_string(azurite.connection_string(), container,
                                               manifest.disks[0].name + ".vhd")
    client.upload_page(b"\x5a" * 512, offset=2 * 1024 * 1024, length=512)
    bad = subprocess.run([sys.executable, "-m", "vhdtool", "verify", result.manifest_path, "--dest",
                          container], capture_output=True, text=True, env=env)
    assert bad.returncode == 1
    assert bad.stdout.splitlines()[0].startswith("DRIFT ") and "DRIFT:" in bad.stdout


def test_no_local_copy_uploads_from_the_source(azurite: Azurite, container: str, sample: dict[str, Path],
                                               tmp_path: Path) -> None:
    out = tmp_path / "o"
    dest = parse_destination(container, connection_string=azurite.connection_string())
    result = prepare(PrepareRequest("direct", str(sample["os"]), ((2, str(sample["data"])),), str(out),
                                    destination=dest, no_local_copy=True, day=DAY))
    assert sorted(p.name for p in out.iterdir()) == ["direct.manifest.json"]
    for disk, src, fmt in zip(result.manifest.disks, (sample["os"], sample["data"]), ("vhdx", "vpc"),
                              strict=True):
        assert disk.fixed_vhd.path is None
        content = blob_bytes(azurite, container, disk.name + ".vhd")
        assert len(content) == disk.fixed_vhd.file_size
        assert hashlib.md5(content).hexdigest() == disk.fixed_vhd.md5
        assert hashlib.sha256(content).hexdigest() == disk.fixed_vhd.sha256
        raw = tmp_path / f"{disk.name}.raw"
        subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", str(src), str(raw)], check=True)
        assert content[:disk.source.virtual_size] == raw.read_bytes()

    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    env["PYTHONPATH"] = str(ROOT)
    local = subprocess.run([sys.executable, "-m", "vhdtool", "verify", result.manifest_path],
                           capture_output=True, text=True, env=env)
    assert local.returncode == 1 and "nothing verified" in local.stdout

    # A blob that already holds a name counts as a collision: the next set takes counter 01.
    again = prepare(PrepareRequest("direct", str(sample["os"]), (), str(out), destination=dest,
                                   no_local_copy=True, day=DAY))
    assert again.manifest.disks[0].name == "direct-os-2026-11-23-01"


def container_sas_url(azurite: Azurite, container: str) -> tuple[str, str]:
    """A container SAS URL for Azurite (read, write, create, list) and its signature."""
    from datetime import datetime, timedelta, timezone

    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    token = generate_container_sas(ACCOUNT, container, account_key=ACCOUNT_KEY,
                                   permission=ContainerSasPermissions(read=True, write=True, create=True,
                                                                      list=True),
                                   expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    signature = urllib.parse.parse_qs(token)["sig"][0]
    return f"{azurite.endpoint}/{container}?{token}", signature


def test_sas_token_never_reaches_the_manifest_or_the_output(azurite: Azurite, container: str,
                                                             sample: dict[str, Path], tmp_path: Path) -> None:
    url, signature = container_sas_url(azurite, container)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    env["PYTHONPATH"] = str(ROOT)
    out = tmp_path / "o"
    runs = [subprocess.run([sys.executable, "-m", "vhdtool", "prepare", "--name", "sas", "--os", str(sample["os"]),
                            "--data", f"0={sample['data']}", "-o", str(out), "--upload", url, *extra],
                           capture_output=True, text=True, env=env) for extra in ([], ["--json"])]
    for proc in runs:
        assert proc.returncode == 0, proc.stderr
    manifests = sorted(out.glob("*.manifest.json"))
    assert len(manifests) == 2  # the second run took counter 01: the blobs of the first hold the names
    verify = subprocess.run([sys.executable, "-m", "vhdtool", "verify", str(manifests[0]), "--dest", url],
                            capture_output=True, text=True, env=env)
    assert verify.returncode == 0 and "no drift" in verify.stdout, verify.stdout + verify.stderr
    from azure.storage.blob import BlobClient

    gone_name = json.loads(manifests[1].read_text())["disks"][1]["name"] + ".vhd"
    BlobClient.from_connection_string(azurite.connection_string(), container, gone_name).delete_blob()
    missing = subprocess.run([sys.executable, "-m", "vhdtool", "verify", str(manifests[1]), "--dest", url],
                             capture_output=True, text=True, env=env)
    assert missing.returncode == 1 and f"MISSING  {gone_name[:-4]}" in missing.stdout, missing.stdout
    # A failing upload (the blob service is gone from this port) must not print the token either.
    dead = f"http://127.0.0.1:1/{url.split('/', 3)[3]}"
    fail = subprocess.run([sys.executable, "-m", "vhdtool", "prepare", "--name", "gone", "--os", str(sample["os"]),
                           "-o", str(tmp_path / "dead"), "--upload", dead], capture_output=True, text=True, env=env)
    assert fail.returncode == 1 and fail.stderr.splitlines()[-1].startswith("vhdtool: error: ")
    assert not (tmp_path / "dead").exists()  # no output folder is left behind by a failed run
    texts = [p.stdout + p.stderr for p in (*runs, verify, missing, fail)] + [m.read_text() for m in manifests]
    quoted = urllib.parse.quote(signature, safe="")
    for text in texts:
        assert signature not in text and quoted not in text and "sig=" not in text
    data = json.loads(manifests[0].read_text())
    assert data["destination"] == f"{azurite.endpoint}/{container}"
    assert all(d["blob_url"] == f"{azurite.endpoint}/{container}/{d['name']}.vhd" for d in data["disks"])
