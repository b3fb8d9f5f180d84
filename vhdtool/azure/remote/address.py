"""Which command-line IMAGE names a blob, and its address.

An ``http(s)://`` URL is always a blob (a SAS URL, a managed disk's or snapshot's ``grant-access``
URL, or a bare blob URL signed in with ``DefaultAzureCredential``). ``CONTAINER/BLOB`` is a blob
only with ``--connection-string`` or ``--account-url`` and only when no local file has that name,
so a relative path keeps meaning the file even where ``AZURE_STORAGE_CONNECTION_STRING`` is set.
"""

from __future__ import annotations

import os
import re

from vhdtool.azure.storage import Destination, make_destination

_URL = re.compile(r"(?i)^https?://")


def is_url(spec: str) -> bool:
    return bool(_URL.match(spec))


def is_remote(spec: str, *, connection_string: str | None = None, account_url: str | None = None) -> bool:
    """Whether ``spec`` names a blob rather than a local file."""
    if is_url(spec):
        return True
    if not (connection_string or account_url) or os.path.lexists(spec):
        return False
    container, sep, blob = spec.partition("/")
    return bool(sep and container and blob and not spec.startswith((".", "/", "~")))


def blob_address(spec: str, *, connection_string: str | None = None,
                 account_url: str | None = None) -> Destination:
    """The address of the blob ``spec`` names (the same form an upload destination takes)."""
    if is_url(spec):
        return make_destination(spec)
    return make_destination(spec, connection_string=connection_string, account_url=account_url)
