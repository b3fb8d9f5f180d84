"""Disks already in Azure, read where they are: page blobs and managed disks as byte sources.

* :mod:`.address` tells a blob from a local path and builds its address (URL with or without a
  SAS token, ``CONTAINER/BLOB`` with a connection string or an account URL);
* :mod:`.cache` is the bounded read-ahead cache (pure bookkeeping, no I/O);
* :mod:`.blob_source` is :class:`~.blob_source.BlobSource`, a :class:`~vhdtool.disk.base.ByteSource`
  over ranged Get Blob requests, whose data ranges come from Get Page Ranges;
* :mod:`.transfer` moves a blob's written ranges to a file (``download``) or another blob (``copy``).

Nothing here writes to a source: it is only ever sent HEAD and GET requests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vhdtool.azure.remote.address import blob_address
from vhdtool.azure.remote.blob_source import BlobSource
from vhdtool.disk.base import BorrowedSource

if TYPE_CHECKING:
    from vhdtool.azure.remote.blob_source import BlobSource
    from vhdtool.disk.base import VirtualDisk


def open_remote(spec: str, *, connection_string: str | None = None, account_url: str | None = None,
                timeout: float = 120.0, **options: Any) -> BlobSource:
    """Open the blob ``spec`` names (see :mod:`.address`) as a byte source for :func:`vhdtool.open_image`.

    ``options`` go to :class:`~.blob_source.BlobSource` (threads, cache granule, retry policy).
    """

    return BlobSource(blob_address(spec, connection_string=connection_string, account_url=account_url),
                      timeout=timeout, **options)


def blob_of(disk: VirtualDisk) -> BlobSource | None:
    """The blob ``disk`` is read from, or ``None`` for a disk read from a local file."""

    image = getattr(disk, "image", None)
    if isinstance(image, BorrowedSource):
        image = image.inner
    return image if isinstance(image, BlobSource) else None
