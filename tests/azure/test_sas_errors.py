"""SAS problems said plainly: one line naming what is missing, never the token.

Against Azurite with real SAS tokens made by the SDK (``generate_blob_sas``/``generate_container_sas``,
signed with Azurite's development key). Azurite checks a SAS's expiry, permissions, resource and
stored access policy, but answers some refusals with other codes than Azure: an expired or
unmatched SAS is 403 ``AuthorizationFailure`` in Azurite, 403 ``AuthenticationFailed`` with
``AuthenticationErrorDetail`` "Signature not valid in the specified time frame" (or "Signature did
not match") in Azure (REST API: "Common error codes", "Create a service SAS"). Where the wording
matters the recording proxy also answers as Azure does, and both must read the same to the user.
A managed disk's ``az disk grant-access`` SAS is a blob SAS bound to a stored access policy
(``si=``): revoking access removes the policy, which Azurite reproduces exactly.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from azure.storage.blob import (
    AccessPolicy,
    AccountSasPermissions,
    BlobSasPermissions,
    BlobServiceClient,
    ContainerSasPermissions,
    ResourceTypes,
    generate_account_sas,
    generate_blob_sas,
    generate_container_sas,
)
from support.azurite import ACCOUNT, ACCOUNT_KEY, Azurite, Recorded, RecordingProxy, Rule, storage_error
from support.cli import run_cli

from vhdtool.extents import MiB

HOUR = dt.timedelta(hours=1)


class Spot:
    """A fresh container; SAS tokens for it; URLs straight to Azurite or through the proxy."""

    def __init__(self, azurite: Azurite, proxy: RecordingProxy) -> None:
        self.container = "q" + uuid.uuid4().hex[:12]
        self.azurite = azurite
        self.proxy = proxy
        self.service = BlobServiceClient.from_connection_string(azurite.connection_string())
        self.service.create_container(self.container)
        self.signatures: list[str] = []

    def _keep(self, sas: str) -> str:
        self.signatures.append(dict(urllib.parse.parse_qsl(sas))["sig"])
        return sas

    def blob_sas(self, blob: str = "disk.vhd", container: str | None = None, expiry: dt.datetime | None = None,
                 policy: str | None = None, start: dt.datetime | None = None, **permissions: bool) -> str:
        return self._keep(generate_blob_sas(
            ACCOUNT, container or self.container, blob, account_key=ACCOUNT_KEY, policy_id=policy, start=start,
            permission=BlobSasPermissions(**permissions) if permissions else None,
            expiry=None if policy else expiry or dt.datetime.now(dt.timezone.utc) + HOUR))

    def container_sas(self, container: str | None = None, **permissions: bool) -> str:
        return self._keep(generate_container_sas(ACCOUNT, container or self.container, account_key=ACCOUNT_KEY,
                                                 permission=ContainerSasPermissions(**permissions),
                                                 expiry=dt.datetime.now(dt.timezone.utc) + HOUR))

    def url(self, sas: str, blob: str | None = "disk.vhd", via_proxy: bool = False) -> str:
        base = self.proxy.endpoint if via_proxy else self.azurite.endpoint
        return f"{base}/{self.container}" + (f"/{blob}" if blob else "") + f"?{sas}"

    def download(self, blob: str = "disk.vhd") -> bytes:
        return bytes(self.service.get_blob_client(self.container, blob).download_blob().readall())


@pytest.fixture
def spot(azurite: Azurite, proxy: RecordingProxy) -> Spot:
    proxy.clear()
    return Spot(azurite, proxy)


def make_raw(path: Path, size: int = 8 * MiB, runs: int = 8, run_length: int = 64 * 1024) -> Path:
    rng = np.random.default_rng(5)
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in np.linspace(0, size - run_length, runs).astype(np.int64) // 512 * 512:
            f.seek(int(offset))
            f.write(rng.integers(1, 256, run_length, dtype=np.uint8).tobytes())
    return path


def refusal(code: int, err: str, spot: Spot, expected: int = 1) -> str:
    """The one line a refusal prints; no signature in any spelling."""
    assert code == expected, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for sig in spot.signatures:
        for form in (sig, urllib.parse.quote(sig, safe=""), urllib.parse.quote_plus(sig)):
            assert form not in err
    assert "sig=" not in err or "sig=REDACTED" in err
    return lines[0]


def _as_azure_when_expired(rec: Recorded) -> tuple[int, dict[str, str], bytes] | None:
    """Azure's answer to a SAS past its expiry (Azurite's own is 403 AuthorizationFailure)."""
    expiry = dt.datetime.fromisoformat(rec.query["se"].replace("Z", "+00:00"))
    now = dt.datetime.now(dt.timezone.utc)
    if now <= expiry:
        return None
    fmt = "%a, %d %b %Y %H:%M:%S GMT"
    return storage_error(403, "AuthenticationFailed",
                         "Server failed to authenticate the request. Make sure the value of Authorization header "
                         "is formed correctly including the signature.",
                         f"Signature not valid in the specified time frame: Start [] - Expiry "
                         f"[{expiry.strftime(fmt)}] - Current [{now.strftime(fmt)}]")


@pytest.mark.parametrize("service", ["azurite", "as-azure"])
def test_sas_expiring_mid_upload_names_its_expiry_and_resume_finishes(
        service: str, tmp_path: Path, spot: Spot, proxy: RecordingProxy, capsys: pytest.CaptureFixture[str]) -> None:
    image = make_raw(tmp_path / "disk.raw", 16 * MiB, runs=16)
    expiry = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2)).replace(microsecond=0)
    sas = spot.blob_sas(expiry=expiry, read=True, create=True, write=True)
    held = threading.Event()

    def hold_first_put(rec: Recorded) -> None:  # it reaches the service after the SAS expired
        if rec.is_put_page and not held.is_set():
            held.set()
            time.sleep(max(0.0, (expiry - dt.datetime.now(dt.timezone.utc)).total_seconds()) + 1.2)

    proxy.on_request = hold_first_put
    if service == "as-azure":
        proxy.add_rule(Rule(lambda r: "se" in r.query, "answer", times=10_000, answer=_as_azure_when_expired))
    code, out, err = run_cli(["upload", str(image), spot.url(sas, via_proxy=True), "--threads", "2"])
    line = refusal(code, err, spot)
    assert held.is_set()
    answer = "AuthorizationFailure" if service == "azurite" else "AuthenticationFailed"
    assert f"HTTP 403 {answer}: the SAS token expired at {expiry.strftime('%Y-%m-%d %H:%M:%S')} UTC " \
           f"(se={expiry.strftime('%Y-%m-%dT%H:%M:%SZ')}); rerun with --resume and a fresh SAS" in line, line
    assert ": writing pages at byte " in line

    proxy.clear()
    fresh = spot.blob_sas(read=True, create=True, write=True)
    code, out, err = run_cli(["upload", str(image), spot.url(fresh, via_proxy=True), "--resume", "--json"])
    assert code == 0, err
    facts = json.loads(out)
    assert facts["resumed"] is True and facts["bytes_skipped"] > 0
    assert spot.download()[:-512] == image.read_bytes()


@pytest.mark.parametrize(("permissions", "refused"), [
    ({"read": True}, "creating the page blob: HTTP 403 AuthorizationPermissionMismatch: the SAS token lacks the "
                     "permission for this: it needs c (create) or w (write) and grants only r (read) (sp=r)"),
    ({"read": True, "create": True}, "HTTP 403 AuthorizationPermissionMismatch: the SAS token lacks the permission "
                                     "for this: it needs w (write) and grants only r (read), c (create) (sp=rc)"),
    ({"create": True, "write": True}, "reading blob properties: HTTP 403 AuthorizationPermissionMismatch: the SAS "
                                      "token lacks the permission for this: it needs r (read) and grants only "
                                      "c (create), w (write) (sp=cw)"),
])
def test_sas_without_a_permission_names_it(permissions: dict[str, bool], refused: str, tmp_path: Path, spot: Spot,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    image = make_raw(tmp_path / "disk.raw", 4 * MiB, runs=2)
    code, out, err = run_cli(["upload", str(image), spot.url(spot.blob_sas(**permissions))])
    line = refusal(code, err, spot)
    assert refused in line, line
    if permissions == {"read": True, "create": True}:
        assert ": writing pages at byte " in line


def test_container_sas_where_a_blob_url_is_needed(tmp_path: Path, spot: Spot,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    image = make_raw(tmp_path / "disk.raw", 4 * MiB, runs=2)
    sas = spot.container_sas(read=True, create=True, write=True)
    # The container's own URL, as `az storage container generate-sas` users paste it: refused before any request.
    code, out, err = run_cli(["upload", str(image), spot.url(sas, blob=None)])
    line = refusal(code, err, spot, expected=2)
    assert "this is a container URL with a container SAS (sr=c); give the blob's URL: add /BLOB to the path" in line

    # Signed for another container: the service refuses it.
    other = "q" + uuid.uuid4().hex[:12]
    spot.service.create_container(other)
    wrong = spot.container_sas(container=other, read=True, create=True, write=True)
    code, out, err = run_cli(["upload", str(image), spot.url(wrong)])
    line = refusal(code, err, spot)
    assert "HTTP 403 AuthorizationFailure: the SAS token was refused: it is a container SAS (sr=c), valid only " \
           "for the container it was made for (is it this one's?)" in line, line

    # As advised: the blob's URL with the same container SAS.
    code, out, err = run_cli(["upload", str(image), spot.url(sas)])
    assert code == 0, err
    assert spot.download()[:-512] == image.read_bytes()


def test_blob_sas_where_a_container_sas_is_needed(tmp_path: Path, spot: Spot,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    image = make_raw(tmp_path / "disk.raw", 4 * MiB, runs=2)
    blob_sas = spot.blob_sas("web-os.vhd", read=True, create=True, write=True)
    code, out, err = run_cli(["prepare", "--name", "web", "--os", str(image), "-o", str(tmp_path / "set"),
                              "--upload", spot.url(blob_sas, blob=None)])
    line = refusal(code, err, spot, expected=2)
    assert "its SAS is a blob SAS (sr=b), valid for one blob, but the set's blobs are named here " \
           "(DISKNAME.vhd): give a container SAS (sr=c) or an account SAS" in line, line
    assert not (tmp_path / "set").exists()

    # A blob SAS made for another blob: the service refuses it.
    code, out, err = run_cli(["upload", str(image), spot.url(blob_sas, blob="disk.vhd")])
    line = refusal(code, err, spot)
    assert "HTTP 403 AuthorizationFailure: the SAS token was refused: it is a blob SAS (sr=b), valid only for " \
           "the one blob it was made for (is it this blob's?)" in line, line


def test_revoked_managed_disk_sas_says_grant_access_again(tmp_path: Path, spot: Spot, proxy: RecordingProxy,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A managed disk opened for upload (emulated: a page blob of the exact size, a SAS bound to a stored
    access policy as `az disk grant-access` makes), whose access is revoked as the first page arrives."""
    image = make_raw(tmp_path / "disk.raw", 8 * MiB)
    container = spot.service.get_container_client(spot.container)
    container.get_blob_client("disk.vhd").create_page_blob(8 * MiB + 512)
    policy = str(uuid.uuid4())
    container.set_container_access_policy({policy: AccessPolicy(permission="rw", expiry=dt.datetime.now(
        dt.timezone.utc) + HOUR)})
    sas = spot.blob_sas(policy=policy)
    revoked = threading.Event()

    def revoke(rec: Recorded) -> None:  # `az disk revoke-access` while the upload runs
        if rec.is_put_page and not revoked.is_set():
            container.set_container_access_policy({})
            revoked.set()

    proxy.on_request = revoke
    code, out, err = run_cli(["upload", str(image), spot.url(sas, via_proxy=True), "--managed-disk"])
    line = refusal(code, err, spot)
    assert revoked.is_set()
    assert "HTTP 403 AuthorizationFailure: the managed disk's access SAS is no longer valid: access was revoked " \
           "(`az disk revoke-access`, or the upload was finished) or its --duration-in-seconds ran out; run " \
           "`az disk grant-access` again for a fresh SAS" in line, line
    assert [r.status for r in proxy.requests if r.is_put_page].count(403) >= 1


def _account_sas(spot: Spot, **kwargs: object) -> str:
    options: dict[str, object] = {"resource_types": ResourceTypes(object=True),
                                  "permission": AccountSasPermissions(read=True, write=True, create=True),
                                  "expiry": dt.datetime.now(dt.timezone.utc) + HOUR, **kwargs}
    return spot._keep(generate_account_sas(ACCOUNT, ACCOUNT_KEY, **options))  # type: ignore[arg-type]


@pytest.mark.parametrize(("make", "refused"), [
    (lambda spot: spot.blob_sas(read=True, create=True, write=True, start=dt.datetime.now(dt.timezone.utc) + HOUR),
     "HTTP 403 AuthorizationFailure: the SAS token is not valid before "),
    (lambda spot: _account_sas(spot, resource_types=ResourceTypes(container=True)),
     "HTTP 403 AuthorizationResourceTypeMismatch: the account SAS's resource types (srt=c) do not cover reading "
     "blob properties: it needs o (object) for blobs"),
    (lambda spot: _account_sas(spot, protocol="https"),
     "HTTP 403 AuthorizationProtocolMismatch: the SAS token allows only https (spr=): use an https:// URL"),
], ids=["not-yet-valid", "account-sas-without-objects", "https-only-over-http"])
def test_other_sas_limits_are_named(make: Callable[[Spot], str], refused: str, tmp_path: Path, spot: Spot,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    image = make_raw(tmp_path / "disk.raw", 4 * MiB, runs=2)
    code, out, err = run_cli(["upload", str(image), spot.url(make(spot))])
    line = refusal(code, err, spot)
    assert refused in line, line
