"""The Windows boot and reachability rules of ``check`` on the fixture images (hives and BCD stores made by
hivexregedit, volumes by mkntfs + wimapply), through raw, VHDX, dynamic and fixed VHD."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from support.cli import run_cli
from support.oracles import qemu_img
from support.windows_images import builder, built_images

from vhdtool.inspect.registry import RegValue
from vhdtool.inspect.windows_readiness import _allow_rules, parse_winhttp
from vhdtool.readiness.rules import RULES

WINDOWS_RULES = tuple(r.id for r in RULES if r.id.startswith("windows-"))
CONTAINERS = {"vhdx": ["-O", "vhdx"], "dynamic": ["-O", "vpc", "-o", "subformat=dynamic,force_size"],
              "fixed": ["-O", "vpc", "-o", "subformat=fixed,force_size"]}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("winboot")
    built: dict[str, Path] = built_images(tmp_path_factory)
    for name in ("gen1-mbr", "gen2-gpt", "vol-unready"):
        for container, args in CONTAINERS.items():
            out = base / f"{name}.{container}"
            qemu_img("convert", "-f", "raw", *args, str(built[name]), str(out))
            built[f"{name}.{container}"] = out
    return built


def check(path: Path, *args: str) -> dict[str, Any]:
    proc = run_cli("check", str(path), "--json", *args)
    assert proc.stdout, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def windows_findings(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(x["id"], x["severity"], x["message"]) for x in doc["findings"] if x["id"] in WINDOWS_RULES]


def by_rule(doc: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for rule, severity, _ in windows_findings(doc):
        out.setdefault(rule, []).append(severity)
    return {k: sorted(v) for k, v in out.items()}


@pytest.mark.parametrize("container", ["raw", *CONTAINERS])
def test_every_trap_fires_on_the_unready_image(images: dict[str, Path], container: str) -> None:
    doc = check(images["vol-unready" if container == "raw" else f"vol-unready.{container}"])
    assert by_rule(doc) == {
        "windows-rdp": ["error", "error", "warning", "warning"],  # off (policy), TermService, port, firewall
        "windows-network": ["error", "error", "warning", "warning"],  # static, Dhcp, route, proxy
        "windows-san-policy": ["warning"],
        "windows-boot-drivers": ["error", "error", "error"],  # storvsc manual, vmbus missing, netvsc off
        "windows-capture-state": ["warning"],
        "windows-agent": ["warning"],
        "windows-pagefile": ["info"],
        "windows-rtc-utc": ["info"],
        "windows-boot-diagnostics": ["info"],  # no BCD store on a bare volume
        "windows-crash-dump": ["info"],
    }
    messages = " ".join(m for _, _, m in windows_findings(doc))
    assert "SOFTWARE\\Policies\\Microsoft\\Windows NT\\Terminal Services\\fDenyTSConnections = 1" in messages
    assert "192.168.10.25" in messages and "proxy.corp.example:8080" in messages
    assert "INACCESSIBLE_BOOT_DEVICE" in messages and "OfflineShared" in messages


@pytest.mark.parametrize("container", ["raw", *CONTAINERS])
def test_prepared_images_pass(images: dict[str, Path], container: str) -> None:
    suffix = "" if container == "raw" else f".{container}"
    gen1 = check(images[f"gen1-mbr{suffix}"])  # BCD on the active partition, with EMS on
    assert by_rule(gen1) == {"windows-agent": ["info"]}
    assert "Azure VM Agent 2.7.41491.1102 installed" in windows_findings(gen1)[0][2]
    gen2 = check(images[f"gen2-gpt{suffix}"])  # BCD on the ESP, EMS off
    assert by_rule(gen2) == {"windows-agent": ["info"], "windows-boot-diagnostics": ["info"]}
    assert "partition 1: /EFI/Microsoft/Boot/BCD" in " ".join(m for _, _, m in windows_findings(gen2))


def test_findings_do_not_depend_on_the_container(images: dict[str, Path]) -> None:
    for name in ("gen1-mbr", "gen2-gpt", "vol-unready"):
        raw = check(images[name])
        for container in CONTAINERS:
            other = check(images[f"{name}.{container}"])
            assert windows_findings(other) == windows_findings(raw)
            assert other["os"]["windows"] == raw["os"]["windows"]


def test_an_unfinished_sysprep_is_a_capture_finding(images: dict[str, Path]) -> None:
    assert by_rule(check(images["vol-audit"]))["windows-capture-state"] == ["warning"]
    assert by_rule(check(images["vol-audit"], "--expect", "generalized"))["windows-capture-state"] == ["error"]


def test_json_and_junit_list_the_rules(images: dict[str, Path], tmp_path: Path) -> None:
    junit = tmp_path / "report.xml"
    doc = check(images["gen1-mbr"], "--junit", str(junit))
    windows = doc["os"]["windows"]
    assert windows["control_set"] == "ControlSet001" and windows["san_policy"] == 1
    assert windows["bcd"]["boot_ems"] is True and windows["bcd"]["ems_baud_rate"] == 115200
    assert [d["start"] for d in windows["boot_drivers"]] == [0, 0, 3]
    cases = {tc.get("name") for tc in ET.parse(junit).getroot().iter("testcase")}
    assert set(WINDOWS_RULES) <= cases and len(WINDOWS_RULES) == 10


def test_winhttp_and_firewall_rule_parsing() -> None:
    assert parse_winhttp(builder.WINHTTP_DIRECT) == (None, None)
    assert parse_winhttp(builder.winhttp_proxy("p:3128", "*.corp;<local>")) == ("p:3128", "*.corp;<local>")
    assert parse_winhttp(b"\x18\x00") == (None, None)
    rule = "v2.30|Action=Allow|Active=TRUE|Dir=In|Protocol=6|LPort=3380-3390|Name=x|"
    values = [RegValue("k", "range", 1, rule), RegValue("k", "off", 1, rule.replace("TRUE", "FALSE")),
              RegValue("k", "udp", 1, rule.replace("Protocol=6", "Protocol=17")),
              RegValue("k", "svc", 1, "v2.30|Action=Allow|Active=TRUE|Dir=In|Svc=termservice|")]
    assert [r.name for r in _allow_rules(values, "local", 3389)] == ["range", "svc"]
    assert [r.name for r in _allow_rules(values, "local", 3391)] == ["svc"]
