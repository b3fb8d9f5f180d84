"""IMAGE arguments that may name a blob: the options that address it, and the read cost shown after."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from vhdtool.azure.remote import open_remote
from vhdtool.azure.remote.address import is_remote
from vhdtool.azure.remote.blob_source import PAGE_BLOB
from vhdtool.cli import human_size

if TYPE_CHECKING:
    from vhdtool.azure.remote.blob_source import BlobSource
    from vhdtool.disk.base import ByteSource

F = TypeVar("F", bound=Callable[..., Any])


def source_options(command: F) -> F:
    """``--connection-string`` and ``--account-url``, for an IMAGE given as CONTAINER/BLOB."""
    command = click.option("--account-url", metavar="URL",
                           help="For IMAGE as CONTAINER/BLOB: https://ACCOUNT.blob.core.windows.net, "
                                "signed in with DefaultAzureCredential.")(command)
    command = click.option("--connection-string", envvar="AZURE_STORAGE_CONNECTION_STRING", metavar="TEXT",
                           help="For IMAGE as CONTAINER/BLOB: a storage connection string "
                                "(default: $AZURE_STORAGE_CONNECTION_STRING).")(command)
    return command


def open_argument(image: str, connection_string: str | None, account_url: str | None) -> str | BlobSource:
    """``image`` itself for a local file; the opened blob for a URL or CONTAINER/BLOB (see ``remote.address``)."""

    if not is_remote(image, connection_string=connection_string, account_url=account_url):
        return image

    source = open_remote(image, connection_string=connection_string, account_url=account_url)
    if source.blob_type != PAGE_BLOB:
        click.echo(f"vhdtool: warning: {source.path} is a {source.blob_type}: Azure makes disks and images "
                   "from page blobs only (vhdtool copy writes one)", err=True)
    return source


def read_cost(source: str | ByteSource) -> dict[str, int] | None:
    """``{"bytes", "requests", "retries"}`` read from a blob so far; ``None`` for a local file."""
    stats = getattr(source, "stats", None)
    if stats is None:
        return None
    result: dict[str, int] = stats().to_json()
    return result


def echo_read_cost(cost: dict[str, int] | None) -> None:
    if cost is not None:
        click.echo(f"read from Azure: {human_size(cost['bytes'])} in {cost['requests']} requests"
                   + (f", {cost['retries']} retries" if cost["retries"] else ""))
