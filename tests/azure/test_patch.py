"""Patch uploads: a differencing chain sent as a copy of its base blob plus the descendants' ranges.

Chains come from the independent builders (``vhd_builder``, ``vhdx_builder``) and VHD chains are read
by libvhdi too. On Azurite (two accounts; the recording proxy stands in for Put Page From URL so the
base is copied server-side and every Put Page body counted is the patch's) the patched blob must
hold the same data region as a full ``upload`` of the child, a footer differing only in its unique
id, timestamp and checksum, and the bytes sent must stay within 1.01 × the descendants' non-zero data.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.azurite import ACCOUNT, SECOND_ACCOUNT, Azurite, RecordingProxy
from support.cli import run_cli
from support.oracles import libvhdi_chain
from support.remote_helpers import Store, json_of, sdk_upload
from support.vhd_builder import build_child, build_vhd, model_bytes, sectors_from_writes
from support.vhdx_builder import FULLY_PRESENT, PARTIALLY_PRESENT, ZERO, Block, build_vhdx

from vhdtool import open_image
from vhdtool.azure.patch import owned_above, patch_upload, plan_patch, split_piece, to_clear
from vhdtool.azure.remote.address import blob_address
from vhdtool.azure.storage import Destination
from vhdtool.azure.upload import UploadOptions
from vhdtool.errors import UsageError
from vhdtool.extents import MiB
from vhdtool.formats.vhd.footer import parse_footer
from vhdtool.stream.fixed_view import FixedVhdView
from vhdtool.stream.progress import ProgressTally

KiB = 1024
SIZE = 24 * MiB
RATIO = 1.01


# -- planning (pure) --------------------------------------------------------------------------------

def test_split_piece_and_clear() -> None:
    data = bytearray(4096)
    data[600] = 1
    data[3000] = 2
    write, zero = split_piece(8192, memoryview(data))
    assert write == [(8192 + 512, 8192 + 1024), (8192 + 2560, 8192 + 3072)]
    assert zero == [(8192, 8704), (9216, 10752), (11264, 12288)]
    assert to_clear(zero, [(0, 9000), (11264, 11776)]) == [(8192, 8704), (11264, 11776)]
    assert to_clear(zero, []) == []


def vhd_chain(tmp: Path, levels: int, rng: random.Random) -> tuple[list[Path], dict[int, bytes]]:
    """A dynamic VHD base and ``levels`` differencing children; the last child zeroes base data."""
    base_writes = [(o * 64 * KiB, rng.randbytes(64 * KiB)) for o in rng.sample(range(SIZE // (64 * KiB)), 80)]
    sectors = sectors_from_writes(base_writes)
    paths = [tmp / "base.vhd"]
    build_vhd(paths[0], SIZE, sectors, block_size=2 * MiB, fill=0)
    owned: dict[int, bytes] = {}
    for level in range(1, levels + 1):
        writes = [(o * 4 * KiB, rng.randbytes(4 * KiB)) for o in rng.sample(range(SIZE // (4 * KiB)), 24)]
        if level == levels:  # zeroes a range the base wrote
            writes.append((base_writes[0][0], bytes(64 * KiB)))
        child = sectors_from_writes(writes)
        path = tmp / f"child{level}.vhd"
        build_child(path, paths[-1], child, block_size=2 * MiB, fill=0)
        paths.append(path)
        owned.update(child)
        sectors.update(child)
    return paths, owned


@pytest.mark.parametrize("levels", [1, 2])
def test_owned_ranges_of_a_vhd_chain(tmp_path: Path, levels: int) -> None:
    paths, owned = vhd_chain(tmp_path, levels, random.Random(5))
    with open_image(paths[-1]) as child:
        ancestor = child
        while ancestor.parent is not None:
            ancestor = ancestor.parent
        ranges = owned_above(child, ancestor)
        expected = sorted({s * 512 for s in owned})
        got = sorted(o for a, b in ranges for o in range(a, b, 512))
        assert got == expected  # whole bitmap bytes: the builder writes 4 KiB runs
        plan = plan_patch(child, ancestor, SIZE)
        assert plan.owned == ranges and not plan.grows
        grown = plan_patch(child, ancestor, SIZE, size=SIZE + 3 * MiB)
        assert grown.grows and grown.virtual_size == SIZE + 3 * MiB and (SIZE, SIZE + 512) in grown.owned
        # libvhdi as the oracle of the chain the plan is made over.
        flat = bytearray(SIZE)
        child.readinto(0, memoryview(flat))
    assert bytes(flat) == libvhdi_chain_bytes(paths)
    assert bytes(flat) == model_bytes(SIZE, {**_sectors(paths[0]), **owned})


def libvhdi_chain_bytes(chain: list[Path]) -> bytes:
    """libvhdi (pyvhdi) reading the last file of ``chain`` with every parent attached, sector by sector
    (libvhdi 20260901 mis-assembles reads spanning partially present runs)."""
    with libvhdi_chain(chain) as top:
        size = top.get_media_size()
        return b"".join(top.read_buffer_at_offset(min(512, size - o), o) for o in range(0, size, 512))


def _sectors(base: Path) -> dict[int, bytes]:
    with open_image(base) as disk:
        data = disk.read(0, disk.virtual_size)
    return {i // 512: data[i:i + 512] for i in range(0, len(data), 512) if any(data[i:i + 512])}


def vhdx_chain(tmp: Path, levels: int, rng: random.Random) -> tuple[list[Path], int]:
    """A VHDX base with full blocks and children with partial blocks; the last turns a base block ZERO."""
    bs = 1 * MiB
    blocks = {b: Block(FULLY_PRESENT, rng.randbytes(bs)) for b in rng.sample(range(SIZE // bs), 12)}
    paths = [tmp / "base.vhdx"]
    built = build_vhdx(paths[0], SIZE, block_size=bs, blocks=blocks)
    guid = built.data_write_guid
    owned = 0
    for level in range(1, levels + 1):
        child_blocks: dict[int, Block] = {}
        for b in rng.sample(range(SIZE // bs), 3):
            present = [i % 16 < 4 for i in range(bs // 512)]
            child_blocks[b] = Block(PARTIALLY_PRESENT, rng.randbytes(bs), present)
            owned += sum(present) * 512
        if level == levels:
            zero = next(b for b in blocks if b not in child_blocks)
            child_blocks[zero] = Block(ZERO)
        path = tmp / f"child{level}.vhdx"
        locator = {"parent_linkage": f"{{{guid}}}", "relative_path": f".\\{paths[-1].name}"}
        built = build_vhdx(path, SIZE, block_size=bs, blocks=child_blocks, parent_locator=locator)
        guid = built.data_write_guid
        paths.append(path)
    return paths, owned


# -- on Azurite -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def proxy(azurite: Azurite) -> Iterator[RecordingProxy]:
    p = RecordingProxy(azurite.port)
    p.copy_from_url_keys = dict(azurite.accounts)
    yield p
    p.close()


@pytest.fixture
def src(azurite: Azurite, proxy: RecordingProxy) -> Store:
    return Store(azurite, proxy, ACCOUNT)


@pytest.fixture
def dst(azurite: Azurite, proxy: RecordingProxy) -> Store:
    return Store(azurite, proxy, SECOND_ACCOUNT)


def sent_bodies(proxy: RecordingProxy) -> int:
    return sum(r.body_length for r in proxy.put_pages() if r.copy_source is None)


def put_base(kind: str, base: Path, src: Store, tmp: Path) -> None:
    if kind == "vhdtool":
        proc = run_cli("upload", str(base), src.spec("base.vhd"), "--overwrite",
                       connection_string=src.connection_string)
        assert proc.returncode == 0, proc.stderr
        return
    fixed = tmp / "base-fixed.vhd"
    with open_image(base) as disk:
        view = FixedVhdView(disk)
        data = bytearray(view.size)
        view.readinto(0, memoryview(data))
    fixed.write_bytes(data)
    sdk_upload(src.client("base.vhd"), fixed, whole=True)


def check_patched(paths: list[Path], src: Store, dst: Store, proxy: RecordingProxy, owned_data: int,
                  *extra: str) -> dict[str, object]:
    proxy.clear()
    proc = run_cli("upload", str(paths[-1]), dst.spec("patched.vhd"), "--base", src.sas_url("base.vhd"),
                   "--json", "--verify", *extra, connection_string=dst.connection_string)
    assert proc.returncode == 0, proc.stderr
    result = json_of(proc)
    sent = sent_bodies(proxy)
    assert result["bytes_sent"] == sent  # the owned non-zero pages and the footer
    assert sent <= RATIO * owned_data + 512, (sent, owned_data)
    assert result["copy_mode"] == "server" and result["copy_bytes_sent"] == 0
    full = run_cli("upload", str(paths[-1]), dst.spec("full.vhd"), "--json", *extra,
                   connection_string=dst.connection_string)
    assert full.returncode == 0, full.stderr
    full_result = json_of(full)
    assert result["full_upload_bytes"] == full_result["bytes_sent"]
    patched = dst.client("patched.vhd").download_blob().readall()
    whole = dst.client("full.vhd").download_blob().readall()
    assert len(patched) == len(whole)
    assert patched[:-512] == whole[:-512]
    a, b = (parse_footer(x[-512:], "blob", len(x) - 512) for x in (patched, whole))
    assert a.checksum_valid and a.unique_id != b.unique_id
    for name in ("cookie", "features", "file_format_version", "data_offset", "creator_application",
                 "creator_version", "creator_host_os", "original_size", "current_size", "geometry", "disk_type",
                 "saved_state"):
        assert getattr(a, name) == getattr(b, name), name
    meta = dst.client("patched.vhd").get_blob_properties().metadata
    assert meta["vhdtool_state"] == "complete" and meta["vhdtool_sparse_sha256"] == result["sparse_sha256"]
    # The recorded sparse digest is the blob's own, as the reference definition computes it.
    from support.oracles import reference_sparse_digest_of_bytes
    assert result["sparse_sha256"] == reference_sparse_digest_of_bytes(patched)
    return dict(result)


@pytest.mark.parametrize(("levels", "base_by"), [(1, "vhdtool"), (2, "sdk"), (2, "vhdtool")])
def test_vhd_chain_patch(tmp_path: Path, src: Store, dst: Store, proxy: RecordingProxy, levels: int,
                         base_by: str) -> None:
    paths, owned = vhd_chain(tmp_path, levels, random.Random(levels))
    put_base(base_by, paths[0], src, tmp_path)
    owned_data = sum(512 for data in owned.values() if any(data))
    result = check_patched(paths, src, dst, proxy, owned_data)
    assert result["proof"] == ("metadata" if base_by == "vhdtool" else "digest")
    assert result["levels"] == levels and result["bytes_cleared"] >= 64 * KiB


def test_patch_reports_its_planned_total_and_what_it_sent(tmp_path: Path, src: Store, dst: Store,
                                                          proxy: RecordingProxy) -> None:
    paths, _ = vhd_chain(tmp_path, 1, random.Random(7))
    put_base("vhdtool", paths[0], src, tmp_path)
    proxy.clear()
    tally = ProgressTally()
    dest = Destination(connection_string=dst.connection_string, container=dst.container, blob="p.vhd")
    with open_image(paths[-1]) as child:
        result = patch_upload(child, dest, blob_address(src.sas_url("base.vhd")), UploadOptions(), progress=tally)
    # One stage, learnt from the plan: the owned ranges and the footer, all written or skipped.
    assert tally.stages == [("patch", result.owned_bytes + 512)] and tally.done == result.owned_bytes + 512
    assert tally.data_bytes == result.bytes_sent == sent_bodies(proxy) > 0


@pytest.mark.parametrize(("levels", "base_by"), [(1, "sdk"), (2, "vhdtool")])
def test_vhdx_chain_patch(tmp_path: Path, src: Store, dst: Store, proxy: RecordingProxy, levels: int,
                          base_by: str) -> None:
    paths, owned_data = vhdx_chain(tmp_path, levels, random.Random(10 + levels))
    put_base(base_by, paths[0], src, tmp_path)
    result = check_patched(paths, src, dst, proxy, owned_data)
    assert result["bytes_cleared"] >= 1 * MiB  # the ZERO block over base data


def test_patch_that_grows_the_disk(tmp_path: Path, src: Store, dst: Store, proxy: RecordingProxy) -> None:
    paths, owned = vhd_chain(tmp_path, 1, random.Random(7))
    put_base("vhdtool", paths[0], src, tmp_path)
    owned_data = sum(512 for data in owned.values() if any(data))
    result = check_patched(paths, src, dst, proxy, owned_data, "--size", str(SIZE + 5 * MiB))
    assert result["virtual_size"] == SIZE + 5 * MiB


def test_wrong_base_is_refused_before_writing(tmp_path: Path, src: Store, dst: Store,
                                              proxy: RecordingProxy) -> None:
    paths, _ = vhd_chain(tmp_path, 1, random.Random(3))
    other = tmp_path / "other"
    other.mkdir()
    wrong, _ = vhd_chain(other, 1, random.Random(4))
    for base_by in ("vhdtool", "sdk"):
        put_base(base_by, wrong[0], src, other)
        proxy.clear()
        proc = run_cli("upload", str(paths[-1]), dst.spec("patched.vhd"), "--base", src.sas_url("base.vhd"),
                       connection_string=dst.connection_string)
        assert proc.returncode != 0
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert ("no parent of" in proc.stderr) if base_by == "vhdtool" else ("sparse digest" in proc.stderr)
        assert not any(r.method == "PUT" for r in proxy.requests), "something was written"
        assert not dst.client("patched.vhd").exists()
    # A base whose metadata names the right image but whose local file changed since is refused too.
    put_base("vhdtool", paths[0], src, tmp_path)
    with open_image(paths[0]) as disk:  # a data sector of the base changed in place (same id)
        offset = next(e.offset for e in disk.extents() if e.allocated)
        file_offset = disk.placements(offset, 512)[0].file_offset
    with open(paths[0], "r+b") as f:
        f.seek(file_offset)
        old = f.read(512)
        f.seek(file_offset)
        f.write(bytes(b ^ 0xFF for b in old))
    proxy.clear()
    proc = run_cli("upload", str(paths[-1]), dst.spec("patched2.vhd"), "--base", src.sas_url("base.vhd"),
                   connection_string=dst.connection_string)
    assert proc.returncode != 0 and "sparse digest" in proc.stderr, proc.stderr
    assert not any(r.method == "PUT" for r in proxy.requests)


def test_interrupted_patch_resumes_without_copying_again(tmp_path: Path, src: Store, dst: Store,
                                                         proxy: RecordingProxy) -> None:
    paths, owned = vhd_chain(tmp_path, 1, random.Random(9))
    put_base("vhdtool", paths[0], src, tmp_path)
    owned_data = sum(512 for data in owned.values() if any(data))
    first = check_patched(paths, src, dst, proxy, owned_data)
    # Stop it half way, as a lost connection would: the state says patching, some owned pages are gone.
    client = dst.client("patched.vhd")
    expected = client.download_blob().readall()
    meta = client.get_blob_properties().metadata
    client.set_blob_metadata({**meta, "vhdtool_state": "patching"})
    offset = min(s for s, data in owned.items() if any(data)) * 512
    client.clear_page(offset, 4096)
    assert client.download_blob().readall() != expected
    proxy.clear()
    proc = run_cli("upload", str(paths[-1]), dst.spec("patched.vhd"), "--base", src.sas_url("base.vhd"),
                   "--resume", "--json", "--verify=full", connection_string=dst.connection_string)
    assert proc.returncode == 0, proc.stderr
    result = json_of(proc)
    assert result["copy_mode"] == "resumed" and not any(r.copy_source for r in proxy.requests)
    assert result["sparse_sha256"] == first["sparse_sha256"]
    assert client.download_blob().readall() == expected
    assert client.get_blob_properties().metadata["vhdtool_state"] == "complete"
    # Without --resume, an existing blob is refused before anything is written.
    proxy.clear()
    proc = run_cli("upload", str(paths[-1]), dst.spec("patched.vhd"), "--base", src.sas_url("base.vhd"),
                   connection_string=dst.connection_string)
    assert proc.returncode != 0 and "already exists" in proc.stderr, proc.stderr
    assert not any(r.method == "PUT" for r in proxy.requests)


def test_base_relayed_where_the_service_cannot_copy(tmp_path: Path, src: Store, dst: Store,
                                                    proxy: RecordingProxy) -> None:
    paths, owned_data = vhdx_chain(tmp_path, 1, random.Random(21))
    put_base("vhdtool", paths[0], src, tmp_path)
    keys, proxy.copy_from_url_keys = proxy.copy_from_url_keys, None  # Azurite itself answers 501
    try:
        proc = run_cli("upload", str(paths[-1]), dst.spec("relayed.vhd"), "--base", src.sas_url("base.vhd"),
                       "--json", "--verify=full", connection_string=dst.connection_string)
    finally:
        proxy.copy_from_url_keys = keys
    assert proc.returncode == 0, proc.stderr
    result = json_of(proc)
    assert result["copy_mode"] == "relay" and result["copy_bytes_sent"] > 0
    assert result["bytes_sent"] <= RATIO * owned_data + 512
    full = run_cli("upload", str(paths[-1]), dst.spec("full.vhd"), connection_string=dst.connection_string)
    assert full.returncode == 0, full.stderr
    assert dst.client("relayed.vhd").download_blob().readall()[:-512] == \
        dst.client("full.vhd").download_blob().readall()[:-512]


def test_last_months_patched_blob_is_next_months_base(tmp_path: Path, src: Store, dst: Store,
                                                      proxy: RecordingProxy) -> None:
    paths, _ = vhd_chain(tmp_path, 2, random.Random(31))
    put_base("vhdtool", paths[0], src, tmp_path)
    month1 = run_cli("upload", str(paths[1]), src.spec("month1.vhd"), "--base", src.sas_url("base.vhd"),
                     connection_string=src.connection_string)
    assert month1.returncode == 0, month1.stderr
    proxy.clear()
    proc = run_cli("upload", str(paths[2]), dst.spec("month2.vhd"), "--base", src.sas_url("month1.vhd"),
                   "--json", connection_string=dst.connection_string)
    assert proc.returncode == 0, proc.stderr
    result = json_of(proc)
    assert result["proof"] == "metadata" and result["levels"] == 1
    assert Path(result["ancestor"]).resolve() == paths[1].resolve()
    full = run_cli("upload", str(paths[2]), dst.spec("full.vhd"), connection_string=dst.connection_string)
    assert full.returncode == 0, full.stderr
    assert dst.client("month2.vhd").download_blob().readall()[:-512] == \
        dst.client("full.vhd").download_blob().readall()[:-512]


def test_refusals_are_one_line(tmp_path: Path, src: Store, dst: Store, proxy: RecordingProxy) -> None:
    paths, _ = vhd_chain(tmp_path, 1, random.Random(41))
    put_base("vhdtool", paths[0], src, tmp_path)
    src.client("odd.vhd").upload_blob(bytes(3 * 512 * 1024 + 512), blob_type="PageBlob")
    cases = [
        (paths[0], "base.vhd", "needs a differencing disk"),  # no parent to patch over
        (paths[1], "odd.vhd", "not an Azure fixed VHD"),
        (paths[1], "missing.vhd", "does not exist"),
    ]
    for image, base, message in cases:
        proxy.clear()
        proc = run_cli("upload", str(image), dst.spec("x.vhd"), "--base", src.sas_url(base),
                       connection_string=dst.connection_string)
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
        assert not any(r.method == "PUT" for r in proxy.requests)
    # The library takes the upload's options; a whole-file digest cannot be made by a patch.
    proxy.clear()
    dest = Destination(connection_string=dst.connection_string, container=dst.container, blob="x.vhd")
    with open_image(paths[1]) as child, pytest.raises(UsageError, match="does not combine with --hash"):
        patch_upload(child, dest, blob_address(src.sas_url("base.vhd")), UploadOptions(hashes=("md5",)))
    assert proxy.requests == []


@pytest.mark.parametrize("local_copy", [True, False])
def test_prepare_patches_the_os_disk_over_its_base(tmp_path: Path, src: Store, dst: Store, proxy: RecordingProxy,
                                                   local_copy: bool) -> None:
    import json

    paths, owned = vhd_chain(tmp_path, 1, random.Random(51))
    put_base("vhdtool", paths[0], src, tmp_path)
    out = tmp_path / "out"
    proxy.clear()
    proc = run_cli("prepare", "--name", "web", "--os", str(paths[-1]), "-o", str(out), "--upload", dst.container,
                   "--base-os", src.sas_url("base.vhd"), "--force", "--json", "-q",
                   *(() if local_copy else ("--no-local-copy",)), connection_string=dst.connection_string)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    disk = manifest["disks"][0]
    blob = disk["blob_url"].rsplit("/", 1)[1]
    owned_data = sum(512 for data in owned.values() if any(data))
    assert sent_bodies(proxy) <= RATIO * owned_data + 512
    patched = dst.client(blob).download_blob().readall()
    if local_copy:  # the blob is the very file prepare wrote, footer included
        assert patched == (out / disk["fixed_vhd"]["path"]).read_bytes()
    full = run_cli("upload", str(paths[-1]), dst.spec("full.vhd"), "--overwrite",
                   connection_string=dst.connection_string)
    assert full.returncode == 0, full.stderr
    assert patched[:-512] == dst.client("full.vhd").download_blob().readall()[:-512]
    assert disk["fixed_vhd"]["sparse_sha256"] == dst.client(blob).get_blob_properties().metadata[
        "vhdtool_sparse_sha256"]


def test_prepare_base_options_are_checked_first(tmp_path: Path) -> None:
    paths, _ = vhd_chain(tmp_path, 1, random.Random(61))
    url = "https://account.blob.core.windows.net/images/base.vhd?sv=2022-11-02&sig=x"
    cases = [
        (("--base-os", url), "need --upload"),
        (("--upload", "https://account.blob.core.windows.net/images?sv=2022-11-02&sig=x", "--base-data", f"3={url}"),
         "there is no --data 3=IMAGE"),
        (("--upload", "https://account.blob.core.windows.net/images?sv=2022-11-02&sig=x", "--base-data", "x"),
         "--base-data 'x': write LUN=URL"),
    ]
    for extra, message in cases:
        proc = run_cli("prepare", "--name", "web", "--os", str(paths[-1]), "-o", str(tmp_path / "out"), *extra)
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "out").exists()
