"""``prepare --upload`` and ``verify --dest`` against a real Azurite blob service on loopback.

Oracle: the blobs are downloaded with the Azure SDK and hashed with hashlib and with the published
reference script of the sparse digest (docs/scripts/sparse_digest.py), independently of vhdtool's
own read-back; a recording proxy counts what ``verify --dest`` reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import urllib.parse
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from support.azurite import ACCOUNT, ACCOUNT_KEY, Azurite, RecordingProxy
from support.cli import run_cli_process
from support.oracles import reference_sparse_digest, reference_sparse_digest_of_bytes

from vhdtool.azure.container import parse_destination
from vhdtool.jobs.prepare import PrepareRequest, prepare

pytestmark = pytest.mark.slow  # left out of scripts/test.sh --fast

pytest.importorskip("azure.storage.blob")
DAY = date(2026, 11, 23)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def container(azurite: Azurite, request: pytest.FixtureRequest) -> str:
    """A fresh container per test."""
    from azure.storage.blob import BlobServiceClient

    name = "t" + hashlib.md5(request.node.name.encode()).hexdigest()[:20]
    BlobServiceClient.from_connection_string(azurite.connection_string()).create_container(name)
    return name


def blob_client(azurite: Azurite, container: str, blob: str) -> Any:
    from azure.storage.blob import BlobClient

    return BlobClient.from_connection_string(azurite.connection_string(), container, blob)


def blob_bytes(azurite: Azurite, container: str, blob: str) -> bytes:
    return bytes(blob_client(azurite, container, blob).download_blob().readall())


def test_upload_after_conversion_and_verify_against_blobs(azurite: Azurite, container: str,
                                                          sample: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "o"
    dest = parse_destination(container, connection_string=azurite.connection_string())
    result = prepare(PrepareRequest("up", str(sample["os"]), ((0, str(sample["data"])),), str(out),
                                    expect="generalized", destination=dest, day=DAY, hashes=("md5", "sha256")))
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
        assert reference_sparse_digest_of_bytes(content) == disk.fixed_vhd.sparse_sha256
        props = blob_client(azurite, container, disk.name + ".vhd").get_blob_properties()
        assert bytes(props.content_settings.content_md5).hex() == disk.fixed_vhd.md5  # asked for: stored
        assert props.metadata["vhdtool_sparse_sha256"] == disk.fixed_vhd.sparse_sha256

    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    env.update(PYTHONPATH=str(ROOT), AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string())
    ok = run_cli_process("verify", result.manifest_path, "--dest", container, "--json", base_env=env)
    assert ok.returncode == 0, ok.stderr
    assert [d["status"] for d in json.loads(ok.stdout)["disks"]] == ["ok", "ok"]

    # Change one page of the OS disk's blob: verify --dest reports drift for that disk only.
    from azure.storage.blob import BlobClient

    client = BlobClient.from_connection_string(azurite.connection_string(), container,
                                               manifest.disks[0].name + ".vhd")
    client.upload_page(b"\x5a" * 512, offset=2 * 1024 * 1024, length=512)
    bad = run_cli_process("verify", result.manifest_path, "--dest", container, base_env=env)
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
        assert reference_sparse_digest_of_bytes(content) == disk.fixed_vhd.sparse_sha256
        assert disk.fixed_vhd.md5 is None and disk.fixed_vhd.sha256 is None  # not asked for
        assert not blob_client(azurite, container, disk.name + ".vhd").get_blob_properties() \
            .content_settings.content_md5
        raw = tmp_path / f"{disk.name}.raw"
        subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", str(src), str(raw)], check=True)
        assert content[:disk.source.virtual_size] == raw.read_bytes()

    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    env["PYTHONPATH"] = str(ROOT)
    local = run_cli_process("verify", result.manifest_path, base_env=env)
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
    runs = [run_cli_process("prepare", "--name", "sas", "--os", str(sample["os"]), "--data", f"0={sample['data']}",
                            "-o", str(out), "--upload", url, *extra, base_env=env) for extra in ([], ["--json"])]
    for proc in runs:
        assert proc.returncode == 0, proc.stderr
    manifests = sorted(out.glob("*.manifest.json"))
    assert len(manifests) == 2  # the second run took counter 01: the blobs of the first hold the names
    verify = run_cli_process("verify", str(manifests[0]), "--dest", url, base_env=env)
    assert verify.returncode == 0 and "no drift" in verify.stdout, verify.stdout + verify.stderr
    from azure.storage.blob import BlobClient

    gone_name = json.loads(manifests[1].read_text())["disks"][1]["name"] + ".vhd"
    BlobClient.from_connection_string(azurite.connection_string(), container, gone_name).delete_blob()
    missing = run_cli_process("verify", str(manifests[1]), "--dest", url, base_env=env)
    assert missing.returncode == 1 and f"MISSING  {gone_name[:-4]}" in missing.stdout, missing.stdout
    # A failing upload (the blob service is gone from this port) must not print the token either.
    dead = f"http://127.0.0.1:1/{url.split('/', 3)[3]}"
    fail = run_cli_process("prepare", "--name", "gone", "--os", str(sample["os"]), "-o", str(tmp_path / "dead"),
                           "--upload", dead, base_env=env)
    assert fail.returncode == 1 and fail.stderr.splitlines()[-1].startswith("vhdtool: error: ")
    assert not (tmp_path / "dead").exists()  # no output folder is left behind by a failed run
    texts = [p.stdout + p.stderr for p in (*runs, verify, missing, fail)] + [m.read_text() for m in manifests]
    quoted = urllib.parse.quote(signature, safe="")
    for text in texts:
        assert signature not in text and quoted not in text and "sig=" not in text
    data = json.loads(manifests[0].read_text())
    assert data["destination"] == f"{azurite.endpoint}/{container}"
    assert all(d["blob_url"] == f"{azurite.endpoint}/{container}/{d['name']}.vhd" for d in data["disks"])


def scattered_vhdx(tmp_path: Path, size: int) -> tuple[Path, Path]:
    """A raw disk with random data scattered over it (a few written-zero pieces too), and qemu-img's VHDX of it."""
    import random

    rnd = random.Random(17)
    raw = tmp_path / "disk.raw"
    with open(raw, "wb") as f:
        f.truncate(size)
        for _ in range(24):
            f.seek(rnd.randrange(0, size - 300_000) // 512 * 512)
            length = rnd.choice([512, 8192, 200_000])
            f.write(bytes(length) if rnd.random() < 0.2 else rnd.randbytes(length))
    vhdx = tmp_path / "disk.vhdx"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vhdx", str(raw), str(vhdx)], check=True)
    return raw, vhdx


def test_sparse_digest_of_a_real_upload_is_the_reference_scripts(azurite: Azurite, container: str,
                                                                  tmp_path: Path) -> None:
    """The digest upload --json reports is the reference script's, recomputed from the local image (its
    bytes as qemu-img reads them, padded, with the uploaded footer) and from the blob's bytes; so is
    the one prepare --upload records, from its local fixed VHD and from the blob."""
    size = 40 * 1024 * 1024 + 3072
    raw, vhdx = scattered_vhdx(tmp_path, size)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
    env.update(PYTHONPATH=str(ROOT), AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string())
    proc = run_cli_process("upload", str(vhdx), f"{container}/direct.vhd", "--json", base_env=env)
    assert proc.returncode == 0, proc.stderr
    reported = json.loads(proc.stdout)
    assert reported["md5"] is None and reported["digests"] == {"sparse-sha256": reported["sparse_sha256"]}
    blob = blob_bytes(azurite, container, "direct.vhd")
    assert reference_sparse_digest_of_bytes(blob) == reported["sparse_sha256"]
    props = blob_client(azurite, container, "direct.vhd").get_blob_properties()
    assert props.metadata["vhdtool_sparse_sha256"] == reported["sparse_sha256"]
    assert not props.content_settings.content_md5  # no MD5 was asked for, none is stored
    # From the local image: qemu-img's reading of the VHDX, zeros to the next MiB, the blob's footer.
    local = tmp_path / "local.raw"
    subprocess.run(["qemu-img", "convert", "-f", "vhdx", "-O", "raw", str(vhdx), str(local)], check=True)
    padded = -(-size // (1024 * 1024)) * 1024 * 1024
    with open(local, "r+b") as f:
        f.truncate(padded)
        f.seek(padded)
        f.write(blob[-512:])
    assert local.read_bytes()[:size] == raw.read_bytes()
    assert reference_sparse_digest(local) == reported["sparse_sha256"]

    out = tmp_path / "set"
    dest = parse_destination(container, connection_string=azurite.connection_string())
    result = prepare(PrepareRequest("dig", str(vhdx), (), str(out), destination=dest, day=DAY, force=True))
    record = result.manifest.disks[0].fixed_vhd
    assert reference_sparse_digest(out / str(record.path)) == record.sparse_sha256
    assert reference_sparse_digest_of_bytes(blob_bytes(azurite, container, result.manifest.disks[0].name + ".vhd")) \
        == record.sparse_sha256


def test_verify_dest_reads_only_the_written_ranges(azurite: Azurite, container: str, tmp_path: Path) -> None:
    """A sparse blob is verified by Get Page Ranges and ranged reads of what it lists, nothing else."""
    from vhdtool.jobs.manifest_file import read_manifest
    from vhdtool.jobs.verify import blob_hasher, verify_blobs

    _, vhdx = scattered_vhdx(tmp_path, 64 * 1024 * 1024)
    dest = parse_destination(container, connection_string=azurite.connection_string())
    result = prepare(PrepareRequest("rd", str(vhdx), (), str(tmp_path / "o"), destination=dest, day=DAY,
                                    no_local_copy=True, force=True))
    name = result.manifest.disks[0].name + ".vhd"
    client = blob_client(azurite, container, name)
    written = sum(int(r.end) - int(r.start) + 1 for r in client.list_page_ranges() if not r.cleared)
    assert 0 < written < 8 * 1024 * 1024  # sparse: a few MiB of a 64 MiB blob
    proxy = RecordingProxy(azurite.port)
    try:
        hasher = blob_hasher(container, connection_string=azurite.connection_string(proxy.endpoint))
        verdict = verify_blobs(read_manifest(result.manifest_path), result.manifest_path, hasher)
        assert verdict.ok and verdict.verdicts[0].compared == ("sparse-sha256",)
        reads = [r for r in proxy.requests if r.method == "GET" and r.query.get("comp") is None]
        spans = []
        for r in reads:
            spec = r.headers.get("x-ms-range") or r.headers.get("range") or ""
            assert spec.startswith("bytes="), "every read is ranged"
            a, _, b = spec[6:].partition("-")
            spans.append((int(a), int(b) + 1))
        assert sum(b - a for a, b in spans) == written  # exactly the written ranges, once each
        listings = [r for r in proxy.requests if r.query.get("comp") == "pagelist"]
        assert len(listings) == 1
    finally:
        proxy.close()
