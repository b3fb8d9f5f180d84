"""Where a page blob is and what signs its requests, read from a :class:`Destination`'s pieces without the SDK.

Why not ask an SDK client: importing ``azure.storage.blob`` costs about 0.2 s, more than the rest of an
upload's start-up, and a plain upload (properties, create, Put Page, metadata) needs nothing else of
it (:mod:`vhdtool.azure.rest` sends those). The rules are the SDK's own, so both transports reach the
same blob signed the same way; ``tests/azure/test_address.py`` checks them against the SDK's
``BlobClient`` over a matrix of URLs and connection strings:

* a blob URL keeps its scheme, host and path (decoded, then quoted as the SDK quotes names, a trailing
  ``/`` dropped); its query string is the SAS, each value re-quoted (every parameter is kept, where the
  SDK keeps only the SAS's own: a stray one reaches the service, which ignores it or says why not);
* a connection string (``Key=value;...``, keys in any case) gives the endpoint (``BlobEndpoint``, else
  ``DefaultEndpointsProtocol``/``AccountName``/``EndpointSuffix``, else ``https://ACCOUNT.blob.core.windows.net``)
  and the credential (``AccountName`` + ``AccountKey``, else ``SharedAccessSignature``);
  ``UseDevelopmentStorage=true`` is the local emulator's well-known account;
* an account URL is joined with the container and blob names, quoted.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

# The local storage emulator's account, as documented by Azure ("Use the Azurite emulator").
DEVELOPMENT_ACCOUNT = "devstoreaccount1"
DEVELOPMENT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DEVELOPMENT_ENDPOINT = f"http://127.0.0.1:10000/{DEVELOPMENT_ACCOUNT}"
DEFAULT_SUFFIX = "core.windows.net"


class AddressError(ValueError):
    """A destination that names no blob: a malformed URL or connection string."""


@dataclass(frozen=True)
class BlobAddress:
    """One blob's URL and what authorizes requests to it (a SAS in ``query``, an account key, or neither:
    then a token)."""

    url: str  # scheme://host[:port]/path, the path quoted; no query
    query: str = ""  # the SAS, without "?"
    account: str | None = None  # with ``key``: Shared Key signing
    key: str | None = None  # the account key, base64 as given

    @property
    def full_url(self) -> str:
        return f"{self.url}?{self.query}" if self.query else self.url


def _quoted_query(query: str) -> str:
    """``query`` re-encoded as the SDK sends a SAS: each parameter's first value, quoted whole."""
    values = urllib.parse.parse_qs(query)
    return "&".join(f"{k}={urllib.parse.quote(v[0], safe='')}" for k, v in values.items())


def _blob_path(container: str, blob: str) -> str:
    return f"/{urllib.parse.quote(container)}/{urllib.parse.quote(blob, safe='~/')}"


def _account_host(url: str) -> tuple[str, str, str]:
    """``(scheme, host-and-path, query)`` of an account endpoint, as the SDK keeps them: the path is
    dropped on ``*.blob.core.*`` hosts and kept (trailing ``/`` removed) elsewhere (Azurite's account)."""
    if not url.lower().startswith("http"):
        url = "https://" + url
    parts = urllib.parse.urlsplit(url.rstrip("/"))
    if not parts.netloc:
        raise AddressError(f"invalid URL: {parts.scheme}://{parts.netloc}{parts.path}")
    if len(parts.netloc.split(".blob.core.")) > 1:
        return parts.scheme, parts.netloc, parts.query
    return parts.scheme, (parts.netloc + parts.path).rstrip("/"), parts.query


def address_of_url(url: str) -> BlobAddress:
    """A blob URL (SAS optional), as ``BlobClient.from_blob_url`` reads it."""
    if not url.lower().startswith("http"):
        url = "https://" + url
    parts = urllib.parse.urlsplit(url.rstrip("/"))
    if not parts.netloc:
        raise AddressError(f"invalid URL: {url.split('?')[0]}")
    names = parts.path.lstrip("/").split("/")
    if len(names) < 2 or not names[-1] or not names[-2]:
        raise AddressError("the URL names no container and blob")
    path = urllib.parse.quote(urllib.parse.unquote(parts.path), safe="~/")
    return BlobAddress(f"{parts.scheme}://{parts.netloc}{path}", _quoted_query(parts.query))


def connection_settings(connection_string: str) -> dict[str, str]:
    """The ``Key=value`` pairs of a connection string, keys upper-cased; malformed text is refused."""
    pairs = [part.split("=", 1) for part in connection_string.rstrip(";").split(";")]
    if any(len(pair) != 2 for pair in pairs):
        raise AddressError("the connection string is blank or malformed (expected Key=value;...)")
    return {key.upper(): value for key, value in pairs}


def connection_endpoint(connection_string: str) -> tuple[str, str | None, str | None, str | None]:
    """``(blob endpoint, account, account key, SAS)`` of a connection string; the SAS only without a key."""
    settings = connection_settings(connection_string)
    if settings.get("USEDEVELOPMENTSTORAGE") == "true":
        return DEVELOPMENT_ENDPOINT, DEVELOPMENT_ACCOUNT, DEVELOPMENT_KEY, None
    account = settings.get("ACCOUNTNAME")
    key = settings.get("ACCOUNTKEY") if account is not None else None
    sas = None if key is not None else settings.get("SHAREDACCESSSIGNATURE")
    if "BLOBENDPOINT" in settings:
        endpoint = settings["BLOBENDPOINT"]
    elif "BLOBSECONDARYENDPOINT" in settings:
        raise AddressError("the connection string gives only a secondary endpoint")
    elif account is None:
        raise AddressError("the connection string names no BlobEndpoint or AccountName")
    elif "DEFAULTENDPOINTSPROTOCOL" in settings and "ENDPOINTSUFFIX" in settings:
        endpoint = f"{settings['DEFAULTENDPOINTSPROTOCOL']}://{account}.blob.{settings['ENDPOINTSUFFIX']}"
    else:
        endpoint = f"https://{account}.blob.{settings.get('ENDPOINTSUFFIX', DEFAULT_SUFFIX)}"
    return endpoint, account, key, sas


def address_in_account(endpoint: str, container: str, blob: str, *, account: str | None = None,
                       key: str | None = None, sas: str | None = None) -> BlobAddress:
    """The blob ``container/blob`` under the account ``endpoint``, as ``BlobClient(endpoint, ...)`` makes it."""
    if not container or not blob:
        raise AddressError("a container and a blob name are needed")
    scheme, host, query = _account_host(endpoint)
    if sas is not None:
        query = sas.lstrip("?")
    elif query:
        query = _quoted_query(query)
    return BlobAddress(f"{scheme}://{host}{_blob_path(container, blob)}", query,
                       account if key is not None else None, key if account is not None else None)


def container_url(endpoint: str, container: str) -> str:
    """The container's URL under ``endpoint`` (no query), as the SDK's ``ContainerClient`` makes it."""
    scheme, host, _ = _account_host(endpoint)
    return f"{scheme}://{host}/{urllib.parse.quote(container)}"
