"""Helpers of the tests of disks already in Azure: blobs put in Azurite without vhdtool, JSON of CLI runs.

``sdk_upload`` writes a file to a page blob with the Azure SDK alone (``upload_blob`` for small
files, ``create_page_blob`` + ``upload_page`` of the written ranges for large sparse ones), as
someone who never used vhdtool would, so the remote readers are tested on blobs vhdtool did not make.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from azure.storage.blob import BlobClient, BlobSasPermissions, BlobServiceClient, generate_blob_sas

from support.azurite import ACCOUNT, Azurite, RecordingProxy
from support.cli import CliResult
from vhdtool.blockio.fileio import data_ranges
from vhdtool.extents import MiB

ROOT = Path(__file__).resolve().parents[2]


def sdk_upload(client: BlobClient, path: Path, *, whole: bool | None = None) -> None:
    """Put ``path`` in a page blob with the SDK: ``upload_blob`` (small files) or page by page (sparse ones)."""
    size = path.stat().st_size
    padded = size + (-size % 512)
    if whole or (whole is None and size <= 256 * MiB):
        data = path.read_bytes() + bytes(padded - size)
        client.upload_blob(data, blob_type="PageBlob", overwrite=True)
        return
    client.create_page_blob(padded)
    with open(path, "rb") as f:
        for start, end in data_ranges(f.fileno(), size):
            start -= start % 512
            for a in range(start, end, 4 * MiB):
                f.seek(a)
                chunk = f.read(min(4 * MiB, end - a))
                chunk += bytes(-len(chunk) % 512)
                if chunk.count(0) != len(chunk):
                    client.upload_page(chunk, a, len(chunk))


class Store:
    """A fresh container in Azurite, reached through ``proxy`` (counted) or directly (for setup)."""

    def __init__(self, azurite: Azurite, proxy: RecordingProxy, account: str = ACCOUNT) -> None:
        self.azurite = azurite
        self.proxy = proxy
        self.account = account
        self.key = dict(azurite.accounts)[account]
        self.container = "r" + uuid.uuid4().hex[:12]
        self.service = BlobServiceClient.from_connection_string(azurite.connection_string(account=account))
        self.service.create_container(self.container)
        self.connection_string = azurite.connection_string(proxy.endpoint, account=account)
        self.endpoint = f"http://127.0.0.1:{proxy.port}/{account}"

    def client(self, blob: str) -> BlobClient:
        return self.service.get_blob_client(self.container, blob)

    def spec(self, blob: str) -> str:
        return f"{self.container}/{blob}"

    def sas_url(self, blob: str, **permissions: bool) -> str:
        """A blob URL through the proxy with a SAS token (read-only unless told otherwise)."""
        perms = BlobSasPermissions(**(permissions or {"read": True}))
        sas = generate_blob_sas(self.account, self.container, blob, account_key=self.key, permission=perms,
                                expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2))
        return f"{self.endpoint}/{self.container}/{urllib.parse.quote(blob)}?{sas}"


def sig_of(url: str) -> str:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["sig"]


def json_of(proc: CliResult | subprocess.CompletedProcess[str]) -> Any:
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)


def make_raw(path: Path, size: int, seed: int) -> Path:
    """A sparse raw disk: a 9 MiB run, an unaligned write, scattered pages, a page of explicit zeros."""
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        writes = [(0, 4096), (5 * MiB + 100, 3000), (12 * MiB, 9 * MiB + 512)]
        starts = rng.integers(50000, size // 512 - 64, 60)
        writes += [(int(o) * 512, 512 * int(n)) for o, n in zip(starts, rng.integers(1, 17, 60), strict=True)]
        for offset, length in writes:
            f.seek(offset)
            f.write(rng.integers(1, 256, length, dtype=np.uint8).tobytes())
    return path
