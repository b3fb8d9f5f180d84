"""The Linux boot and reachability rules of ``vhdtool check`` (OS disk).

Each reads :class:`~vhdtool.inspect.linux_readiness.LinuxReadiness`; ids, reasons and fixes are in
docs/check-rules.md, the Microsoft pages they follow in docs/azure-rules.md §3.
"""

from __future__ import annotations

from vhdtool.inspect.linux_readiness import BOOT_DRIVERS, BOOT_MOUNTS, LinuxReadiness, MountEntry
from vhdtool.readiness.facts import Facts
from vhdtool.readiness.rules import ERROR, INFO, WARNING, Findings, rule


def _linux(f: Facts) -> LinuxReadiness | None:
    if f.role != "os" or f.report is None or f.report.os is None:
        return None
    return f.report.os.linux


def _where(e: MountEntry) -> str:
    return f"{e.origin}: {e.source} on {e.mount_point}"


@rule("linux-fstab-device-names", "mounts name devices by UUID or label, not by kernel name")
def _device_names(f: Facts) -> Findings:
    linux = _linux(f)
    if linux is None:
        return []
    out: Findings = []
    for e in linux.mounts:
        if e.kind != "kernel-name":
            continue
        boot = e.mount_point in BOOT_MOUNTS
        out.append((ERROR if boot else WARNING,
                    f"{_where(e)} names the device by its kernel name: in Azure the resource disk and data disks "
                    f"take sd letters too, so {e.source} may be another disk"
                    + (" and the boot drops to emergency mode" if boot else "")
                    + "; use UUID= (from `blkid`) instead"))
    return out


@rule("linux-fstab-nofail", "mounts of other disks carry nofail")
def _nofail(f: Facts) -> Findings:
    linux = _linux(f)
    if linux is None:
        return []
    out: Findings = []
    for e in linux.mounts:
        if e.kind == "pseudo" or e.mount_point in BOOT_MOUNTS or e.target is not None or e.nofail:
            continue
        out.append((WARNING, f"{_where(e)} is not on this disk and has no nofail: if that data disk is not "
                             "attached the boot stops in emergency mode; add nofail to its options"))
    return out


@rule("linux-fstab-unresolved", "mounts point at volumes that exist")
def _unresolved(f: Facts) -> Findings:
    linux = _linux(f)
    if linux is None:
        return []
    out: Findings = []
    for e in linux.mounts:
        if not e.looked_up or e.target is not None:
            continue
        if e.mount_point in BOOT_MOUNTS:
            out.append((ERROR, f"{_where(e)} points at no volume of this disk: the boot cannot mount "
                               f"{e.mount_point}; correct it to the volume's UUID (`blkid`)"))
        else:
            out.append((INFO, f"{_where(e)} points at no volume of this disk (a data disk, attached separately?)"))
    return out


@rule("linux-initramfs", "the default kernel's initramfs holds hv_storvsc and hv_vmbus")
def _initramfs(f: Facts) -> Findings:
    linux = _linux(f)
    if linux is None:
        return []
    boot = linux.boot
    if boot is None:
        return [(WARNING, "no kernel image found in /boot: whether the initramfs holds the Hyper-V drivers "
                          "was not checked")]
    needed = [d for d in BOOT_DRIVERS if d not in boot.built_in]
    if not needed:
        return []
    rebuild = ("rebuild it with them (`dracut -f --add-drivers \"hv_vmbus hv_storvsc\"`, or list them in "
               "/etc/initramfs-tools/modules and `update-initramfs -u`)")
    if boot.initramfs_path is None:
        return [(WARNING, f"no initramfs found for the default kernel {boot.name} ({boot.chosen_by}) and "
                          f"{', '.join(needed)} are not built in: the root disk may not be found; {rebuild}")]
    scan = boot.initramfs
    if scan is None:
        return [(WARNING, f"{boot.initramfs_path} could not be opened: the Hyper-V drivers were not checked")]
    missing = [d for d in needed if d not in scan.found]
    if not missing:
        return []
    if scan.problem is not None:
        return [(WARNING, f"{boot.initramfs_path}: {scan.problem}; {', '.join(missing)} not seen in what was read")]
    on_disk = [d for d in missing if d in boot.modules]
    why = (f" although {', '.join(on_disk)} exist in {boot.modules_dir}" if on_disk else "")
    return [(ERROR, f"the initramfs of the default kernel {boot.name} ({boot.initramfs_path}, "
                    f"{', '.join(scan.formats) or 'empty'}) lacks {', '.join(missing)}{why}: the kernel cannot "
                    f"see the OS disk in Azure; {rebuild}")]


@rule("linux-network-config", "the network comes up by DHCP on whatever NIC Azure gives")
def _network(f: Facts) -> Findings:
    linux = _linux(f)
    if linux is None:
        return []
    net = linux.network
    out: Findings = []
    if net.persistent_net_rules:
        out.append((WARNING, f"/etc/udev/rules.d/70-persistent-net.rules pins interface names to MAC addresses "
                             f"({net.persistent_net_rules[0][:80]}): Azure's NIC has another MAC and comes up as "
                             "a new name with no configuration; delete the file"))
    if net.persistent_net_generator:
        out.append((WARNING, "75-persistent-net-generator.rules is active and writes those rules again: "
                             "`ln -s /dev/null /etc/udev/rules.d/75-persistent-net-generator.rules`"))
    for s in net.static_addresses:
        out.append((WARNING, f"{s.file} gives {s.interface or 'an interface'} the static address {s.address or '?'}: "
                             "Azure hands out the address by DHCP; configure DHCP for the primary interface"))
    return out


@rule("linux-provisioning-conflict", "waagent and cloud-init do not both provision")
def _provisioning(f: Facts) -> Findings:
    linux = _linux(f)
    if linux is None:
        return []
    p = linux.provisioning
    out: Findings = []
    if not (p.waagent_active and p.cloud_init_active):
        return []
    agent = (p.provisioning_agent or "").lower()
    old = agent == "" and (p.provisioning_enabled or "").lower() in ("y", "yes", "true")
    if agent == "waagent" or old:
        setting = "Provisioning.Agent=waagent" if agent else "Provisioning.Enabled=y"
        out.append((WARNING, f"cloud-init is enabled and /etc/waagent.conf says {setting}: both provision the VM "
                             "(users, SSH keys, hostname); set Provisioning.Agent=cloud-init (or auto)"))
    if p.resource_disk_format and p.cloud_init_resource_disk:
        out.append((WARNING, "waagent formats the resource disk (ResourceDisk.Format=y, the default) and cloud-init "
                             "sets it up too: they race at boot; set ResourceDisk.Format=n and "
                             "ResourceDisk.EnableSwap=n in /etc/waagent.conf"))
    return out
