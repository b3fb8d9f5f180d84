"""The Linux boot rules of ``check`` on images made by real tools, through every container format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support.cli import run_cli
from support.linux_images import ImageCache, make_linux, shared_cache

from vhdtool.inspect.linux_readiness import fstab_entries, netplan_interfaces, source_kind
from vhdtool.inspect.model import GENERALIZED
from vhdtool.inspect.report import inspect_disk
from vhdtool.readiness.rules import ERROR, INFO, WARNING, evaluate
from vhdtool.readiness.subject import open_for_check

pytestmark = pytest.mark.skipif(shutil.which("cpio") is None or shutil.which("zstd") is None,
                                reason="cpio / zstd missing (scripts/setup.sh --test)")
NEW_RULES = ("linux-fstab-device-names", "linux-fstab-nofail", "linux-fstab-unresolved", "linux-initramfs",
             "linux-network-config", "linux-provisioning-conflict")
CONTAINERS = ["raw", "vhdx", "dynamic", "fixed"]


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> ImageCache:
    return shared_cache(tmp_path_factory)


def findings(path: Path) -> list[tuple[str, str, str]]:
    with open_for_check(str(path)) as subject:
        assert subject.disk is not None
        facts = subject.facts(inspect_disk(subject.disk), expect=GENERALIZED)
    return [(x.rule, x.severity, x.message) for r in evaluate(facts) for x in r.findings if x.rule in NEW_RULES]


@pytest.mark.parametrize("container", CONTAINERS)
def test_every_trap_fires_and_a_prepared_image_passes(images: ImageCache, container: str) -> None:
    got = findings(images.get("gpt-ext4", "boot-traps", container))
    by_rule: dict[str, list[tuple[str, str]]] = {}
    for rule, severity, message in got:
        by_rule.setdefault(rule, []).append((severity, message))
    severities = {rule: sorted(s for s, _ in items) for rule, items in by_rule.items()}
    assert severities == {
        "linux-fstab-device-names": [ERROR, WARNING, WARNING],  # / by /dev/sda2; /logs, the mount unit
        "linux-fstab-nofail": [WARNING, WARNING],  # /data (UUID of another disk), /srv/backup (unit)
        "linux-fstab-unresolved": [ERROR, INFO],  # /boot/efi points at nothing; /data is another disk
        "linux-initramfs": [ERROR],
        "linux-network-config": [WARNING, WARNING],  # 70-persistent-net.rules, netplan static eth0
        "linux-provisioning-conflict": [WARNING, WARNING],  # both provision; both set up the resource disk
    }
    initramfs = by_rule["linux-initramfs"][0][1]
    assert "lacks hv_storvsc, hv_vmbus although hv_storvsc, hv_vmbus exist in /lib/modules" in initramfs
    assert "cpio, zstd+cpio" in initramfs
    assert any("/dev/sda2 on /" in m for _, m in by_rule["linux-fstab-device-names"])
    assert any("/etc/systemd/system/srv-backup.mount" in m for _, m in by_rule["linux-fstab-nofail"])
    assert findings(images.get("gpt-ext4", GENERALIZED, container)) == []


@pytest.mark.parametrize(("layout", "state"), [("gpt-split", "specialized"), ("gpt-lvm", "specialized"),
                                               ("gpt-xfs", "in-between"), ("mbr-ext4", GENERALIZED)])
def test_other_layouts_resolve_their_mounts(images: ImageCache, layout: str, state: str) -> None:
    """/var on its own partition, the root on an LVM logical volume, XFS, MBR: every mount is found."""
    assert findings(images.get(layout, state)) == []
    with open_for_check(str(images.get(layout, state))) as subject:
        assert subject.disk is not None
        report = inspect_disk(subject.disk)
    assert report.os is not None and report.os.linux is not None
    assert all(m.target for m in report.os.linux.mounts)
    boot = report.os.linux.boot
    assert boot is not None and boot.initramfs is not None and {"hv_storvsc", "hv_vmbus"} <= set(boot.initramfs.found)


@pytest.mark.parametrize(("boot_layout", "compression"), [
    ("initramfs-tools", "gzip"), ("initramfs-tools", "lz4"), ("dracut", "xz"), ("dracut", "zstd"),
    ("mkinitcpio", "zstd"), ("mkinitcpio", "gzip"),
])
@pytest.mark.parametrize("drivers", [True, False])
def test_initramfs_layouts_and_compressors(tmp_path: Path, boot_layout: str, compression: str, drivers: bool) -> None:
    if shutil.which({"lz4": "lz4", "xz": "xz", "gzip": "gzip", "zstd": "zstd"}[compression]) is None:
        pytest.skip(f"{compression} missing")
    path = make_linux.build_boot_variant(tmp_path / "boot.img", boot_layout, compression, drivers)
    got = [(r, s) for r, s, _ in findings(path) if r == "linux-initramfs"]
    assert got == ([] if drivers else [("linux-initramfs", ERROR)])
    with open_for_check(str(path)) as subject:
        assert subject.disk is not None
        report = inspect_disk(subject.disk)
    assert report.os is not None and report.os.linux is not None and report.os.linux.boot is not None
    boot = report.os.linux.boot
    expected_name = "linux" if boot_layout == "mkinitcpio" else make_linux.KERNEL
    assert boot.name == expected_name and boot.modules_dir == f"/usr/lib/modules/{make_linux.KERNEL}" \
        or boot.modules_dir == f"/lib/modules/{make_linux.KERNEL}"
    assert boot.initramfs is not None and boot.initramfs.formats[-1] == f"{compression}+cpio".replace(
        "lz4+", "lz4-legacy+")
    if boot_layout == "dracut":
        assert "saved_entry" in boot.chosen_by  # not the newer 9.99 kernel lying next to it


def test_inspect_json_shows_the_typed_facts(images: ImageCache) -> None:
    proc = run_cli("inspect", str(images.get("gpt-ext4", "boot-traps")), "--json")
    assert proc.returncode == 0, proc.stderr
    linux = json.loads(proc.stdout)["os"]["linux"]
    assert {m["mount_point"]: m["kind"] for m in linux["mounts"]}["/"] == "kernel-name"
    assert linux["boot"]["initramfs"]["found"] == [] and linux["boot"]["modules"] == ["hv_vmbus", "hv_storvsc",
                                                                                      "hv_netvsc"]
    assert linux["network"]["static_addresses"][0]["address"] == "10.20.30.40/24"
    assert linux["provisioning"]["provisioning_agent"] == "waagent"


def test_fstab_and_netplan_parsing() -> None:
    entries = fstab_entries(
        "UUID=a / ext4 defaults 0 1\n# comment\n/dev/sdb1 /data xfs nofail\nLABEL=my\\040data /d ext4\n"
        "/dev/vg0/swap none swap sw\ntmpfs /tmp tmpfs defaults\nsrv:/x /n nfs defaults\n/dev/xvdf /x ext4\n"
    )
    assert [(e.source, e.kind, e.nofail) for e in entries] == [
        ("UUID=a", "tag", False), ("/dev/sdb1", "kernel-name", True), ("LABEL=my data", "tag", False),
        ("tmpfs", "pseudo", False), ("srv:/x", "network", False), ("/dev/xvdf", "kernel-name", False)]
    assert source_kind("/dev/mapper/rhel-root", "xfs", ()) == "lvm"
    assert source_kind("/dev/disk/by-uuid/abc", "ext4", ()) == "tag"
    assert source_kind("/srv", "none", ("bind",)) == "pseudo"
    plan = netplan_interfaces("network:\n  ethernets:\n    eth0:\n      dhcp4: true\n    ens5:\n"
                              "      addresses: [10.0.0.9/24]\n  version: 2\n")
    assert plan == {"eth0": {"dhcp4": "true"}, "ens5": {"addresses": "10.0.0.9/24"}}
