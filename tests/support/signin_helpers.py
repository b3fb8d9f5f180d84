"""Helpers of the sign-in tests: containers in the OAuth Azurite, sparse images, CLI runs in-process, what a
recorded request's token says, and the stand-in for an Entra-ID managed disk's ``md-`` host.

The stand-in does what Azure's ``md-*.blob.storage.azure.net`` hosts do for a disk made with
``--data-access-auth-mode AzureActiveDirectory``: it answers a request without a valid disk token with
401 and ``WWW-Authenticate: Bearer authorization_uri=https://login.microsoftonline.com/TENANT/oauth2/
authorize resource_id=https://disk.azure.com/`` (the form of Azure Storage's bearer challenge, the
resource with its trailing slash, which the disk service checks literally), checks a token's
signature, audience and lifetime with the identity endpoint that minted it, and forwards the
request without the token (:func:`without_token`): the SAS, bound to a stored access policy as
``az disk grant-access`` makes it, authorizes it at Azurite.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
from azure.storage.blob import AccessPolicy, BlobServiceClient, generate_blob_sas

from support.azurite import ACCOUNT, ACCOUNT_KEY, Answer, Azurite, Recorded, RecordingProxy, storage_error
from support.identity import DISK_RESOURCE, STORAGE_RESOURCE, TENANT, Certificate, IdentityEndpoint, claims_of

CHALLENGE = (f"Bearer authorization_uri=https://login.microsoftonline.com/{TENANT}/oauth2/authorize "
             f"resource_id={DISK_RESOURCE}")


class Box:
    """A fresh container in the OAuth Azurite, read back with the account key (independently of vhdtool)."""

    def __init__(self, azurite: Azurite, certificate: Certificate) -> None:
        self.container = "s" + uuid.uuid4().hex[:12]
        self.cafile = str(certificate.cert)
        self.service = BlobServiceClient.from_connection_string(azurite.connection_string(),
                                                                connection_verify=self.cafile)
        self.service.create_container(self.container)

    def download(self, blob: str) -> bytes:
        return bytes(self.service.get_blob_client(self.container, blob).download_blob().readall())


def make_raw(path: Path, size: int, runs: int, run_length: int, seed: int = 3) -> Path:
    """A sparse raw image: ``runs`` runs of random data, ``run_length`` bytes each, spread over ``size``."""
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in np.linspace(0, size - run_length, runs).astype(np.int64) // 512 * 512:
            f.seek(int(offset))
            f.write(rng.integers(1, 256, run_length, dtype=np.uint8).tobytes())
    return path


def bearer_claims(rec: Recorded) -> dict[str, object]:
    auth = rec.headers.get("authorization", "")
    assert auth.startswith("Bearer "), f"{rec.method} {rec.path}: no bearer token ({auth[:12]!r})"
    return claims_of(auth.removeprefix("Bearer "))


def assert_signed_in_only(proxy: RecordingProxy) -> None:
    """Every request carried a token for Storage, and nothing else that could have authorized it."""
    assert proxy.requests
    for rec in proxy.requests:
        assert bearer_claims(rec)["aud"] == STORAGE_RESOURCE
        assert "sig" not in rec.query and rec.status not in (None, 401, 403), rec  # a 404: signed in, no blob yet


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


def without_token(rec: Recorded, headers: dict[str, str]) -> dict[str, str]:
    """The stand-in forwards without the token (Azurite over HTTP would refuse one)."""
    return {k: v for k, v in headers.items() if k.lower() != "authorization"}


class Disk:
    """A managed disk's blob in Azurite (a page blob of the exact size) and its grant-access SAS URL on the
    stand-in host: ``permission`` "rw" as for ``--access-level Write``, "r" for ``Read``."""

    def __init__(self, azurite: Azurite, host: RecordingProxy, size: int, permission: str = "rw") -> None:
        self.service = BlobServiceClient.from_connection_string(azurite.connection_string())
        self.container = "md" + uuid.uuid4().hex[:12]
        folder = self.service.create_container(self.container)
        folder.get_blob_client("abcd").create_page_blob(size)
        policy = str(uuid.uuid4())
        folder.set_container_access_policy({policy: AccessPolicy(
            permission=permission, expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1))})
        self.sas = generate_blob_sas(ACCOUNT, self.container, "abcd", account_key=ACCOUNT_KEY, policy_id=policy)
        self.url = f"{host.endpoint}/{self.container}/abcd?{self.sas}"
        self.signature = self.sas.split("sig=")[1].split("&")[0]

    def download(self) -> bytes:
        return bytes(self.service.get_blob_client(self.container, "abcd").download_blob().readall())
