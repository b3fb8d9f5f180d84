"""``vhdtool check`` on the Windows fixture images (built by fixtures/windows/make_fixtures.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support.cli import run_cli
from support.windows_images import builder, built_images

pytestmark = pytest.mark.slow  # left out of scripts/test.sh --fast

pytest.importorskip("dissect.ntfs")


if builder.missing_tools():
    pytest.skip(f"fixture tools missing: {builder.missing_tools()}", allow_module_level=True)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    built: dict[str, Path] = built_images(tmp_path_factory)
    return built


def check(path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    proc = run_cli("check", str(path), "--json", *args)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def errors(doc: dict[str, Any]) -> set[str]:
    return {x["id"] for x in doc["findings"] if x["severity"] == "error"}


def test_windows_on_gpt_needs_generation_2(images: dict[str, Path]) -> None:
    code, doc = check(images["gen2-gpt"], "--generation", "V1")
    assert code == 1 and "generation" in errors(doc)
    assert doc["generation"] == "V2" and doc["os"]["family"] == "windows"
    _, ok = check(images["gen2-gpt"], "--generation", "V2", "--expect", "specialized")
    assert errors(ok) == {"format-fixed-vhd"}


def test_windows_on_mbr_is_generation_1(images: dict[str, Path]) -> None:
    _, doc = check(images["gen1-mbr"], "--generation", "V2", "--expect", "generalized")
    assert doc["generation"] == "V1" and "generation" in errors(doc) and "os-state" not in errors(doc)


def test_bitlocker_os_volume(images: dict[str, Path]) -> None:
    _, doc = check(images["bitlocker-mbr"])
    assert "os-encrypted" in errors(doc)


def test_hibernation_file_is_unclean(images: dict[str, Path]) -> None:
    _, doc = check(images["gen2-gpt"], "--expect", "generalized")
    assert {"os-state", "unclean-capture"} <= errors(doc)  # a generalized capture must be shut down
    _, spec = check(images["gen2-gpt"], "--expect", "specialized")
    assert [x["severity"] for x in spec["findings"] if x["id"] == "unclean-capture"] == ["warning"]


def test_undeployable(images: dict[str, Path]) -> None:
    key = next(k for k in images if "undeployable" in k)
    _, doc = check(images[key], "--role", "os")
    assert "os-state" in errors(doc)
