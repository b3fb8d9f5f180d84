"""Managed disks whose data access needs Microsoft Entra ID (``az disk create --data-access-auth-mode
AzureActiveDirectory``): the bearer challenge answered with a token for ``https://disk.azure.com/``.

Azure's ``md-*.blob.storage.azure.net`` hosts cannot run here, so a stand-in does what they do, in
front of Azurite: the recording proxy, over HTTPS, answers a request without a valid disk token with
401 and ``WWW-Authenticate: Bearer authorization_uri=https://login.microsoftonline.com/TENANT/oauth2/
authorize resource_id=https://disk.azure.com/`` (the form of Azure Storage's bearer challenge; the
resource with its trailing slash, which the disk service checks literally), checks a token's
signature, audience and lifetime with the identity endpoint that minted it, and forwards the
request without the token: the SAS, bound to a stored access policy as ``az disk grant-access``
makes it, authorizes it at Azurite. The disk itself is a page blob created beforehand with the exact
size, as in the other managed-disk tests.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from azure.storage.blob import AccessPolicy, BlobServiceClient, generate_blob_sas
from azurite import ACCOUNT, ACCOUNT_KEY, Answer, Azurite, Recorded, RecordingProxy, Rule, storage_error
from identity import DISK_RESOURCE, TENANT, Certificate, IdentityEndpoint, claims_of

from vhdtool.cli import run

MiB = 1 << 20
CHALLENGE = (f"Bearer authorization_uri=https://login.microsoftonline.com/{TENANT}/oauth2/authorize "
             f"resource_id={DISK_RESOURCE}")


@pytest.fixture(scope="module")
def disk_host(azurite: Azurite, certificate: Certificate) -> Iterator[RecordingProxy]:
    """The stand-in for an ``md-`` host: HTTPS to the client, Azurite behind."""
    proxy = RecordingProxy(azurite.port, certificate=certificate)
    yield proxy
    proxy.close()


def needs_entra(identity: IdentityEndpoint, role: bool = True) -> Callable[[Recorded], Answer | None]:
    """What an Entra-ID disk answers: a challenge without a valid disk token; with one, 403 if the
    identity lacks the data role (Azure's AuthorizationPermissionMismatch), else the request goes on."""
    def answer(rec: Recorded) -> Answer | None:
        auth = rec.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return storage_error(401, "NoAuthenticationInformation", "Server failed to authenticate the request. "
                                 "Please refer to the information in the www-authenticate header.",
                                 headers={"WWW-Authenticate": CHALLENGE})
        why = identity.verify(auth.removeprefix("Bearer "), DISK_RESOURCE)
        if why is not None:
            return storage_error(401, "InvalidAuthenticationInfo", f"Authentication failed: {why}",
                                 headers={"WWW-Authenticate": CHALLENGE + ' error="invalid_token"'})
        if not role:
            return storage_error(403, "AuthorizationPermissionMismatch",
                                 "This request is not authorized to perform this operation using this permission.")
        return None
    return answer


def _without_token(rec: Recorded, headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() != "authorization"}


class Disk:
    """An empty managed disk opened for upload, with its grant-access SAS URL on the stand-in host."""

    def __init__(self, azurite: Azurite, host: RecordingProxy, size: int) -> None:
        self.service = BlobServiceClient.from_connection_string(azurite.connection_string())
        self.container = "md" + uuid.uuid4().hex[:12]
        folder = self.service.create_container(self.container)
        folder.get_blob_client("abcd").create_page_blob(size)
        policy = str(uuid.uuid4())
        folder.set_container_access_policy({policy: AccessPolicy(
            permission="rw", expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1))})
        self.sas = generate_blob_sas(ACCOUNT, self.container, "abcd", account_key=ACCOUNT_KEY, policy_id=policy)
        self.url = f"{host.endpoint}/{self.container}/abcd?{self.sas}"
        self.signature = self.sas.split("sig=")[1].split("&")[0]

    def download(self) -> bytes:
        return bytes(self.service.get_blob_client(self.container, "abcd").download_blob().readall())


def make_raw(path: Path, size: int, runs: int = 24, run_length: int = 64 * 1024) -> Path:
    rng = np.random.default_rng(9)
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in np.linspace(0, size - run_length, runs).astype(np.int64) // 512 * 512:
            f.seek(int(offset))
            f.write(rng.integers(1, 256, run_length, dtype=np.uint8).tobytes())
    return path


@pytest.fixture
def host(disk_host: RecordingProxy) -> RecordingProxy:
    disk_host.clear()
    disk_host.rewrite = _without_token
    return disk_host


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as stop:
        run(args)
    out, err = capsys.readouterr()
    return int(stop.value.code or 0), out, err


def test_challenge_answered_with_one_disk_token(tmp_path: Path, azurite: Azurite, host: RecordingProxy,
                                               signed_in: IdentityEndpoint, capsys: pytest.CaptureFixture[str]) -> None:
    image = make_raw(tmp_path / "disk.raw", 12 * MiB)
    disk = Disk(azurite, host, 12 * MiB + 512)
    host.add_rule(Rule(lambda r: True, "answer", times=10_000, answer=needs_entra(signed_in)))
    code, out, err = run_cli(["upload", str(image), disk.url, "--managed-disk", "--verify=full", "--json"], capsys)
    assert code == 0, err
    assert disk.download()[:-512] == image.read_bytes()
    assert json.loads(out)["requests"] == len(host.requests)

    first, *rest = host.requests
    assert (first.method, first.status, "authorization" in first.headers) == ("HEAD", 401, False)
    assert rest and any(r.is_put_page for r in rest)
    for rec in rest:  # every later request: the SAS and a token for the disk resource
        assert "sig" in rec.query and rec.status is not None and rec.status < 300, rec
        assert claims_of(rec.headers["authorization"].removeprefix("Bearer "))["aud"] == DISK_RESOURCE
    (asked,) = signed_in.requests
    assert (asked.resource, asked.status) == (DISK_RESOURCE, 200)  # "https://disk.azure.com/", slash kept
    assert disk.signature not in out + err


def test_sas_only_disk_asks_for_no_token(tmp_path: Path, azurite: Azurite, host: RecordingProxy,
                                         signed_in: IdentityEndpoint, capsys: pytest.CaptureFixture[str]) -> None:
    """Without a challenge (a disk with the default data access mode) the SAS alone is used."""
    image = make_raw(tmp_path / "disk.raw", 4 * MiB, runs=4)
    disk = Disk(azurite, host, 4 * MiB + 512)
    code, out, err = run_cli(["upload", str(image), disk.url, "--managed-disk"], capsys)
    assert code == 0, err
    assert disk.download()[:-512] == image.read_bytes()
    assert not signed_in.requests
    assert all("authorization" not in r.headers for r in host.requests)


def test_challenge_without_a_sign_in_is_one_line(tmp_path: Path, azurite: Azurite, host: RecordingProxy,
                                                 signed_in: IdentityEndpoint, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    signed_in.fail_status = 400  # no identity assigned
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "ManagedIdentityCredential")  # no developer sign-in either
    image = make_raw(tmp_path / "disk.raw", 4 * MiB, runs=4)
    disk = Disk(azurite, host, 4 * MiB + 512)
    host.add_rule(Rule(lambda r: True, "answer", times=10_000, answer=needs_entra(signed_in)))
    code, out, err = run_cli(["upload", str(image), disk.url, "--managed-disk"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "the service asks for a Microsoft Entra ID token for https://disk.azure.com/" in err
    assert "no sign-in worked (tried ManagedIdentity)" in err and "Data Operator for Managed Disks" in err
    assert disk.signature not in err
    assert [r.status for r in host.requests] == [401]
    assert [r.resource for r in signed_in.requests] == [DISK_RESOURCE]


def test_identity_without_the_disk_role_is_told_which_role(tmp_path: Path, azurite: Azurite, host: RecordingProxy,
                                                           signed_in: IdentityEndpoint,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    image = make_raw(tmp_path / "disk.raw", 4 * MiB, runs=4)
    disk = Disk(azurite, host, 4 * MiB + 512)
    host.add_rule(Rule(lambda r: True, "answer", times=10_000, answer=needs_entra(signed_in, role=False)))
    code, out, err = run_cli(["upload", str(image), disk.url, "--managed-disk"], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "HTTP 403 AuthorizationPermissionMismatch: the signed-in identity may not do this (reading blob " \
           "properties): give it the role Data Operator for Managed Disks on the disk" in err, err
    assert [r.status for r in host.requests] == [401, 403]
    assert disk.signature not in err
