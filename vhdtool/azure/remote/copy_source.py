"""How the destination's service reads the source in a server-side copy (Put Page From URL).

The copy source is a URL the service fetches itself, so it must carry its own authorization:

* a URL with a SAS token is used as it is (a managed disk's or snapshot's ``grant-access`` URL too);
* an account key (a connection string with ``AccountKey``) signs a short-lived read-only SAS for the
  source blob, since the key itself cannot travel with the request;
* a SAS connection string lends its token to the blob URL;
* a URL or account URL without a SAS (``DefaultAzureCredential``) sends an Entra ID token as
  ``x-ms-copy-source-authorization: Bearer ...`` (REST version 2020-10-02 and later).

The resulting URL and token are secrets: they go in request headers only, never in a message.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from dataclasses import dataclass

from vhdtool.azure import signin
from vhdtool.azure.storage import Destination, connection_string_field

STORAGE_SCOPE = "https://storage.azure.com/.default"
SAS_LIFETIME = dt.timedelta(hours=24)


@dataclass(frozen=True)
class CopySource:
    """A source URL the destination service can read, and the header that authorizes it, if any."""

    url: str
    authorization: str | None = None

    def secrets(self) -> list[str]:
        found = urllib.parse.parse_qs(urllib.parse.urlsplit(self.url).query).get("sig", [])
        if self.authorization:
            found.append(self.authorization.split()[-1])
        return found


def copy_source(address: Destination) -> CopySource:
    """The :class:`CopySource` for a blob at ``address`` (see the module docstring)."""
    from azure.storage.blob import BlobClient, BlobSasPermissions, generate_blob_sas

    if address.url:
        if urllib.parse.urlsplit(address.url).query:
            return CopySource(address.url)
        return CopySource(address.url, _bearer())
    if address.connection_string:
        client = BlobClient.from_connection_string(address.connection_string, address.container or "",
                                                   address.blob or "")
        key = connection_string_field(address.connection_string, "AccountKey")
        sas = connection_string_field(address.connection_string, "SharedAccessSignature")
        base = client.url.split("?", 1)[0]
        if key:
            token = generate_blob_sas(client.account_name or "", address.container or "", address.blob or "",
                                      account_key=key, permission=BlobSasPermissions(read=True),
                                      expiry=dt.datetime.now(dt.timezone.utc) + SAS_LIFETIME)
            return CopySource(f"{base}?{token}")
        if sas:
            return CopySource(f"{base}?{sas.lstrip('?')}")
        return CopySource(base)
    base = f"{(address.account_url or '').rstrip('/')}/{address.container}/{urllib.parse.quote(address.blob or '')}"
    return CopySource(base, _bearer())


def _bearer() -> str:
    token = signin.shared_credential().get_token(STORAGE_SCOPE).token
    return f"Bearer {token}"
