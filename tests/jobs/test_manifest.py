"""The manifest file: round trips, refusals of malformed files, token stripping, re-hashing."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.oracles import reference_sparse_digest

from vhdtool.azure.storage import public_url
from vhdtool.errors import OutputError, UsageError
from vhdtool.jobs.manifest import (
    SCHEMA,
    SCHEMA_V1,
    DiskRecord,
    FixedVhdRecord,
    GalleryDefinition,
    Manifest,
    OsRecord,
    SourceRecord,
    gallery_definition,
)
from vhdtool.jobs.manifest_file import manifest_from_json, manifest_to_json, read_manifest, write_manifest
from vhdtool.jobs.verify import hash_file, verify_files
from vhdtool.readiness.rules import Finding
from vhdtool.readiness.tiers import billing_tier

GiB = 1024 ** 3
text = st.text(min_size=1, max_size=20)
opt_text = st.one_of(st.none(), text)
sizes = st.integers(0, 1 << 50)
hex32 = st.text("0123456789abcdef", min_size=32, max_size=32)
hex64 = st.text("0123456789abcdef", min_size=64, max_size=64)


file_names = st.one_of(st.none(), st.text(st.characters(blacklist_characters="/\\"), min_size=1, max_size=20)
                       .filter(lambda n: n not in (".", "..")))


@st.composite
def disks(draw: st.DrawFn, lun: int | None = None) -> DiskRecord:
    os_record = None if lun is not None else OsRecord(draw(opt_text), draw(opt_text), draw(opt_text),
                                                      draw(text))
    virtual = draw(sizes)
    return DiskRecord(
        role="os" if lun is None else "data", lun=lun, name=draw(text),
        source=SourceRecord(draw(text), draw(text), draw(text), draw(sizes), draw(sizes)),
        fixed_vhd=FixedVhdRecord(draw(file_names), virtual, virtual + 512, draw(hex64),
                                 draw(st.one_of(st.none(), hex32)), draw(st.one_of(st.none(), hex64))),
        os=os_record, hyper_v_generation=draw(st.sampled_from([None, "V1", "V2"])),
        architecture=draw(st.sampled_from([None, "x64", "Arm64"])), billing_tier=billing_tier(virtual),
        findings=tuple(Finding(draw(text), draw(st.sampled_from(["error", "warning", "info"])), draw(text))
                       for _ in range(draw(st.integers(0, 3)))),
        blob_url=draw(opt_text))


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    luns = draw(st.lists(st.integers(0, 63), max_size=3, unique=True))
    records = (draw(disks()), *(draw(disks(lun)) for lun in luns))
    expect = draw(st.sampled_from([None, "generalized", "specialized"]))
    return Manifest(draw(text), draw(text), draw(text), expect, draw(st.booleans()),
                    gallery_definition(records[0]), records, draw(opt_text))


@given(manifests())
def test_json_round_trip(manifest: Manifest) -> None:
    data = json.loads(json.dumps(manifest_to_json(manifest)))
    assert manifest_from_json(data, "m.json") == manifest


def test_write_and_read_back_never_replacing(tmp_path: Path) -> None:
    record = DiskRecord("os", None, "a-os-2026-01-01", SourceRecord("/x", "raw", "fixed", 1, 1),
                        FixedVhdRecord("a.vhd", 1 << 20, (1 << 20) + 512, "0" * 64),
                        OsRecord("windows", "Windows Server 2022", "10.0", "generalized"), "V2", "x64",
                        billing_tier(1 << 20), ())
    manifest = Manifest("a", "2026-01-01T00:00:00Z", "0.1.0", None, False, gallery_definition(record),
                        (record,))
    path = tmp_path / "a.manifest.json"
    write_manifest(manifest, path)
    assert read_manifest(path) == manifest
    assert path.stat().st_mode & 0o777 == 0o644
    assert manifest.gallery_image_definition == GalleryDefinition("Windows", "Generalized", "V2", "x64")
    with pytest.raises(OutputError, match="manifest"):
        write_manifest(manifest, path)
    assert os.listdir(tmp_path) == ["a.manifest.json"]


@pytest.mark.parametrize("content, message", [
    ("not json", "not JSON"),
    ("[]", "not a manifest"),
    ('{"schema": "other/1"}', "schema"),
    (json.dumps({"schema": SCHEMA, "disks": "x"}), "disks"),
    (json.dumps({"schema": SCHEMA, "disks": [{"role": "os"}]}), "source"),
    (json.dumps({"schema": SCHEMA, "disks": [], "gallery_image_definition": {}, "name": "n",
                 "created": "c", "vhdtool_version": 1}), "vhdtool_version"),
])
def test_malformed_manifests_are_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=message):
        read_manifest(path)


def _edited(change: Callable[[dict[str, Any]], None]) -> str:
    record = DiskRecord("os", None, "a-os-2026-01-01", SourceRecord("/x", "raw", "fixed", 1, 1),
                        FixedVhdRecord("a.vhd", 1 << 20, (1 << 20) + 512, "0" * 64), None, None, None,
                        billing_tier(1 << 20), ())
    manifest = Manifest("a", "2026-01-01T00:00:00Z", "0.1.0", None, False, gallery_definition(record),
                    (record, replace(record, role="data", lun=0)))
    data = manifest_to_json(manifest)
    change(data)
    return json.dumps(data)


@pytest.mark.parametrize("content, message", [
    (_edited(lambda d: d.update(disks=[])), "first disk must be the OS disk"),
    (_edited(lambda d: d["disks"].reverse()), "first disk must be the OS disk"),
    (_edited(lambda d: d["disks"].append(d["disks"][1])), "own LUN"),
    (_edited(lambda d: d["disks"][1].update(lun=64)), "own LUN"),
    (_edited(lambda d: d["disks"][1].update(lun=None)), "own LUN"),
    (_edited(lambda d: d["disks"][0]["fixed_vhd"].update(path="../../etc/passwd")), "not a file name"),
    (_edited(lambda d: d["disks"][0]["fixed_vhd"].update(path="/etc/passwd")), "not a file name"),
    (_edited(lambda d: d["disks"][0]["fixed_vhd"].update(path="..")), "not a file name"),
    (_edited(lambda d: d["disks"][0].update(findings=["x"])), "finding"),
    (_edited(lambda d: d.update(forced="no")), "forced"),
    (_edited(lambda d: d.pop("forced")), "forced"),
    (_edited(lambda d: d["disks"][0]["fixed_vhd"].pop("sparse_sha256")), "sparse_sha256"),
    (_edited(lambda d: d["disks"][0]["fixed_vhd"].update(sparse_sha256="0" * 63)), "hex"),
    (_edited(lambda d: d["disks"][0]["fixed_vhd"].update(md5="X" * 32)), "hex"),
    # a version 1 manifest must carry both whole-file digests
    (_edited(lambda d: d.update(schema=SCHEMA_V1)), "md5"),
])
def test_edited_manifests_are_refused(tmp_path: Path, content: str, message: str) -> None:
    """Hand edits that break the set's shape: one line naming the problem, never a traceback."""
    path = tmp_path / "m.json"
    path.write_text(content)
    with pytest.raises(UsageError, match=message):
        read_manifest(path)


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read"):
        read_manifest(tmp_path / "none.json")


@pytest.mark.parametrize("url, expected", [
    ("https://acct.blob.core.windows.net/c/b.vhd?sv=2022&sig=SECRET", "https://acct.blob.core.windows.net/c/b.vhd"),
    ("http://u:pw@127.0.0.1:10000/devstoreaccount1/c/x.vhd#frag", "http://127.0.0.1:10000/devstoreaccount1/c/x.vhd"),
    ("https://acct.blob.core.windows.net/c", "https://acct.blob.core.windows.net/c"),
])
def test_public_url_drops_token_and_user_info(url: str, expected: str) -> None:
    assert public_url(url) == expected


def test_hash_file_reads_sparse_files_like_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "sparse.vhd"
    with open(path, "wb") as f:
        f.truncate(9 * 1024 * 1024 + 512)
        f.seek(4 * 1024 * 1024 - 3)
        f.write(b"\x01\x02\x03\x04\x05\x06")
        f.seek(9 * 1024 * 1024)
        f.write(b"conectix" + bytes(504))
    observed = hash_file(str(path), ("sparse-sha256", "md5", "sha256"))
    content = path.read_bytes()
    assert observed.size == len(content)
    assert observed.digests == {"sparse-sha256": reference_sparse_digest(path),
                                "md5": hashlib.md5(content).hexdigest(),
                                "sha256": hashlib.sha256(content).hexdigest()}


def _record(name: str, path: str | None, size: int, fixed: dict[str, str | None]) -> DiskRecord:
    return DiskRecord("data", 0, name, SourceRecord("/s", "raw", "fixed", 512, 512),
                      FixedVhdRecord(path, size - 512, size, fixed.get("sparse-sha256"), fixed.get("md5"),
                                     fixed.get("sha256")), None, None, None, billing_tier(size - 512), ())


def test_verify_files_reports_each_kind_of_drift(tmp_path: Path) -> None:
    good = tmp_path / "good.vhd"
    good.write_bytes(b"a" * 1024)
    digests = {"sparse-sha256": reference_sparse_digest(good)}

    def record(name: str, path: str | None, size: int = 1024) -> DiskRecord:
        return _record(name, path, size, digests)  # type: ignore[arg-type]

    manifest = Manifest("m", "t", "v", None, False, GalleryDefinition(None, None, None, None), (
        record("ok", "good.vhd"), record("sized", "good.vhd", 2048), record("gone", "gone.vhd"),
        record("remote", None)))
    result = verify_files(manifest, str(tmp_path / "m.manifest.json"))
    assert [(v.name, v.status) for v in result.verdicts] == [
        ("ok", "ok"), ("sized", "drift"), ("gone", "missing"), ("remote", "skipped")]
    assert "size 1024 bytes, manifest says 2048" in result.verdicts[1].problems
    assert result.verdicts[0].compared == ("sparse-sha256",)
    assert not result.ok
    only_good = Manifest("m", "t", "v", None, False, manifest.gallery_image_definition,
                         (record("ok", "good.vhd"),))
    assert verify_files(only_good, str(tmp_path / "m.json")).ok
    good.write_bytes(b"a" * 1023 + b"b")
    changed = verify_files(only_good, str(tmp_path / "m.json"))
    assert not changed.ok and "sparse digest" in changed.verdicts[0].problems[0]


def test_whole_file_digests_are_compared_only_when_asked_or_in_version_1(tmp_path: Path) -> None:
    """A version 2 manifest compares its sparse digest (the cost of the data); MD5/SHA-256, which hash
    every zero, only with --hash. A version 1 manifest has no sparse digest: MD5 and SHA-256 are it."""
    good = tmp_path / "good.vhd"
    good.write_bytes(b"a" * 1024)
    content = good.read_bytes()
    md5, sha = hashlib.md5(content).hexdigest(), hashlib.sha256(content).hexdigest()
    v2 = _record("d", "good.vhd", 1024, {"sparse-sha256": reference_sparse_digest(good), "md5": "0" * 32})
    gallery = GalleryDefinition(None, None, None, None)
    manifest = Manifest("m", "t", "v", None, False, gallery, (v2,))
    assert verify_files(manifest, str(tmp_path / "m.json")).ok  # the stale md5 is not looked at
    asked = verify_files(manifest, str(tmp_path / "m.json"), hashes=("md5",))
    assert not asked.ok and asked.verdicts[0].compared == ("sparse-sha256", "md5")
    assert "MD5" in asked.verdicts[0].problems[0]
    # A version 1 manifest as the previous release wrote it, read from disk.
    v1 = Manifest("m", "t", "v", None, False, gallery,
                  (replace(_record("d", "good.vhd", 1024, {"md5": md5, "sha256": sha}), role="os", lun=None),),
                  schema=SCHEMA_V1)
    data = manifest_to_json(v1)
    data["disks"][0]["fixed_vhd"].pop("sparse_sha256")
    path = tmp_path / "old.manifest.json"
    path.write_text(json.dumps(data))
    old = read_manifest(path)
    assert old.schema == SCHEMA_V1 and old.disks[0].fixed_vhd.sparse_sha256 is None
    result = verify_files(old, str(path))
    assert result.ok and result.verdicts[0].compared == ("md5", "sha256")
    good.write_bytes(b"b" * 1024)
    assert not verify_files(old, str(path)).ok
