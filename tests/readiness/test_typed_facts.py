"""The typed facts behind ``inspect --json`` / ``check --json``: key order, values and the round trip.

The rules read :class:`LinuxFacts` / :class:`WindowsFacts` attributes and :class:`Facts` holds the
parsed VHD footer; the JSON the commands print is made from those types in one place. These tests pin
that JSON on images built by the fixture scripts, and the JUnit report that ``check --junit`` writes.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from support.linux_images import ImageCache, shared_cache

from vhdtool.formats.open import open_image
from vhdtool.inspect.model import GENERALIZED, SPECIALIZED, OsReport, to_jsonable
from vhdtool.inspect.os_facts import LinuxFacts, WindowsFacts
from vhdtool.inspect.report import inspect_disk
from vhdtool.readiness.facts import facts_from_disk
from vhdtool.readiness.rules import ERROR, Severity, evaluate, junit_xml
from vhdtool.readiness.subject import open_for_check

LINUX_KEYS = ["os_release", "waagent_installed", "waagent_enabled", "cloud_init_installed", "cloud_init_enabled",
              "waagent_conf", "fstab_swap", "hyperv_drivers", "kernel_cmdline", "machine_id_set"]
# Every key a Windows volume with readable hives reports, in the order `inspect --json` prints them.
WINDOWS_KEYS = ["image_state_registry", "image_state_file", "undeployable", "setup_type",
                "system_setup_in_progress", "generalization_state", "sysprep_succeeded_tag", "hibernation_file",
                "product_name", "edition_id", "installation_type", "display_version", "build", "ubr",
                "control_set", "architecture"]
WINDOWS_FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "windows" / "make_fixtures.py"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> ImageCache:
    return shared_cache(tmp_path_factory)


def _windows_builder() -> ModuleType:
    name = "vhdtool_windows_fixtures"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, WINDOWS_FIXTURES)
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


@pytest.fixture(scope="module")
def windows_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    builder = _windows_builder()
    if builder.missing_tools():
        pytest.skip(f"fixture tools missing: {builder.missing_tools()}")
    built: dict[str, Path] = builder.build_all(tmp_path_factory.mktemp("typed-windows"))
    return built


def _inspect(path: Path) -> Any:
    disk = open_image(str(path))
    try:
        return inspect_disk(disk)
    finally:
        disk.close()


def _json_facts(os_report: OsReport) -> dict[str, Any]:
    """The ``facts`` object exactly as ``inspect --json`` prints it (through the JSON text)."""
    facts: dict[str, Any] = json.loads(json.dumps(os_report.to_json()))["facts"]
    return facts


def _linux_from_json(doc: dict[str, Any]) -> LinuxFacts:
    return LinuxFacts(**{**doc, "fstab_swap": tuple(doc["fstab_swap"])})


def _windows_from_json(doc: dict[str, Any]) -> WindowsFacts:
    lists = ("unreadable_hives", "hives_in_transaction", "hive_logs", "hive_logs_pending")
    return WindowsFacts(**{k: tuple(v) if k in lists else v for k, v in doc.items()})


@pytest.mark.parametrize(("layout", "state"), [("gpt-ext4", GENERALIZED), ("gpt-swap", SPECIALIZED),
                                               ("gpt-lvm", GENERALIZED), ("gpt-split", "nodrivers")])
def test_linux_facts_json_keys_and_round_trip(images: ImageCache, layout: str, state: str) -> None:
    report = _inspect(images.get(layout, state))
    assert report.os is not None and isinstance(report.os.facts, LinuxFacts)
    doc = _json_facts(report.os)
    assert list(doc) == LINUX_KEYS
    assert _linux_from_json(doc) == report.os.facts  # nothing lost or renamed on the way to JSON
    assert doc["hyperv_drivers"] == {k: list(v) for k, v in report.os.facts.hyperv_drivers.items()}


@pytest.mark.parametrize("name", ["vol-generalized", "vol-specialized", "vol-mismatched", "vol-undeployable",
                                  "gen1-mbr", "gen2-gpt"])
def test_windows_facts_json_keys_and_round_trip(windows_images: dict[str, Path], name: str) -> None:
    report = _inspect(windows_images[name])
    assert report.os is not None and isinstance(report.os.facts, WindowsFacts)
    facts = report.os.facts
    doc = _json_facts(report.os)
    hive_keys = [k for k in ("unreadable_hives", "hives_in_transaction", "hive_logs", "hive_logs_pending")
                 if getattr(facts, k)]
    expected = hive_keys + WINDOWS_KEYS
    if facts.image_state_mismatch:
        expected.insert(expected.index("undeployable") + 1, "image_state_mismatch")
    assert list(doc) == expected
    assert "registry_read" not in doc
    assert _windows_from_json(doc) == facts


def test_windows_facts_without_the_registry_reader_leave_registry_keys_out() -> None:
    facts = WindowsFacts(registry_read=False, image_state_file="IMAGE_STATE_COMPLETE", hibernation_file=True)
    doc = to_jsonable(facts)
    assert doc == {"image_state_file": "IMAGE_STATE_COMPLETE", "sysprep_succeeded_tag": False,
                   "hibernation_file": True}


def test_findings_serialise_severity_as_its_plain_name(images: ImageCache) -> None:
    path = images.get("gpt-ext4", SPECIALIZED, "fixed")
    with open_for_check(str(path)) as subject:
        assert subject.container.footer is not None and subject.container.footer.cookie == b"conectix"
        facts = subject.facts(inspect_disk(subject.disk) if subject.disk else None, expect=GENERALIZED)
    findings = [f for r in evaluate(facts) for f in r.findings]
    text = json.dumps([f.to_json() for f in findings])
    assert {x["severity"] for x in json.loads(text)} <= {"error", "warning", "info"}
    assert any(f.severity is Severity.ERROR for f in findings)  # specialized, expected generalized
    assert f"{Severity.WARNING}" == "warning" and f"{Severity.INFO:<7}|" == "info   |"


def test_one_builder_gives_the_same_facts_to_check_and_to_library_callers(images: ImageCache) -> None:
    path = images.get("gpt-ext4", GENERALIZED, "fixed")
    with open_for_check(str(path)) as subject:
        assert subject.disk is not None
        report = inspect_disk(subject.disk)
        via_subject = subject.facts(report, expect=GENERALIZED)
        via_disk = facts_from_disk(subject.disk, report, expect=GENERALIZED)
    assert via_subject == via_disk
    assert dataclasses.is_dataclass(via_subject.footer) and via_subject.footer is not None
    assert via_subject.footer.current_size == via_subject.virtual_size


def test_junit_report_carries_every_rule_and_finding(images: ImageCache) -> None:
    path = images.get("gpt-ext4", SPECIALIZED, "fixed")
    with open_for_check(str(path)) as subject:
        facts = subject.facts(inspect_disk(subject.disk) if subject.disk else None, expect=GENERALIZED)
    results = evaluate(facts)
    name = 'disk <"&> \u00e9.vhd'  # markup and non-ASCII in the suite name must survive
    root = ET.fromstring(junit_xml(results, name).encode("utf-8"))
    suite = root.find("testsuite")
    assert suite is not None and suite.get("name") == f"vhdtool check {name}"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [r.rule.id for r in results]
    failed = [r for r in results if any(x.severity == ERROR for x in r.findings)]
    assert suite.get("tests") == str(len(results)) and suite.get("failures") == str(len(failed)) != "0"
    for case, result in zip(cases, results, strict=True):
        errors = [x.message for x in result.findings if x.severity == ERROR]
        assert [f.get("message") for f in case.findall("failure")] == errors
        assert [f.text for f in case.findall("failure")] == errors
        notes = [f"{x.severity}: {x.message}" for x in result.findings if x.severity != ERROR]
        out = case.find("system-out")
        assert (out.text.split("\n") if out is not None and out.text else []) == notes
