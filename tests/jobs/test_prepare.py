"""``vhdtool prepare`` end to end on the shipped sample set and on raw images made here.

Oracles: hashlib over the output files (the manifest's digests must be the files' digests),
``qemu-img compare`` (our fixed VHD holds the source's bytes), libvhdi (reads the footer we wrote).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from support.cli import run_cli
from support.oracles import reference_sparse_digest

from vhdtool import __version__
from vhdtool.azure.container import parse_destination
from vhdtool.errors import ImageError, UsageError
from vhdtool.extents import MiB
from vhdtool.inspect.architecture import guess_architecture
from vhdtool.inspect.os_facts import LinuxFacts, OsFacts, WindowsFacts
from vhdtool.jobs.manifest import SCHEMA
from vhdtool.jobs.manifest_file import read_manifest
from vhdtool.jobs.prepare import (
    ChecksFailedError,
    PrepareRequest,
    prepare,
)
from vhdtool.stream.progress import ProgressTally

pytestmark = pytest.mark.slow  # left out of scripts/test.sh --fast

DAY = date(2026, 11, 23)
ROOT = Path(__file__).resolve().parents[2]


def digests(path: Path) -> tuple[str, str]:
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def qemu_same_content(out: Path, src: Path, src_fmt: str) -> None:
    """``qemu-img compare``: the fixed VHD (sized by its current size, as Azure does) holds the source."""
    proc = subprocess.run(["qemu-img", "compare", "--image-opts",
                           f"driver=vpc,force_size_calc=current_size,file.filename={out}",
                           f"driver={src_fmt},file.filename={src}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_sample_set_end_to_end(sample: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    progress = ProgressTally()
    now = datetime(2026, 11, 23, 18, 30, 5, tzinfo=timezone.utc)
    result = prepare(PrepareRequest("sample", str(sample["os"]), ((0, str(sample["data"])),), str(out),
                                    expect="generalized"), progress=progress, now=now)
    assert sorted(p.name for p in out.iterdir()) == [
        "sample-datadisk-0-2026-11-23.vhd", "sample-os-2026-11-23.vhd", "sample.manifest.json"]
    assert result.manifest_path == str(out / "sample.manifest.json")
    data = json.loads((out / "sample.manifest.json").read_text())
    assert data["schema"] == SCHEMA and data["name"] == "sample"
    assert data["vhdtool_version"] == __version__ and data["created"] == "2026-11-23T18:30:05Z"
    assert data["expect"] == "generalized" and data["forced"] is False and data["destination"] is None
    assert data["gallery_image_definition"] == {"os_type": "Linux", "os_state": "Generalized",
                                                "hyper_v_generation": "V2", "architecture": "x64"}
    os_disk, data_disk = data["disks"]
    assert (os_disk["role"], os_disk["lun"], os_disk["name"]) == ("os", None, "sample-os-2026-11-23")
    assert (data_disk["role"], data_disk["lun"]) == ("data", 0)
    assert os_disk["source"] == {"path": str(sample["os"]), "format": "vhdx", "type": "dynamic",
                                 "virtual_size": 128 * MiB, "file_size": sample["os"].stat().st_size}
    assert data_disk["source"]["format"] == "vhd" and data_disk["source"]["type"] == "dynamic"
    assert os_disk["os"] == {"family": "linux", "name": "Debian GNU/Linux 12 (bookworm)", "version": "12",
                             "state": "generalized"}
    assert data_disk["os"] is None and data_disk["hyper_v_generation"] is None
    assert os_disk["billing_tier"]["premium_ssd"] == "P1" and os_disk["billing_tier"]["standard_hdd"] == "S4"
    assert not [f for f in os_disk["findings"] if f["severity"] == "error"]
    assert {f["id"] for f in os_disk["findings"]} >= {"billing-tier"}
    for disk, src, fmt in ((os_disk, sample["os"], "vhdx"), (data_disk, sample["data"], "vpc")):
        path = out / disk["fixed_vhd"]["path"]
        assert path.name == disk["name"] + ".vhd"
        # The sparse digest was computed in the conversion pass; the reference script must agree.
        assert disk["fixed_vhd"]["sparse_sha256"] == reference_sparse_digest(path)
        assert disk["fixed_vhd"]["md5"] is None and disk["fixed_vhd"]["sha256"] is None  # not asked for
        assert disk["fixed_vhd"]["file_size"] == path.stat().st_size
        assert path.stat().st_size == disk["fixed_vhd"]["virtual_size"] + 512
        assert disk["fixed_vhd"]["virtual_size"] == disk["source"]["virtual_size"]
        qemu_same_content(path, src, fmt)
    # Progress covered the whole set once (no upload): the total is both files' sizes, each step named.
    total = sum(d["fixed_vhd"]["file_size"] for d in data["disks"])
    assert progress.done == total
    assert progress.stages == [("check OS disk", total), ("check data disk LUN 0", total),
                               ("convert OS disk", total), ("convert data disk LUN 0", total)]
    assert 0 < progress.data_bytes < total  # the empty space of the disks was skipped, not read
    assert read_manifest(out / "sample.manifest.json") == result.manifest


def test_libvhdi_reads_the_outputs(sample: dict[str, Path], tmp_path: Path) -> None:
    import pyvhdi

    result = prepare(PrepareRequest("img", str(sample["os"]), (), str(tmp_path / "o"), day=DAY))
    record = result.manifest.disks[0]
    handle = pyvhdi.file()
    handle.open(str(tmp_path / "o" / str(record.fixed_vhd.path)))
    try:
        assert handle.get_media_size() == record.fixed_vhd.virtual_size
        assert handle.get_disk_type() == 2  # fixed
    finally:
        handle.close()


def test_raw_images_and_several_data_disks(sample: dict[str, Path], tmp_path: Path) -> None:
    os_raw = tmp_path / "os.raw"
    subprocess.run(["qemu-img", "convert", "-f", "vhdx", "-O", "raw", str(sample["os"]), str(os_raw)],
                   check=True)
    # A raw data disk that is not a whole number of MiB: the fixed VHD pads it.
    odd = tmp_path / "odd.raw"
    with open(odd, "wb") as f:
        f.truncate(21 * MiB + 4096)
        f.seek(5 * MiB)
        f.write(b"payload" * 1000)
    result = prepare(PrepareRequest("mix", str(os_raw), ((3, str(odd)), (1, str(sample["data"]))),
                                    str(tmp_path / "o"), day=DAY, hashes=("md5", "sha256")))
    disks = result.manifest.disks
    assert [(d.role, d.lun, d.name) for d in disks] == [
        ("os", None, "mix-os-2026-11-23"), ("data", 1, "mix-datadisk-1-2026-11-23"),
        ("data", 3, "mix-datadisk-3-2026-11-23")]
    padded = disks[2]
    assert padded.source.virtual_size == 21 * MiB + 4096 and padded.fixed_vhd.virtual_size == 22 * MiB
    out = tmp_path / "o" / str(padded.fixed_vhd.path)
    assert digests(out) == (padded.fixed_vhd.md5, padded.fixed_vhd.sha256)  # asked for with hashes
    assert padded.fixed_vhd.sparse_sha256 == reference_sparse_digest(out)
    with open(out, "rb") as f:
        assert f.read(21 * MiB + 4096) == odd.read_bytes()
        assert f.read(MiB - 4096) == bytes(MiB - 4096)
    assert disks[0].os is not None and disks[0].os.state == "generalized"
    assert disks[0].source.format == "raw"


def test_name_collision_adds_a_counter_and_keeps_the_first_set(sample: dict[str, Path],
                                                                tmp_path: Path) -> None:
    out = tmp_path / "o"
    request = PrepareRequest("twice", str(sample["os"]), ((0, str(sample["data"])),), str(out), day=DAY)
    first = prepare(request)
    before = {p.name: digests(p) for p in out.glob("*.vhd")}
    second = prepare(request)
    assert [d.name for d in second.manifest.disks] == ["twice-os-2026-11-23-01",
                                                       "twice-datadisk-0-2026-11-23-01"]
    assert Path(second.manifest_path).name == "twice-2026-11-23-01.manifest.json"
    assert {p.name: digests(p) for p in out.glob("*.vhd") if p.name in before} == before
    assert read_manifest(first.manifest_path) == first.manifest
    # Only the data disk's name is taken: the whole set still moves to the next counter together.
    (out / "twice-os-2026-11-23-02.vhd").write_bytes(b"")
    third = prepare(request)
    assert [d.name for d in third.manifest.disks] == ["twice-os-2026-11-23-03",
                                                      "twice-datadisk-0-2026-11-23-03"]


def test_check_error_stops_before_writing_and_force_goes_on(sample: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "o"
    request = PrepareRequest("spec", str(sample["os"]), ((0, str(sample["data"])),), str(out),
                             expect="specialized", day=DAY)
    with pytest.raises(ChecksFailedError) as info:
        prepare(request)
    assert "os-state" in str(info.value)
    assert not out.exists()
    forced = prepare(PrepareRequest(**{**request.__dict__, "force": True}))
    assert forced.manifest.forced is True
    errors = [f for f in forced.manifest.disks[0].findings if f.severity == "error"]
    assert [f.rule for f in errors] == ["os-state"]
    # The gallery fields say what the OS is, not what was wanted.
    assert forced.manifest.gallery_image_definition.os_state == "Generalized"


def test_os_disk_without_an_os_is_recorded_as_unknown(sample: dict[str, Path], tmp_path: Path) -> None:
    result = prepare(PrepareRequest("nope", str(sample["data"]), (), str(tmp_path / "o"), day=DAY))
    disk = result.manifest.disks[0]
    assert disk.os is not None and (disk.os.family, disk.os.state) == (None, "unknown")
    assert ("os-found", "warning") in {(f.rule, f.severity) for f in disk.findings}
    g = result.manifest.gallery_image_definition
    assert (g.os_type, g.os_state, g.hyper_v_generation) == (None, None, None)


def test_cli_prepare_and_verify(sample: dict[str, Path], tmp_path: Path) -> None:
    proc = run_cli("prepare", "--name", "cli", "--os", str(sample["os"]), "--data", f"0={sample['data']}",
                   "-o", str(tmp_path / "o"), "--expect", "generalized")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["DISK", "NAME", "SOURCE"]
    assert lines[1].split()[0] == "os" and "linux generalized" in lines[1]
    assert lines[2].startswith("data 0")
    assert "Hyper-V generation V2, architecture x64" in proc.stdout
    assert "convert  OS disk" in proc.stderr
    manifests = list((tmp_path / "o").glob("*.manifest.json"))
    assert [m.name for m in manifests] == ["cli.manifest.json"]
    ok = run_cli("verify", str(manifests[0]))
    assert ok.returncode == 0 and ok.stdout.strip().endswith("no drift"), ok.stdout + ok.stderr
    # One changed byte in the data disk's VHD is drift; the OS disk stays OK.
    data_vhd = next((tmp_path / "o").glob("cli-datadisk-0-*.vhd"))
    with open(data_vhd, "r+b") as f:
        f.seek(3 * MiB + 7)
        byte = f.read(1)
        f.seek(3 * MiB + 7)
        f.write(bytes([byte[0] ^ 0xFF]))
    bad = run_cli("verify", "--json", str(manifests[0]))
    assert bad.returncode == 1
    verdicts = json.loads(bad.stdout)
    assert verdicts["ok"] is False
    assert [d["status"] for d in verdicts["disks"]] == ["ok", "drift"]
    assert any("sparse digest" in p for p in verdicts["disks"][1]["problems"])
    assert verdicts["disks"][1]["compared"] == ["sparse-sha256"]
    data_vhd.unlink()
    gone = run_cli("verify", str(manifests[0]))
    assert gone.returncode == 1 and "MISSING" in gone.stdout


def test_cli_check_failure_is_one_line_and_exit_1(sample: dict[str, Path], tmp_path: Path) -> None:
    proc = run_cli("prepare", "--name", "x", "--os", str(sample["os"]), "-o", str(tmp_path / "o"),
                   "--expect", "specialized")
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("vhdtool: error:")]
    assert len(errors) == 1 and "--force" in errors[0]
    assert "error   OS disk: [os-state]" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o" / "x.manifest.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--data", "zero=d.vhd"], "LUN=IMAGE"),
    (["--data", "64=d.vhd"], "LUN 64"),
    (["--data", "1=a.vhd", "--data", "1=b.vhd"], "own LUN"),
    (["--no-local-copy"], "--upload"),
    (["--upload", "Bad_Container"], "container"),
    (["--upload", "images"], "--connection-string"),
])
def test_cli_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "os.raw").write_bytes(bytes(1024))
    proc = run_cli("prepare", "--name", "u", "--os", str(tmp_path / "os.raw"), "-o", str(tmp_path / "o"),
                   *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_bad_name_is_refused() -> None:
    with pytest.raises(UsageError, match="image name"):
        prepare(PrepareRequest("bad name", "x", (), "."))


def _linux_facts(kernel: str) -> LinuxFacts:
    return LinuxFacts(os_release={}, waagent_installed=True, waagent_enabled=True, cloud_init_installed=False,
                      cloud_init_enabled=False, waagent_conf={}, fstab_swap=(),
                      hyperv_drivers={"hv_vmbus": [kernel], "hv_netvsc": []}, kernel_cmdline=None,
                      machine_id_set=False)


@pytest.mark.parametrize("facts, boot, expected", [
    (WindowsFacts(architecture="AMD64"), [], "x64"),
    (WindowsFacts(architecture="ARM64"), [], "Arm64"),
    (_linux_facts("6.1.0-28-cloud-arm64"), [], "Arm64"),
    (_linux_facts("5.14.0-362.el9.x86_64"), [], "x64"),
    (None, ["EFI System Partition with /EFI/BOOT/BOOTAA64.EFI"], "Arm64"),
    (WindowsFacts(), ["MBR with boot code"], None),
    (WindowsFacts(architecture="AMD64"), ["/EFI/BOOT/BOOTAA64.EFI"], None),  # contradicting evidence: unknown
])
def test_guess_architecture(facts: OsFacts | None, boot: list[str], expected: str | None) -> None:
    assert guess_architecture(facts, boot) == expected


def test_cli_json_prints_the_manifest(sample: dict[str, Path], tmp_path: Path) -> None:
    proc = run_cli("prepare", "--name", "js", "--os", str(sample["os"]), "-o", str(tmp_path / "o"), "--json")
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert printed == json.loads((tmp_path / "o" / "js.manifest.json").read_text())
    assert proc.stderr == ""  # --json: no progress lines, no findings chatter


def test_destinations_keep_tokens_out_of_the_record() -> None:
    pytest.importorskip("azure.storage.blob")
    sas = parse_destination("https://acct.blob.core.windows.net/images/?sv=2022-11-02&sig=S3CR%2FT")
    assert sas.for_blob("a-os-2026-11-23.vhd").url == (
        "https://acct.blob.core.windows.net/images/a-os-2026-11-23.vhd?sv=2022-11-02&sig=S3CR%2FT")
    assert sas.describe() == "https://acct.blob.core.windows.net/images"
    cs = parse_destination("images", connection_string="DefaultEndpointsProtocol=https;AccountName=acct;"
                                                       "AccountKey=S3CRET==;EndpointSuffix=core.windows.net")
    assert cs.describe() == "https://acct.blob.core.windows.net/images"
    assert cs.for_blob("b.vhd").container == "images" and cs.for_blob("b.vhd").blob == "b.vhd"
    aad = parse_destination("images", account_url="https://acct.blob.core.windows.net")
    assert aad.describe() == "https://acct.blob.core.windows.net/images"
    with pytest.raises(UsageError, match="connection-string"):
        parse_destination("images")
    with pytest.raises(UsageError, match="no container"):
        parse_destination("https://acct.blob.core.windows.net/?sig=x")


def test_a_failing_disk_leaves_no_half_set(sample: dict[str, Path], tmp_path: Path) -> None:
    """A data disk that shrinks after it was checked fails its conversion: the OS disk's VHD written
    earlier in the run is removed and no manifest appears; files of earlier runs stay."""
    out = tmp_path / "o"
    out.mkdir()
    (out / "other.vhd").write_bytes(b"kept")
    data = sample["data"]  # a dynamic VHD: its block table was read when it was opened

    class ShrinkWhenItsTurnComes(ProgressTally):
        def stage(self, name: str, total: int) -> None:
            if name == "convert data disk LUN 0":
                os.truncate(data, 64 * 1024)

    with pytest.raises(ImageError, match="end of file|truncated"):
        prepare(PrepareRequest("half", str(sample["os"]), ((0, str(data)),), str(out), day=DAY),
                progress=ShrinkWhenItsTurnComes())
    assert sorted(p.name for p in out.iterdir()) == ["other.vhd"]


@pytest.mark.parametrize("sync", [False, True])
def test_prepare_waits_for_the_disk_only_with_sync(sample: dict[str, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch, sync: bool) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    prepare(PrepareRequest("s", str(sample["data"]), (), str(tmp_path / "o"), day=DAY, force=True, sync=sync))
    # With sync: the VHD before its rename, its folder after, and the manifest.
    assert len(synced) == (3 if sync else 0)
