"""The manifest as a file: the one place that turns a :class:`~vhdtool.jobs.manifest.Manifest` into
JSON and back.

Reading checks the JSON against ``manifest.schema.json`` (shipped beside this module, the shape that
docs/prepare.md documents) before any object is built, so a hand-edited or truncated manifest is
refused with one line naming the key, never a traceback; what a schema cannot say (the OS disk
first, each data disk with its own LUN) is checked after. Writing is atomic and never replaces a file.
The JSON written is ``json.dumps(..., indent=2)`` of the keys in the documented order.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib.resources
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any, cast

import jsonschema
import jsonschema.validators

from vhdtool.errors import OutputError, UsageError
from vhdtool.jobs.manifest import (
    SCHEMA,
    SCHEMA_V1,
    SCHEMAS,
    DiskRecord,
    FixedVhdRecord,
    GalleryDefinition,
    Manifest,
    OsRecord,
    SourceRecord,
)
from vhdtool.readiness.rules import Finding
from vhdtool.readiness.tiers import BillingTier

SCHEMA_FILE = "manifest.schema.json"
MAX_LUN = 63

# ----------------------------------------------------------------------------------------------
# to JSON


def manifest_to_json(manifest: Manifest) -> dict[str, Any]:
    """The manifest as a JSON object, keys in the documented order."""
    g = manifest.gallery_image_definition
    return {
        "schema": manifest.schema, "name": manifest.name, "created": manifest.created,
        "vhdtool_version": manifest.vhdtool_version, "expect": manifest.expect, "forced": manifest.forced,
        "destination": manifest.destination,
        "gallery_image_definition": {"os_type": g.os_type, "os_state": g.os_state,
                                     "hyper_v_generation": g.hyper_v_generation, "architecture": g.architecture},
        "disks": [_disk_to_json(d) for d in manifest.disks],
    }


def _disk_to_json(d: DiskRecord) -> dict[str, Any]:
    s, f, t = d.source, d.fixed_vhd, d.billing_tier
    return {
        "role": d.role, "lun": d.lun, "name": d.name,
        "source": {"path": s.path, "format": s.format, "type": s.disk_type, "virtual_size": s.virtual_size,
                   "file_size": s.file_size},
        "fixed_vhd": {"path": f.path, "virtual_size": f.virtual_size, "file_size": f.file_size,
                      "sparse_sha256": f.sparse_sha256, "md5": f.md5, "sha256": f.sha256},
        "os": None if d.os is None else {"family": d.os.family, "name": d.os.name, "version": d.os.version,
                                         "state": d.os.state},
        "hyper_v_generation": d.hyper_v_generation, "architecture": d.architecture,
        "billing_tier": {"size_gib": t.size_gib, "tier_size_gib": t.tier_size_gib, "premium_ssd": t.premium_ssd,
                         "standard_ssd": t.standard_ssd, "standard_hdd": t.standard_hdd},
        "findings": [{"id": x.rule, "severity": x.severity, "message": x.message} for x in d.findings],
        "blob_url": d.blob_url,
    }


def manifest_text(manifest: Manifest) -> str:
    """The text of the manifest file."""
    return json.dumps(manifest_to_json(manifest), indent=2) + "\n"


# ----------------------------------------------------------------------------------------------
# from JSON


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    """The schema's validator; an integer is an ``int`` (JSON Schema would also take ``1.0``, never a bool)."""
    schema = json.loads(importlib.resources.files(__package__ or "vhdtool.jobs").joinpath(SCHEMA_FILE)
                        .read_text(encoding="utf-8"))
    base = jsonschema.Draft202012Validator
    integers = base.TYPE_CHECKER.redefine("integer", lambda _checker, value: type(value) is int)  # not bool
    strict = jsonschema.validators.extend(base, type_checker=integers)  # type: ignore[no-untyped-call]
    return cast(jsonschema.protocols.Validator, strict(schema))


def schema_problems(data: Any) -> list[str]:
    """Every way ``data`` breaks the manifest schema, one line each (``"disks[0].source: field ..."``)."""
    return [_describe(e) for e in _validator().iter_errors(data)]


def _first_problem(errors: Iterable[jsonschema.ValidationError]) -> jsonschema.ValidationError | None:
    """The error to report: the deepest in the document (the most specific), the first of those."""
    chosen: jsonschema.ValidationError | None = None
    for error in errors:
        if chosen is None or len(error.absolute_path) > len(chosen.absolute_path):
            chosen = error
    return chosen


def _location(path: Sequence[str | int]) -> str:
    """``["disks", 0, "source"]`` -> ``"disks[0].source"``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


_TYPE_WORDS = {"string": "a string", "integer": "an integer", "boolean": "true or false", "object": "an object",
               "array": "an array", "null": "null", "number": "a number"}


def _describe(error: jsonschema.ValidationError) -> str:
    path = list(error.absolute_path)
    if error.validator == "required":
        names = error.validator_value if isinstance(error.validator_value, list) else []
        instance = error.instance if isinstance(error.instance, dict) else {}
        missing = next((n for n in names if n not in instance), "?")
        where = _location(path)
        return f"{where + ': ' if where else ''}field {missing!r} is missing"
    rule: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    wanted = rule.get("description")
    if not isinstance(wanted, str):
        kinds = rule.get("type")
        types = [kinds] if isinstance(kinds, str) else [str(k) for k in kinds or []]
        wanted = " or ".join(_TYPE_WORDS.get(k, k) for k in types) if types else error.message
    if path and isinstance(path[-1], str):
        parent = _location(path[:-1])
        return f"{parent + ': ' if parent else ''}field {path[-1]!r} is not {wanted}"
    return f"{_location(path) or 'the manifest'}: not {wanted}"


def manifest_from_json(data: Any, where: str) -> Manifest:
    """Parse a manifest JSON object; a wrong shape raises :class:`UsageError` naming ``where`` and the key."""
    if not isinstance(data, dict):
        raise UsageError(f"{where}: not a manifest (expected a JSON object)")
    schema = data.get("schema")
    if schema not in SCHEMAS:
        raise UsageError(f"{where}: not a vhdtool manifest of schema {SCHEMA!r} or {SCHEMA_V1!r} "
                         f"(found {schema!r})")
    error = _first_problem(_validator().iter_errors(data))
    if error is not None:
        raise UsageError(f"{where}: {_describe(error)}")
    disks = tuple(_disk_from_json(d, schema) for d in data["disks"])
    _check_roles(disks, where)
    g = data["gallery_image_definition"]
    return Manifest(
        name=data["name"], created=data["created"], vhdtool_version=data["vhdtool_version"],
        expect=data.get("expect"), forced=data["forced"],
        gallery_image_definition=GalleryDefinition(g.get("os_type"), g.get("os_state"),
                                                   g.get("hyper_v_generation"), g.get("architecture")),
        disks=disks, destination=data.get("destination"), schema=schema,
    )


def _disk_from_json(d: dict[str, Any], schema: str) -> DiskRecord:
    s, f, o, t = d["source"], d["fixed_vhd"], d.get("os"), d["billing_tier"]
    v1 = schema == SCHEMA_V1  # version 1 has no sparse digest (the schema makes its MD5 and SHA-256 required)
    return DiskRecord(
        role=d["role"], lun=d.get("lun"), name=d["name"],
        source=SourceRecord(s["path"], s["format"], s["type"], s["virtual_size"], s["file_size"]),
        fixed_vhd=FixedVhdRecord(f.get("path"), f["virtual_size"], f["file_size"],
                                 None if v1 else f["sparse_sha256"], f.get("md5"), f.get("sha256")),
        os=None if o is None else OsRecord(o.get("family"), o.get("name"), o.get("version"), o["state"]),
        hyper_v_generation=d.get("hyper_v_generation"), architecture=d.get("architecture"),
        billing_tier=BillingTier(t["size_gib"], t["tier_size_gib"], t["premium_ssd"], t["standard_ssd"],
                                 t["standard_hdd"]),
        findings=tuple(Finding(x["id"], x["severity"], x["message"]) for x in d["findings"]),
        blob_url=d.get("blob_url"),
    )


def _check_roles(disks: Sequence[DiskRecord], where: str) -> None:
    """One OS disk first (no LUN), then data disks, each with its own LUN of 0..63."""
    if not disks or disks[0].role != "os" or disks[0].lun is not None:
        raise UsageError(f"{where}: the first disk must be the OS disk (role \"os\", no LUN)")
    luns: set[int] = set()
    for index, d in enumerate(disks[1:], start=1):
        if d.role != "data" or d.lun is None or not 0 <= d.lun <= MAX_LUN or d.lun in luns:
            raise UsageError(f"{where}: disks[{index}]: a data disk needs role \"data\" and its own LUN "
                             f"(0-{MAX_LUN})")
        luns.add(d.lun)


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate a manifest file."""
    where = os.fspath(path)
    try:
        with open(where, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as err:
        raise UsageError(f"{where}: cannot read the manifest: {err.strerror or err}") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"{where}: not JSON: {err}") from err
    return manifest_from_json(data, where)


# ----------------------------------------------------------------------------------------------
# the file


def write_manifest(manifest: Manifest, path: str | os.PathLike[str], *, sync: bool = False) -> None:
    """Write ``manifest`` as JSON, complete or not at all, never replacing an existing file.

    The text goes to a temporary file in the same folder, which is then hard-linked to ``path``
    (an atomic create that fails if ``path`` exists); where links are not supported it is renamed.
    With ``sync`` the text is flushed to the disk before it is linked (as ``prepare --sync`` does
    for the VHDs it describes).
    """
    target = os.fspath(path)
    text = manifest_text(manifest)
    folder = os.path.dirname(os.path.abspath(target))
    temp: str | None = None
    try:
        fd, temp = tempfile.mkstemp(prefix=".manifest-", suffix=".partial", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            if sync:
                os.fsync(out.fileno())
        os.chmod(temp, 0o644)  # mkstemp makes it 0600; a manifest is meant to be shared
        try:
            os.link(temp, target)
        except FileExistsError:
            raise
        except OSError:  # no hard links here (FAT, some network shares): check, then rename
            if os.path.lexists(target):
                raise FileExistsError(errno.EEXIST, "File exists", target) from None
            os.replace(temp, target)
            temp = None
    except OSError as err:
        raise OutputError(f"{err.filename or target}: cannot write the manifest: "
                          f"{err.strerror or err}") from err
    finally:
        if temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp)
