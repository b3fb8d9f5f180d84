"""Signing in as Azure users do: ``DefaultAzureCredential`` with a managed identity, end to end.

The blob service is a second Azurite, over HTTPS with ``--oauth basic`` (it checks a bearer token's
audience, issuer and lifetime, and refuses bearer tokens over HTTP); the certificate is made for the
run and trusted through ``REQUESTS_CA_BUNDLE``/``SSL_CERT_FILE`` for the test process and its
children only. ``DefaultAzureCredential`` finds the managed identity through ``IDENTITY_ENDPOINT``
and ``IDENTITY_HEADER`` (the App Service protocol) served by ``tests/support/identity.py``, which counts the
tokens it hands out. Requests pass a recording HTTPS proxy, which sees every ``Authorization`` header.
What Azurite does not check (RBAC roles) the proxy answers as Azure does: 403
``AuthorizationPermissionMismatch`` (REST API "Common error codes").
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import requests
from azure.storage.blob import BlobSasPermissions, generate_blob_sas
from support.azurite import ACCOUNT, ACCOUNT_KEY, Azurite, Recorded, RecordingProxy, Rule, storage_error
from support.cli import run_cli, run_cli_process
from support.forward_proxy import ForwardProxy
from support.identity import STORAGE_RESOURCE, Certificate, IdentityEndpoint, claims_of, sign_in_environment
from support.signin_helpers import Box, assert_signed_in_only, bearer_claims, make_raw

from vhdtool import open_image
from vhdtool.azure.storage import Destination
from vhdtool.azure.upload import UploadOptions, upload
from vhdtool.blockio.fileio import data_ranges
from vhdtool.extents import MiB, merge_ranges


def test_upload_account_url_signs_in_with_the_managed_identity(tmp_path: Path, box: Box, https_proxy: RecordingProxy,
                                                               identity: IdentityEndpoint,
                                                               certificate: Certificate) -> None:
    """A fresh process, as a user runs it: one token, asked the App Service way, on every request."""
    image = make_raw(tmp_path / "disk.raw", 16 * MiB, runs=12, run_length=100 * 1024)
    proc = run_cli_process(["upload", str(image), f"{box.container}/disk.vhd", "--account-url", https_proxy.endpoint,
                            "--verify=full", "--json"], base_env=sign_in_environment(identity, certificate))
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert box.download("disk.vhd")[:-512] == image.read_bytes()
    assert_signed_in_only(https_proxy)
    assert facts["requests"] == len(https_proxy.requests)
    assert any(r.is_put_page for r in https_proxy.requests)
    (asked,) = identity.requests
    assert (asked.resource, asked.api_version, asked.header_ok, asked.status) == \
        (STORAGE_RESOURCE, "2019-08-01", True, 200)


def test_prepare_upload_and_verify_sign_in_once(tmp_path: Path, box: Box, https_proxy: RecordingProxy,
                                               signed_in: IdentityEndpoint, sample: dict[str, Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """``prepare --upload URL`` (a container URL without SAS) then ``verify --dest URL`` in one process:
    two disks, two commands, one token, however many blobs and requests."""
    url = f"{https_proxy.endpoint}/{box.container}"
    out = tmp_path / "set"
    code, stdout, err = run_cli(["prepare", "--name", "web", "--os", str(sample["os"]), "--data",
                                 f"0={sample['data']}", "-o", str(out), "--upload", url, "--no-local-copy",
                                 "--json", "-q"])
    assert code == 0, err
    manifest = json.loads(stdout)
    assert [d["blob_url"].startswith(url) for d in manifest["disks"]] == [True, True]
    assert_signed_in_only(https_proxy)
    uploads = len(https_proxy.requests)

    (path,) = out.glob("*.manifest.json")
    code, stdout, err = run_cli(["verify", str(path), "--dest", url])
    assert code == 0 and "no drift" in stdout, stdout + err
    assert_signed_in_only(https_proxy)
    assert len(https_proxy.requests) > uploads
    assert len(signed_in.requests) == 1 and signed_in.issued(STORAGE_RESOURCE)


def assert_blob_holds(box: Box, name: str, image: Path) -> None:
    """The blob lists exactly the image's data pages (and the footer) and holds its bytes there; the
    zeros are not downloaded (1 GiB of them would cost more than the upload)."""
    client = box.service.get_blob_client(box.container, name)
    size = image.stat().st_size
    listed = [(r.start, r.end + 1) for r in client.list_page_ranges()]
    with open(image, "rb") as f:
        expected: list[tuple[int, int]] = []
        for start, end in data_ranges(f.fileno(), size):  # the file's allocated extents, then their pages
            f.seek(start)
            pages = np.frombuffer(f.read(end - start), dtype=np.uint8).reshape(-1, 512).any(axis=1)
            edges = np.flatnonzero(np.diff(np.concatenate(([0], pages.astype(np.int8), [0]))))
            expected += [(start + int(a) * 512, start + int(b) * 512) for a, b in zip(edges[::2], edges[1::2],
                                                                                       strict=True)]
        expected = merge_ranges(expected)
        assert merge_ranges(listed) == merge_ranges([*expected, (size, size + 512)])
        # Plain ranged GETs with a read SAS (the SDK's download_blob lists the page ranges on every call).
        sas = generate_blob_sas(ACCOUNT, box.container, name, account_key=ACCOUNT_KEY,
                                permission=BlobSasPermissions(read=True),
                                expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1))
        with requests.Session() as session:
            for start, end in expected:
                f.seek(start)
                got = session.get(f"{client.url}?{sas}", verify=box.cafile, timeout=30,
                                  headers={"x-ms-range": f"bytes={start}-{end - 1}", "x-ms-version": "2021-08-06"})
                assert got.status_code == 206 and got.content == f.read(end - start)


def _upload(image: Path, box: Box, name: str) -> int:
    with open_image(str(image)) as disk:
        result = upload(disk, Destination(account_url=box.service.url.rstrip("/"), container=box.container,
                                          blob=name), UploadOptions(verify="full"))
    assert_blob_holds(box, name, image)
    return result.requests


def test_one_token_per_1gib_upload(tmp_path: Path, box: Box, signed_in: IdentityEndpoint) -> None:
    """Tokens are cached: a 1 GiB upload with ``--verify=full`` (a Put Page and a read back per data run)
    sends its requests on one token."""
    big = make_raw(tmp_path / "big.raw", 1024 * MiB, runs=80, run_length=256 * 1024)  # 20 MiB of data
    assert _upload(big, box, "direct.vhd") > 160
    assert len(signed_in.issued()) == 1


def test_bearer_upload_through_an_https_proxy_tunnel(tmp_path: Path, box: Box, https_proxy: RecordingProxy,
                                                     signed_in: IdentityEndpoint,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``https_proxy`` set: every request, Put Page and reads included, goes through a CONNECT tunnel,
    TLS to the service inside it, on one token."""
    tunnel = ForwardProxy()
    try:
        for name in ("no_proxy", "NO_PROXY", "HTTPS_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("https_proxy", tunnel.endpoint)
        image = make_raw(tmp_path / "disk.raw", 16 * MiB, runs=30, run_length=8192)
        with open_image(str(image)) as disk:
            result = upload(disk, Destination(url=f"{https_proxy.endpoint}/{box.container}/tunnel.vhd"),
                            UploadOptions(threads=3, verify="full"))
        assert box.download("tunnel.vhd")[:-512] == image.read_bytes()
        assert_signed_in_only(https_proxy)
        assert any(r.is_put_page for r in https_proxy.requests)
        assert result.requests == len(https_proxy.requests)
        endpoint = urllib.parse.urlsplit(https_proxy.endpoint).netloc
        assert {method for method, _ in tunnel.relayed} == {"CONNECT"}
        assert tunnel.tunnelled[endpoint] > result.bytes_sent  # the Put Page bodies went through it
        assert len(signed_in.issued()) == 1
    finally:
        tunnel.close()


def test_short_lived_tokens_are_replaced_before_they_expire(tmp_path: Path, box: Box, https_proxy: RecordingProxy,
                                                            signed_in: IdentityEndpoint) -> None:
    """Tokens living 3 s, an upload slowed to about 5 s: new tokens come half-way through each one's
    life, no request carries an expired one (Azurite would refuse it), and not one per request."""
    signed_in.lifetime = 3
    image = make_raw(tmp_path / "disk.raw", 16 * MiB, runs=40, run_length=8192)
    https_proxy.add_rule(Rule(lambda r: r.is_put_page, "delay", times=10_000, seconds=0.25))
    late: list[str] = []

    def check(rec: Recorded) -> None:
        if claims_of(rec.headers.get("authorization", "Bearer a.e30.a").removeprefix("Bearer ")).get("exp", 0) \
                <= time.time():
            late.append(f"{rec.method} {rec.path}")

    https_proxy.on_request = check
    started = time.monotonic()
    with open_image(str(image)) as disk:
        upload(disk, Destination(url=f"{https_proxy.endpoint}/{box.container}/disk.vhd"), UploadOptions(threads=2))
    seconds = time.monotonic() - started
    assert box.download("disk.vhd")[:-512] == image.read_bytes()
    assert not late
    assert_signed_in_only(https_proxy)
    issued = len(signed_in.issued())
    used = {bearer_claims(r)["jti"] for r in https_proxy.requests}
    assert seconds > 4
    assert 2 <= issued <= seconds / 1.0 + 2, (issued, seconds)
    assert len(used) == issued
    assert issued * 5 < len(https_proxy.requests)


def test_no_sign_in_found_is_one_line(tmp_path: Path, box: Box, https_proxy: RecordingProxy,
                                      signed_in: IdentityEndpoint, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A machine without a usable identity: the chain is told to try only the managed identity (so a
    developer's own `az login` cannot answer), which has none assigned."""
    signed_in.fail_status = 400
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "ManagedIdentityCredential")
    image = make_raw(tmp_path / "disk.raw", 4 * MiB, runs=2, run_length=4096)
    started = time.monotonic()
    code, out, err = run_cli(["upload", str(image), f"{box.container}/disk.vhd", "--account-url",
                              https_proxy.endpoint])
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "no usable Microsoft Entra ID sign-in (tried ManagedIdentity)" in err and "az login" in err
    assert time.monotonic() - started < 10
    assert not https_proxy.requests  # nothing reached the service


def test_identity_without_a_data_role_is_told_which_role(tmp_path: Path, box: Box, https_proxy: RecordingProxy,
                                                         signed_in: IdentityEndpoint,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Signed in, but the identity has no data role on the account: Azure says 403
    AuthorizationPermissionMismatch (Azurite does not check roles; the proxy answers as Azure)."""
    https_proxy.add_rule(Rule(lambda r: r.headers.get("authorization", "").startswith("Bearer "), "answer",
                              times=10_000, answer=lambda r: storage_error(
                                  403, "AuthorizationPermissionMismatch",
                                  "This request is not authorized to perform this operation using this permission.")))
    image = make_raw(tmp_path / "disk.raw", 4 * MiB, runs=2, run_length=4096)
    code, out, err = run_cli(["upload", str(image), f"{https_proxy.endpoint}/{box.container}/disk.vhd"])
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "HTTP 403 AuthorizationPermissionMismatch" in err
    assert "give it the role Storage Blob Data Contributor on the storage account or container" in err
    assert len(https_proxy.requests) == 1  # not retried
    token = https_proxy.requests[0].headers["authorization"].removeprefix("Bearer ")
    assert token not in err and token.split(".")[2] not in err


def test_token_for_another_audience_refused_by_azurite(tmp_path: Path, box: Box, https_proxy: RecordingProxy,
                                                       signed_in: IdentityEndpoint,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Azurite itself checks the audience: a token for Azure Resource Manager is refused."""
    signed_in.audience = "https://management.azure.com/"
    image = make_raw(tmp_path / "disk.raw", 4 * MiB, runs=2, run_length=4096)
    code, out, err = run_cli(["upload", str(image), f"{box.container}/disk.vhd", "--account-url",
                              https_proxy.endpoint])
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "HTTP 403 AuthenticationFailed: the service refused the Microsoft Entra ID token" in err
    assert [r.status for r in https_proxy.requests] == [403]


def test_a_token_is_never_sent_over_plain_http(tmp_path: Path, azurite: Azurite, signed_in: IdentityEndpoint,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    image = make_raw(tmp_path / "disk.raw", 4 * MiB, runs=2, run_length=4096)
    code, out, err = run_cli(["upload", str(image), "somewhere/disk.vhd", "--account-url", azurite.endpoint])
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "a Microsoft Entra ID token is sent only over HTTPS" in err
    assert not signed_in.requests  # refused before a token was even asked for

