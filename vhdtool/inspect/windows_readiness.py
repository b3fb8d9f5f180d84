"""Will a Windows OS disk boot and be reachable in Azure? The facts behind the ``windows-*`` rules.

Read offline from the SYSTEM and SOFTWARE hives ``inspect`` already opens, in the control set
``Select\\Current`` names: Remote Desktop, DHCP and routes, the SAN policy, the Hyper-V boot drivers,
pending reboots, the Azure VM Agent and the advisory settings of Microsoft's "Prepare a Windows VHD or
VHDX to upload to Azure" (which gives them as commands to run inside the VM; see docs/azure-rules.md §2).
A value that cannot be read is listed in ``problems`` and read as absent, never raised.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from vhdtool.errors import VhdtoolError
from vhdtool.inspect.registry import Hive, RegValue

RDP_PORT = 3389
SAN_ONLINE_ALL = 1
SAN_POLICIES = {1: "OnlineAll", 2: "OfflineShared", 3: "OfflineAll", 4: "OfflineInternal"}
START_TYPES = {0: "boot", 1: "system", 2: "automatic", 3: "manual", 4: "disabled"}
BOOT_DRIVERS = ("storvsc", "vmbus")  # must start at boot: the OS disk is behind them
NETWORK_DRIVER = "netvsc"
AGENT_SERVICES = ("WindowsAzureGuestAgent", "RdAgent")
FIREWALL_PROFILES = ("DomainProfile", "StandardProfile", "PublicProfile")
MAX_INTERFACES = 256
MAX_UNINSTALL_KEYS = 4096

TERMINAL_SERVER = r"Control\Terminal Server"
RDP_TCP = r"Control\Terminal Server\WinStations\RDP-Tcp"
TS_POLICY = r"Policies\Microsoft\Windows NT\Terminal Services"
TCPIP = r"Services\Tcpip\Parameters"
FIREWALL = r"Services\SharedAccess\Parameters\FirewallPolicy"
FIREWALL_POLICY = r"Policies\Microsoft\WindowsFirewall"
WINHTTP_KEY = r"Microsoft\Windows\CurrentVersion\Internet Settings\Connections"
CBS_REBOOT = r"Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending"
WU_REBOOT = r"Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired"
UNINSTALL = r"Microsoft\Windows\CurrentVersion\Uninstall"


@dataclass(frozen=True)
class ServiceStart:
    """A service or driver key under ``Services`` and its start type."""

    name: str
    present: bool
    start: int | None = None  # 0 boot, 1 system, 2 automatic, 3 manual, 4 disabled
    image_path: str | None = None

    @property
    def start_name(self) -> str:
        if not self.present:
            return "missing"
        return START_TYPES.get(self.start, f"start {self.start}") if self.start is not None else "no Start value"


@dataclass(frozen=True)
class FirewallRule:
    """An active inbound allow rule that lets Remote Desktop in."""

    store: str  # "local" (SYSTEM) or "policy" (SOFTWARE, Group Policy)
    name: str
    ports: str | None
    service: str | None


@dataclass(frozen=True)
class RemoteDesktop:
    deny_connections: int | None  # SYSTEM Control\Terminal Server fDenyTSConnections
    policy_deny_connections: int | None  # SOFTWARE Policies\...\Terminal Services (wins when set)
    port: int | None  # RDP-Tcp PortNumber
    service: ServiceStart  # TermService
    firewall_on: tuple[str, ...]  # profiles whose EnableFirewall is 1
    allow_rules: tuple[FirewallRule, ...]

    @property
    def effective_deny(self) -> int | None:
        return self.policy_deny_connections if self.policy_deny_connections is not None else self.deny_connections


@dataclass(frozen=True)
class InterfaceAddress:
    interface: str  # the Tcpip interface GUID
    addresses: tuple[str, ...]
    gateways: tuple[str, ...]


@dataclass(frozen=True)
class WindowsNetwork:
    static_interfaces: tuple[InterfaceAddress, ...]  # EnableDHCP 0 with an IPAddress
    persistent_routes: tuple[str, ...]  # "destination,mask,gateway,metric"
    winhttp_proxy: str | None  # the machine-wide WinHTTP proxy (netsh winhttp), None: direct
    winhttp_bypass: str | None
    dhcp_service: ServiceStart


@dataclass(frozen=True)
class PendingReboot:
    component_servicing: bool  # Component Based Servicing\RebootPending
    windows_update: bool  # WindowsUpdate\Auto Update\RebootRequired
    file_renames: int  # entries of Session Manager PendingFileRenameOperations
    sysprep_state: str | None  # an ImageState Setup or Sysprep did not finish (os-state reads it too)


@dataclass(frozen=True)
class AzureAgent:
    guest_agent: ServiceStart
    rd_agent: ServiceStart
    version: str | None


@dataclass(frozen=True)
class BcdSettings:
    """Serial console and boot settings of the BCD store (a registry hive; bcdedit's element ids)."""

    path: str  # where the store was read: "partition 1: /EFI/Microsoft/Boot/BCD"
    default_entry: str | None  # the {bootmgr} default object
    boot_ems: bool | None  # {bootmgr} bootems (BcdLibraryBoolean_EmsEnabled, 0x16000020)
    os_ems: bool | None  # {default} ems (BcdOSLoaderBoolean_EmsEnabled, 0x260000b0)
    ems_port: int | None  # {emssettings} EMSPORT (0x15000022)
    ems_baud_rate: int | None  # {emssettings} EMSBAUDRATE (0x15000023)
    boot_status_policy: int | None  # {default} bootstatuspolicy (0x250000e0); 1 = IgnoreAllFailures
    problem: str | None = None


@dataclass(frozen=True)
class WindowsReadiness:
    """Boot and reachability facts of a Windows OS disk."""

    control_set: str | None
    server: bool  # InstallationType Server: the SAN policy defaults to OfflineShared
    rdp: RemoteDesktop
    network: WindowsNetwork
    san_policy: int | None  # partmgr\Parameters\SanPolicy; None: not set (the edition's default)
    boot_drivers: tuple[ServiceStart, ...]  # storvsc, vmbus, netvsc
    pending: PendingReboot
    agent: AzureAgent
    paging_files: tuple[str, ...]
    real_time_is_universal: int | None
    crash_dump_enabled: int | None  # CrashControl CrashDumpEnabled (2: kernel memory dump)
    bcd: BcdSettings | None = None  # filled by ``inspect_disk``, which sees the boot partition
    problems: tuple[str, ...] = ()

    @property
    def effective_san_policy(self) -> int:
        if self.san_policy is not None:
            return self.san_policy
        return 2 if self.server else SAN_ONLINE_ALL


class _Reader:
    """Registry reads that turn damage into a noted problem and an absent value."""

    def __init__(self, system: Hive | None, software: Hive | None, control_set: str | None) -> None:
        self.system = system
        self.software = software
        self.cs = control_set
        self.problems: list[str] = []

    def _guard(self, hive: Hive | None, what: str, action: object) -> object:
        if hive is None:
            return None
        try:
            return action()  # type: ignore[operator]
        except VhdtoolError as err:
            self.problems.append(f"{what}: {err}")
            return None

    def sys_key(self, key: str) -> str | None:
        return f"{self.cs}\\{key}" if self.cs else None

    def sys_value(self, key: str, name: str) -> RegValue | None:
        full = self.sys_key(key)
        if full is None or self.system is None:
            return None
        system = self.system
        found = self._guard(system, f"SYSTEM\\{full}\\{name}", lambda: system.value(full, name))
        return found if isinstance(found, RegValue) else None

    def sw_value(self, key: str, name: str) -> RegValue | None:
        software = self.software
        if software is None:
            return None
        found = self._guard(software, f"SOFTWARE\\{key}\\{name}", lambda: software.value(key, name))
        return found if isinstance(found, RegValue) else None

    def sys_int(self, key: str, name: str) -> int | None:
        value = self.sys_value(key, name)
        return value.as_int() if value is not None else None

    def sw_int(self, key: str, name: str) -> int | None:
        value = self.sw_value(key, name)
        return value.as_int() if value is not None else None

    def sys_subkeys(self, key: str) -> list[str]:
        full = self.sys_key(key)
        system = self.system
        if full is None or system is None:
            return []
        found = self._guard(system, f"SYSTEM\\{full}", lambda: system.subkey_names(full))
        return found if isinstance(found, list) else []

    def sys_values(self, key: str) -> list[RegValue]:
        full = self.sys_key(key)
        system = self.system
        if full is None or system is None:
            return []
        found = self._guard(system, f"SYSTEM\\{full}", lambda: system.values(full))
        return found if isinstance(found, list) else []

    def sw_values(self, key: str) -> list[RegValue]:
        software = self.software
        if software is None:
            return []
        found = self._guard(software, f"SOFTWARE\\{key}", lambda: software.values(key))
        return found if isinstance(found, list) else []

    def sw_has(self, key: str) -> bool:
        software = self.software
        if software is None:
            return False
        return self._guard(software, f"SOFTWARE\\{key}", lambda: software.has_key(key)) is True

    def sys_has(self, key: str) -> bool:
        full = self.sys_key(key)
        system = self.system
        if full is None or system is None:
            return False
        return self._guard(system, f"SYSTEM\\{full}", lambda: system.has_key(full)) is True

    def service(self, name: str) -> ServiceStart:
        key = f"Services\\{name}"
        if not self.sys_has(key):
            return ServiceStart(name, False)
        path = self.sys_value(key, "ImagePath")
        return ServiceStart(name, True, self.sys_int(key, "Start"), path.as_text() if path is not None else None)


def _strings(value: RegValue | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value.data, list):
        return tuple(s for s in value.data if s)
    text = value.as_text()
    return tuple(s for s in re.split(r"[\s,;]+", text) if s) if text else ()


def _rule_fields(text: str) -> dict[str, list[str]]:
    """``v2.30|Action=Allow|Active=TRUE|Dir=In|LPort=3389|...`` -> field -> values (fields repeat)."""
    fields: dict[str, list[str]] = {}
    for part in text.split("|"):
        key, sep, value = part.partition("=")
        if sep:
            fields.setdefault(key.strip().lower(), []).append(value.strip())
    return fields


def _port_matches(ports: list[str], port: int) -> bool:
    for item in ports:
        for piece in item.split(","):
            low, _, high = piece.partition("-")
            if low.isdigit() and (int(low) == port if not high else high.isdigit() and int(low) <= port <= int(high)):
                return True
            if piece.lower() == "rpc" or piece == "*":
                continue
    return False


def _allow_rules(values: list[RegValue], store: str, port: int) -> list[FirewallRule]:
    rules = []
    for value in values:
        text = value.as_text()
        if not text:
            continue
        fields = _rule_fields(text)
        first = {k: v[0].lower() for k, v in fields.items()}
        if first.get("action") != "allow" or first.get("active") != "true" or first.get("dir") != "in":
            continue
        ports = fields.get("lport", [])
        service = first.get("svc")
        protocol = first.get("protocol")
        if _port_matches(ports, port) and protocol in (None, "6") or service == "termservice" and not ports:
            rules.append(FirewallRule(store, value.name, ",".join(ports) or None, service))
    return rules


def _remote_desktop(r: _Reader) -> RemoteDesktop:
    port = r.sys_int(RDP_TCP, "PortNumber")
    on = tuple(p for p in FIREWALL_PROFILES if r.sys_int(f"{FIREWALL}\\{p}", "EnableFirewall") == 1)
    rules = _allow_rules(r.sys_values(f"{FIREWALL}\\FirewallRules"), "local", port or RDP_PORT)
    rules += _allow_rules(r.sw_values(f"{FIREWALL_POLICY}\\FirewallRules"), "policy", port or RDP_PORT)
    return RemoteDesktop(r.sys_int(TERMINAL_SERVER, "fDenyTSConnections"),
                         r.sw_int(TS_POLICY, "fDenyTSConnections"), port, r.service("TermService"), on,
                         tuple(rules))


def parse_winhttp(data: bytes) -> tuple[str | None, str | None]:
    """``(proxy, bypass)`` of a ``WinHttpSettings`` value; ``(None, None)`` for direct access.

    Layout (little-endian, as ``netsh winhttp`` writes it): version, a counter, flags (2 = a named
    proxy), the proxy's length and ASCII text, the bypass list's length and text.
    """
    if len(data) < 16:
        return None, None
    flags, length = struct.unpack_from("<II", data, 8)
    proxy = data[16:16 + length].decode("ascii", "replace") if 16 + length <= len(data) else None
    bypass = None
    at = 16 + length
    if at + 4 <= len(data):
        (blen,) = struct.unpack_from("<I", data, at)
        if at + 4 + blen <= len(data) and blen:
            bypass = data[at + 4: at + 4 + blen].decode("ascii", "replace")
    if not flags & 2 or not proxy:
        return None, None
    return proxy, bypass


def _network(r: _Reader) -> WindowsNetwork:
    static = []
    for guid in r.sys_subkeys(f"{TCPIP}\\Interfaces")[:MAX_INTERFACES]:
        key = f"{TCPIP}\\Interfaces\\{guid}"
        if r.sys_int(key, "EnableDHCP") != 0:
            continue
        addresses = tuple(a for a in _strings(r.sys_value(key, "IPAddress")) if a != "0.0.0.0")
        if addresses:
            gateways = tuple(g for g in _strings(r.sys_value(key, "DefaultGateway")) if g != "0.0.0.0")
            static.append(InterfaceAddress(guid, addresses, gateways))
    routes = tuple(v.name for v in r.sys_values(f"{TCPIP}\\PersistentRoutes"))
    proxy = bypass = None
    for key in (WINHTTP_KEY, WINHTTP_KEY.replace("Microsoft\\", "WOW6432Node\\Microsoft\\", 1)):
        value = r.sw_value(key, "WinHttpSettings")
        if value is not None and isinstance(value.data, bytes):
            proxy, bypass = parse_winhttp(value.data)
            if proxy:
                break
    return WindowsNetwork(tuple(static), routes, proxy, bypass, r.service("Dhcp"))


def _agent(r: _Reader) -> AzureAgent:
    guest, rd = r.service(AGENT_SERVICES[0]), r.service(AGENT_SERVICES[1])
    version = None
    for path in (guest.image_path, rd.image_path):
        match = re.search(r"GuestAgent_(\d+(?:\.\d+)+)", path or "")
        if match:
            version = match.group(1)
            break
    if version is None and guest.present:
        software = r.software
        names = r._guard(software, f"SOFTWARE\\{UNINSTALL}",
                         lambda: software.subkey_names(UNINSTALL) if software else None)
        for sub in (names if isinstance(names, list) else [])[:MAX_UNINSTALL_KEYS]:
            display = r.sw_value(f"{UNINSTALL}\\{sub}", "DisplayName")
            if display is not None and (display.as_text() or "").startswith(("Windows Azure VM Agent",
                                                                              "Microsoft Azure VM Agent")):
                found = r.sw_value(f"{UNINSTALL}\\{sub}", "DisplayVersion")
                version = found.as_text() if found is not None else None
                break
    return AzureAgent(guest, rd, version)


def _rename_count(value: RegValue | None) -> int:
    """Pairs (source, target; an empty target deletes) in PendingFileRenameOperations."""
    if value is None:
        return 0
    items = list(value.data) if isinstance(value.data, list) else [value.as_text() or ""]
    while items and not items[-1]:
        items.pop()
    return (len(items) + 1) // 2


def windows_readiness(system: Hive | None, software: Hive | None, control_set: str | None,
                      installation_type: str | None, sysprep_state: str | None) -> WindowsReadiness:
    """The readiness facts of one Windows installation (``sysprep_state``: an unfinished ImageState)."""
    r = _Reader(system, software, control_set)
    renames = r.sys_value(r"Control\Session Manager", "PendingFileRenameOperations")
    pending = PendingReboot(r.sw_has(CBS_REBOOT), r.sw_has(WU_REBOOT), _rename_count(renames), sysprep_state)
    paging = r.sys_value(r"Control\Session Manager\Memory Management", "PagingFiles")
    return WindowsReadiness(
        control_set=control_set,
        server=(installation_type or "").lower() == "server",
        rdp=_remote_desktop(r),
        network=_network(r),
        san_policy=r.sys_int(r"Services\partmgr\Parameters", "SanPolicy"),
        boot_drivers=tuple(r.service(n) for n in (*BOOT_DRIVERS, NETWORK_DRIVER)),
        pending=pending,
        agent=_agent(r),
        paging_files=tuple(paging.data if isinstance(paging.data, list) else [paging.display()])
        if paging is not None else (),
        real_time_is_universal=r.sys_int(r"Control\TimeZoneInformation", "RealTimeIsUniversal"),
        crash_dump_enabled=r.sys_int(r"Control\CrashControl", "CrashDumpEnabled"),
        problems=tuple(r.problems),
    )
