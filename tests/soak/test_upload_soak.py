"""The upload soak in the suite (the machinery is :mod:`support.soak`), and the regressions it found."""

from __future__ import annotations

import datetime as dt
import traceback
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas
from support.azurite import ACCOUNT, ACCOUNT_KEY, FAULT_KINDS, Azurite, RecordingProxy, Rule
from support.soak import PAGE, Soak, scattered_raw, secret_forms

from vhdtool import open_image
from vhdtool.azure.retry import RetryPolicy
from vhdtool.azure.storage import Destination, PageBlobTarget, RetryableError
from vhdtool.azure.upload import UploadOptions, upload
from vhdtool.errors import TransferError
from vhdtool.extents import MiB

pytestmark = pytest.mark.slow  # left out of scripts/test.sh --fast


# -- the normal suite's soak ------------------------------------------------------------------------


@pytest.fixture
def proxy(azurite: Azurite) -> Iterator[RecordingProxy]:
    p = RecordingProxy(azurite.port)
    yield p
    p.close()


def test_uploads_survive_random_faults_kills_and_resumes(tmp_path: Path, azurite: Azurite,
                                                         proxy: RecordingProxy) -> None:
    soak = Soak(azurite, proxy, tmp_path, seed=20261201, fault_rate=0.08)
    try:
        raw = soak.make_image("raw", 19 * MiB + 3000, 7 * MiB, auth="key", verify="full")
        vhdx = soak.make_image("vhdx", 23 * MiB + 37 * PAGE, 7 * MiB, auth="sas", verify="pages")
        vhd = soak.make_image("vhd", 17 * MiB + 11 * PAGE, 6 * MiB, auth="key", verify="full")
        # Same fixed size as ``raw``: its blob is kept and its written ranges cleared first.
        over = soak.make_image("raw", 19 * MiB + 1, 5 * MiB, auth="sas", verify="pages", over=raw)
        soak.upload(raw, ["SIGKILL", "SIGKILL"])
        soak.upload(vhdx, ["SIGINT", "SIGKILL"])
        soak.upload(vhd, ["SIGKILL"])
        soak.upload(over, ["SIGKILL"])
    finally:
        soak.close()
    totals = soak.totals()
    print("\n" + totals.table())
    assert not soak.problems, "\n".join(soak.problems)
    assert totals.identical == 4
    # It soaked what it is for: every kind of fault, both signals, resumes after each.
    assert all(totals.faults[kind] >= 2 for kind in FAULT_KINDS), totals.faults
    assert totals.kills >= 3 and totals.interrupts == 1 and totals.resumes >= 4
    assert totals.put_bytes > totals.nonzero  # some bytes were sent again, and counted


# -- regressions the soak found ---------------------------------------------------------------------


@pytest.fixture
def container(azurite: Azurite) -> str:
    name = "c" + uuid.uuid4().hex[:12]
    BlobServiceClient.from_connection_string(azurite.connection_string()).create_container(name)
    return name


FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.05, max_delay=0.2)


def _raw(tmp: Path) -> Path:
    path = tmp / "disk.raw"
    scattered_raw(path, 9 * MiB + 700, 5 * MiB, np.random.default_rng(4))
    return path


def test_a_page_list_cut_short_is_retried(tmp_path: Path, azurite: Azurite, proxy: RecordingProxy,
                                          container: str) -> None:
    image = _raw(tmp_path)
    dest = Destination(connection_string=azurite.connection_string(proxy.endpoint), container=container,
                       blob="d.vhd")
    # The listing's body ends before its Content-Length: the SDK raises IncompleteReadError, which
    # is a broken connection, not a refusal.
    proxy.add_rule(Rule(lambda r: r.query.get("comp") == "pagelist", "cut", times=2))
    with open_image(image) as disk:
        result = upload(disk, dest, UploadOptions(threads=2, retry=FAST_RETRY, verify="pages"))
    assert proxy.injected["cut"] == 2 and result.retries == 2


def test_properties_cut_short_are_retried_not_a_crash(tmp_path: Path, azurite: Azurite, proxy: RecordingProxy,
                                                      container: str) -> None:
    image = _raw(tmp_path)
    dest = Destination(connection_string=azurite.connection_string(proxy.endpoint), container=container,
                       blob="d.vhd")
    proxy.add_rule(Rule(lambda r: r.is_put_page, "403", times=1))
    with open_image(image) as disk, pytest.raises(TransferError):
        upload(disk, dest, UploadOptions(threads=1, window=1, retry=FAST_RETRY))
    # Half the header block of Get Blob Properties, then the connection closes: http.client takes
    # the end of the stream as the end of the headers, so the answer lacks the blob's size and type.
    proxy.add_rule(Rule(lambda r: r.method == "HEAD", "cut", times=1))
    with pytest.raises(RetryableError):
        PageBlobTarget(dest).state()
    proxy.add_rule(Rule(lambda r: r.method == "HEAD", "cut", times=1))
    with open_image(image) as disk:
        result = upload(disk, dest, UploadOptions(threads=2, retry=FAST_RETRY, resume=True, verify="full"))
    assert result.resumed and result.retries == 1


@pytest.mark.parametrize("kind", ["503", "500", "drop", "drop-after", "cut"])
@pytest.mark.parametrize("auth", ["key", "sas"])
def test_a_failure_that_ends_an_upload_names_no_secret(tmp_path: Path, azurite: Azurite, proxy: RecordingProxy,
                                                       container: str, kind: str, auth: str) -> None:
    image = _raw(tmp_path)
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    sas = generate_blob_sas(ACCOUNT, container, "d.vhd", account_key=ACCOUNT_KEY, expiry=when,
                            permission=BlobSasPermissions(read=True, create=True, write=True))
    dest = Destination(connection_string=azurite.connection_string(proxy.endpoint), container=container,
                       blob="d.vhd") if auth == "key" else Destination(url=f"{proxy.endpoint}/{container}/d.vhd?{sas}")
    # Every Put Page fails (cut: a listing, the one request with a body to cut) and one attempt is all
    # there is, so the upload gives up with that failure's text.
    target = (lambda r: r.query.get("comp") == "pagelist") if kind == "cut" else (lambda r: r.is_put_page)
    proxy.add_rule(Rule(target, kind, times=100, retry_after=0))
    with open_image(image) as disk, pytest.raises(TransferError) as info:
        upload(disk, dest, UploadOptions(threads=2, retry=RetryPolicy(attempts=1), verify="pages"))
    text = "".join(traceback.format_exception(info.value)) + repr(info.value)
    assert "gave up" in text
    for form in secret_forms([ACCOUNT_KEY, *urllib.parse.parse_qs(sas)["sig"]]):
        assert form not in text
