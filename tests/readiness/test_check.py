"""``vhdtool check``: each rule as a pure function, then the command on real images (exit codes, JUnit)."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from support.cli import run_cli
from support.linux_images import ImageCache, shared_cache

from vhdtool.formats.vhd.footer import fixed_footer
from vhdtool.inspect.filesystems import VolumeInfo
from vhdtool.inspect.generation import GenerationReport
from vhdtool.inspect.model import GENERALIZED, IN_BETWEEN, SPECIALIZED, OsReport
from vhdtool.inspect.os_facts import LinuxFacts, WindowsFacts
from vhdtool.inspect.partitions import Partition, PartitionTable
from vhdtool.inspect.report import DiskReport, VolumeReport
from vhdtool.readiness.rules import (
    ERROR,
    INFO,
    RULES,
    WARNING,
    Facts,
    billing_text,
    evaluate,
)
from vhdtool.readiness.tiers import billing_tier


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> ImageCache:
    return shared_cache(tmp_path_factory)


MiB, GiB, TiB = 1 << 20, 1 << 30, 1 << 40
FIXED_FOOTER = fixed_footer(64 * MiB)


def report(
    os_report: OsReport | None = None,
    supported: tuple[str, ...] = ("V2",),
    volumes: list[VolumeReport] | None = None,
    unclean: list[str] | None = None,
    problems: tuple[str, ...] = (),
) -> DiskReport:
    table = PartitionTable("gpt", tuple(v.partition for v in volumes or []), problems=problems)
    return DiskReport(
        "x.vhd",
        "vhd",
        "fixed",
        64 * MiB,
        table,
        volumes or [],
        os_report,
        None,
        GenerationReport(supported, ("test",)),
        unclean or [],
        [],
    )


def linux(state: str = GENERALIZED, **facts: Any) -> OsReport:
    base = LinuxFacts(
        os_release={},
        waagent_installed=True,
        waagent_enabled=True,
        cloud_init_installed=False,
        cloud_init_enabled=False,
        waagent_conf={},
        fstab_swap=(),
        hyperv_drivers={"hv_vmbus": ["k"], "hv_storvsc": ["k"], "hv_netvsc": ["k"]},
        kernel_cmdline="console=ttyS0",
        machine_id_set=False,
    )
    return OsReport("linux", "Test Linux", "1", "h", state, [], replace(base, **facts))


def facts(**kw: Any) -> Facts:
    values: dict[str, Any] = {
        "format": "vhd",
        "disk_type": "fixed",
        "virtual_size": 64 * MiB,
        "file_size": 64 * MiB + 512,
        "footer": FIXED_FOOTER,
        "report": report(linux()),
    }
    values.update(kw)
    return Facts(**values)


def findings(f: Facts, rule_id: str | None = None) -> list[tuple[str, str, str]]:
    return [
        (x.rule, x.severity, x.message)
        for r in evaluate(f)
        for x in r.findings
        if rule_id is None or x.rule == rule_id
    ]


def severities(f: Facts, rule_id: str) -> list[str]:
    return [s for _, s, _ in findings(f, rule_id)]


def test_rule_ids_are_unique_and_documented() -> None:
    ids = [r.id for r in RULES]
    assert len(ids) == len(set(ids))
    doc = (Path(__file__).resolve().parents[2] / "docs" / "check-rules.md").read_text()
    for rule_id in ids:
        assert f"`{rule_id}`" in doc, rule_id


def test_a_good_fixed_vhd_has_no_error() -> None:
    assert [x for x in findings(facts()) if x[1] == ERROR] == []


@pytest.mark.parametrize(
    ("fmt", "disk_type", "text"),
    [
        ("vhdx", "dynamic", "a VHDX"),
        ("vhd", "dynamic", "a dynamic VHD"),
        ("vhd", "differencing", "a differencing VHD"),
        ("raw", "fixed", "a raw image"),
    ],
)
def test_format_must_be_fixed_vhd(fmt: str, disk_type: str, text: str) -> None:
    got = findings(facts(format=fmt, disk_type=disk_type, footer=None), "format-fixed-vhd")
    assert len(got) == 1 and got[0][1] == ERROR and text in got[0][2] and "vhdtool convert" in got[0][2]


def test_size_and_footer_rules() -> None:
    assert severities(
        facts(
            virtual_size=64 * MiB + 512,
            file_size=64 * MiB + 1024,
            footer=replace(FIXED_FOOTER, current_size=64 * MiB + 512),
        ),
        "size-whole-mib",
    ) == [ERROR]
    assert severities(facts(file_size=64 * MiB + 511), "file-size") == [ERROR]  # a 511-byte footer
    # Data past the footer's current size: the cause is named once, by footer-current-size.
    short = facts(file_size=64 * MiB + 1024)
    assert (severities(short, "file-size"), severities(short, "footer-current-size")) == ([], [ERROR])
    assert "vhdtool fix" in findings(short, "footer-current-size")[0][2]
    assert severities(facts(footer=replace(FIXED_FOOTER, cookie=b"conectiy")), "footer-cookie") == [ERROR]
    assert severities(facts(footer=replace(FIXED_FOOTER, disk_type=7)), "footer-disk-type") == [
        ERROR
    ]
    assert severities(facts(footer=replace(FIXED_FOOTER, data_offset=512)), "footer-data-offset") == [ERROR]
    assert severities(facts(footer=replace(FIXED_FOOTER, checksum_valid=False)), "footer-checksum") == [ERROR]
    assert severities(facts(), "footer-current-size") == []
    unknown = facts(disk_type="unknown (7)", footer=replace(FIXED_FOOTER, disk_type=7))
    assert (severities(unknown, "footer-disk-type"), severities(unknown, "format-fixed-vhd")) == ([ERROR], [])


@pytest.mark.parametrize(
    ("size", "role", "generation", "rule", "expected"),
    [
        (19 * MiB, "data", None, "upload-size-range", [ERROR]),
        (20 * MiB, "data", None, "upload-size-range", []),
        (32767 * GiB, "data", None, "upload-size-range", []),
        (32767 * GiB + MiB, "data", None, "upload-size-range", [ERROR]),
        (2 * TiB, "os", "V1", "os-disk-size", []),
        (2 * TiB + MiB, "os", "V1", "os-disk-size", [ERROR]),
        (4 * TiB, "os", "V2", "os-disk-size", []),
        (4 * TiB + MiB, "os", "V2", "os-disk-size", [ERROR]),
        (32767 * GiB, "data", None, "data-disk-size", []),
        (32768 * GiB, "data", None, "data-disk-size", [ERROR]),
        (8 * TiB - 512, "data", None, "page-blob-size", []),
        (8 * TiB, "data", None, "page-blob-size", [WARNING]),
    ],
)
def test_size_limits(size: int, role: str, generation: str | None, rule: str, expected: list[str]) -> None:
    f = facts(
        virtual_size=size,
        file_size=size + 512,
        footer=replace(FIXED_FOOTER, current_size=size),
        role=role,
        generation=generation,
        report=report(linux(), supported=("V1", "V2")),
    )
    assert severities(f, rule) == expected


def test_generation_rules() -> None:
    assert severities(facts(generation="V1", report=report(linux(), ("V2",))), "generation") == [ERROR]
    assert severities(facts(generation="V2", report=report(linux(), ("V2",))), "generation") == []
    assert severities(facts(report=report(linux(), ("V1", "V2"))), "generation") == [INFO]
    assert severities(facts(report=report(linux(), ())), "generation") == [WARNING]
    assert severities(facts(role="data", report=report(None, ())), "generation") == []
    # An MBR-only (V1) OS disk is held to the 2 TiB limit even without --generation.
    big = 3 * TiB
    f = facts(
        virtual_size=big,
        file_size=big + 512,
        footer=replace(FIXED_FOOTER, current_size=big),
        report=report(linux(), ("V1",)),
    )
    assert severities(f, "os-disk-size") == [ERROR]


def _volume(kind: str, encrypted: bool = False, number: int = 1, swap: bool = False) -> VolumeReport:
    type_id = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f" if swap else "0fc63daf-8483-4772-8e79-3d69d8477de4"
    return VolumeReport(Partition(number, MiB, 10 * MiB, type_id, "t"), VolumeInfo(kind, encrypted=encrypted))


def test_encrypted_volume() -> None:
    enc = report(None, volumes=[_volume("bitlocker", True)])
    assert severities(facts(report=enc), "os-encrypted") == [ERROR]
    assert severities(facts(report=enc, role="data"), "os-encrypted") == [WARNING]
    assert severities(facts(), "os-encrypted") == []


def test_unclean_capture_is_an_error_only_for_generalized() -> None:
    dirty = ["partition 2 (ext4): needs_recovery"]
    assert severities(facts(report=report(linux(SPECIALIZED), unclean=dirty)), "unclean-capture") == [WARNING]
    assert severities(facts(report=report(linux(GENERALIZED), unclean=dirty)), "unclean-capture") == [ERROR]
    assert severities(
        facts(expect=GENERALIZED, report=report(linux(IN_BETWEEN), unclean=dirty)), "unclean-capture"
    ) == [ERROR]


def test_os_state_against_expect() -> None:
    assert severities(facts(expect=GENERALIZED, report=report(linux(SPECIALIZED))), "os-state") == [ERROR]
    assert severities(facts(expect=SPECIALIZED, report=report(linux(SPECIALIZED))), "os-state") == [INFO]
    assert severities(facts(report=report(linux(IN_BETWEEN))), "os-state") == [WARNING]
    assert severities(facts(report=report(linux(GENERALIZED))), "os-state") == [INFO]
    windows = OsReport("windows", "Windows", None, None, IN_BETWEEN, [], WindowsFacts(undeployable=True))
    assert severities(facts(report=report(windows)), "os-state") == [ERROR]
    assert severities(facts(report=report(None)), "os-found") == [WARNING]
    assert severities(facts(role="data", report=report(linux())), "os-found") == [INFO]


def test_linux_rules() -> None:
    set_id = report(linux(GENERALIZED, machine_id_set=True))
    assert severities(facts(report=set_id), "linux-machine-id") == [WARNING]
    assert severities(facts(report=report(linux(SPECIALIZED, machine_id_set=True))), "linux-machine-id") == []
    assert (
        severities(facts(report=report(linux(GENERALIZED, machine_id_set=False))), "linux-machine-id") == []
    )
    assert severities(facts(report=report(linux(fstab_swap=("/swap none swap sw 0 0",)))), "linux-swap") == [
        WARNING
    ]
    assert severities(facts(report=report(linux(), volumes=[_volume("swap", swap=True)])), "linux-swap") == [
        WARNING
    ]
    no_net = {"hv_vmbus": ["k"], "hv_storvsc": ["k"], "hv_netvsc": []}
    got = findings(facts(report=report(linux(hyperv_drivers=no_net))), "linux-hyperv-drivers")
    assert [s for _, s, _ in got] == [ERROR] and "hv_netvsc" in got[0][2]
    assert severities(facts(report=report(linux(waagent_installed=False))), "linux-agent") == [ERROR]
    assert severities(facts(report=report(linux(waagent_enabled=False))), "linux-agent") == [WARNING]
    assert severities(facts(report=report(linux(kernel_cmdline="quiet"))), "linux-serial-console") == [
        WARNING
    ]
    assert severities(facts(role="data", report=report(linux(waagent_installed=False))), "linux-agent") == []


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (20 * MiB, "billed as 4 GiB: P1 (Premium SSD) / E1 (Standard SSD) / S4 (Standard HDD)"),
        (127 * GiB, "billed as 128 GiB: P10 (Premium SSD) / E10 (Standard SSD) / S10 (Standard HDD)"),
        (32768 * GiB, "32768 GiB is above the largest tier (32,767 GiB)"),
    ],
)
def test_billing_tier_finding_words_the_tier(size: int, text: str) -> None:
    facts = Facts("vhd", "fixed", size, size + 512, None, None)
    found = [f for r in evaluate(facts) if r.rule.id == "billing-tier" for f in r.findings]
    assert [(f.severity, f.message) for f in found] == [(INFO, text)]
    assert billing_text(billing_tier(size)) == text


# ---------------------------------------------------------------- the command on real images


def test_fixed_vhd_generalized_is_ready(images: ImageCache, tmp_path: Path) -> None:
    path = images.get("gpt-ext4", GENERALIZED, "fixed")
    junit = tmp_path / "report.xml"
    proc = run_cli(
        "check",
        str(path), "--json", "--expect", "generalized", "--generation", "V2", "--junit", str(junit)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ready"] is True and doc["generation"] == "V2"
    assert doc["os"]["state"] == GENERALIZED and doc["os"]["family"] == "linux"
    assert {x["severity"] for x in doc["findings"]} <= {"info", "warning"}
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and int(suite.get("tests", "0")) == len(RULES) and suite.get("failures") == "0"


def test_raw_specialized_fails_with_json_and_junit(images: ImageCache, tmp_path: Path) -> None:
    path = images.get("gpt-ext4", SPECIALIZED)
    junit = tmp_path / "report.xml"
    proc = run_cli("check", str(path), "--json", "--expect", "generalized", "--junit", str(junit))
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    errors = {x["id"] for x in doc["findings"] if x["severity"] == "error"}
    assert errors == {"format-fixed-vhd", "os-state"}
    failed = {
        tc.get("name") for tc in ET.parse(junit).getroot().iter("testcase") if tc.find("failure") is not None
    }
    assert failed == errors


def test_human_output_and_linux_findings(images: ImageCache) -> None:
    proc = run_cli("check", str(images.get("gpt-swap", GENERALIZED)))
    assert proc.returncode == 1
    assert "WARNING linux-swap:" in proc.stdout and "NOT ready for Azure" in proc.stdout
    drivers = run_cli("check", str(images.get("gpt-ext4", "nodrivers")), "--json")
    ids = {x["id"] for x in json.loads(drivers.stdout)["findings"] if x["severity"] == "error"}
    assert "linux-hyperv-drivers" in ids
    luks = run_cli("check", str(images.get("luks", GENERALIZED)), "--json")
    assert "os-encrypted" in {
        x["id"] for x in json.loads(luks.stdout)["findings"] if x["severity"] == "error"
    }


def test_dynamic_and_vhdx_say_convert(images: ImageCache) -> None:
    for container in ("vhdx", "dynamic"):
        proc = run_cli("check", str(images.get("mbr-ext4", GENERALIZED, container)), "--json")
        assert proc.returncode == 1
        doc = json.loads(proc.stdout)
        fmt = [x for x in doc["findings"] if x["id"] == "format-fixed-vhd"]
        assert fmt and "vhdtool convert" in fmt[0]["message"]
        assert doc["os"]["state"] == GENERALIZED and doc["generation"] == "V1"


def test_broken_footer_checksum(images: ImageCache, tmp_path: Path) -> None:
    src = images.get("gpt-ext4", GENERALIZED, "fixed")
    path = tmp_path / "broken.vhd"
    subprocess.run(["cp", "--sparse=always", str(src), str(path)], check=True)
    with open(path, "r+b") as f:
        f.seek(-512 + 64, 2)  # the footer's checksum field
        f.write(b"\x00\x00\x00\x01")
    proc = run_cli("check", str(path), "--json")
    if proc.returncode == 1 and not proc.stdout:
        pytest.fail(f"the VHD reader refused the image: {proc.stderr}")
    ids = {x["id"] for x in json.loads(proc.stdout)["findings"] if x["severity"] == "error"}
    assert "footer-checksum" in ids


def test_usage_errors_exit_2(images: ImageCache) -> None:
    path = str(images.get("bare-ext4", GENERALIZED))
    assert run_cli("check", path, "--role", "boot").returncode == 2
    assert run_cli("check", path, "--expect", "sort-of").returncode == 2
    assert run_cli("check", path, "--generation", "V3").returncode == 2
    assert run_cli("check").returncode == 2


def test_dirty_vhdx_log_is_an_unclean_capture(tmp_path: Path) -> None:
    from support.vhdx_builder import build_vhdx, write_log

    path = tmp_path / "dirty.vhdx"
    write_log(build_vhdx(path, 64 * MiB), [[]])  # one log entry the headers point at: a non-empty log
    proc = run_cli("check", str(path), "--json", "--role", "data")
    doc = json.loads(proc.stdout)
    unclean = [x for x in doc["findings"] if x["id"] == "unclean-capture"]
    assert unclean and "VHDX log" in unclean[0]["message"] and unclean[0]["severity"] == "warning"
    assert doc["unclean"] == ["VHDX log is not empty (the image was not closed cleanly)"]


# ---------------------------------------------------------------- damaged footers on real files


def _damaged_copy(src: Path, dest: Path, changes: dict[int, bytes], recompute_checksum: bool = True) -> Path:
    """A sparse copy of the fixed VHD ``src`` with footer bytes replaced (VHD spec field offsets)."""
    import struct

    subprocess.run(["cp", "--sparse=always", str(src), str(dest)], check=True)
    with open(dest, "r+b") as f:
        f.seek(-512, 2)
        footer = bytearray(f.read(512))
        for at, data in changes.items():
            footer[at : at + len(data)] = data
        if recompute_checksum:
            footer[64:68] = bytes(4)
            footer[64:68] = struct.pack(">I", ~sum(footer) & 0xFFFFFFFF)
        f.seek(-512, 2)
        f.write(footer)
    return dest


@pytest.mark.parametrize(
    ("name", "changes", "recompute", "expected"),
    [
        ("cookie", {0: b"conectiy"}, True, {"footer-cookie"}),
        ("cookie-and-checksum", {0: b"Conectix"}, False, {"footer-cookie", "footer-checksum"}),
        ("type-7", {60: (7).to_bytes(4, "big")}, True, {"footer-disk-type"}),
        ("data-offset", {16: (512).to_bytes(8, "big")}, True, {"footer-data-offset"}),
        ("checksum", {64: b"\0\0\0\1"}, False, {"footer-checksum"}),
    ],
)
def test_damaged_footers_are_findings_not_refusals(
    images: ImageCache,
    tmp_path: Path,
    name: str,
    changes: dict[int, bytes],
    recompute: bool,
    expected: set[str],
) -> None:
    """The readers refuse a fixed VHD with an unknown disk type and take one with a damaged cookie for
    raw; ``check`` still names the footer field, and inspects the data part before the footer."""
    path = _damaged_copy(images.get("gpt-ext4", GENERALIZED, "fixed"), tmp_path / f"{name}.vhd", changes, recompute)
    junit = tmp_path / "report.xml"
    proc = run_cli("check", str(path), "--json", "--junit", str(junit))
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr
    doc = json.loads(proc.stdout)
    assert {x["id"] for x in doc["findings"] if x["severity"] == "error"} == expected
    assert {x["id"] for x in doc["findings"] if x["severity"] == "warning"} == set()  # no table ends in a footer
    assert doc["os"]["state"] == GENERALIZED and doc["generation"] == "V2"
    failed = {
        tc.get("name") for tc in ET.parse(junit).getroot().iter("testcase") if tc.find("failure") is not None
    }
    assert failed == expected


def test_current_size_short_of_the_data(images: ImageCache, tmp_path: Path) -> None:
    """A footer whose current size leaves half the data out: Azure would see half a disk."""
    path = _damaged_copy(images.get("gpt-ext4", GENERALIZED, "fixed"), tmp_path / "short.vhd",
                         {48: (64 * MiB).to_bytes(8, "big")})
    proc = run_cli("check", str(path), "--json")
    doc = json.loads(proc.stdout)
    errors = [x for x in doc["findings"] if x["severity"] == "error"]
    assert proc.returncode == 1 and [x["id"] for x in errors] == ["footer-current-size"]
    assert f"holds {128 * MiB} bytes before the footer" in errors[0]["message"]


def test_a_raw_image_is_not_taken_for_a_damaged_vhd(images: ImageCache) -> None:
    from vhdtool.readiness.subject import open_for_check

    with open_for_check(str(images.get("gpt-ext4", GENERALIZED))) as subject:
        assert (subject.container.format, subject.container.footer) == ("raw", None)


def test_expect_without_an_os_is_an_error() -> None:
    none_found = report(None)
    got = findings(facts(expect=GENERALIZED, report=none_found), "os-state")
    assert [s for _, s, _ in got] == [ERROR] and "no Windows or Linux OS was found" in got[0][2]
    assert severities(facts(report=none_found), "os-state") == []  # without --expect, os-found warns
    unread = report(None)
    unread.missing_readers.append("ext4")
    got = findings(facts(expect=SPECIALIZED, report=unread), "os-state")
    assert [s for _, s, _ in got] == [ERROR] and "vhdtool[inspect]" in got[0][2]
    assert "vhdtool[inspect]" in findings(facts(report=unread), "os-found")[0][2]
