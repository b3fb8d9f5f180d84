"""``vhdtool upload`` against a real Azurite, every request recorded by a loopback proxy.

The blob service is Azurite (no mock); the proxy in ``tests/support/azurite.py`` checks every Put Page
(≤ 4 MiB, 512-byte aligned, Content-MD5 right) and injects faults. After each upload the blob is
downloaded straight from Azurite and compared with the fixed VHD that ``vhdtool convert`` writes;
the MD5 is recomputed with hashlib. A "managed disk" is emulated by a page blob created beforehand
in Azurite (the real thing needs Azure): only the pre-sized, cannot-create behaviour is exercised.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from azure.storage.blob import BlobClient, BlobSasPermissions, BlobServiceClient, generate_blob_sas
from support.azurite import ACCOUNT, ACCOUNT_KEY, Azurite, Recorded, RecordingProxy, Rule
from support.cli import cli_command, run_cli
from support.forward_proxy import ForwardProxy
from support.oracles import qemu_img, reference_sparse_digest_of_bytes

import vhdtool.blockio.fileio
from vhdtool import open_image
from vhdtool.azure.pages import split_ranges
from vhdtool.azure.retry import RetryPolicy
from vhdtool.azure.storage import Destination
from vhdtool.azure.upload import UploadOptions, UploadResult, upload
from vhdtool.errors import TransferError
from vhdtool.extents import MiB, merge_ranges
from vhdtool.formats.vhd.footer import parse_footer
from vhdtool.jobs.convert import convert

pytestmark = pytest.mark.slow  # left out of scripts/test.sh --fast

ROOT = Path(__file__).resolve().parents[2]
FAST_RETRY = RetryPolicy(attempts=6, base_delay=0.05, max_delay=0.2)


class Place:
    """A fresh container and blob name; a destination through the proxy, a direct client for checks."""

    def __init__(self, azurite: Azurite, proxy: RecordingProxy) -> None:
        self.container = "c" + uuid.uuid4().hex[:12]
        self.blob = "disk.vhd"
        self.azurite = azurite
        self.proxy_connection_string = azurite.connection_string(proxy.endpoint)
        BlobServiceClient.from_connection_string(azurite.connection_string()).create_container(self.container)
        self.direct: BlobClient = BlobClient.from_connection_string(azurite.connection_string(),
                                                                    self.container, self.blob)

    @property
    def dest(self) -> Destination:
        return Destination(connection_string=self.proxy_connection_string, container=self.container,
                           blob=self.blob)

    def download(self) -> bytes:
        return self.direct.download_blob().readall()

    def page_ranges(self) -> list[tuple[int, int]]:
        return [(r.start, r.end + 1) for r in self.direct.list_page_ranges()]


@pytest.fixture
def place(azurite: Azurite, proxy: RecordingProxy) -> Place:
    proxy.clear()
    return Place(azurite, proxy)


def make_raw(path: Path, size: int, seed: int = 1) -> Path:
    """A sparse raw image (at least 16 MiB): unaligned writes, a 4.5 MiB run, scattered pages."""
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        writes = [(0, 512), (3 * MiB + 100, 3000), (6 * MiB - 700, 1400), (8 * MiB, 5 * MiB + 4096)]
        starts = rng.integers(30000, size // 512 - 64, 40)
        writes += [(int(o) * 512, 512 * int(n)) for o, n in zip(starts, rng.integers(1, 9, 40), strict=True)]
        for offset, length in writes:
            f.seek(offset)
            f.write(rng.integers(1, 256, length, dtype=np.uint8).tobytes())
        # Pages of explicit zeros inside data: written, allocated, but never sent.
        f.seek(8 * MiB + 4 * MiB + 512 * 1024)
        f.write(bytes(4096))
    return path


def fixed_vhd(image: Path, tmp: Path) -> bytes:
    """The oracle: what ``vhdtool convert`` writes for ``image``."""
    out = tmp / (image.name + ".fixed.vhd")
    with open_image(image) as disk:
        convert(disk, out)
    return out.read_bytes()


def nonzero_pages(data: bytes) -> set[int]:
    pages = np.frombuffer(data, dtype=np.uint64).reshape(-1, 64).any(axis=1)
    return {int(i) for i in np.flatnonzero(pages)}


def pages_of(puts: list[Recorded]) -> list[int]:
    return [p for r in puts if r.offset is not None and r.length is not None
            for p in range(r.offset // 512, (r.offset + r.length) // 512)]


def assert_same_fixed_vhd(blob: bytes, expected: bytes) -> None:
    """Byte for byte, except the footer's unique id, timestamp and checksum (fresh per run)."""
    assert len(blob) == len(expected)
    assert blob[:-512] == expected[:-512]
    ours = parse_footer(blob[-512:], "blob", len(blob) - 512)
    theirs = parse_footer(expected[-512:], "convert", len(expected) - 512)
    assert ours.checksum_valid
    same = ("cookie", "features", "file_format_version", "data_offset", "original_size", "current_size",
            "geometry", "disk_type", "saved_state")
    for name in same:
        assert getattr(ours, name) == getattr(theirs, name), name


def assert_puts_valid(proxy: RecordingProxy) -> list[Recorded]:
    puts = [r for r in proxy.requests if r.is_put_page]
    assert puts
    for r in puts:
        assert r.offset is not None and r.length is not None
        assert r.offset % 512 == 0 and r.length % 512 == 0 and 0 < r.length <= 4 * MiB
        assert r.body_length == r.length
        assert r.md5_ok, f"Content-MD5 missing or wrong on the put at {r.offset}"
    return puts


def assert_uploaded(place: Place, result: UploadResult, expected: bytes) -> bytes:
    """The blob holds the fixed VHD; the sparse digest reported and recorded in its metadata is the
    reference script's over the blob's bytes; an MD5 only if one was asked for (then Content-MD5)."""
    blob = place.download()
    assert_same_fixed_vhd(blob, expected)
    assert result.sparse_sha256 == result.digests["sparse-sha256"] == reference_sparse_digest_of_bytes(blob)
    props = place.direct.get_blob_properties()
    assert props.metadata["vhdtool_sparse_sha256"] == result.sparse_sha256
    stored = props.content_settings.content_md5
    if result.md5 is None:
        assert not stored and not result.md5_stored and "vhdtool_md5" not in props.metadata
    else:
        digest = hashlib.md5(blob).digest()
        assert result.md5 == digest.hex() == props.metadata["vhdtool_md5"]
        assert stored is not None and bytes(stored) == digest and result.md5_stored
    assert result.blob_size == len(blob) and result.virtual_size == len(blob) - 512
    assert result.bytes_sent + result.bytes_skipped == len(blob)
    return blob


def test_raw_upload_sends_only_non_zero_pages_in_valid_requests(tmp_path: Path, place: Place,
                                                                proxy: RecordingProxy) -> None:
    image = make_raw(tmp_path / "disk.raw", 40 * MiB + 3000)
    expected = fixed_vhd(image, tmp_path)
    with open_image(image) as disk:
        result = upload(disk, place.dest, UploadOptions(threads=4, verify="full"))
    blob = assert_uploaded(place, result, expected)
    puts = assert_puts_valid(proxy)
    sent_pages = pages_of(puts)
    assert len(sent_pages) == len(set(sent_pages))  # no page sent twice
    assert set(sent_pages) == nonzero_pages(blob)  # exactly the non-zero pages: zeros never sent
    assert result.bytes_sent == 512 * len(sent_pages)
    assert any(r.length == 4 * MiB for r in puts)  # the 5 MiB run was cut at the limit
    assert result.requests == len(proxy.requests)  # every request counted, and nothing retried
    assert result.retries == 0 and result.verified == "full" and not result.resumed
    assert proxy.max_in_flight_puts <= 4
    assert place.direct.get_blob_properties().metadata["vhdtool_state"] == "complete"


@pytest.mark.parametrize("fmt, options", [("vhdx", []), ("vpc", ["-o", "subformat=dynamic,force_size=on"])])
def test_vhdx_and_dynamic_vhd_upload_as_the_fixed_vhd_convert_writes(tmp_path: Path, place: Place,
                                                                    proxy: RecordingProxy, fmt: str,
                                                                    options: list[str]) -> None:
    raw = make_raw(tmp_path / "disk.raw", 24 * MiB, seed=7)
    image = tmp_path / f"disk.{fmt}"
    qemu_img("convert", "-f", "raw", "-O", fmt, *options, str(raw), str(image))
    expected = fixed_vhd(image, tmp_path)
    assert expected[:24 * MiB] == raw.read_bytes()  # the oracle agrees with qemu-img's input
    with open_image(image) as disk:
        assert disk.format == ("vhdx" if fmt == "vhdx" else "vhd")
        result = upload(disk, place.dest, UploadOptions(threads=3, verify="pages"))
    blob = assert_uploaded(place, result, expected)
    assert set(pages_of(assert_puts_valid(proxy))) == nonzero_pages(blob)


@pytest.fixture(scope="module")
def forward_proxy() -> Iterator[ForwardProxy]:
    p = ForwardProxy()
    yield p
    p.close()


@pytest.fixture(params=["direct", "http-proxy"])
def put_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
             forward_proxy: ForwardProxy) -> Iterator[str]:
    """Run a test straight to the service and through an HTTP proxy named by ``http_proxy`` (which the
    SDK's requests and vhdtool's Put Page and reads both follow), so both classify errors the same way."""
    if request.param == "direct":
        yield str(request.param)
        return
    for name in ("no_proxy", "NO_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", forward_proxy.endpoint)
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.endpoint)
    before = len(forward_proxy.relayed)
    yield str(request.param)
    relayed = forward_proxy.relayed[before:]
    assert any(method == "PUT" and "comp=page" in target for method, target in relayed)
    assert all(target.startswith("http://") for _, target in relayed)  # absolute form, as a proxy wants


def test_503_with_retry_after_is_retried_after_the_wait(tmp_path: Path, place: Place,
                                                        proxy: RecordingProxy, put_path: str) -> None:
    image = make_raw(tmp_path / "disk.raw", 16 * MiB)
    proxy.add_rule(Rule(lambda r: r.is_put_page, "503", times=2, retry_after=1))
    with open_image(image) as disk:
        result = upload(disk, place.dest, UploadOptions(threads=2, retry=FAST_RETRY))
    assert_uploaded(place, result, fixed_vhd(image, tmp_path))
    assert result.retries == 2
    refused = [r for r in proxy.requests if r.fault == "503"]
    assert len(refused) == 2
    for r in refused:
        again = [x for x in proxy.requests if x.is_put_page and x.offset == r.offset and x.time > r.time]
        assert again and again[0].time - r.time >= 0.95  # Retry-After: 1 honoured, not the 0.05 s backoff
    assert result.requests == len(proxy.requests)


def test_dropped_connections_are_retried_and_the_blob_is_right(tmp_path: Path, place: Place,
                                                               proxy: RecordingProxy, put_path: str) -> None:
    image = make_raw(tmp_path / "disk.raw", 16 * MiB)
    proxy.add_rule(Rule(lambda r: r.is_put_page, "drop", times=2))
    proxy.add_rule(Rule(lambda r: r.is_put_page and (r.offset or 0) > 0, "drop-after", times=1))
    proxy.add_rule(Rule(lambda r: r.method == "GET" and r.query.get("comp") == "pagelist", "drop", times=1))
    with open_image(image) as disk:
        result = upload(disk, place.dest, UploadOptions(threads=2, retry=FAST_RETRY, verify="pages"))
    assert_uploaded(place, result, fixed_vhd(image, tmp_path))
    assert result.retries == 4
    assert len([r for r in proxy.requests if r.fault]) == 4


def is_read(r: Recorded) -> bool:
    """A Get Blob (the blob's bytes), not a listing or properties."""
    return r.method == "GET" and not r.query.get("comp") and not r.query.get("restype")


def test_verify_full_sends_one_ranged_get_per_window_and_one_listing(tmp_path: Path, place: Place,
                                                                    proxy: RecordingProxy, put_path: str) -> None:
    image = make_raw(tmp_path / "disk.raw", 24 * MiB, seed=4)
    expected = fixed_vhd(image, tmp_path)
    windows = list(split_ranges(merge_ranges([(p * 512, p * 512 + 512) for p in sorted(nonzero_pages(expected))]),
                                4 * MiB))
    assert len(windows) > 10
    seen: list[Recorded] = []
    proxy.on_request = lambda r: seen.append(r) if is_read(r) else None  # runs before the rules
    proxy.add_rule(Rule(lambda r: len(seen) > 1 and r is seen[1], "cut"))  # half a body, then closed
    proxy.add_rule(Rule(lambda r: is_read(r) and len(seen) > 4  # a later read of another window
                        and r.headers["x-ms-range"] != seen[1].headers["x-ms-range"], "503"))
    with open_image(image) as disk:
        result = upload(disk, place.dest, UploadOptions(threads=3, retry=FAST_RETRY, verify="full"))
    assert_uploaded(place, result, expected)
    assert result.verified == "full" and result.retries == 2 and proxy.injected["503"] == 1
    listings = [r for r in proxy.requests if r.method == "GET" and r.query.get("comp") == "pagelist"]
    assert len(listings) == 1  # the verification's own; no Get Page Ranges per read
    reads = [r for r in proxy.requests if is_read(r)]
    assert len(reads) == len(windows) + 2  # one GET per window, plus ours retrying the cut and the 503
    spans = sorted((int(a), int(b) + 1) for r in reads
                   for a, _, b in [r.headers["x-ms-range"].removeprefix("bytes=").partition("-")])
    cut = next(r for r in reads if r.fault == "cut")
    again = [r for r in reads if r.headers["x-ms-range"] == cut.headers["x-ms-range"] and r is not cut]
    assert len(again) == 1 and again[0].time - cut.time < 0.9  # our backoff, not a hidden 1 s re-read
    assert sorted(set(spans)) == windows
    assert result.requests == len(proxy.requests)


def test_proxy_credentials_in_the_proxy_url_are_sent(tmp_path: Path, place: Place, proxy: RecordingProxy,
                                                     forward_proxy: ForwardProxy,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``http_proxy=http://user:pass@host:port``: every request carries ``Proxy-Authorization: Basic``."""
    for name in ("no_proxy", "NO_PROXY", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", forward_proxy.endpoint.replace("://", "://proxy%20user:p%40ss@"))
    before = len(forward_proxy.relayed)
    image = make_raw(tmp_path / "disk.raw", 16 * MiB, seed=9)
    with open_image(image) as disk:
        result = upload(disk, place.dest, UploadOptions(threads=2, verify="full"))
    assert_uploaded(place, result, fixed_vhd(image, tmp_path))
    sent = forward_proxy.proxy_authorization[before:]
    assert len(sent) >= result.requests
    assert set(sent) == {"Basic " + base64.b64encode(b"proxy user:p@ss").decode()}


def test_permanent_failure_stops_at_once_and_resume_sends_only_what_is_missing(
        tmp_path: Path, place: Place, proxy: RecordingProxy, put_path: str) -> None:
    image = make_raw(tmp_path / "disk.raw", 40 * MiB)
    expected = fixed_vhd(image, tmp_path)
    seen: list[int] = []

    def fourth_put(r: Recorded) -> bool:
        if r.is_put_page:
            seen.append(1)
        return r.is_put_page and len(seen) >= 4

    proxy.add_rule(Rule(fourth_put, "403", times=1))
    with open_image(image) as disk, pytest.raises(TransferError) as info:
        upload(disk, place.dest, UploadOptions(threads=1, window=1, retry=FAST_RETRY))
    assert "403" in str(info.value)
    denied = [r for r in proxy.requests if r.fault == "403"]
    assert len(denied) == 1
    assert not [r for r in proxy.requests
                if r.is_put_page and r.offset == denied[0].offset and r is not denied[0]]
    before = place.page_ranges()
    assert before

    proxy.clear()
    with open_image(image) as disk:
        result = upload(disk, place.dest, UploadOptions(threads=4, resume=True, verify="full"))
    assert result.resumed
    blob = assert_uploaded(place, result, expected)
    resent = set(pages_of(assert_puts_valid(proxy)))
    already = {p for a, b in before for p in range(a // 512, b // 512)}
    assert not resent & already  # nothing sent twice
    assert resent | already == nonzero_pages(blob)  # and nothing left out
    assert result.bytes_sent == 512 * len(resent)


def test_sigkill_halfway_then_resume_sends_only_what_is_missing(tmp_path: Path, place: Place,
                                                                proxy: RecordingProxy) -> None:
    image = make_raw(tmp_path / "disk.raw", 48 * MiB, seed=3)
    with open(image, "r+b") as f:  # more requests: 24 MiB of data in 4 MiB puts
        f.seek(16 * MiB)
        f.write(np.random.default_rng(5).integers(1, 256, 24 * MiB, dtype=np.uint8).tobytes())
    expected = fixed_vhd(image, tmp_path)
    proxy.add_rule(Rule(lambda r: r.is_put_page, "delay", times=10_000, seconds=0.15))
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "AZURE_STORAGE_CONNECTION_STRING": place.proxy_connection_string}
    proc = subprocess.Popen(cli_command("upload", str(image),
                                        f"{place.container}/{place.blob}", "--threads", "2"),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(proxy.put_pages()) < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # Let requests the proxy still holds reach Azurite before looking at the blob.
    while any(r.status is None and r.fault is None for r in proxy.requests) and time.monotonic() < deadline:
        time.sleep(0.05)
    before = place.page_ranges()
    already = {p for a, b in before for p in range(a // 512, b // 512)}
    assert already

    proxy.clear()
    with open_image(image) as disk:
        result = upload(disk, place.dest, UploadOptions(threads=4, resume=True))
    blob = assert_uploaded(place, result, expected)
    resent = set(pages_of(assert_puts_valid(proxy)))
    assert resent and not resent & already
    assert resent | already == nonzero_pages(blob)


def test_resume_refuses_a_changed_image(tmp_path: Path, place: Place, proxy: RecordingProxy) -> None:
    image = make_raw(tmp_path / "disk.raw", 16 * MiB)
    proxy.add_rule(Rule(lambda r: r.is_put_page, "403", times=1))
    with open_image(image) as disk, pytest.raises(TransferError):
        upload(disk, place.dest, UploadOptions(threads=1, window=1))
    with open(image, "r+b") as f:
        f.write(b"changed")
    os.utime(image, ns=(time.time_ns(), time.time_ns() + 10**9))
    with open_image(image) as disk, pytest.raises(TransferError) as info:
        upload(disk, place.dest, UploadOptions(resume=True))
    assert "--overwrite" in str(info.value)


def test_existing_blob_is_refused_then_overwrite_clears_stale_data(tmp_path: Path, place: Place,
                                                                   proxy: RecordingProxy) -> None:
    image = make_raw(tmp_path / "disk.raw", 16 * MiB)
    expected = fixed_vhd(image, tmp_path)
    place.direct.create_page_blob(len(expected), metadata={"owner": "someone"})
    stale = b"\xee" * (64 * 1024)
    for offset in (1 * MiB, 12 * MiB, 8 * MiB):  # zeros in the image at 1 and 12 MiB, data at 8 MiB
        place.direct.upload_page(stale, offset, len(stale))
    with open_image(image) as disk, pytest.raises(TransferError) as info:
        upload(disk, place.dest)
    assert "already exists" in str(info.value) and "--overwrite" in str(info.value)
    assert not [r for r in proxy.requests if r.is_put_page]  # refused before writing anything
    with open_image(image) as disk:
        result = upload(disk, place.dest, UploadOptions(overwrite=True, verify="full"))
    assert result.bytes_cleared >= 3 * len(stale)
    assert [r for r in proxy.requests if r.page_write == "clear"]
    assert_uploaded(place, result, expected)

    # A blob of another type is replaced by a new page blob.
    place.direct.upload_blob(b"block blob", overwrite=True)
    with open_image(image) as disk:
        result = upload(disk, place.dest, UploadOptions(overwrite=True))
    assert_uploaded(place, result, expected)


def test_managed_disk_of_the_wrong_size_is_refused_with_the_size_to_pass(tmp_path: Path, place: Place,
                                                                         proxy: RecordingProxy) -> None:
    # Emulated managed disk: a pre-created page blob (Azure's `az disk create --for-upload` makes one).
    image = make_raw(tmp_path / "disk.raw", 20 * MiB + 100)
    expected = fixed_vhd(image, tmp_path)
    place.direct.create_page_blob(20 * MiB + 512)
    with open_image(image) as disk, pytest.raises(TransferError) as info:
        upload(disk, place.dest, UploadOptions(managed_disk=True))
    assert f"--upload-size-bytes {len(expected)}" in str(info.value)
    assert str(20 * MiB + 512) in str(info.value)
    assert not [r for r in proxy.requests if r.method == "PUT"]  # nothing created, resized or written

    place.direct.create_page_blob(len(expected))  # the right size: written into, never re-created
    proxy.clear()
    with open_image(image) as disk:
        result = upload(disk, place.dest, UploadOptions(managed_disk=True, verify="pages"))
    assert_uploaded(place, result, expected)
    assert not [r for r in proxy.requests if r.method == "PUT" and r.headers.get("x-ms-blob-type")]

    proxy.clear()
    with open_image(image) as disk, pytest.raises(TransferError) as info:
        upload(disk, place.dest, UploadOptions(managed_disk=True))
    assert "already holds data" in str(info.value)


def test_cli_json_summary_and_secrets_never_printed(tmp_path: Path, place: Place, azurite: Azurite) -> None:
    image = make_raw(tmp_path / "disk.raw", 16 * MiB)
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    good_sas = generate_blob_sas(ACCOUNT, place.container, place.blob, account_key=ACCOUNT_KEY,
                                 permission=BlobSasPermissions(read=True, create=True, write=True),
                                 expiry=when)
    read_sas = generate_blob_sas(ACCOUNT, place.container, "other.vhd", account_key=ACCOUNT_KEY,
                                 permission=BlobSasPermissions(read=True), expiry=when)
    secrets = [dict(p.split("=", 1) for p in s.split("&"))["sig"] for s in (good_sas, read_sas)]
    secrets.append(ACCOUNT_KEY)

    def clean(proc: subprocess.CompletedProcess[str]) -> None:
        for secret in secrets:
            for form in (secret, secret.replace("%2B", "+").replace("%3D", "=").replace("%2F", "/")):
                assert form not in proc.stdout and form not in proc.stderr

    url = f"{azurite.endpoint}/{place.container}/{place.blob}?{good_sas}"
    proc = run_cli("upload", str(image), url, "--json", "--verify=full", "--hash", "md5")
    assert proc.returncode == 0, proc.stderr
    clean(proc)
    facts = json.loads(proc.stdout)
    keys = ("virtual_size", "blob_size", "bytes_sent", "bytes_skipped", "requests", "retries", "sparse_sha256",
            "md5", "seconds", "digests")
    assert all(key in facts for key in keys)
    assert facts["virtual_size"] == 16 * MiB and facts["blob_size"] == 16 * MiB + 512
    blob = place.download()
    assert facts["sparse_sha256"] == reference_sparse_digest_of_bytes(blob)
    assert facts["digests"] == {"sparse-sha256": facts["sparse_sha256"], "md5": hashlib.md5(blob).hexdigest()}
    assert facts["md5"] == hashlib.md5(blob).hexdigest() and facts["md5_stored"] is True
    assert base64.b64decode(facts["content_md5"]) == hashlib.md5(blob).digest()
    stored = place.direct.get_blob_properties().content_settings.content_md5
    assert stored is not None and bytes(stored) == hashlib.md5(blob).digest()
    human = run_cli("upload", str(image), url, "--overwrite")  # no --hash: no MD5 anywhere, and the old one cleared
    assert human.returncode == 0, human.stderr
    assert "sparse-sha256" in human.stdout and "md5" not in human.stdout
    props = place.direct.get_blob_properties()
    assert not props.content_settings.content_md5 and "vhdtool_md5" not in props.metadata
    assert props.metadata["vhdtool_sparse_sha256"] == reference_sparse_digest_of_bytes(place.download())

    proc = run_cli("upload", str(image), url)  # exists: refused, exit 1, one line
    assert proc.returncode == 1 and "--overwrite" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    clean(proc)

    denied = f"{azurite.endpoint}/{place.container}/other.vhd?{read_sas}"
    proc = run_cli("upload", str(image), denied)  # a read-only SAS: the service says 403
    assert proc.returncode == 1 and "403" in proc.stderr and "Traceback" not in proc.stderr
    clean(proc)

    proc = run_cli("upload", str(image), "nosuchcontainer/x.vhd",
                   env={"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string()})
    assert proc.returncode == 1 and "404" in proc.stderr and "Traceback" not in proc.stderr
    clean(proc)

    proc = run_cli("upload", str(image), "only-a-name")
    assert proc.returncode == 2 and "CONTAINER/BLOB" in proc.stderr


def test_ctrl_c_exits_130_in_one_line_and_resume_finishes(tmp_path: Path, place: Place,
                                                          proxy: RecordingProxy) -> None:
    image = make_raw(tmp_path / "disk.raw", 32 * MiB, seed=11)
    expected = fixed_vhd(image, tmp_path)
    proxy.add_rule(Rule(lambda r: r.is_put_page, "delay", times=10_000, seconds=0.2))
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "AZURE_STORAGE_CONNECTION_STRING": place.proxy_connection_string}
    proc = subprocess.Popen(cli_command("upload", str(image),
                                        f"{place.container}/{place.blob}", "--threads", "2", "--progress"),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(proxy.put_pages()) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == "vhdtool: interrupted"
    while any(r.status is None and r.fault is None for r in proxy.requests) and time.monotonic() < deadline:
        time.sleep(0.05)
    proxy.clear()
    proc2 = run_cli("upload", str(image), f"{place.container}/{place.blob}", "--resume", "--json", "--verify",
                    env={"AZURE_STORAGE_CONNECTION_STRING": place.proxy_connection_string})
    assert proc2.returncode == 0, proc2.stderr
    facts = json.loads(proc2.stdout)
    assert facts["resumed"] and facts["verified"] == "pages"
    blob = place.download()
    assert_same_fixed_vhd(blob, expected)
    assert facts["bytes_sent"] < len(nonzero_pages(blob)) * 512  # what the first run wrote was kept


@pytest.mark.parametrize("status", ["429", "408"])
def test_429_and_408_are_retried(tmp_path: Path, place: Place, proxy: RecordingProxy, put_path: str,
                                 status: str) -> None:
    image = make_raw(tmp_path / "disk.raw", 16 * MiB)
    proxy.add_rule(Rule(lambda r: r.is_put_page, status, times=2))
    proxy.add_rule(Rule(lambda r: r.method == "HEAD", status, times=1))  # Get Blob Properties too
    with open_image(image) as disk:
        result = upload(disk, place.dest, UploadOptions(threads=2, retry=FAST_RETRY))
    assert_uploaded(place, result, fixed_vhd(image, tmp_path))
    assert result.retries == 3 and proxy.injected[status] == 3
    assert result.requests == len(proxy.requests)


def test_a_timeout_is_retried(tmp_path: Path, place: Place, proxy: RecordingProxy, put_path: str) -> None:
    image = make_raw(tmp_path / "disk.raw", 16 * MiB)
    # Azurite applies the put; its answer comes 2.5 s later, after the client gave up on it.
    proxy.add_rule(Rule(lambda r: r.is_put_page, "slow", times=1, seconds=2.5))
    with open_image(image) as disk:
        result = upload(disk, place.dest, UploadOptions(threads=2, retry=FAST_RETRY, timeout=1.0))
    assert_uploaded(place, result, fixed_vhd(image, tmp_path))
    assert result.retries == 1 and proxy.injected["slow"] == 1
    puts = [r for r in proxy.requests if r.is_put_page]
    twice = [r for r in puts if sum(x.offset == r.offset for x in puts) == 2]
    assert len(twice) == 2  # the slow put, sent again
    assert twice[1].time - twice[0].time < 2.0  # the client stopped waiting at its timeout


def test_cli_timeout_option_retries_a_slow_answer(tmp_path: Path, place: Place, proxy: RecordingProxy) -> None:
    image = make_raw(tmp_path / "disk.raw", 16 * MiB)
    proxy.add_rule(Rule(lambda r: r.is_put_page, "slow", times=1, seconds=3.0))
    started = time.monotonic()
    proc = run_cli("upload", str(image), f"{place.container}/{place.blob}", "--timeout", "1", "--json",
                   env={"AZURE_STORAGE_CONNECTION_STRING": place.proxy_connection_string})
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts["retries"] == 1 and proxy.injected["slow"] == 1
    assert time.monotonic() - started < 30
    assert_same_fixed_vhd(place.download(), fixed_vhd(image, tmp_path))


def secret_free_one_line(proc: subprocess.CompletedProcess[str], secrets: list[str]) -> str:
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vhdtool: "), proc.stderr
    for secret in secrets:
        for form in (secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)):
            assert form not in proc.stderr
    return lines[0]


def test_403_and_404_stop_at_once_in_one_line_without_secrets(tmp_path: Path, place: Place,
                                                              proxy: RecordingProxy, azurite: Azurite) -> None:
    image = make_raw(tmp_path / "disk.raw", 16 * MiB)
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    sas = generate_blob_sas(ACCOUNT, place.container, place.blob, account_key=ACCOUNT_KEY,
                            permission=BlobSasPermissions(read=True, create=True, write=True), expiry=when)
    query = dict(urllib.parse.parse_qsl(sas))
    forged = query["sig"][:-6] + ("AAAAAA" if not query["sig"].endswith("AAAAAA") else "BBBBBB")
    bad_sas = urllib.parse.urlencode({**query, "sig": forged})
    secrets = [query["sig"], forged, ACCOUNT_KEY]

    proc = run_cli("upload", str(image), f"{proxy.endpoint}/{place.container}/{place.blob}?{bad_sas}")
    line = secret_free_one_line(proc, secrets)
    assert "403" in line and "SAS" in line
    assert len(proxy.requests) == 1 and proxy.requests[0].status == 403  # not retried

    proxy.clear()
    proc = run_cli("upload", str(image), f"nosuchcontainer{uuid.uuid4().hex[:8]}/disk.vhd",
                   "--connection-string", place.proxy_connection_string)
    line = secret_free_one_line(proc, secrets)
    assert "404" in line and "container" in line
    # Get Blob Properties (404: no blob), then Put Blob (404: no container), then stop.
    assert [(r.method, r.status) for r in proxy.requests] == [("HEAD", 404), ("PUT", 404)]


@pytest.mark.parametrize("columns", [160, 0])  # 0: a pty nobody sized, where tqdm alone draws nothing
def test_progress_bar_on_a_terminal_shows_sent_and_empty(tmp_path: Path, place: Place, proxy: RecordingProxy,
                                                        columns: int) -> None:
    import fcntl
    import pty
    import struct
    import termios

    image = make_raw(tmp_path / "disk.raw", 64 * MiB)
    proxy.add_rule(Rule(lambda r: r.is_put_page, "delay", times=10_000, seconds=0.1))
    env = {k: v for k, v in os.environ.items() if k not in ("AZURE_STORAGE_CONNECTION_STRING", "COLUMNS")}
    env.update({"PYTHONPATH": str(ROOT), "AZURE_STORAGE_CONNECTION_STRING": place.proxy_connection_string,
                "TERM": "xterm"})
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24 if columns else 0, columns, 0, 0))
    try:
        proc = subprocess.Popen(cli_command("upload", str(image),
                                            f"{place.container}/{place.blob}", "--threads", "2", "--json"),
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        slave = -1
        shown = bytearray()
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        stdout, _ = proc.communicate(timeout=60)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert proc.returncode == 0
    facts = json.loads(stdout)
    text = shown.decode("utf-8", "replace")
    assert "Traceback" not in text
    frames = re.findall(r"upload:\s*\d+%.*?sent (\d+) MiB, empty (\d+) MiB", text)
    assert len(frames) >= 2, repr(text[-3000:])
    assert "B/s" in text and "<" in text  # rate and ETA
    sent, empty = (int(x) for x in frames[-1])
    assert empty > 0 and 0 <= sent <= facts["bytes_sent"] >> 20
    assert max(int(e) for _, e in frames) <= facts["bytes_skipped"] >> 20


def test_memory_stays_flat_on_a_large_sparse_disk(tmp_path: Path, place: Place, proxy: RecordingProxy) -> None:
    size = 4 * 1024 * MiB
    image = tmp_path / "big.raw"
    rng = np.random.default_rng(9)
    with open(image, "wb") as f:
        f.truncate(size)
        for offset in sorted(int(o) * 4096 for o in rng.integers(0, size // 4096 - 2048, 300)):
            f.seek(offset)
            f.write(rng.integers(1, 256, 64 * 1024, dtype=np.uint8).tobytes())
        f.seek(size // 2)
        f.write(rng.integers(1, 256, 40 * MiB, dtype=np.uint8).tobytes())  # many full 4 MiB puts
    # VmHWM, not ru_maxrss: Linux carries the forking process's peak (pytest's) into ru_maxrss across exec.
    script = ("import re, runpy, sys\n"
              "sys.argv = ['vhdtool'] + sys.argv[1:]\n"
              "try:\n"
              "    runpy.run_module('vhdtool', run_name='__main__')\n"
              "finally:\n"
              "    status = open('/proc/self/status').read()\n"
              "    print(re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1), file=sys.stderr)\n")
    env = {k: v for k, v in os.environ.items() if k != "AZURE_STORAGE_CONNECTION_STRING"}
    env.update({"PYTHONPATH": str(ROOT), "AZURE_STORAGE_CONNECTION_STRING": place.proxy_connection_string})
    proc = subprocess.run([sys.executable, "-c", script, "upload", str(image), f"{place.container}/{place.blob}",
                           "--threads", "8", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    peak_mib = int(proc.stderr.strip().splitlines()[-1]) / 1024
    assert facts["blob_size"] == size + 512 and facts["bytes_sent"] >= 40 * MiB
    assert peak_mib < 150, f"peak RSS {peak_mib:.0f} MiB"
    assert sum(1 for r in proxy.requests if r.is_put_page) >= 10
    assert place.direct.get_blob_properties().metadata["vhdtool_sparse_sha256"] == facts["sparse_sha256"]


@pytest.mark.parametrize("fmt", ["raw", "vhdx"])
def test_each_source_byte_is_read_once(tmp_path: Path, place: Place, proxy: RecordingProxy,
                                       monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    raw = make_raw(tmp_path / "disk.raw", 24 * MiB, seed=8)
    image = raw
    if fmt == "vhdx":
        image = tmp_path / "disk.vhdx"
        qemu_img("convert", "-f", "raw", "-O", "vhdx", str(raw), str(image))
    expected = fixed_vhd(image, tmp_path)
    reads: list[tuple[int, int]] = []
    real = vhdtool.blockio.fileio.preadinto

    def counted(fd: int, view: memoryview, offset: int) -> int:
        n = real(fd, view, offset)
        reads.append((offset, offset + n))
        return n

    with open_image(image) as disk:
        monkeypatch.setattr(vhdtool.blockio.fileio, "preadinto", counted)  # reads of the image file only
        result = upload(disk, place.dest, UploadOptions(threads=3))
    assert_uploaded(place, result, expected)
    ordered = sorted(reads)
    assert all(a[1] <= b[0] for a, b in zip(ordered, ordered[1:], strict=False)), "a byte was read twice"
    assert sum(b - a for a, b in reads) >= len(nonzero_pages(expected) - {len(expected) // 512 - 1}) * 512


def test_a_409_or_a_leased_blob_stops_the_upload_at_once(tmp_path: Path, place: Place, proxy: RecordingProxy,
                                                         put_path: str) -> None:
    image = make_raw(tmp_path / "disk.raw", 16 * MiB)
    expected = fixed_vhd(image, tmp_path)
    proxy.add_rule(Rule(lambda r: r.is_put_page, "409", times=1))
    with open_image(image) as disk, pytest.raises(TransferError) as info:
        upload(disk, place.dest, UploadOptions(threads=1, window=1, retry=FAST_RETRY))
    assert "HTTP 409" in str(info.value) and "conflicting state" in str(info.value)
    assert [r.status for r in proxy.requests if r.is_put_page] == [409]  # nothing after it, not retried

    # A real refusal from the service: the blob is leased by someone else.
    place.direct.create_page_blob(len(expected))
    place.direct.acquire_lease()
    proxy.clear()
    with open_image(image) as disk, pytest.raises(TransferError) as info:
        upload(disk, place.dest, UploadOptions(overwrite=True, retry=FAST_RETRY))
    refused = [r for r in proxy.requests if (r.status or 0) >= 400]
    assert len(refused) == 1 and str(refused[0].status) in str(info.value)
    assert not [r for r in proxy.requests if r.is_put_page]
    assert place.page_ranges() == []


HOLD = 8.0  # seconds the proxy holds each Put Page in the test below


def test_ctrl_c_with_requests_in_flight_exits_at_once(tmp_path: Path, place: Place, proxy: RecordingProxy) -> None:
    """A SIGINT while Put Page answers are held ends the CLI in well under the hold (exit 130, one line),
    not after the held requests return; ``--resume`` then finishes the blob exactly."""
    image = make_raw(tmp_path / "disk.raw", 32 * MiB, seed=5)
    expected = fixed_vhd(image, tmp_path)
    proxy.add_rule(Rule(lambda r: r.is_put_page, "delay", times=4, seconds=HOLD))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1",
           "AZURE_STORAGE_CONNECTION_STRING": place.proxy_connection_string}
    command = cli_command("upload", str(image), f"{place.container}/{place.blob}",
                          "--threads", "4")
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(proxy.put_pages()) < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert len(proxy.put_pages()) >= 4, "the upload never had four Put Page requests in flight"
    signalled = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # a hang: every thread's stack (faulthandler) says where
        proc.send_signal(signal.SIGABRT)
        _, stderr = proc.communicate(timeout=30)
        raise AssertionError(f"no exit 60 s after SIGINT:\n{stderr}") from None
    took = time.monotonic() - signalled
    assert proc.returncode == 130 and stderr == "vhdtool: interrupted\n", stderr
    assert took < HOLD / 2, f"exit took {took:.1f} s: it waited for the requests on the wire"

    # The held requests land, as a service would apply them, before the resume looks at the blob.
    landed_by = time.monotonic() + HOLD + 30
    while any(r.status is None and r.fault is None for r in proxy.put_pages()) and time.monotonic() < landed_by:
        time.sleep(0.1)
    resumed = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_fixed_vhd(place.download(), expected)
