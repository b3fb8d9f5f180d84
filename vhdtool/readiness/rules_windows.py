"""The Windows boot and reachability rules of ``vhdtool check`` (OS disk).

Each reads :class:`~vhdtool.inspect.windows_readiness.WindowsReadiness`; ids, reasons and fixes are in
docs/check-rules.md, the Microsoft pages they follow in docs/azure-rules.md §2.
"""

from __future__ import annotations

from vhdtool.inspect.model import GENERALIZED
from vhdtool.inspect.windows_readiness import RDP_PORT, SAN_ONLINE_ALL, SAN_POLICIES, ServiceStart, WindowsReadiness
from vhdtool.readiness.facts import Facts
from vhdtool.readiness.rules import ERROR, INFO, WARNING, Findings, rule


def _windows(f: Facts) -> WindowsReadiness | None:
    """The readiness facts of a Windows OS disk whose SYSTEM hive was read, else ``None``."""
    if f.role != "os" or f.report is None or f.report.os is None or f.report.os.windows is None:
        return None
    w = f.report.os.windows
    return w if w.control_set is not None else None


def _cs(w: WindowsReadiness, key: str) -> str:
    return f"SYSTEM\\{w.control_set}\\{key}"


def _dead(service: ServiceStart) -> bool:
    return not service.present or service.start == 4


@rule("windows-rdp", "Remote Desktop is enabled and reachable")
def _rdp(f: Facts) -> Findings:
    w = _windows(f)
    if w is None:
        return []
    rdp = w.rdp
    out: Findings = []
    deny = rdp.effective_deny
    where = ("SOFTWARE\\Policies\\Microsoft\\Windows NT\\Terminal Services" if rdp.policy_deny_connections is not None
             else _cs(w, "Control\\Terminal Server"))
    fix = ("set fDenyTSConnections to 0 under SYSTEM\\CurrentControlSet\\Control\\Terminal Server and, if set, "
           "under SOFTWARE\\Policies\\Microsoft\\Windows NT\\Terminal Services (which wins)")
    if deny == 1:
        out.append((ERROR, f"Remote Desktop is off ({where}\\fDenyTSConnections = 1): nobody can sign in to "
                           f"the VM; {fix}"))
    elif deny is None:
        out.append((WARNING, f"fDenyTSConnections is not set under {_cs(w, 'Control')}\\Terminal Server: "
                             f"Windows then refuses Remote Desktop; {fix}"))
    if _dead(rdp.service):
        out.append((ERROR, f"the Remote Desktop service TermService is {rdp.service.start_name} "
                           f"({_cs(w, 'Services')}\\TermService): set its start type to Manual (3)"))
    if rdp.port is not None and rdp.port != RDP_PORT:
        out.append((WARNING, f"Remote Desktop listens on port {rdp.port} ({_cs(w, 'Control')}\\Terminal Server\\"
                             f"WinStations\\RDP-Tcp\\PortNumber), Azure's default rules open {RDP_PORT}: set it "
                             f"back to {RDP_PORT} and change it after deployment"))
    if rdp.firewall_on and not rdp.allow_rules:
        out.append((WARNING, f"Windows Firewall is on ({', '.join(rdp.firewall_on)}) and no active inbound rule "
                             f"allows port {rdp.port or RDP_PORT} or TermService ({_cs(w, 'Services')}\\SharedAccess"
                             "\\Parameters\\FirewallPolicy\\FirewallRules): enable the 'Remote Desktop' rule group"))
    return out


@rule("windows-network", "the network comes up by DHCP")
def _network(f: Facts) -> Findings:
    w = _windows(f)
    if w is None:
        return []
    net = w.network
    out: Findings = []
    for iface in net.static_interfaces:
        out.append((ERROR, f"interface {iface.interface} has a static address {', '.join(iface.addresses)} "
                           f"({_cs(w, 'Services')}\\Tcpip\\Parameters\\Interfaces, EnableDHCP = 0): Azure gives "
                           "the VM its address by DHCP and a fixed one leaves it unreachable; switch the adapter "
                           "to DHCP before capture"))
    if _dead(net.dhcp_service):
        out.append((ERROR, f"the DHCP client service Dhcp is {net.dhcp_service.start_name}: the VM gets no address; "
                           "set it to Automatic (2)"))
    if net.persistent_routes:
        out.append((WARNING, f"persistent static route(s) {'; '.join(net.persistent_routes[:4])} "
                             f"({_cs(w, 'Services')}\\Tcpip\\Parameters\\PersistentRoutes) point at the old "
                             "network: `route delete` them"))
    if net.winhttp_proxy:
        out.append((WARNING, f"the WinHTTP proxy is {net.winhttp_proxy} (SOFTWARE\\Microsoft\\Windows\\CurrentVersion"
                             "\\Internet Settings\\Connections\\WinHttpSettings): the VM Agent cannot reach "
                             "168.63.129.16 through an on-premises proxy; `netsh winhttp reset proxy`, or bypass "
                             "168.63.129.16"))
    return out


@rule("windows-san-policy", "the SAN policy brings data disks online")
def _san(f: Facts) -> Findings:
    w = _windows(f)
    if w is None or w.effective_san_policy == SAN_ONLINE_ALL:
        return []
    name = SAN_POLICIES.get(w.effective_san_policy, str(w.effective_san_policy))
    how = (f"= {w.san_policy}" if w.san_policy is not None else "not set, the default of Windows Server")
    return [(WARNING, f"SAN policy is {name} ({_cs(w, 'Services')}\\partmgr\\Parameters\\SanPolicy {how}): data "
                      "disks attached in Azure stay offline; `diskpart` then `san policy=onlineall`")]


@rule("windows-boot-drivers", "Hyper-V storage and bus drivers start at boot")
def _drivers(f: Facts) -> Findings:
    if f.role != "os" or f.report is None or f.report.os is None or f.report.os.windows is None:
        return []
    w = f.report.os.windows
    if w.control_set is None:
        return [(WARNING, "the SYSTEM hive could not be read: the Windows boot and network rules did not run")]
    out: Findings = []
    for driver in w.boot_drivers:
        key = _cs(w, f"Services\\{driver.name}")
        if driver.name == "netvsc":
            if _dead(driver):
                out.append((ERROR, f"the Hyper-V network driver netvsc is {driver.start_name} ({key}): the VM has "
                                   "no network in Azure; install the Hyper-V integration components or set Start 3"))
        elif driver.start not in (0, 1):
            out.append((ERROR, f"the Hyper-V driver {driver.name} is {driver.start_name} ({key}\\Start): Windows "
                               "stops with INACCESSIBLE_BOOT_DEVICE in Azure; set Start to 0 (boot)"))
    return out


@rule("windows-capture-state", "no reboot or Sysprep pending at capture")
def _capture(f: Facts) -> Findings:
    w = _windows(f)
    if w is None:
        return []
    p = w.pending
    out: Findings = []
    marks = []
    if p.component_servicing:
        marks.append("SOFTWARE\\...\\Component Based Servicing\\RebootPending")
    if p.windows_update:
        marks.append("SOFTWARE\\...\\WindowsUpdate\\Auto Update\\RebootRequired")
    if p.file_renames:
        marks.append(f"{p.file_renames} PendingFileRenameOperations")
    if marks:
        out.append((WARNING, f"a reboot is pending ({'; '.join(marks)}): the VM would restart while Azure provisions "
                             "it; finish the updates, restart, then capture"))
    if p.sysprep_state:
        severe = GENERALIZED in (f.expect, f.report.os.state if f.report and f.report.os else None)
        out.append((ERROR if severe else WARNING,
                    f"Setup or Sysprep did not finish (ImageState {p.sysprep_state}, as os-state reports): run "
                    "Sysprep /generalize /oobe /shutdown to the end and capture after it shuts down"))
    return out


@rule("windows-agent", "the Azure VM Agent is installed")
def _agent(f: Facts) -> Findings:
    w = _windows(f)
    if w is None:
        return []
    a = w.agent
    if _dead(a.guest_agent):
        return [(WARNING, f"the Azure VM Agent (WindowsAzureGuestAgent) is {a.guest_agent.start_name}: no VM "
                          "extensions, no password reset or RDP repair from the portal; install it (Azure Migrate "
                          "and the portal need it)")]
    version = f" {a.version}" if a.version else ""
    rd = "" if a.rd_agent.present else " (no RdAgent service)"
    return [(INFO, f"Azure VM Agent{version} installed{rd}")]


def _on_os_disk(path: str) -> bool:
    return path.strip()[:2].upper() in ("C:", "?:")


@rule("windows-pagefile", "page file on the temporary disk (advice)")
def _pagefile(f: Facts) -> Findings:
    w = _windows(f)
    if w is None:
        return []
    on_c = [p for p in w.paging_files if p.strip() and _on_os_disk(p)]
    if not on_c:
        return []
    return [(INFO, f"page file {on_c[0].split()[0]} is on the OS disk (Session Manager\\Memory Management\\"
                   "PagingFiles): after deployment move it to the temporary disk (D:\\pagefile.sys)")]


@rule("windows-rtc-utc", "the clock is kept in UTC (advice)")
def _rtc(f: Facts) -> Findings:
    w = _windows(f)
    if w is None or w.real_time_is_universal == 1:
        return []
    return [(INFO, f"RealTimeIsUniversal is {w.real_time_is_universal} ({_cs(w, 'Control')}\\TimeZoneInformation): "
                   "set it to 1 so Windows reads Azure's hardware clock as UTC")]


@rule("windows-boot-diagnostics", "the serial console (EMS) is on in the BCD store (advice)")
def _ems(f: Facts) -> Findings:
    w = _windows(f)
    if w is None:
        return []
    bcd = w.bcd
    fix = ("`bcdedit /set {bootmgr} bootems yes`, `bcdedit /ems {current} ON`, "
           "`bcdedit /emssettings EMSPORT:1 EMSBAUDRATE:115200`")
    if bcd is None:
        return [(INFO, "no BCD store found (/EFI/Microsoft/Boot/BCD, /Boot/BCD): the serial console settings "
                       "were not read")]
    if bcd.problem:
        return [(INFO, f"{bcd.path}: {bcd.problem}")]
    off = [what for what, on in (("bootems on {bootmgr}", bcd.boot_ems), ("ems on the default entry", bcd.os_ems))
           if not on]
    if not off:
        return []
    return [(INFO, f"{bcd.path}: {' and '.join(off)} not set: the Azure serial console (SAC) stays unusable; {fix}")]


@rule("windows-crash-dump", "a kernel crash dump is written (advice)")
def _dump(f: Facts) -> Findings:
    w = _windows(f)
    if w is None or w.crash_dump_enabled not in (None, 0):
        return []
    value = "not set" if w.crash_dump_enabled is None else "0 (none)"
    return [(INFO, f"CrashDumpEnabled is {value} ({_cs(w, 'Control')}\\CrashControl): set it to 2 (kernel dump) so a "
                   "crash in Azure leaves MEMORY.DMP for support")]
