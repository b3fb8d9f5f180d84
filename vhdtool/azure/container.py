"""A container that a set of page blobs goes to (``prepare --upload DEST``, ``verify --dest DEST``).

It is named by a container URL (SAS optional), or by a container name with a connection string or
an account URL; each blob in it is a :class:`~vhdtool.azure.storage.Destination`, the one type the
upload, patch and read-back code takes. The container's public URL is the one the Azure SDK builds
from the same pieces (:mod:`vhdtool.azure.address` reads a connection string as the SDK does).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from vhdtool.azure.address import AddressError, connection_endpoint, container_url
from vhdtool.azure.signin import parse_sas
from vhdtool.azure.storage import Destination, public_url
from vhdtool.errors import UsageError

# Azure's rule for container names: 3-63 lower-case letters, digits and single hyphens.
CONTAINER_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9])?")


@dataclass(frozen=True)
class ContainerDestination:
    """A container, in one of three forms: ``url``; ``container`` + ``connection_string``;
    ``container`` + ``account_url``. Build it with :func:`parse_destination`."""

    url: str | None = None  # the container's URL, with its SAS token if any
    container: str | None = None
    connection_string: str | None = None
    account_url: str | None = None

    def for_blob(self, blob: str) -> Destination:
        """The :class:`~vhdtool.azure.storage.Destination` of the blob ``blob`` in this container."""
        if self.url is not None:
            parts = urllib.parse.urlsplit(self.url)
            path = parts.path.rstrip("/") + "/" + urllib.parse.quote(blob)
            return Destination(url=urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, "")))
        if self.connection_string is not None:
            return Destination(connection_string=self.connection_string, container=self.container, blob=blob)
        return Destination(account_url=self.account_url, container=self.container, blob=blob)

    def describe(self) -> str:
        """The container's URL without token (as a manifest records it), never a secret."""
        if self.url is not None:
            return public_url(self.url).rstrip("/")
        if self.account_url is not None:
            return f"{public_url(self.account_url).rstrip('/')}/{self.container}"
        try:
            endpoint = connection_endpoint(self.connection_string or "")[0]
        except AddressError:  # no account or endpoint in it: the container name is all there is to show
            return f"{self.container}"
        return public_url(container_url(endpoint, self.container or "")).rstrip("/")


def parse_destination(dest: str, *, connection_string: str | None = None,
                      account_url: str | None = None) -> ContainerDestination:
    """``--upload DEST``: a container URL (``https://ACCOUNT.blob.core.windows.net/CONTAINER?SAS``),
    or a container name with ``connection_string`` or ``account_url``."""
    if re.match(r"(?i)^https?://", dest):
        parts = urllib.parse.urlsplit(dest)
        # Azurite's URLs carry the account in the path: http://127.0.0.1:10000/devstoreaccount1/CONTAINER
        if not parts.path.strip("/"):
            raise UsageError(f"{public_url(dest)}: the URL names no container")
        sas = parse_sas(parts.query)
        if sas is not None and sas.resource in ("b", "bs", "bv"):
            raise UsageError(f"{public_url(dest)}: its SAS is a {sas.kind}, valid for one blob, but the "
                             "set's blobs are named here (DISKNAME.vhd): give a container SAS (sr=c) or an "
                             "account SAS")
        return ContainerDestination(url=dest)
    if not CONTAINER_NAME.fullmatch(dest) or "--" in dest:
        raise UsageError(f"--upload {dest!r}: give a container URL, or a container name (3-63 lower-case "
                         "letters, digits and single hyphens) with --connection-string or --account-url")
    if connection_string:
        return ContainerDestination(container=dest, connection_string=connection_string)
    if account_url:
        return ContainerDestination(container=dest, account_url=account_url)
    raise UsageError(f"--upload {dest}: a container name needs --connection-string "
                     "(or AZURE_STORAGE_CONNECTION_STRING) or --account-url")
