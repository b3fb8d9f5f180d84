"""Linux images made by real tools: OS, state, evidence, generation, through ``inspect_disk`` and the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.cli import run_cli
from support.linux_images import ImageCache, shared_cache

from vhdtool.formats.open import open_image
from vhdtool.inspect.linux import parse_keyvalue, verdict
from vhdtool.inspect.model import GENERALIZED, IN_BETWEEN, SPECIALIZED, UNKNOWN, Evidence
from vhdtool.inspect.report import DiskReport, inspect_disk

pytestmark = pytest.mark.slow  # left out of scripts/test.sh --fast


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> ImageCache:
    return shared_cache(tmp_path_factory)


def inspect(path: Path) -> DiskReport:
    with open_image(path) as disk:
        return inspect_disk(disk)


@pytest.mark.parametrize("state", [GENERALIZED, SPECIALIZED, IN_BETWEEN])
def test_state_of_gpt_ext4(images: ImageCache, state: str) -> None:
    report = inspect(images.get("gpt-ext4", state))
    assert report.os is not None
    assert (report.os.family, report.os.name, report.os.version) == (
        "linux",
        "Debian GNU/Linux 12 (bookworm)",
        "12",
    )
    assert report.os.state == state
    assert report.os.hostname == ("localhost.localdomain" if state == GENERALIZED else "prod-web-01")
    assert report.os_volume is not None and report.os_volume.partition.number == 2
    assert report.generation.supported == ("V2",)
    assert report.unclean == [] and report.warnings == []


def test_specialized_evidence_names_each_marker(images: ImageCache) -> None:
    report = inspect(images.get("gpt-ext4", SPECIALIZED))
    assert report.os is not None
    by_source = {e.source: e for e in report.os.evidence}
    assert by_source["/var/lib/waagent"].value == "GoalState.1.xml, ovf-env.xml, provisioned"
    assert by_source["/var/lib/cloud"].value == "instance -> /var/lib/cloud/instances/i-1234, instances/"
    assert by_source["/etc/machine-id"].points_to == "neutral"
    assert by_source["/etc/shadow (root)"].points_to == SPECIALIZED  # waagent.conf: DeleteRootPassword=y
    assert by_source["/etc/ssh/ssh_host_*_key"].points_to == SPECIALIZED  # RegenerateSshHostKeyPair=y
    assert "/var/lib/dhcp/dhclient.eth0.leases" in by_source
    assert report.os.facts.hyperv_drivers == {
        d: ["6.1.0-28-cloud-amd64"] for d in ("hv_vmbus", "hv_storvsc", "hv_netvsc")
    }


def test_in_between_says_which_markers_disagree(images: ImageCache) -> None:
    report = inspect(images.get("gpt-ext4", IN_BETWEEN))
    assert report.os is not None
    specialized = {e.source for e in report.os.evidence if e.points_to == SPECIALIZED}
    assert specialized == {"/root/.bash_history"}


def test_mbr_is_generation_1(images: ImageCache) -> None:
    report = inspect(images.get("mbr-ext4", GENERALIZED))
    assert report.table.scheme == "mbr" and report.generation.value == "V1"
    assert report.os is not None and report.os.state == GENERALIZED


def test_xfs_root(images: ImageCache) -> None:
    report = inspect(images.get("gpt-xfs", SPECIALIZED))
    assert report.os is not None and report.os.state == SPECIALIZED
    assert report.os_volume is not None and report.os_volume.info.kind == "xfs"
    assert report.os_volume.info.details["log"] == "clean"


def test_separate_var_is_mounted_by_fstab(images: ImageCache) -> None:
    report = inspect(images.get("gpt-split", SPECIALIZED))
    assert report.os is not None and report.os.state == SPECIALIZED
    sources = {e.source for e in report.os.evidence if e.points_to == SPECIALIZED}
    assert {"/var/lib/waagent", "/var/lib/cloud", "/var/log/waagent.log"} <= sources


def test_bare_filesystem_without_table(images: ImageCache) -> None:
    report = inspect(images.get("bare-ext4", GENERALIZED))
    assert report.table.scheme == "none" and report.generation.value == "none"
    assert report.os is not None and report.os.state == GENERALIZED


def test_luks_volume_is_named_encrypted(images: ImageCache) -> None:
    report = inspect(images.get("luks", GENERALIZED))
    assert [(v.partition.type_name, v.info.kind) for v in report.encrypted_volumes] == [
        ("Linux LUKS", "luks")
    ]
    assert report.os is None


def test_swap_partition_and_fstab_line(images: ImageCache) -> None:
    report = inspect(images.get("gpt-swap", GENERALIZED))
    assert [v.info.kind for v in report.volumes] == ["fat", "ext4", "swap"]
    assert report.os is not None and report.os.facts.fstab_swap == ("/dev/sda3 none swap sw 0 0",)


def test_missing_drivers_are_reported(images: ImageCache) -> None:
    report = inspect(images.get("gpt-ext4", "nodrivers"))
    assert report.os is not None
    assert report.os.facts.hyperv_drivers == {"hv_vmbus": [], "hv_storvsc": [], "hv_netvsc": []}


# Every Linux fixture layout, in a state other tests build anyway (the session cache shares the images).
EVERY_FIXTURE = [
    ("gpt-ext4", GENERALIZED),
    ("gpt-ext4", SPECIALIZED),
    ("gpt-ext4", IN_BETWEEN),
    ("gpt-ext4", "nodrivers"),
    ("gpt-ext4", "boot-traps"),
    ("mbr-ext4", GENERALIZED),
    ("gpt-xfs", IN_BETWEEN),
    ("gpt-split", SPECIALIZED),
    ("bare-ext4", GENERALIZED),
    ("luks", GENERALIZED),
    ("gpt-swap", GENERALIZED),
    ("gpt-lvm", SPECIALIZED),
    ("bare-btrfs", IN_BETWEEN),
]


def _check_findings(path: Path) -> list[tuple[str, str, str]]:
    from vhdtool.readiness.rules import evaluate
    from vhdtool.readiness.subject import open_for_check

    with open_for_check(str(path)) as subject:
        assert subject.disk is not None
        facts = subject.facts(inspect_disk(subject.disk), expect=GENERALIZED)
    found = [(x.rule, x.severity, x.message) for r in evaluate(facts) for x in r.findings]
    return [x for x in found if x[0] != "format-fixed-vhd"]


@pytest.mark.parametrize("container", ["vhdx", "dynamic", "fixed"])
@pytest.mark.parametrize(("layout", "state"), EVERY_FIXTURE)
def test_verdict_does_not_depend_on_the_container(
    images: ImageCache,
    container: str,
    layout: str,
    state: str,
) -> None:
    """Each fixture converted by qemu-img: the same inspection and the same check findings as the raw image."""
    if layout == "bare-btrfs" and shutil.which("mkfs.btrfs") is None:
        pytest.skip("mkfs.btrfs missing (btrfs-progs, scripts/setup.sh --test)")
    raw_path, other_path = images.get(layout, state), images.get(layout, state, container)
    raw, other = inspect(raw_path), inspect(other_path)
    assert other.format == ("vhdx" if container == "vhdx" else "vhd")
    assert (other.os is None) == (layout == "luks") and (raw.os is None) == (layout == "luks")
    assert (other.os and other.os.to_json()) == (raw.os and raw.os.to_json())
    assert other.generation == raw.generation
    assert [v.to_json() for v in other.volumes] == [v.to_json() for v in raw.volumes]
    assert (other.unclean, other.warnings) == (raw.unclean, raw.warnings)
    assert _check_findings(other_path) == _check_findings(raw_path)


def test_cli_inspect_json(images: ImageCache) -> None:
    path = images.get("gpt-ext4", SPECIALIZED)
    proc = run_cli("inspect", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["os"]["state"] == SPECIALIZED and doc["os"]["family"] == "linux"
    assert doc["generation"]["value"] == "V2" and doc["os_partition"] == 2
    assert doc["partition_table"]["scheme"] == "gpt"
    assert [v["filesystem"]["kind"] for v in doc["volumes"]] == ["fat", "ext4"]
    human = run_cli("inspect", str(path))
    assert human.returncode == 0 and "state       specialized" in human.stdout


def test_cli_inspect_unsupported_image_is_one_line(tmp_path: Path) -> None:
    qcow = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow), "64M"], check=True)
    proc = run_cli("inspect", str(qcow))
    assert proc.returncode == 1
    assert proc.stderr.startswith("vhdtool: error:") and proc.stderr.count("\n") == 1


def test_verdict_and_keyvalue_units() -> None:
    def ev(points: str) -> Evidence:
        return Evidence("/x", None, "m", points)

    assert verdict([]) == UNKNOWN
    assert verdict([ev("neutral")]) == UNKNOWN
    assert verdict([ev(GENERALIZED), ev("neutral")]) == GENERALIZED
    assert verdict([ev(SPECIALIZED)]) == SPECIALIZED
    assert verdict([ev(GENERALIZED), ev(SPECIALIZED)]) == IN_BETWEEN
    conf = parse_keyvalue("# c\nA=1\nB=\"two words\"\nC='q'\nProvisioning.X=y # trailing\nnoequals\n")
    assert conf == {"A": "1", "B": "two words", "C": "q", "Provisioning.X": "y"}


BLOCK_DISSECT = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "dissect" or name.startswith("dissect."):
            raise ImportError("blocked for the test: " + name)
        return None
sys.meta_path.insert(0, Block())
from vhdtool.cli import run
run(sys.argv[1:])
"""


def test_without_the_optional_readers(images: ImageCache) -> None:
    """The core works without dissect: table, signatures, encryption; a warning names the extra."""
    path = images.get("gpt-ext4", SPECIALIZED)
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_DISSECT, "inspect", str(path), "--json"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["os"] is None and [v["filesystem"]["kind"] for v in doc["volumes"]] == ["fat", "ext4"]
    assert any("vhdtool[inspect]" in w for w in doc["warnings"])
    assert doc["missing_readers"] == ["fat", "ext4"]
    assert doc["generation"]["value"] == "V2"  # the ESP is present even if its files cannot be read
    # check: the OS rules cannot run, and says so; an expected state cannot be confirmed.
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_DISSECT, "check", str(path), "--json", "--expect", "specialized"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr
    findings = {x["id"]: x for x in json.loads(proc.stdout)["findings"]}
    assert findings["os-state"]["severity"] == "error" and "vhdtool[inspect]" in findings["os-state"]["message"]
    assert findings["os-found"]["severity"] == "warning" and "not looked for" in findings["os-found"]["message"]


def test_btrfs_root(images: ImageCache) -> None:
    if shutil.which("mkfs.btrfs") is None:
        pytest.skip("mkfs.btrfs missing (btrfs-progs, scripts/setup.sh --test)")
    report = inspect(images.get("bare-btrfs", IN_BETWEEN))
    assert [(v.info.kind, v.info.label) for v in report.volumes] == [("btrfs", "root")]
    assert report.os is not None and report.os.state == IN_BETWEEN
    assert report.os.facts.hyperv_drivers["hv_vmbus"] == ["6.1.0-28-cloud-amd64"]  # via /lib -> usr/lib


@pytest.mark.parametrize("seed", range(6))
def test_damaged_root_filesystem_never_crashes(images: ImageCache, tmp_path: Path, seed: int) -> None:
    """Random garbage over metadata of the root filesystem: a report (maybe with less in it), no traceback."""
    import random

    src = images.get("gpt-ext4", SPECIALIZED)
    path = tmp_path / "damaged.img"
    subprocess.run(["cp", "--sparse=always", str(src), str(path)], check=True)
    rng = random.Random(seed)
    root_at = 33 * (1 << 20)
    with open(path, "r+b") as f:
        for _ in range(8):  # superblock copies, group descriptors, inode tables, directories
            f.seek(root_at + rng.randrange(0, 4 << 20, 512))
            f.write(rng.randbytes(rng.choice([512, 4096, 65536])))
    report = inspect(path)
    assert report.table.scheme == "gpt"
    if report.os is not None:
        assert report.os.state in (GENERALIZED, SPECIALIZED, IN_BETWEEN, UNKNOWN)
