"""The Windows detector and the registry reader, over host directories built by the fixture script.

Hives are made by ``fixtures/windows/make_fixtures.py`` (our empty hive + ``hivexregedit --merge``);
hivex's own tools (``hivexget``, ``hivexregedit --export``) are the independent oracle for our reads.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.windows_images import builder

from vhdtool.errors import ImageError, VhdtoolError
from vhdtool.inspect.model import GENERALIZED, IN_BETWEEN, SPECIALIZED, UNKNOWN, OsReport
from vhdtool.inspect.registry import Hive, base_block_checksum, parse_base_block
from vhdtool.inspect.windows import (
    IMAGE_STATES,
    classify_image_state,
    decode_text,
    inspect_windows,
    normalize_image_state,
    parse_state_ini,
)

if builder.missing_tools():
    pytest.skip(f"fixture tools missing: {builder.missing_tools()} (scripts/setup.sh --test)",
                allow_module_level=True)


class HostTree:
    """A FileTree over a host directory (unit tests only: case-sensitive, symlinks not confined)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _p(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def exists(self, path: str) -> bool:
        return self._p(path).exists()

    def is_dir(self, path: str) -> bool:
        return self._p(path).is_dir()

    def listdir(self, path: str) -> list[str] | None:
        p = self._p(path)
        return sorted(os.listdir(p)) if p.is_dir() else None

    def read_file(self, path: str, limit: int = 16 * 1024 * 1024) -> bytes | None:
        p = self._p(path)
        if not p.is_file():
            return None
        with open(p, "rb") as f:
            return f.read(limit)

    def file_size(self, path: str) -> int | None:
        p = self._p(path)
        return p.stat().st_size if p.is_file() else None

    def readlink(self, path: str) -> str | None:
        p = self._p(path)
        return os.readlink(p) if p.is_symlink() else None


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("wintrees")
    return {name: builder.build_tree(v, root / name) for name, v in builder.VARIANTS.items()}


def fresh_tree(trees: dict[str, Path], name: str, tmp_path: Path) -> Path:
    dest = tmp_path / name
    shutil.copytree(trees[name], dest)
    return dest


def evidence_for(report: OsReport, fragment: str) -> list[tuple[str | None, str]]:
    return [(e.value, e.points_to) for e in report.evidence if fragment in e.source]


# --- the empty hive and the registry reader, against hivex ------------------------------------------

def test_empty_hive_is_accepted_by_hivex_and_parsed_by_us(tmp_path: Path) -> None:
    path = tmp_path / "EMPTY"
    path.write_bytes(builder.empty_hive("EMPTY"))
    export = subprocess.run(["hivexregedit", "--export", "--prefix", "HKLM\\X", str(path), "\\"],
                            capture_output=True, text=True, check=True).stdout
    assert "[HKLM\\X\\]" in export
    header = parse_base_block(path.read_bytes(), str(path))
    assert header.checksum_valid and not header.in_transaction
    assert header.file_name == "EMPTY" and header.hive_bins_data_size == 4096
    hive = Hive(path.read_bytes(), str(path))
    assert hive.subkey_names("") == [] and hive.value("", "x") is None


@pytest.mark.parametrize(("hive", "key", "name"), [
    ("SOFTWARE", r"Microsoft\Windows NT\CurrentVersion", "ProductName"),
    ("SOFTWARE", r"Microsoft\Windows NT\CurrentVersion", "UBR"),
    ("SOFTWARE", r"Microsoft\Windows\CurrentVersion\Setup\State", "ImageState"),
    ("SYSTEM", "Select", "Current"),
    ("SYSTEM", "Setup", "CmdLine"),
    ("SYSTEM", r"ControlSet002\Control\ComputerName\ComputerName", "ComputerName"),
])
def test_values_match_hivexget(trees: dict[str, Path], hive: str, key: str, name: str) -> None:
    path = trees["specialized"] / "Windows" / "System32" / "config" / hive
    oracle = subprocess.run(["hivexget", str(path), key, name], capture_output=True, text=True,
                            check=True).stdout.rstrip("\n")
    value = Hive(path.read_bytes(), str(path)).value(key.upper(), name.lower())  # case-insensitive
    assert value is not None
    assert str(value.data) == oracle


def test_subkeys_match_hivex_export(trees: dict[str, Path]) -> None:
    path = trees["generalized"] / "Windows" / "System32" / "config" / "SYSTEM"
    export = subprocess.run(["hivexregedit", "--export", "--prefix", "H", str(path), "\\"],
                            capture_output=True, text=True, check=True).stdout
    top = {line[3:-1].split("\\")[0] for line in export.splitlines() if line.startswith("[H\\") and
           line != "[H\\]"}
    assert set(Hive(path.read_bytes(), str(path)).subkey_names("") or []) == top


def test_base_block_errors_name_file_and_offset(trees: dict[str, Path]) -> None:
    good = (trees["generalized"] / "Windows" / "System32" / "config" / "SYSTEM").read_bytes()
    with pytest.raises(ImageError, match="shorter than the 4096-byte base block"):
        parse_base_block(good[:100], "C:/SYSTEM")
    with pytest.raises(ImageError, match=r"C:/SYSTEM: registry base block at byte 0: signature"):
        parse_base_block(b"xxxx" + good[4:], "C:/SYSTEM")
    bad_major = bytearray(good)
    struct.pack_into("<I", bad_major, 20, 2)
    with pytest.raises(ImageError, match="at byte 20: major version 2"):
        parse_base_block(bytes(bad_major), "C:/SYSTEM")
    flipped = bytearray(good)
    flipped[48] ^= 0x20  # file name changes, checksum no longer matches
    assert not parse_base_block(bytes(flipped), "x").checksum_valid
    assert base_block_checksum(good) == struct.unpack_from("<I", good, 508)[0]
    with pytest.raises(ImageError, match="at byte 40: hive bins data size"):
        Hive(good[:8192], "C:/SYSTEM")  # truncated: the header promises more hive bins
    no_hbin = bytearray(good)
    no_hbin[4096:4100] = b"nbih"
    with pytest.raises(ImageError, match="at byte 4096: first hive bin"):
        Hive(bytes(no_hbin), "C:/SYSTEM")
    log = builder.log_file(good, 3)
    with pytest.raises(ImageError, match="transaction log, not a primary hive"):
        Hive(log + bytes(8192), "C:/SYSTEM.LOG1")


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_damaged_hive_raises_only_image_error(data: st.DataObject) -> None:
    """Whatever bytes of the hive bins are corrupted, lookups return or raise ImageError."""
    hive_bytes = bytearray(_generalized_system_hive())
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(4096, len(hive_bytes) - 1))
        hive_bytes[pos] = data.draw(st.integers(0, 255))
    try:
        hive = Hive(bytes(hive_bytes), "SYSTEM")
        cmdline = hive.value("Setup", "CmdLine")
        name = hive.value(r"ControlSet001\Control\ComputerName\ComputerName", "ComputerName")
        subkeys = hive.subkey_names("Setup")
    except ImageError as err:
        assert "SYSTEM" in str(err)  # names the hive it could not read
        return
    # What survives the damage has the types the OS-state code relies on.
    for found in (cmdline, name):
        assert found is None or (isinstance(found.name, str) and isinstance(found.type, int))
    assert subkeys is None or all(isinstance(k, str) for k in subkeys)


_HIVE_CACHE: dict[str, bytes] = {}


def _generalized_system_hive() -> bytes:
    if "system" not in _HIVE_CACHE:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "SYSTEM"
            builder.make_hive(path, "SYSTEM", builder.system_keys(builder.VARIANTS["generalized"]))
            _HIVE_CACHE["system"] = path.read_bytes()
    return _HIVE_CACHE["system"]


# --- State.ini parsing ----------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "expected"), [
    (b"\xff\xfe" + "[State]\r\nImageState=IMAGE_STATE_COMPLETE\r\n".encode("utf-16-le"),
     "IMAGE_STATE_COMPLETE"),
    ("[State]\r\nImageState=IMAGE_STATE_COMPLETE\r\n".encode("utf-16-le"), "IMAGE_STATE_COMPLETE"),
    (b"\xfe\xff" + "[State]\nImageState=A_B\n".encode("utf-16-be"), "A_B"),
    ("[State]\nImageState=A_B\n".encode("utf-16-be"), "A_B"),
    (b"\xef\xbb\xbf[State]\nImageState=X\n", "X"),
    (b'[ state ]\n  imagestate  =  "IMAGE_STATE_UNDEPLOYABLE"  \n', "IMAGE_STATE_UNDEPLOYABLE"),
    (b"[State]\nImageState='q'\n", "q"),
    (b"; comment\n# other\n[Other]\nImageState=WRONG\n[State]\nImageState=RIGHT\n", "RIGHT"),
    (b"ImageState=NO_SECTION\n", "NO_SECTION"),
    (b"[State]\nSomething=1\n", None),
    (b"", None),
    (b"\x00\x01\x02garbage\xff", None),
])
def test_parse_state_ini(data: bytes, expected: str | None) -> None:
    assert parse_state_ini(data) == expected


@settings(max_examples=100, deadline=None)
@given(state=st.sampled_from(sorted(IMAGE_STATES)),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be"]),
       quote=st.sampled_from(["", '"', "'"]), eol=st.sampled_from(["\n", "\r\n"]),
       pad=st.text(" \t", max_size=3), upper=st.booleans())
def test_state_ini_round_trip(state: str, encoding: str, quote: str, eol: str, pad: str, upper: bool) -> None:
    key = "IMAGESTATE" if upper else "ImageState"
    text = f"[State]{eol}{pad}{key}{pad}={pad}{quote}{state}{quote}{pad}{eol}[Other]{eol}X=1{eol}"
    value = parse_state_ini(text.encode(encoding))
    assert value is not None and normalize_image_state(value) == state


def test_decode_text_falls_back_to_latin1() -> None:
    assert decode_text(b"caf\xe9") == "caf\u00e9"


def test_image_state_classification() -> None:
    assert classify_image_state("IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE")[0] == GENERALIZED
    assert classify_image_state(' "image_state_complete" ')[0] == SPECIALIZED
    assert classify_image_state("IMAGE_STATE _UNDEPLOYABLE")[0] == IN_BETWEEN  # as Microsoft spells it
    for token in ("IMAGE_STATE_GENERALIZE_RESEAL_TO_AUDIT", "IMAGE_STATE_SPECIALIZE_RESEAL_TO_AUDIT",
                  "IMAGE_STATE_SPECIALIZE_RESEAL_TO_OOBE"):
        assert classify_image_state(token)[0] == IN_BETWEEN
    assert classify_image_state("IMAGE_STATE_SOMETHING_NEW")[0] == UNKNOWN


# --- verdicts over every variant --------------------------------------------------------------------

@pytest.mark.parametrize("variant", sorted(builder.VARIANTS))
def test_every_variant_verdict(trees: dict[str, Path], variant: str) -> None:
    report = inspect_windows(HostTree(trees[variant]))
    assert report is not None and report.family == "windows"
    assert report.state == builder.VARIANTS[variant].expected
    assert report.facts.hibernation_file is builder.VARIANTS[variant].hiberfil
    report.to_json()  # serialisable


def test_generalized_details(trees: dict[str, Path]) -> None:
    report = inspect_windows(HostTree(trees["generalized"]))
    assert report is not None
    assert (report.name, report.version, report.hostname) == (
        "Windows Server 2022 Datacenter", "10.0.20348.2227", "WIN-GOLDEN01")
    assert report.facts.build == 20348 and report.facts.edition_id == "ServerDatacenter"
    assert report.facts.display_version == "21H2" and report.facts.architecture == "AMD64"
    assert report.facts.sysprep_succeeded_tag is True and report.facts.undeployable is False
    assert evidence_for(report, "Setup\\State\\ImageState") == [
        ("IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE", GENERALIZED)]
    assert evidence_for(report, "State.ini") == [("IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE", GENERALIZED)]
    assert evidence_for(report, "SYSTEM\\Setup\\SetupType") == [("2", GENERALIZED)]
    assert evidence_for(report, "SYSTEM\\Setup\\CmdLine") == [("oobe\\windeploy.exe", GENERALIZED)]
    assert evidence_for(report, "SystemSetupInProgress") == [("1", GENERALIZED)]
    assert evidence_for(report, "GeneralizationState") == [("4", GENERALIZED)]
    assert evidence_for(report, "Sysprep_succeeded.tag") == [("present", "neutral")]
    assert evidence_for(report, "setupact.log")[0][1] == "neutral"
    assert not report.facts.hive_logs


def test_specialized_details_with_pending_logs(trees: dict[str, Path]) -> None:
    report = inspect_windows(HostTree(trees["specialized"]))
    assert report is not None and report.state == SPECIALIZED
    # ProductName says Windows 10, build 22631 is Windows 11; Select\Current = 2 picks ControlSet002.
    assert (report.name, report.version, report.hostname) == ("Windows 11 Pro", "10.0.22631.4317", "WEB01")
    assert report.facts.product_name == "Windows 10 Pro" and report.facts.control_set == "ControlSet002"
    assert report.facts.hibernation_file is True
    assert report.facts.hive_logs == ("/Windows/System32/config/SYSTEM.LOG1",)  # LOG2 is empty
    assert report.facts.hives_in_transaction == ("/Windows/System32/config/SYSTEM",)
    assert report.facts.hive_logs_pending == ("/Windows/System32/config/SYSTEM.LOG1",)
    assert evidence_for(report, "SYSTEM.LOG1") == [("1024 bytes", "neutral")]
    assert evidence_for(report, "/hiberfil.sys")[0][1] == "neutral"
    assert evidence_for(report, "State.ini") == [("IMAGE_STATE_COMPLETE", SPECIALIZED)]
    assert evidence_for(report, "SYSTEM\\Setup\\SetupType") == [("0", SPECIALIZED)]
    assert evidence_for(report, "GeneralizationState") == [("7", SPECIALIZED)]
    assert all(e.value != "DECOY" for e in report.evidence)


def test_log_next_to_a_clean_hive_is_not_pending(trees: dict[str, Path], tmp_path: Path) -> None:
    root = fresh_tree(trees, "generalized", tmp_path)
    config = root / "Windows/System32/config"
    (config / "SOFTWARE.LOG1").write_bytes(builder.log_file((config / "SOFTWARE").read_bytes(), 1))
    report = inspect_windows(HostTree(root))
    assert report is not None and report.state == GENERALIZED
    assert report.facts.hive_logs == ("/Windows/System32/config/SOFTWARE.LOG1",)
    assert not report.facts.hive_logs_pending and not report.facts.hives_in_transaction
    assert any("nothing is pending" in e.meaning for e in report.evidence)


def test_undeployable_mismatched_audit_and_missing_state_ini(trees: dict[str, Path]) -> None:
    undeployable = inspect_windows(HostTree(trees["undeployable"]))
    assert undeployable is not None and undeployable.facts.undeployable is True
    assert undeployable.facts.image_state_file == "IMAGE_STATE_UNDEPLOYABLE"  # UTF-16LE without BOM
    mismatched = inspect_windows(HostTree(trees["mismatched"]))
    assert mismatched is not None and mismatched.facts.image_state_mismatch is True
    assert any(e.points_to == IN_BETWEEN and "disagree" in e.meaning for e in mismatched.evidence)
    audit = inspect_windows(HostTree(trees["audit"]))
    assert audit is not None
    assert audit.facts.image_state_registry == "IMAGE_STATE_SPECIALIZE_RESEAL_TO_AUDIT"
    nostateini = inspect_windows(HostTree(trees["nostateini"]))
    assert nostateini is not None and nostateini.state == GENERALIZED
    assert evidence_for(nostateini, "State.ini") == [(None, "neutral")]


def test_no_image_state_anywhere_is_unknown(trees: dict[str, Path], tmp_path: Path) -> None:
    root = fresh_tree(trees, "nostateini", tmp_path)
    builder.make_hive(root / "Windows/System32/config/SOFTWARE", "SOFTWARE",
                      {r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft": {"x": 1}})
    report = inspect_windows(HostTree(root))
    assert report is not None and report.state == UNKNOWN
    assert evidence_for(report, "Setup\\State\\ImageState") == [(None, "neutral")]


def test_damaged_software_hive_still_reports_from_state_ini(trees: dict[str, Path], tmp_path: Path) -> None:
    root = fresh_tree(trees, "specialized", tmp_path)
    (root / "Windows/System32/config/SOFTWARE").write_bytes(b"regf" + bytes(100))
    report = inspect_windows(HostTree(root))
    assert report is not None and report.state == SPECIALIZED
    assert report.facts.unreadable_hives == ("/Windows/System32/config/SOFTWARE",)
    assert report.name is None and report.hostname == "WEB01"
    assert any("shorter than the 4096-byte base block" in e.meaning for e in report.evidence)


def test_unreadable_files_become_evidence(trees: dict[str, Path]) -> None:
    class FailingTree(HostTree):
        def read_file(self, path: str, limit: int = 16 * 1024 * 1024) -> bytes | None:
            if path.endswith("State.ini"):
                raise ImageError("disk.vhd", "NTFS data run", 123456, "cluster out of range")
            return super().read_file(path, limit)

    report = inspect_windows(FailingTree(trees["generalized"]))
    assert report is not None and report.state == GENERALIZED  # registry alone
    assert any("cluster out of range" in e.meaning for e in report.evidence)


def test_not_windows(tmp_path: Path) -> None:
    assert inspect_windows(HostTree(tmp_path)) is None
    (tmp_path / "Windows" / "System32").mkdir(parents=True)  # a folder named Windows is not enough
    (tmp_path / "Windows" / "System32" / "notes.txt").write_text("hi")
    assert inspect_windows(HostTree(tmp_path)) is None


def test_without_registry_reader_state_is_unknown(trees: dict[str, Path],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """With dissect.regf not importable (the extra not installed) the report says what to install."""
    monkeypatch.setitem(sys.modules, "dissect.regf", None)
    report = inspect_windows(HostTree(trees["generalized"]))
    assert report is not None and report.state == UNKNOWN
    assert any("pip install vhdtool[inspect]" in e.meaning for e in report.evidence)
    assert report.facts.image_state_file == "IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE"
    path = trees["generalized"] / "Windows/System32/config/SYSTEM"
    with pytest.raises(VhdtoolError, match="pip install vhdtool"):
        Hive(path.read_bytes(), str(path))
