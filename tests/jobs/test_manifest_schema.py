"""The manifest against its documented schema: the key table of ``docs/prepare.md``.

Every key the table lists must be in the manifest with the documented type, and the manifest must hold no
key the table does not list. Sub-objects are checked against the field names the table's meaning column
gives for them (the backticked names outside parentheses, after the row's ``:`` if it has one).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from support.fixture_files import unpack_fixture

from vhdtool.jobs.manifest_file import manifest_to_json, read_manifest
from vhdtool.jobs.prepare import PrepareRequest, prepare

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "prepare.md"
TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "bool": (bool,), "integer": (int,), "object": (dict,),
                                      "array": (list,), "null": (type(None),)}


def documented() -> dict[str, tuple[tuple[type, ...], list[str], set[str] | None]]:
    """``{key: (allowed types, sub-field names, allowed values or None)}`` from the table after the manifest."""
    text = DOC.read_text(encoding="utf-8")
    table = text[text.index("| key | type | meaning |"):].split("\n\n")[0].splitlines()[2:]
    rows: dict[str, tuple[tuple[type, ...], list[str], set[str] | None]] = {}
    for line in table:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        key, kind, meaning = cells[0].strip("`"), cells[1], cells[2]
        allowed: set[str] | None = None
        types: list[type] = []
        for part in (p.strip() for p in kind.split("\\|")):
            literal = re.fullmatch(r'`"([^"]+)"`', part)
            if literal:
                allowed = (allowed or set()) | {literal.group(1)}
                types.append(str)
            else:
                types.extend(TYPES[part])
        fields: list[str] = []
        if dict in types or key.endswith("[]"):
            body = meaning.split(": ", 1)[1] if ": " in meaning else meaning
            depth, outside = 0, []
            for ch in body:
                depth += ch == "("
                if depth == 0:
                    outside.append(ch)
                depth -= ch == ")"
            fields = [f for f in re.findall(r"`([a-z_0-9]+)`", "".join(outside)) if f != "null"]
        rows[key] = (tuple(types), fields, allowed)
    return rows


def check(value: Any, where: str, spec: tuple[tuple[type, ...], list[str], set[str] | None]) -> None:
    types, fields, allowed = spec
    assert isinstance(value, types) and not (isinstance(value, bool) and bool not in types), (where, value)
    if int in types and not isinstance(value, bool):
        assert not isinstance(value, float)
    if allowed is not None:
        assert value in allowed, (where, value)
    if isinstance(value, dict) and fields:
        assert sorted(value) == sorted(fields), where


def validate(data: dict[str, Any]) -> None:
    spec = documented()
    top = {k for k in spec if "." not in k and not k.endswith("[]")} | {"disks"}
    assert set(data) == top
    for key in top - {"disks"}:
        check(data[key], key, spec[key])
    check(data["disks"], "disks", spec["disks[]"])
    per_disk = {k.removeprefix("disks[]."): v for k, v in spec.items() if k.startswith("disks[].")}
    findings = per_disk.pop("findings[]")
    for disk in data["disks"]:
        assert set(disk) == set(per_disk) | {"findings"}
        for key, rule in per_disk.items():
            check(disk[key], f"disks[].{key}", rule)
        check(disk["findings"], "disks[].findings[]", (findings[0], [], None))
        for finding in disk["findings"]:
            assert sorted(finding) == sorted(findings[1]) and all(isinstance(v, str) for v in finding.values())
        fixed = disk["fixed_vhd"]
        assert re.fullmatch(r"[0-9a-f]{64}", fixed["sparse_sha256"])
        assert fixed["md5"] is None or re.fullmatch(r"[0-9a-f]{32}", fixed["md5"])
        assert fixed["sha256"] is None or re.fullmatch(r"[0-9a-f]{64}", fixed["sha256"])
        assert all(isinstance(fixed[k], int) for k in ("virtual_size", "file_size"))
        assert fixed["file_size"] == fixed["virtual_size"] + 512 and fixed["virtual_size"] % (1 << 20) == 0
        assert all(isinstance(disk["source"][k], int) for k in ("virtual_size", "file_size"))


def test_the_table_is_parsed() -> None:
    """The parser itself: it finds the table's rows and the sub-fields the docs name."""
    spec = documented()
    assert spec["schema"][0] == (str,) and spec["expect"][0] == (str, type(None))
    assert spec["disks[].role"][2] == {"os", "data"}
    assert spec["disks[].source"][1] == ["path", "format", "type", "virtual_size", "file_size"]
    assert spec["disks[].findings[]"][1] == ["id", "severity", "message"]
    assert spec["gallery_image_definition"][1] == ["os_type", "os_state", "hyper_v_generation", "architecture"]


@pytest.mark.parametrize("forced", [False, True])
def test_manifest_matches_the_documented_schema(tmp_path: Path, forced: bool) -> None:
    import json

    src = tmp_path / "src"
    src.mkdir()
    os_disk = unpack_fixture("sample/linux-os.vhdx.gz", src)
    data_disk = unpack_fixture("sample/data.vhd.gz", src)
    # forced: an --expect the OS does not meet, so error findings are recorded too.
    result = prepare(PrepareRequest("schema", str(os_disk), ((3, str(data_disk)),), str(tmp_path / "out"),
                                    expect="specialized" if forced else "generalized", force=forced))
    data = json.loads(Path(result.manifest_path).read_text())
    assert data["forced"] is forced
    validate(data)
    assert read_manifest(result.manifest_path) == result.manifest


def test_an_undocumented_key_is_caught(tmp_path: Path) -> None:
    """The validator can fail: an extra key, a missing one or a wrong type is refused."""
    src = tmp_path / "src"
    src.mkdir()
    result = prepare(PrepareRequest("s", str(unpack_fixture("sample/linux-os.vhdx.gz", src)), (),
                                    str(tmp_path / "out")))
    good = manifest_to_json(result.manifest)
    validate(good)
    for broken in ({**good, "extra": 1}, {k: v for k, v in good.items() if k != "expect"},
                   {**good, "forced": "no"},
                   {**good, "disks": [{**good["disks"][0], "lun": "0"}]},
                   {**good, "disks": [{**good["disks"][0], "source": {**good["disks"][0]["source"], "x": 1}}]}):
        with pytest.raises(AssertionError):
            validate(broken)


def test_the_documented_example_is_what_prepare_writes(tmp_path: Path) -> None:
    """The manifest shown in docs/prepare.md has the keys and findings a run on the sample set gives now."""
    import json

    text = DOC.read_text(encoding="utf-8")
    shown = json.loads(text.split("The manifest of the demo run above, as written:\n\n```json\n")[1].split("```")[0])
    validate(shown)
    src = tmp_path / "src"
    src.mkdir()
    result = prepare(PrepareRequest("sample", str(unpack_fixture("sample/linux-os.vhdx.gz", src)),
                                    ((0, str(unpack_fixture("sample/data.vhd.gz", src))),), str(tmp_path / "out"),
                                    expect="generalized"))
    real = manifest_to_json(result.manifest)

    def shape(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: shape(v) for k, v in value.items()}
        if isinstance(value, list):
            return [shape(v) for v in value]
        return None

    assert shape(shown) == shape(real)
    for doc_disk, real_disk in zip(shown["disks"], real["disks"], strict=True):
        assert doc_disk["findings"] == real_disk["findings"]
        for key in ("role", "lun", "os", "hyper_v_generation", "architecture", "billing_tier"):
            assert doc_disk[key] == real_disk[key], key
    assert shown["gallery_image_definition"] == real["gallery_image_definition"]
