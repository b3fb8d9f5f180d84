"""Page planning for uploads: properties of the pure range arithmetic, and the retry delays."""

from __future__ import annotations

import dataclasses
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vhdtool.azure.failures import PermanentError
from vhdtool.azure.pages import (
    MAX_PUT_PAGE,
    PAGE_SIZE,
    RangeSet,
    RunList,
    align_extents,
    page_runs,
    split_ranges,
    total,
)
from vhdtool.azure.retry import RetryPolicy
from vhdtool.azure.storage import (
    BlobState,
    Destination,
    connection_string_field,
    is_managed_disk_url,
    make_destination,
    public_url,
    scrub,
)
from vhdtool.azure.upload import META_FOOTER, META_IDENTITY, Start, UploadOptions, choose_start
from vhdtool.errors import TransferError, UsageError
from vhdtool.extents import Extent, check_cover, extents_from_ranges

ranges_strategy = st.lists(st.tuples(st.integers(0, 1 << 24), st.integers(1, 1 << 22)), max_size=30).map(
    lambda pairs: [(a, a + n) for a, n in pairs])


def covered(ranges: list[tuple[int, int]]) -> set[int]:
    """Every 512-byte page index touched (test oracle, small sizes only)."""
    return {p for a, b in ranges for p in range(a // 512, -(-b // 512))}


@given(st.lists(st.tuples(st.integers(0, 4096), st.integers(1, 4096)), max_size=20), st.integers(1, 64))
def test_align_extents_widens_to_pages_and_covers_the_disk(pairs: list[tuple[int, int]], pages: int) -> None:
    size = pages * PAGE_SIZE + 8192 * 2
    raw = [(a, min(size, a + n)) for a, n in pairs if a < size]
    extents = extents_from_ranges(raw, size)
    aligned = align_extents(extents, size)
    check_cover(aligned, size)
    for e in aligned:
        assert e.offset % PAGE_SIZE == 0 and e.length % PAGE_SIZE == 0
    # Every allocated byte stays allocated; no page becomes allocated without an allocated byte in it.
    allocated_bytes = {b for a, c in raw for b in range(a, c)}
    for e in aligned:
        for page in range(e.offset // 512, e.end // 512):
            has_data = any(b in allocated_bytes for b in range(page * 512, page * 512 + 512))
            assert has_data == e.allocated


def test_align_extents_rejects_a_size_that_is_not_whole_pages() -> None:
    with pytest.raises(ValueError):
        align_extents([Extent(0, 1000, True)], 1000)


@settings(max_examples=60)
@given(st.lists(st.tuples(st.integers(0, 63), st.integers(1, 255)), max_size=12))
def test_page_runs_are_exactly_the_non_zero_pages(writes: list[tuple[int, int]]) -> None:
    buf = bytearray(64 * PAGE_SIZE)
    for page, value in writes:
        buf[page * PAGE_SIZE + (value % PAGE_SIZE)] = value
    offset = 1024 * PAGE_SIZE
    runs = page_runs(offset, memoryview(buf))
    expected = {offset // PAGE_SIZE + page for page, _ in writes}
    assert covered(runs) == expected
    for a, b in runs:
        assert a % PAGE_SIZE == 0 and b % PAGE_SIZE == 0
    assert all(runs[i][1] < runs[i + 1][0] for i in range(len(runs) - 1))  # separate, in order


def test_page_runs_refuse_unaligned_pieces() -> None:
    with pytest.raises(ValueError):
        page_runs(100, memoryview(bytes(512)))


@given(ranges_strategy.map(lambda rs: [(a * 512, b * 512) for a, b in rs]))
def test_put_windows_cover_the_runs_with_aligned_requests_of_at_most_4_mib(runs: list[tuple[int, int]]) -> None:
    # How verify and patch cut merged page runs into Put Page / Get Blob windows.
    merged = RangeSet(runs).ranges
    puts = list(split_ranges(merged, MAX_PUT_PAGE))
    for a, b in puts:
        assert 0 < b - a <= MAX_PUT_PAGE
        assert a % PAGE_SIZE == 0 and b % PAGE_SIZE == 0
    assert all(puts[i][1] <= puts[i + 1][0] for i in range(len(puts) - 1))
    assert RangeSet(puts).ranges == merged
    # As few requests as the limit allows: per merged run, ceil(length / 4 MiB).
    assert len(puts) == sum(-(-(b - a) // MAX_PUT_PAGE) for a, b in merged)


@given(ranges_strategy, st.integers(0, 1 << 23), st.integers(0, 1 << 23))
def test_rangeset_missing_is_what_the_set_leaves_of_the_window(ranges: list[tuple[int, int]], start: int,
                                                               length: int) -> None:
    end = start + length
    present = RangeSet(ranges)
    missing = present.missing(start, end)
    # Separate, in order, inside the window, and touching no range of the set...
    assert all(start <= a < b <= end for a, b in missing)
    assert all(missing[i][1] < missing[i + 1][0] for i in range(len(missing) - 1))
    assert not any(a < d and c < b for a, b in missing for c, d in present.ranges)
    # ...so missing and present parts tile [start, end) exactly.
    inside = [(max(a, start), min(b, end)) for a, b in present.ranges if min(b, end) > max(a, start)]
    assert total(missing) + total(inside) == length


def test_runlist_merges_touching_runs_and_refuses_going_back() -> None:
    runs = RunList()
    runs.add(0, 512)
    runs.add(512, 1024)
    runs.add(2048, 4096)
    runs.add(4096, 4096)  # empty: ignored
    assert runs.ranges == [(0, 1024), (2048, 4096)]
    with pytest.raises(ValueError):
        runs.add(0, 512)


def test_retry_delay_honours_retry_after_and_bounds_the_jitter() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0, max_retry_after=60)
    assert policy.delay(1, 7.0) == 7.0
    assert policy.delay(3, 1000.0) == 60
    for attempt in range(1, 12):
        for _ in range(50):
            d = policy.delay(attempt, None)
            assert 0 <= d <= min(4.0, 0.5 * 2 ** (attempt - 1))


def test_scrub_removes_sas_signatures_and_account_keys() -> None:
    sig = "abcDEF123%2Bxyz%3D"
    key = "Zm9vYmFyYmF6cXV4cXV1eA=="
    text = (f"https://a.blob.core.windows.net/c/b?sv=2024&sig={sig}&se=x failed; "
            f"AccountKey={key};BlobEndpoint=http://x; SharedAccessSignature=sv=1&sig=zzz")
    clean = scrub(text, [key])
    assert sig not in clean and key not in clean and "zzz" not in clean
    assert "sv=2024" in clean and "REDACTED" in clean
    assert scrub("bare secret value here", ["secret value"]) == "bare REDACTED here"


def test_destinations_from_the_command_line_pieces() -> None:
    url = "https://acct.blob.core.windows.net/disks/os.vhd?sv=1&sig=SECRETSIG"
    d = make_destination(url)
    assert d == Destination(url=url)
    assert d.describe() == "https://acct.blob.core.windows.net/disks/os.vhd" == public_url(url)
    assert "SECRETSIG" in d.secrets()
    cs = ("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=SECRETKEY0000;"
          "EndpointSuffix=core.windows.net")
    d = make_destination("disks/os.vhd", connection_string=cs)
    assert (d.container, d.blob) == ("disks", "os.vhd") and d.secrets() == ["SECRETKEY0000"]
    d = make_destination(None, account_url="https://acct.blob.core.windows.net", container="c", blob="b")
    assert d.describe() == "https://acct.blob.core.windows.net/c/b"
    for bad in [dict(dest=None), dict(dest="nocontainer", connection_string=cs),
                dict(dest="c/b"), dict(dest=url, container="c"),
                dict(dest="https://acct.blob.core.windows.net/onlycontainer")]:
        with pytest.raises(UsageError) as info:
            make_destination(**bad)  # type: ignore[arg-type]
        assert "SECRET" not in str(info.value)


def test_zero_detection_matches_a_python_oracle_on_random_sparse_data() -> None:
    buf = bytearray(256 * PAGE_SIZE)
    for i in range(0, len(buf), 1531):
        if (i // 1531) % 3 == 0:
            buf[i:i + 7] = os.urandom(7).replace(b"\0", b"\1")
    runs = page_runs(0, memoryview(buf))
    oracle = {p for p in range(256) if any(buf[p * 512:(p + 1) * 512])}
    assert covered(runs) == oracle


def test_managed_disk_upload_urls_are_recognised() -> None:
    assert is_managed_disk_url("https://md-impexp-t0ab12cd.z22.blob.storage.azure.net/x1y2z3/abcd?sv=1&sig=s")
    assert not is_managed_disk_url("https://acct.blob.core.windows.net/disks/abcd?sv=1&sig=s")
    assert not is_managed_disk_url("http://127.0.0.1:10000/devstoreaccount1/c/b")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 255), st.integers(1, 4)), max_size=60),
       st.lists(st.tuples(st.integers(0, 255), st.integers(1, 16)), max_size=5),
       st.sampled_from([512, 4096, 64 * 512]), st.sampled_from([1024, 8192, 16384]))
def test_pageblob_sink_sends_exactly_the_missing_non_zero_pages_and_taps_every_byte(
        writes: list[tuple[int, int]], present_pages: list[tuple[int, int]], chunk: int, max_put: int) -> None:
    import hashlib
    import threading

    from vhdtool.azure.sink import PageBlobSink

    size = 256 * PAGE_SIZE
    disk = bytearray(size)
    for page, count in writes:
        count = min(count, 256 - page)
        disk[page * PAGE_SIZE:(page + count) * PAGE_SIZE] = bytes([page % 255 + 1]) * (count * PAGE_SIZE)
    present = RangeSet((p * PAGE_SIZE, (p + n) * PAGE_SIZE) for p, n in present_pages)
    puts: list[tuple[int, bytes]] = []
    lock = threading.Lock()

    def put(offset: int, body: bytes) -> None:
        with lock:
            puts.append((offset, body))

    tapped = hashlib.md5()
    position = [0]

    def tap(offset: int, payload: bytes | int) -> None:
        assert offset == position[0]
        tapped.update(bytes(payload) if isinstance(payload, int) else payload)
        position[0] += payload if isinstance(payload, int) else len(payload)

    sink = PageBlobSink(put, threads=2, window=3, present=present, max_put=max_put, tap=tap)
    # Feed like the pump: a zero extent in the middle, the rest as data in ``chunk`` pieces.
    view = memoryview(disk)
    for start in range(0, size, chunk):
        if start == 64 * PAGE_SIZE and not any(disk[start:start + chunk]):
            sink.zeros(start, chunk)
        else:
            sink.data(start, view[start:start + chunk])
    sink.finish()
    assert tapped.digest() == hashlib.md5(disk).digest()
    sent_pages: list[int] = []
    for offset, body in puts:
        assert offset % PAGE_SIZE == 0 and len(body) % PAGE_SIZE == 0 and 0 < len(body) <= max_put
        assert body == disk[offset:offset + len(body)]
        sent_pages += range(offset // PAGE_SIZE, (offset + len(body)) // PAGE_SIZE)
    nonzero = {p for p in range(256) if any(disk[p * PAGE_SIZE:(p + 1) * PAGE_SIZE])}
    held = {p for a, b in present.ranges for p in range(a // PAGE_SIZE, b // PAGE_SIZE)}
    assert len(sent_pages) == len(set(sent_pages))
    assert set(sent_pages) == nonzero - held
    assert sink.bytes_sent + sink.bytes_skipped == size
    assert RangeSet(sink.data_runs.ranges).ranges == RangeSet(
        (p * PAGE_SIZE, (p + 1) * PAGE_SIZE) for p in nonzero).ranges


def test_upload_options_are_frozen_and_refuse_bad_values_as_given() -> None:
    options = UploadOptions(threads=4, hashes=["md5"])  # type: ignore[arg-type]  # a list is kept as a tuple
    assert options.hashes == ("md5",) and options.requests_window == 8
    assert UploadOptions(threads=4, window=2).requests_window == 4  # never fewer bodies than threads
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.threads = 2  # type: ignore[misc]
    for bad, said in (({"threads": 0}, "--threads"), ({"verify": "bytes"}, "--verify"),
                      ({"max_put": 1000}, "512 bytes to 4 MiB"), ({"max_put": 8 << 20}, "512 bytes to 4 MiB")):
        with pytest.raises(UsageError, match=said):
            UploadOptions(**bad)  # type: ignore[arg-type]


def _blob(exists: bool = True, size: int = 1536, blob_type: str = "PageBlob", mine: bool = False) -> BlobState:
    metadata = {META_IDENTITY: "me", META_FOOTER: "00" * 16 + "-7"} if mine else {}
    return BlobState(exists, size if exists else 0, blob_type if exists else None, metadata)


def test_the_start_of_an_upload_follows_the_blob_state_and_the_options() -> None:
    listed: list[int] = []

    def start(state: BlobState, *, managed: bool = False, overwrite: bool = False, resume: bool = False,
              written: list[tuple[int, int]] | None = None) -> Start:
        def ranges() -> list[tuple[int, int]]:
            listed.append(1)
            return written or []
        return choose_start(state, "me", 1536, managed_disk=managed, overwrite=overwrite, resume=resume,
                            name="c/b", written=ranges)

    assert start(_blob(exists=False)) is Start.CREATE
    assert start(_blob(mine=True), resume=True) is Start.RESUME
    assert start(_blob(mine=True, size=2048), resume=True, overwrite=True) is Start.CREATE  # not this size
    assert start(_blob(), overwrite=True) is Start.REWRITE
    assert start(_blob(blob_type="BlockBlob"), overwrite=True) is Start.CREATE
    assert not listed  # a blob's listing is not needed to choose
    for state, said in ((_blob(), "already exists"), (_blob(mine=True), "already exists"),
                        (_blob(blob_type="BlockBlob"), "not a page blob")):
        with pytest.raises(TransferError, match=said):
            start(state)
    with pytest.raises(TransferError, match="no interrupted upload of this image"):
        start(_blob(), resume=True)
    # A managed disk always exists, at its size; it is written into, cleared first only if it holds data.
    assert start(_blob(), managed=True) is Start.REWRITE
    assert start(_blob(mine=True), managed=True, resume=True) is Start.RESUME
    assert start(_blob(), managed=True, overwrite=True, written=[(0, 512)]) is Start.REWRITE
    with pytest.raises(TransferError, match="already holds data; pass --overwrite"):
        start(_blob(), managed=True, written=[(0, 512)])
    with pytest.raises(PermanentError, match="does not exist"):
        start(_blob(exists=False), managed=True)
    with pytest.raises(TransferError, match="--upload-size-bytes 1536"):
        start(_blob(size=4096), managed=True)


def test_public_url_and_connection_string_fields() -> None:
    assert public_url("https://user:pw@acct.blob.core.windows.net/c/b.vhd?sv=1&sig=S#frag") == \
        "https://acct.blob.core.windows.net/c/b.vhd"
    text = "DefaultEndpointsProtocol=https; AccountName=acct;AccountKey=a2V5PQ==;EndpointSuffix=core.windows.net"
    assert connection_string_field(text, "accountkey") == "a2V5PQ=="  # the value keeps its '='
    assert connection_string_field(text, "AccountName") == "acct"
    assert connection_string_field(text, "BlobEndpoint") is None
