"""Will a Linux OS disk boot and come up reachable in Azure? The facts behind the Linux boot rules.

Read offline from the root filesystem (with its fstab mounts): the mounts ``/etc/fstab`` and enabled
systemd mount units ask for, the default kernel and whether its initramfs holds the Hyper-V storage
drivers, persistent network naming and static addresses, and how waagent and cloud-init share
provisioning. Microsoft's "Prepare Linux for imaging in Azure" and "Troubleshoot Linux VM boot issues
due to fstab errors" list these as steps to run inside the VM; see docs/azure-rules.md §3.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vhdtool.inspect.initramfs import InitramfsScan, scan_initramfs
from vhdtool.inspect.model import FileTree

HYPERV_DRIVERS = ("hv_vmbus", "hv_storvsc", "hv_netvsc")
# The initramfs must carry these (or the kernel have them built in) to find its root disk.
BOOT_DRIVERS = ("hv_storvsc", "hv_vmbus")
# Kernel config options that build each driver in (drivers/hv/Kconfig, drivers/scsi, drivers/net/hyperv).
HYPERV_CONFIG = {
    "hv_vmbus": "CONFIG_HYPERV",
    "hv_storvsc": "CONFIG_HYPERV_STORAGE",
    "hv_netvsc": "CONFIG_HYPERV_NET",
}
KERNEL_PREFIXES = ("vmlinuz-", "vmlinux-", "Image-", "kernel-")
MAX_LISTED = 512  # directory entries looked at in /boot, /etc/netplan...
MAX_CONFIG = 1 << 20

# fstab sources, by what they name. Kernel names depend on probe order and change in Azure, where
# the resource disk and data disks take sd letters too.
KERNEL_NAME = re.compile(r"^/dev/(sd[a-z]+|vd[a-z]+|xvd[a-z]+|hd[a-z]+)\d*$")
BY_PATH = {
    "/dev/disk/by-uuid/": "UUID",
    "/dev/disk/by-label/": "LABEL",
    "/dev/disk/by-partuuid/": "PARTUUID",
    "/dev/disk/by-partlabel/": "PARTLABEL",
}
TAGS = ("UUID", "LABEL", "PARTUUID", "PARTLABEL")
NETWORK_TYPES = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "sshfs", "glusterfs", "ceph", "9p", "davfs"})
PSEUDO_TYPES = frozenset({
    "tmpfs", "proc", "sysfs", "devpts", "devtmpfs", "securityfs", "debugfs", "efivarfs", "hugetlbfs",
    "mqueue", "ramfs", "autofs", "overlay", "binfmt_misc", "configfs", "fusectl", "pstore", "tracefs",
    "cgroup", "cgroup2", "bpf", "none", "swap",
})
BOOT_MOUNTS = ("/", "/boot", "/boot/efi")
VIRTUAL_IFACES = ("lo", "docker", "br-", "virbr", "veth", "wg", "tun", "tap", "cni", "flannel", "cali")


def parse_keyvalue(text: str) -> dict[str, str]:
    """``KEY=value`` lines (os-release, waagent.conf, /etc/default/grub, ifcfg), unquoted, no comments."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.split(" #", 1)[0].strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        result[key.strip()] = value
    return result


def _text(tree: FileTree, path: str, limit: int = MAX_CONFIG) -> str | None:
    data = tree.read_file(path, limit)
    return None if data is None else data.decode("utf-8", "replace")


def _listed(tree: FileTree, folder: str) -> list[str]:
    return (tree.listdir(folder) or [])[:MAX_LISTED]


# --------------------------------------------------------------------------------------------------
# mounts


@dataclass(frozen=True)
class MountEntry:
    """One filesystem the boot mounts: an ``/etc/fstab`` line or an enabled systemd mount unit."""

    origin: str  # "/etc/fstab line 3", "/etc/systemd/system/data.mount"
    source: str  # the device as written
    mount_point: str
    fs_type: str
    options: tuple[str, ...]
    kind: str  # how the source names its device: see :func:`source_kind`
    target: str | None = None  # the volume of this disk it names, found by ``inspect_disk``

    @property
    def nofail(self) -> bool:
        return "nofail" in self.options or "noauto" in self.options

    @property
    def looked_up(self) -> bool:
        """Whether the source is a name ``inspect`` can resolve against the volumes it found."""
        return self.kind in ("tag", "lvm")


def source_kind(source: str, fs_type: str, options: tuple[str, ...]) -> str:
    """``kernel-name`` (/dev/sdb1), ``tag`` (UUID=, LABEL=, PARTUUID=, PARTLABEL=, /dev/disk/by-*),
    ``lvm`` (/dev/mapper/*, /dev/VG/LV), ``network``, ``pseudo`` (tmpfs, bind mounts...) or ``other``."""
    if fs_type in NETWORK_TYPES or fs_type.startswith("fuse.") or source.startswith("//") or \
            (":" in source and not source.upper().startswith(TAGS)):
        return "network"
    if fs_type in PSEUDO_TYPES or "bind" in options or "rbind" in options or not source.startswith(("/", *TAGS)) \
            and "=" not in source:
        return "pseudo"
    if KERNEL_NAME.match(source):
        return "kernel-name"
    if lookup_key(source) is not None:
        return "tag"
    if source.startswith("/dev/mapper/") or re.match(r"^/dev/[^/]+/[^/]+$", source) and \
            not source.startswith(("/dev/disk/", "/dev/md")):
        return "lvm"
    return "other"


def lookup_key(source: str) -> str | None:
    """``TAG=value`` of a tag or by-path source (tag upper-cased), else ``None``."""
    for prefix, tag in BY_PATH.items():
        if source.startswith(prefix):
            return f"{tag}={_unescape_udev(source[len(prefix):])}"
    tag, sep, value = source.partition("=")
    if sep and tag.upper() in TAGS:
        return f"{tag.upper()}={value.strip(chr(34))}"
    return None


def _unescape_udev(name: str) -> str:
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), name)


def _unescape_fstab(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def fstab_entries(text: str, origin: str = "/etc/fstab") -> list[MountEntry]:
    """The mounts of an fstab text, swap and comment lines left out."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if len(fields) < 2 or fields[0].startswith("#"):
            continue
        source, point = _unescape_fstab(fields[0]), _unescape_fstab(fields[1])
        fs_type = fields[2] if len(fields) > 2 else "auto"
        if fs_type == "swap" or point in ("none", "swap"):
            continue
        options = tuple(fields[3].split(",")) if len(fields) > 3 else ("defaults",)
        entries.append(MountEntry(f"{origin} line {number}", source, point, fs_type, options,
                                  source_kind(source, fs_type, options)))
    return entries


def mount_units(tree: FileTree) -> list[MountEntry]:
    """Mount units under /etc/systemd/system that a target wants or requires (the enabled ones)."""
    base = "/etc/systemd/system"
    names = _listed(tree, base)
    enabled: set[str] = set()
    for folder in names:
        if folder.endswith((".wants", ".requires")):
            enabled.update(n for n in _listed(tree, f"{base}/{folder}") if n.endswith(".mount"))
    entries = []
    for name in sorted(enabled):
        path = f"{base}/{name}"
        if tree.readlink(path) == "/dev/null":
            continue
        text = _text(tree, path) or _text(tree, f"/usr/lib/systemd/system/{name}") or ""
        values: dict[str, str] = {}
        section = ""
        for raw in text.splitlines():
            line = raw.strip()
            if line.startswith("["):
                section = line.strip("[]").lower()
            elif section == "mount" and "=" in line and not line.startswith(("#", ";")):
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
        if "What" not in values or "Where" not in values:
            continue
        options = tuple(o for o in values.get("Options", "").split(",") if o)
        fs_type = values.get("Type", "auto")
        entries.append(MountEntry(path, values["What"], values["Where"], fs_type, options,
                                  source_kind(values["What"], fs_type, options)))
    return entries


def boot_mounts(tree: FileTree) -> list[MountEntry]:
    """What the boot mounts: /etc/fstab, enabled mount units, and an explicit ``root=`` on the kernel line."""
    entries = fstab_entries(_text(tree, "/etc/fstab") or "")
    entries += mount_units(tree)
    grub = parse_keyvalue(_text(tree, "/etc/default/grub") or "")
    for key in ("GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"):
        for word in grub.get(key, "").split():
            if word.startswith("root="):
                source = word[len("root="):]
                entries.append(MountEntry(f"/etc/default/grub {key}", source, "/", "auto", (),
                                          source_kind(source, "auto", ())))
    return entries


# --------------------------------------------------------------------------------------------------
# the default kernel and its initramfs


@dataclass(frozen=True)
class BootKernel:
    """The kernel the boot loader starts by default, and what its initramfs holds."""

    name: str  # the part after "vmlinuz-": a version (Debian, RHEL) or a package name ("linux", Arch)
    kernel_path: str
    chosen_by: str  # how the default was found
    modules_dir: str | None  # /lib/modules/<version> of this kernel
    built_in: tuple[str, ...]  # Hyper-V drivers built into the kernel
    modules: tuple[str, ...]  # Hyper-V drivers present as modules on disk for this kernel
    initramfs_path: str | None
    initramfs: InitramfsScan | None  # None: no initramfs file found, or it could not be opened
    initramfs_size: int | None = None


def _version_key(name: str) -> list[tuple[int, int | str]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", name) if p]


def _kernels(tree: FileTree) -> dict[str, str]:
    """name -> path of the kernel images in /boot."""
    found: dict[str, str] = {}
    for entry in _listed(tree, "/boot"):
        for prefix in KERNEL_PREFIXES:
            if entry.startswith(prefix) and not entry.endswith((".sig", ".hmac", ".old", ".bak")):
                found.setdefault(entry[len(prefix):], f"/boot/{entry}")
    return found


def _bls_entries(tree: FileTree) -> dict[str, tuple[str, list[str]]]:
    """Boot Loader Specification entries: id -> (kernel path, initrd paths), paths from /boot."""
    result = {}
    for folder in ("/boot/loader/entries", "/loader/entries"):
        for name in _listed(tree, folder):
            if not name.endswith(".conf"):
                continue
            text = _text(tree, f"{folder}/{name}", 64 * 1024) or ""
            linux, initrds = None, []
            for line in text.splitlines():
                key, _, value = line.strip().partition(" ")
                if key == "linux":
                    linux = value.strip()
                elif key == "initrd":
                    initrds += value.split()
            if linux:
                result[name[: -len(".conf")]] = (_boot_path(tree, linux), [_boot_path(tree, p) for p in initrds])
    return result


def _boot_path(tree: FileTree, path: str) -> str:
    """A boot-loader path (relative to /boot when /boot is its own filesystem) as a path in the tree."""
    path = "/" + path.lstrip("/")
    if path.startswith("/boot/") or not tree.exists("/boot" + path):
        return path
    return "/boot" + path


def _saved_entry(tree: FileTree) -> str | None:
    for env in ("/boot/grub/grubenv", "/boot/grub2/grubenv", "/boot/efi/EFI/grubenv"):
        text = _text(tree, env, 64 * 1024)
        if text:
            value = parse_keyvalue(text).get("saved_entry")
            if value:
                return value
    return None


def default_kernel(tree: FileTree) -> tuple[str, str, str, list[str]] | None:
    """``(name, kernel path, how chosen, initrd paths from a BLS entry)`` of the default kernel."""
    kernels = _kernels(tree)
    bls = _bls_entries(tree)
    saved = _saved_entry(tree)
    if saved and saved in bls:
        path, initrds = bls[saved]
        name = path.rsplit("/", 1)[-1].split("-", 1)[-1]
        return name, path, f"grubenv saved_entry={saved} (BLS entry)", initrds
    if not kernels and not bls:
        return None
    if saved:  # a saved entry naming a kernel version (GRUB menu titles and ids carry it)
        matching = [n for n in kernels if n in saved]
        if matching:
            name = max(matching, key=len)
            return name, kernels[name], f"grubenv saved_entry={saved}", []
    for link in ("/vmlinuz", "/boot/vmlinuz"):
        target = tree.readlink(link)
        if target:
            base = target.rsplit("/", 1)[-1]
            for prefix in KERNEL_PREFIXES:
                if base.startswith(prefix) and base[len(prefix):] in kernels:
                    name = base[len(prefix):]
                    return name, kernels[name], f"{link} -> {target}", []
    if kernels:
        name = max(kernels, key=_version_key)
        return name, kernels[name], "the newest kernel in /boot (GRUB's default)", []
    entry_id = max(bls, key=_version_key)
    path, initrds = bls[entry_id]
    return path.rsplit("/", 1)[-1].split("-", 1)[-1], path, f"the newest BLS entry ({entry_id})", initrds


def _initramfs_candidates(name: str) -> list[str]:
    return [f"/boot/{n}" for n in (
        f"initrd.img-{name}",  # initramfs-tools (Debian, Ubuntu)
        f"initramfs-{name}.img",  # dracut (RHEL, Fedora), mkinitcpio (Arch: initramfs-linux.img)
        f"initrd-{name}",  # dracut on SUSE
        f"initramfs-{name}",
        f"initrd-{name}.img",
    )]


def _modules_dir(tree: FileTree, name: str) -> str | None:
    for base in ("/lib/modules", "/usr/lib/modules"):
        if tree.is_dir(f"{base}/{name}"):
            return f"{base}/{name}"
    # Arch names the kernel by package: /usr/lib/modules/<version>/pkgbase holds "linux".
    for version in _listed(tree, "/usr/lib/modules")[:32]:
        pkgbase = _text(tree, f"/usr/lib/modules/{version}/pkgbase", 256)
        if pkgbase is not None and pkgbase.strip() == name:
            return f"/usr/lib/modules/{version}"
    return None


def _module_name(path: str) -> str | None:
    """``hv_storvsc`` for ``.../hv_storvsc.ko`` (plain or .xz/.zst/.gz), else ``None``."""
    base = path.rsplit("/", 1)[-1]
    stem, dot, rest = base.partition(".ko")
    if not dot or rest not in ("", ".xz", ".zst", ".gz", ".bz2"):
        return None
    stem = stem.replace("-", "_")
    return stem if stem in HYPERV_DRIVERS else None


def boot_kernel(tree: FileTree) -> BootKernel | None:
    """The default kernel with its built-in and on-disk Hyper-V drivers and its initramfs walked."""
    chosen = default_kernel(tree)
    if chosen is None:
        return None
    name, kernel_path, how, bls_initrds = chosen
    modules_dir = _modules_dir(tree, name)
    version = modules_dir.rsplit("/", 1)[-1] if modules_dir else name
    built_in: list[str] = []
    modules: list[str] = []
    builtin_list = _text(tree, f"{modules_dir}/modules.builtin", 4 << 20) or "" if modules_dir else ""
    dep = _text(tree, f"{modules_dir}/modules.dep", 8 << 20) or "" if modules_dir else ""
    config = _text(tree, f"/boot/config-{version}", 4 << 20) or _text(tree, f"/boot/config-{name}", 4 << 20) or ""
    for driver in HYPERV_DRIVERS:
        if re.search(rf"(^|/){driver}\.ko", builtin_list, re.MULTILINE) or \
                re.search(rf"^{HYPERV_CONFIG[driver]}=y$", config, re.MULTILINE):
            built_in.append(driver)
        elif re.search(rf"(^|/){driver}\.ko", dep, re.MULTILINE) or \
                re.search(rf"^{HYPERV_CONFIG[driver]}=m$", config, re.MULTILINE):
            modules.append(driver)
    candidates = [p for p in bls_initrds if "ucode" not in p and "microcode" not in p] or \
        _initramfs_candidates(name)
    initramfs_path = next((p for p in candidates if tree.file_size(p) is not None), None)
    scan: InitramfsScan | None = None
    size = None
    if initramfs_path is not None:
        size = tree.file_size(initramfs_path)
        stream = tree.open_file(initramfs_path)
        if stream is not None:
            with stream:
                scan = scan_initramfs(stream, _module_name, [d for d in BOOT_DRIVERS if d not in built_in])
    return BootKernel(name, kernel_path, how, modules_dir, tuple(built_in), tuple(modules), initramfs_path,
                      scan, size)


# --------------------------------------------------------------------------------------------------
# network


@dataclass(frozen=True)
class StaticAddress:
    """A network configuration that gives an interface a fixed address instead of DHCP."""

    file: str
    interface: str | None
    address: str | None


@dataclass(frozen=True)
class NetworkSetup:
    persistent_net_rules: tuple[str, ...]  # NAME= lines of 70-persistent-net.rules (MAC -> ethN)
    persistent_net_generator: bool  # 75-persistent-net-generator.rules active (old udev writes them)
    static_addresses: tuple[StaticAddress, ...]


def _physical(interface: str | None) -> bool:
    return interface is None or not interface.startswith(VIRTUAL_IFACES)


NETPLAN_KINDS = ("ethernets", "bonds", "vlans", "bridges")


def netplan_interfaces(text: str) -> dict[str, dict[str, str]]:
    """``interface -> {key: value}`` of a netplan YAML (the subset netplan files use: block maps and
    lists, inline lists); ``addresses`` holds the first address."""
    stack: list[tuple[int, str]] = []
    blocks: dict[str, dict[str, str]] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip() or line.strip() in ("---", "..."):
            continue
        indent = len(line) - len(line.lstrip())
        body = line.strip()
        if body.startswith("- "):
            while stack and stack[-1][0] > indent:
                stack.pop()
            path = [k for _, k in stack]
            if len(path) >= 3 and path[-3] in NETPLAN_KINDS and path[-1] == "addresses":
                blocks.setdefault(path[-2], {}).setdefault("addresses", body[2:].strip().strip("\"'"))
            continue
        key, _, value = body.partition(":")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key.strip().strip("\"'")))
        path = [k for _, k in stack]
        if len(path) >= 2 and path[-2] in NETPLAN_KINDS:
            blocks.setdefault(path[-1], {})
        elif len(path) >= 3 and path[-3] in NETPLAN_KINDS:
            value = value.strip()
            if path[-1] == "addresses" and value.startswith("["):
                first = value.strip("[] ").split(",")[0].strip().strip("\"'")
                if first:
                    blocks.setdefault(path[-2], {})["addresses"] = first
            elif value:
                blocks.setdefault(path[-2], {})[path[-1]] = value
    return blocks


def _netplan(tree: FileTree) -> list[StaticAddress]:
    found = []
    for name in sorted(_listed(tree, "/etc/netplan")):
        if not name.endswith((".yaml", ".yml")):
            continue
        path = f"/etc/netplan/{name}"
        for iface, values in netplan_interfaces(_text(tree, path) or "").items():
            address = values.get("addresses")
            dhcp = values.get("dhcp4", "").lower() in ("true", "yes", "on")
            if address and ":" not in address.split("/")[0] and not dhcp and _physical(iface):
                found.append(StaticAddress(path, iface, address))
    return found


def _ifcfg(tree: FileTree) -> list[StaticAddress]:
    found = []
    for folder in ("/etc/sysconfig/network-scripts", "/etc/sysconfig/network"):
        for name in sorted(_listed(tree, folder)):
            if not name.startswith("ifcfg-") or name == "ifcfg-lo":
                continue
            path = f"{folder}/{name}"
            conf = parse_keyvalue(_text(tree, path, 64 * 1024) or "")
            proto = conf.get("BOOTPROTO", "").lower()
            address = conf.get("IPADDR") or conf.get("IPADDR0")
            iface = conf.get("DEVICE") or name[len("ifcfg-"):]
            if proto in ("static", "none", "") and address and _physical(iface):
                found.append(StaticAddress(path, iface, address))
    return found


def _ifupdown(tree: FileTree) -> list[StaticAddress]:
    found = []
    paths = ["/etc/network/interfaces"] + [f"/etc/network/interfaces.d/{n}"
                                           for n in sorted(_listed(tree, "/etc/network/interfaces.d"))]
    for path in paths:
        iface: str | None = None
        for line in (_text(tree, path, 64 * 1024) or "").splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) >= 4 and words[0] == "iface":
                iface = words[1] if words[2] == "inet" and words[3] == "static" and _physical(words[1]) else None
                if iface:
                    found.append(StaticAddress(path, iface, None))
            elif iface and words[:1] == ["address"] and len(words) > 1 and found[-1].address is None:
                found[-1] = StaticAddress(path, iface, words[1])
    return found


def _ini(text: str) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current = sections.setdefault("", {})
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1].strip().lower(), {})
        elif "=" in line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), value.strip())
    return sections


def _networkmanager(tree: FileTree) -> list[StaticAddress]:
    found = []
    folder = "/etc/NetworkManager/system-connections"
    for name in sorted(_listed(tree, folder)):
        path = f"{folder}/{name}"
        ini = _ini(_text(tree, path, 64 * 1024) or "")
        ipv4 = ini.get("ipv4", {})
        if ipv4.get("method", "").lower() != "manual":
            continue
        iface = ini.get("connection", {}).get("interface-name")
        address = next((v for k, v in ipv4.items() if k.startswith("address")), None)
        if _physical(iface):
            found.append(StaticAddress(path, iface, address.split(",")[0] if address else None))
    return found


def _networkd(tree: FileTree) -> list[StaticAddress]:
    found = []
    for folder in ("/etc/systemd/network", "/run/systemd/network"):
        for name in sorted(_listed(tree, folder)):
            if not name.endswith(".network"):
                continue
            path = f"{folder}/{name}"
            ini = _ini(_text(tree, path, 64 * 1024) or "")
            network = ini.get("network", {})
            address = network.get("Address") or ini.get("address", {}).get("Address")
            dhcp = network.get("DHCP", "no").lower() in ("yes", "ipv4", "true", "both")
            iface = ini.get("match", {}).get("Name")
            if address and not dhcp and ":" not in address.split("/")[0] and _physical(iface):
                found.append(StaticAddress(path, iface, address))
    return found


def network_setup(tree: FileTree) -> NetworkSetup:
    rules = [line.strip() for line in (_text(tree, "/etc/udev/rules.d/70-persistent-net.rules") or "").splitlines()
             if line.strip() and not line.lstrip().startswith("#") and "NAME=" in line]
    generator = any(tree.exists(f"{d}/75-persistent-net-generator.rules") for d in ("/lib/udev/rules.d",
                                                                                  "/usr/lib/udev/rules.d"))
    generator = generator and tree.readlink("/etc/udev/rules.d/75-persistent-net-generator.rules") != "/dev/null"
    static = _netplan(tree) + _ifcfg(tree) + _ifupdown(tree) + _networkmanager(tree) + _networkd(tree)
    return NetworkSetup(tuple(rules), generator, tuple(static))


# --------------------------------------------------------------------------------------------------
# provisioning


@dataclass(frozen=True)
class Provisioning:
    """How waagent and cloud-init divide provisioning and the resource disk between them."""

    waagent_active: bool  # installed and its unit enabled
    cloud_init_active: bool
    provisioning_agent: str | None  # waagent.conf Provisioning.Agent (None: not set, "auto")
    provisioning_enabled: str | None  # the old Provisioning.Enabled (agents before 2.2.45)
    resource_disk_format: bool | None  # ResourceDisk.Format (default y); None without waagent.conf
    cloud_init_resource_disk: bool  # cloud-init's modules format and mount the ephemeral disk


def provisioning(tree: FileTree, conf: dict[str, str] | None, waagent_active: bool,
                 cloud_init_active: bool) -> Provisioning:
    cloud_cfg = _text(tree, "/etc/cloud/cloud.cfg")
    handles = cloud_init_active and (cloud_cfg is None or re.search(r"^\s*-\s*(mounts|disk_setup)\b", cloud_cfg,
                                                                      re.MULTILINE) is not None)
    fmt: bool | None = None
    if conf is not None:
        fmt = conf.get("ResourceDisk.Format", "y").strip().lower() in ("y", "yes", "true", "1")
    return Provisioning(waagent_active, cloud_init_active,
                        conf.get("Provisioning.Agent") if conf is not None else None,
                        conf.get("Provisioning.Enabled") if conf is not None else None, fmt, handles)


@dataclass(frozen=True)
class LinuxReadiness:
    """Boot and reachability facts of a Linux OS disk (the ``linux-*`` boot rules read these)."""

    mounts: tuple[MountEntry, ...]
    boot: BootKernel | None  # None: no kernel image found in /boot
    network: NetworkSetup
    provisioning: Provisioning


def linux_readiness(tree: FileTree, conf: dict[str, str] | None, waagent_active: bool,
                    cloud_init_active: bool) -> LinuxReadiness:
    return LinuxReadiness(tuple(boot_mounts(tree)), boot_kernel(tree), network_setup(tree),
                          provisioning(tree, conf, waagent_active, cloud_init_active))
