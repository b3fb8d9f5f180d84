"""Linux on a root filesystem: distribution, hostname, Azure readiness facts, generalized or not.

Markers follow ``waagent -deprovision[+user]`` (WALinuxAgent ``azurelinuxagent/pa/deprovision``) and
``cloud-init clean``; see docs/azure-rules.md §3. Whether host keys and the root password are expected to be gone
is read from the image's own ``/etc/waagent.conf``, never assumed.
"""

from __future__ import annotations

import re

from vhdtool.inspect.linux_readiness import HYPERV_CONFIG, HYPERV_DRIVERS, linux_readiness, parse_keyvalue
from vhdtool.inspect.model import GENERALIZED, IN_BETWEEN, SPECIALIZED, UNKNOWN, Evidence, FileTree, OsReport
from vhdtool.inspect.os_facts import LinuxFacts

NEUTRAL = "neutral"
WAAGENT_PATHS = ("/usr/sbin/waagent", "/usr/bin/waagent", "/usr/local/sbin/waagent")
CLOUD_INIT_PATHS = ("/usr/bin/cloud-init", "/usr/local/bin/cloud-init")
WAAGENT_UNITS = ("walinuxagent.service", "waagent.service")
# cloud-init 24.3 renamed cloud-init.service to cloud-init-network.service and added cloud-init-main.service.
CLOUD_INIT_UNITS = ("cloud-init.service", "cloud-init-network.service", "cloud-init-main.service")
WAAGENT_PROVISIONED = (
    "provisioned",
    "ovf-env.xml",
    "Incarnation",
    "HostingEnvironmentConfig.xml",
    "SharedConfig.xml",
    "Certificates.pem",
)
LOCKED_PREFIXES = ("*", "!", "*LOCK*")
MAX_USERS = 64


def _text(tree: FileTree, path: str, limit: int = 1 << 20) -> str | None:
    data = tree.read_file(path, limit)
    return None if data is None else data.decode("utf-8", "replace")


def _yes(conf: dict[str, str], key: str, default: bool) -> bool:
    value = conf.get(key)
    if value is None:
        return default
    return value.strip().lower() in ("y", "yes", "true", "1")


def looks_like_linux(tree: FileTree) -> bool:
    """A root filesystem: an os-release, or /etc with passwd beside a /bin or /usr/bin."""
    if tree.exists("/etc/os-release") or tree.exists("/usr/lib/os-release"):
        return True
    return tree.exists("/etc/passwd") and (tree.is_dir("/usr/bin") or tree.is_dir("/bin"))


def inspect_linux(tree: FileTree) -> OsReport | None:
    """The Linux OS on ``tree`` (a root filesystem) with its state and evidence; ``None`` if not Linux."""
    if not looks_like_linux(tree):
        return None
    release = parse_keyvalue(_text(tree, "/etc/os-release") or _text(tree, "/usr/lib/os-release") or "")
    hostname_text = _text(tree, "/etc/hostname", 4096)
    hostname = hostname_text.strip().splitlines()[0] if hostname_text and hostname_text.strip() else None
    conf_text = _text(tree, "/etc/waagent.conf")
    conf = parse_keyvalue(conf_text or "")
    waagent = any(tree.exists(p) for p in WAAGENT_PATHS)
    cloud_init = any(tree.exists(p) for p in CLOUD_INIT_PATHS)
    evidence: list[Evidence] = []
    _waagent_markers(tree, evidence)
    _cloud_init_markers(tree, evidence, cloud_init)
    _machine_id(tree, evidence)
    _root_password(tree, evidence, conf, conf_text is not None)
    _users(tree, evidence)
    _history_and_leases(tree, evidence)
    _hostname_and_resolv(tree, evidence, hostname)
    _host_keys(tree, evidence, conf, conf_text is not None, cloud_init)
    waagent_enabled = any(_unit_enabled(tree, u) for u in WAAGENT_UNITS)
    cloud_init_enabled = any(_unit_enabled(tree, u) for u in CLOUD_INIT_UNITS)
    facts = LinuxFacts(
        os_release={k: release[k] for k in ("ID", "ID_LIKE", "VERSION_ID", "PRETTY_NAME") if k in release},
        waagent_installed=waagent,
        waagent_enabled=waagent_enabled,
        cloud_init_installed=cloud_init,
        cloud_init_enabled=cloud_init_enabled,
        waagent_conf={k: v for k, v in conf.items() if k.startswith(("Provisioning.", "ResourceDisk."))},
        fstab_swap=tuple(fstab_swap(tree)),
        hyperv_drivers=hyperv_drivers(tree),
        kernel_cmdline=grub_cmdline(tree),
        machine_id_set=_machine_id_set(tree),
    )
    return OsReport(
        "linux",
        release.get("PRETTY_NAME") or release.get("NAME"),
        release.get("VERSION_ID"),
        hostname,
        verdict(evidence),
        evidence,
        facts,
        linux=linux_readiness(tree, conf if conf_text is not None else None, waagent and waagent_enabled,
                              cloud_init and cloud_init_enabled),
    )


def verdict(evidence: list[Evidence]) -> str:
    """Generalized when every marker says so, specialized likewise, in-between when they disagree."""
    votes = {e.points_to for e in evidence} - {NEUTRAL}
    if votes == {GENERALIZED}:
        return GENERALIZED
    if votes == {SPECIALIZED}:
        return SPECIALIZED
    if not votes:
        return UNKNOWN
    return IN_BETWEEN


def _waagent_markers(tree: FileTree, evidence: list[Evidence]) -> None:
    entries = tree.listdir("/var/lib/waagent")
    if not entries:
        evidence.append(
            Evidence(
                "/var/lib/waagent",
                None if entries is None else "empty",
                "no provisioning state of the Azure agent",
                GENERALIZED,
            )
        )
    else:
        found = [e for e in entries if e in WAAGENT_PROVISIONED or e.startswith("GoalState.")]
        evidence.append(
            Evidence(
                "/var/lib/waagent",
                ", ".join((found or entries)[:8]),
                "the Azure agent has provisioned this OS (state left behind)",
                SPECIALIZED,
            )
        )
    log = tree.file_size("/var/log/waagent.log")
    azure_logs = tree.listdir("/var/log/azure")
    if log:
        evidence.append(
            Evidence("/var/log/waagent.log", f"{log} bytes", "the Azure agent ran here", SPECIALIZED)
        )
    elif azure_logs:
        evidence.append(
            Evidence(
                "/var/log/azure", ", ".join(azure_logs[:8]), "extension logs of a running VM", SPECIALIZED
            )
        )


def _cloud_init_markers(tree: FileTree, evidence: list[Evidence], installed: bool) -> None:
    base = "/var/lib/cloud"
    if not tree.is_dir(base):
        if installed:
            evidence.append(
                Evidence(base, None, "cloud-init has no state: it has not run since cleaning", GENERALIZED)
            )
        return
    found = []
    if tree.readlink(f"{base}/instance") is not None or tree.exists(f"{base}/instance"):
        found.append(f"instance -> {tree.readlink(f'{base}/instance')}")
    if tree.listdir(f"{base}/instances"):
        found.append("instances/")
    if tree.listdir(f"{base}/data"):
        found.append("data/")
    if found:
        evidence.append(
            Evidence(base, ", ".join(found), "cloud-init has run (no `cloud-init clean`)", SPECIALIZED)
        )
    else:
        evidence.append(Evidence(base, "no instance state", "cloud-init state cleaned", GENERALIZED))


def _machine_id(tree: FileTree, evidence: list[Evidence]) -> None:
    data = tree.read_file("/etc/machine-id", 4096)
    value = None if data is None else data.decode("ascii", "replace").strip()
    if value and re.fullmatch(r"[0-9a-fA-F]{32}", value):
        # `waagent -deprovision` leaves it (azurelinuxagent/pa/deprovision/default.py): not a verdict,
        # but every VM made from a generalized image would share it (check rule linux-machine-id).
        evidence.append(
            Evidence("/etc/machine-id", value, "a machine identity is set (deprovisioning keeps it)", NEUTRAL)
        )
    else:
        shown = "missing" if value is None else (value or "empty")
        evidence.append(
            Evidence("/etc/machine-id", shown, "no machine identity: regenerated on first boot", GENERALIZED)
        )


def _machine_id_set(tree: FileTree) -> bool:
    data = tree.read_file("/etc/machine-id", 4096)
    return data is not None and re.fullmatch(rb"[0-9a-fA-F]{32}\s*", data) is not None


def _root_password(tree: FileTree, evidence: list[Evidence], conf: dict[str, str], has_conf: bool) -> None:
    shadow = _text(tree, "/etc/shadow")
    if shadow is None:
        return
    root = next((line.split(":") for line in shadow.splitlines() if line.startswith("root:")), None)
    if root is None or len(root) < 2:
        return
    password = root[1]
    locked = password.startswith(LOCKED_PREFIXES)
    expect_deleted = has_conf and _yes(conf, "Provisioning.DeleteRootPassword", False)
    if password == "":
        # An empty field lets root log in without a password; deprovisioning writes "*LOCK*" instead.
        evidence.append(
            Evidence(
                "/etc/shadow (root)",
                "empty",
                "root logs in without a password"
                + ("; waagent.conf asks deprovision to lock it" if expect_deleted else ""),
                SPECIALIZED if expect_deleted else NEUTRAL,
            )
        )
        return
    shown = "locked" if locked else "a password hash"
    if locked:
        evidence.append(
            Evidence(
                "/etc/shadow (root)",
                shown,
                "root has no usable password",
                GENERALIZED if expect_deleted else NEUTRAL,
            )
        )
    else:
        evidence.append(
            Evidence(
                "/etc/shadow (root)",
                shown,
                "root has a password; waagent.conf asks deprovision to delete it"
                if expect_deleted
                else "root has a password (waagent.conf keeps it)",
                SPECIALIZED if expect_deleted else NEUTRAL,
            )
        )


def _users(tree: FileTree, evidence: list[Evidence]) -> None:
    passwd = _text(tree, "/etc/passwd")
    if passwd is None:
        return
    users = []
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) < 7 or not fields[2].isdigit():
            continue
        uid, home, shell = int(fields[2]), fields[5], fields[6]
        if 1000 <= uid < 60000 and not shell.endswith(("nologin", "false")):
            users.append((fields[0], home))
    sudoers = _text(tree, "/etc/sudoers.d/waagent")
    rules = [line for line in (sudoers or "").splitlines() if line.strip() and not line.startswith("#")]
    if rules:
        evidence.append(
            Evidence(
                "/etc/sudoers.d/waagent",
                "; ".join(rules)[:80],
                "the agent's provisioned-user sudo rule is still there",
                SPECIALIZED,
            )
        )
    keyed = [name for name, home in users[:MAX_USERS] if tree.exists(f"{home}/.ssh/authorized_keys")]
    if keyed:
        evidence.append(
            Evidence(
                "/home/*/.ssh/authorized_keys",
                ", ".join(keyed),
                "login users with SSH keys (a provisioned user)",
                SPECIALIZED,
            )
        )
    elif not users:
        evidence.append(
            Evidence("/etc/passwd", "no login users (uid >= 1000)", "no provisioned user left", GENERALIZED)
        )
    else:
        evidence.append(
            Evidence(
                "/etc/passwd",
                ", ".join(n for n, _ in users[:8]),
                "login users without SSH keys (kept by `-deprovision` without +user)",
                NEUTRAL,
            )
        )


def _history_and_leases(tree: FileTree, evidence: list[Evidence]) -> None:
    # Deprovisioning deletes root's history; a user's goes only with the user (+user).
    if tree.file_size("/root/.bash_history"):
        evidence.append(
            Evidence(
                "/root/.bash_history",
                "present",
                "root used a shell after the last deprovisioning",
                SPECIALIZED,
            )
        )
    else:
        evidence.append(Evidence("/root/.bash_history", None, "no root shell history", GENERALIZED))
    histories = [
        f"/home/{u}/.bash_history"
        for u in (tree.listdir("/home") or [])[:MAX_USERS]
        if tree.file_size(f"/home/{u}/.bash_history")
    ]
    if histories:
        evidence.append(
            Evidence(
                ", ".join(histories[:4]),
                "present",
                "user shell history (kept by `-deprovision` without +user)",
                NEUTRAL,
            )
        )
    leases = []
    dhcp_folders = [f"/var/lib/{n}" for n in (tree.listdir("/var/lib") or []) if n.startswith("dhcp")]
    for folder in (
        *dhcp_folders,  # dhcp (ISC dhclient on Debian), dhcp3, dhcpcd, dhcpcd5...
        "/var/lib/dhclient",
        "/var/lib/NetworkManager",
        "/var/lib/systemd/network",
        "/run/systemd/netif/leases",
    ):
        for name in tree.listdir(folder) or []:
            if "lease" in name and tree.file_size(f"{folder}/{name}"):
                leases.append(f"{folder}/{name}")
    if leases:
        evidence.append(
            Evidence(", ".join(leases[:4]), "present", "DHCP leases of a running VM", SPECIALIZED)
        )
    else:
        evidence.append(Evidence("/var/lib/dhcp*", None, "no DHCP leases", GENERALIZED))


def _hostname_and_resolv(tree: FileTree, evidence: list[Evidence], hostname: str | None) -> None:
    """Deprovisioning sets the hostname to ``localhost.localdomain`` and deletes ``/etc/resolv.conf``."""
    if hostname == "localhost.localdomain":
        evidence.append(Evidence("/etc/hostname", hostname, "hostname reset by deprovisioning", GENERALIZED))
    if tree.readlink("/etc/resolv.conf") is None and not tree.exists("/etc/resolv.conf"):
        evidence.append(Evidence("/etc/resolv.conf", None, "removed by deprovisioning", GENERALIZED))


def _host_keys(
    tree: FileTree, evidence: list[Evidence], conf: dict[str, str], has_conf: bool, cloud_init: bool
) -> None:
    keys = [n for n in tree.listdir("/etc/ssh") or [] if n.startswith("ssh_host_") and n.endswith("_key")]
    regenerate = has_conf and _yes(conf, "Provisioning.RegenerateSshHostKeyPair", False)
    if keys and regenerate:
        evidence.append(
            Evidence(
                "/etc/ssh/ssh_host_*_key",
                ", ".join(keys),
                "host keys present although waagent.conf regenerates them on deprovision",
                SPECIALIZED,
            )
        )
    elif regenerate:
        evidence.append(
            Evidence(
                "/etc/ssh/ssh_host_*_key", None, "host keys removed (regenerated at first boot)", GENERALIZED
            )
        )
    else:
        why = "cloud-init regenerates them" if cloud_init else "waagent.conf does not regenerate them"
        evidence.append(
            Evidence("/etc/ssh/ssh_host_*_key", ", ".join(keys) or None, f"not judged: {why}", NEUTRAL)
        )


def _unit_enabled(tree: FileTree, unit: str) -> bool:
    for folder in (
        "/etc/systemd/system/multi-user.target.wants",
        "/etc/systemd/system/cloud-init.target.wants",
        "/etc/systemd/system/default.target.wants",
        "/etc/systemd/system/sysinit.target.wants",
    ):
        if tree.readlink(f"{folder}/{unit}") is not None or tree.exists(f"{folder}/{unit}"):
            return True
    return False


def fstab_swap(tree: FileTree) -> list[str]:
    """The swap lines of ``/etc/fstab`` (Azure: use the resource disk instead)."""
    text = _text(tree, "/etc/fstab") or ""
    lines = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and not fields[0].startswith("#") and fields[2] == "swap":
            lines.append(line.strip())
    return lines


def fstab_mounts(tree: FileTree) -> list[tuple[str, str]]:
    """``(source, mount point)`` of the non-swap lines of ``/etc/fstab``."""
    result = []
    for line in (_text(tree, "/etc/fstab") or "").splitlines():
        fields = line.split()
        if len(fields) >= 3 and not fields[0].startswith("#") and fields[1].startswith("/"):
            result.append((fields[0], fields[1]))
    return result


def hyperv_drivers(tree: FileTree) -> dict[str, list[str]]:
    """For each Hyper-V driver, the kernels (``/lib/modules/<version>``) that have it, module or built in."""
    found: dict[str, list[str]] = {name: [] for name in HYPERV_DRIVERS}
    for version in (tree.listdir("/lib/modules") or [])[:16]:
        base = f"/lib/modules/{version}"
        listed = (_text(tree, f"{base}/modules.dep", 8 << 20) or "") + (
            _text(tree, f"{base}/modules.builtin", 4 << 20) or ""
        )
        config = _text(tree, f"/boot/config-{version}", 4 << 20) or ""
        for name in HYPERV_DRIVERS:
            in_list = re.search(rf"(^|/){name}\.ko", listed, re.MULTILINE) is not None
            in_config = re.search(rf"^{HYPERV_CONFIG[name]}=[ym]$", config, re.MULTILINE) is not None
            if in_list or in_config:
                found[name].append(version)
    return found


def grub_cmdline(tree: FileTree) -> str | None:
    """``GRUB_CMDLINE_LINUX`` (+ ``_DEFAULT``) from ``/etc/default/grub``."""
    text = _text(tree, "/etc/default/grub")
    if text is None:
        return None
    conf = parse_keyvalue(text)
    parts = [conf.get("GRUB_CMDLINE_LINUX", ""), conf.get("GRUB_CMDLINE_LINUX_DEFAULT", "")]
    return " ".join(p for p in parts if p).strip()
