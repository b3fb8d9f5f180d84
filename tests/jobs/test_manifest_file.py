"""The manifest file against its JSON Schema: the shipped schema, one-line refusals, schema 1 files.

Oracles: ``jsonschema``'s own metaschema check of the shipped schema, and manifest texts written out
here by hand the way each schema version's writer laid them out.
"""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from support.cli import run_cli
from test_manifest import manifests

from vhdtool.errors import UsageError
from vhdtool.jobs.manifest import SCHEMA, SCHEMA_V1, Manifest
from vhdtool.jobs.manifest_file import (
    SCHEMA_FILE,
    manifest_text,
    manifest_to_json,
    read_manifest,
    schema_problems,
)
from vhdtool.readiness.rules import Finding
from vhdtool.readiness.tiers import BillingTier

ROOT = Path(__file__).resolve().parent.parent

# A schema 1 manifest as that release wrote it: MD5 and SHA-256 always, no sparse digest.
V1_TEXT = """{
  "schema": "vhdtool.jobs.manifest/1",
  "name": "old",
  "created": "2026-10-01T08:00:00Z",
  "vhdtool_version": "0.0.9",
  "expect": null,
  "forced": false,
  "destination": null,
  "gallery_image_definition": {
    "os_type": "Windows",
    "os_state": "Generalized",
    "hyper_v_generation": "V2",
    "architecture": "x64"
  },
  "disks": [
    {
      "role": "os",
      "lun": null,
      "name": "old-os-2026-10-01",
      "source": {
        "path": "/images/old.vhdx",
        "format": "vhdx",
        "type": "dynamic",
        "virtual_size": 136365211648,
        "file_size": 4194304000
      },
      "fixed_vhd": {
        "path": "old-os-2026-10-01.vhd",
        "virtual_size": 136365211648,
        "file_size": 136365212160,
        "md5": "0123456789abcdef0123456789abcdef",
        "sha256": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
      },
      "os": {
        "family": "windows",
        "name": "Windows Server 2022 Datacenter",
        "version": "10.0.20348",
        "state": "generalized"
      },
      "hyper_v_generation": "V2",
      "architecture": "x64",
      "billing_tier": {
        "size_gib": 127,
        "tier_size_gib": 128,
        "premium_ssd": "P10",
        "standard_ssd": "E10",
        "standard_hdd": "S10"
      },
      "findings": [
        {
          "id": "billing-tier",
          "severity": "info",
          "message": "billed as 128 GiB: P10 (Premium SSD) / E10 (Standard SSD) / S10 (Standard HDD)"
        }
      ],
      "blob_url": null
    }
  ]
}
"""


def test_the_schema_ships_in_the_package_and_is_a_valid_schema() -> None:
    text = importlib.resources.files("vhdtool.jobs").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    jsonschema.Draft202012Validator.check_schema(json.loads(text))


@given(manifests())
def test_every_manifest_written_meets_the_schema(manifest: Manifest) -> None:
    assert schema_problems(manifest_to_json(manifest)) == []


def test_a_schema_1_file_reads_with_its_whole_file_digests(tmp_path: Path) -> None:
    path = tmp_path / "old.manifest.json"
    path.write_text(V1_TEXT)
    old = read_manifest(path)
    assert old.schema == SCHEMA_V1
    disk = old.disks[0]
    assert disk.fixed_vhd.sparse_sha256 is None
    assert disk.fixed_vhd.digests == {"md5": "0123456789abcdef" * 2, "sha256": "0123456789abcdef" * 4}
    assert disk.billing_tier == BillingTier(127, 128, "P10", "E10", "S10")
    assert disk.findings == (Finding("billing-tier", "info", "billed as 128 GiB: P10 (Premium SSD) / E10 "
                                     "(Standard SSD) / S10 (Standard HDD)"),)
    # Written again, it keeps its schema; the writer spells out the absent sparse digest as null.
    assert manifest_text(old) == V1_TEXT.replace('"file_size": 136365212160,\n',
                                                 '"file_size": 136365212160,\n        "sparse_sha256": null,\n')


def _v1(change: Any) -> str:
    data = json.loads(V1_TEXT)
    change(data)
    return json.dumps(data)


def _v2(change: Any) -> str:
    data = json.loads(V1_TEXT)
    data["schema"] = SCHEMA
    data["disks"][0]["fixed_vhd"].update(sparse_sha256="ab" * 32, md5=None, sha256=None)
    change(data)
    return json.dumps(data)


@pytest.mark.parametrize("content, message", [
    (_v1(lambda d: d["disks"][0]["fixed_vhd"].pop("md5")), "disks[0].fixed_vhd: field 'md5' is missing"),
    (_v1(lambda d: d["disks"][0]["fixed_vhd"].update(md5=None)),
     "disks[0].fixed_vhd: field 'md5' is not 32 lower-case hex digits"),
    (_v2(lambda d: d["disks"][0]["fixed_vhd"].update(sparse_sha256=None)),
     "disks[0].fixed_vhd: field 'sparse_sha256' is not 64 lower-case hex digits"),
    (_v2(lambda d: d["disks"][0]["source"].update(virtual_size=1.0)),
     "disks[0].source: field 'virtual_size' is not a size in bytes"),
    (_v2(lambda d: d["disks"][0]["source"].update(file_size=True)),
     "disks[0].source: field 'file_size' is not a size in bytes"),
    (_v2(lambda d: d["disks"][0]["source"].update(file_size=-1)),
     "disks[0].source: field 'file_size' is not a size in bytes"),
    (_v2(lambda d: d["disks"][0]["billing_tier"].pop("premium_ssd")),
     "disks[0].billing_tier: field 'premium_ssd' is missing"),
    (_v2(lambda d: d["disks"][0]["findings"][0].update(severity="fatal")),
     "disks[0].findings[0]: field 'severity' is not error, warning or info"),
    (_v2(lambda d: d["disks"][0]["findings"].append(3)),
     "disks[0].findings[1]: not a finding (an object with id, severity and message)"),
    (_v2(lambda d: d["disks"][0].update(os="windows")), "disks[0]: field 'os' is not an object or null"),
    (_v2(lambda d: d.update(gallery_image_definition=[])), "field 'gallery_image_definition' is not an object"),
    (_v2(lambda d: d.pop("name")), "field 'name' is missing"),
])
def test_schema_refusals_name_the_key_in_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(content)
    with pytest.raises(UsageError) as info:
        read_manifest(path)
    assert str(info.value) == f"{path}: {message}"


def test_verify_refuses_a_broken_manifest_in_one_line_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(_v2(lambda d: d["disks"][0]["fixed_vhd"].update(path="../x.vhd")))
    proc = run_cli(["verify", path])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"vhdtool: error: {path}: disks[0].fixed_vhd: field 'path' is not a file name beside the manifest"]
