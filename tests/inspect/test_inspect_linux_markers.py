"""Single Linux markers, each on a bare ext4 root made by ``mke2fs -d`` from the fixture tree with one change."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from support.linux_images import make_linux

from vhdtool.extents import MiB
from vhdtool.formats.open import open_image
from vhdtool.inspect.model import GENERALIZED, SPECIALIZED, OsReport
from vhdtool.inspect.report import inspect_disk


def root_with(tmp_path: Path, state: str, change: Callable[[Path], None]) -> OsReport:
    tree = tmp_path / "root"
    make_linux.make_tree(tree, state)
    change(tree)
    image = tmp_path / "root.img"
    with open(image, "wb") as f:
        f.truncate(32 * MiB)
    make_linux.mkext4(image, 0, 32 * MiB, tree, "root")
    with open_image(image) as disk:
        report = inspect_disk(disk)
    assert report.os is not None
    return report.os


def by_source(report: OsReport, source: str) -> tuple[str | None, str]:
    found = [(e.value, e.points_to) for e in report.evidence if e.source == source]
    assert len(found) == 1, report.evidence
    return found[0]


def test_empty_root_password_is_not_locked(tmp_path: Path) -> None:
    """An empty shadow field logs root in without a password; deprovisioning writes ``*LOCK*`` instead."""

    def empty(tree: Path) -> None:
        (tree / "etc/shadow").write_text("root::19700:0:99999:7:::\n")

    report = root_with(tmp_path, GENERALIZED, empty)
    assert by_source(report, "/etc/shadow (root)") == ("empty", SPECIALIZED)  # waagent.conf: DeleteRootPassword=y
    assert report.state == "in-between"


def test_leases_in_any_dhcp_folder(tmp_path: Path) -> None:
    def dhcpcd5(tree: Path) -> None:
        (tree / "var/lib/dhcpcd5").mkdir(parents=True)
        (tree / "var/lib/dhcpcd5/dhcpcd-eth0.lease").write_bytes(b"\x02\x01\x06\x00lease")

    report = root_with(tmp_path, GENERALIZED, dhcpcd5)
    assert by_source(report, "/var/lib/dhcpcd5/dhcpcd-eth0.lease") == ("present", SPECIALIZED)


@pytest.mark.parametrize("unit", ["cloud-init-main.service", "cloud-init-network.service", "cloud-init.service"])
def test_cloud_init_enabled_under_its_unit_names(tmp_path: Path, unit: str) -> None:
    """cloud-init 24.3 renamed cloud-init.service to cloud-init-network.service and added cloud-init-main."""

    def cloud_init_only(tree: Path) -> None:
        os.unlink(tree / "usr/sbin/waagent")
        os.unlink(tree / "etc/systemd/system/multi-user.target.wants/walinuxagent.service")
        os.symlink(f"/lib/systemd/system/{unit}", tree / f"etc/systemd/system/multi-user.target.wants/{unit}")

    report = root_with(tmp_path, GENERALIZED, cloud_init_only)
    assert (report.facts.waagent_installed, report.facts.cloud_init_installed) == (False, True)
    assert report.facts.cloud_init_enabled is True
