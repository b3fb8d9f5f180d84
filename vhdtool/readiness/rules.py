"""The Azure readiness rules behind ``vhdtool check``.

Each rule has a stable id, a default severity and a pure function over :class:`Facts`: it returns the
findings it raises (none means the rule passed). Rule ids and their reasons and fixes are documented in
``docs/check-rules.md``; facts come from docs/azure-rules.md §1-§4.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from vhdtool.formats.vhd.footer import (
    DISK_TYPE_DIFFERENCING,
    DISK_TYPE_DYNAMIC,
    DISK_TYPE_FIXED,
    FIXED_DATA_OFFSET,
)
from vhdtool.formats.vhd.layout import FOOTER_SIZE, VHD_COOKIE
from vhdtool.inspect.model import GENERALIZED, IN_BETWEEN, SPECIALIZED, UNKNOWN
from vhdtool.inspect.os_facts import LinuxFacts, WindowsFacts
from vhdtool.inspect.report import DiskReport
from vhdtool.readiness.facts import Facts, facts_from_disk
from vhdtool.readiness.tiers import LARGEST_GIB, BillingTier, billing_tier
from vhdtool.units import GiB, MiB, TiB


class _TextEnum(str, Enum):
    """An enum whose members are their text: equal to it, printed and formatted as it, JSON as it.

    What ``enum.StrEnum`` does from Python 3.11; the package still supports 3.10.
    """

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Severity(_TextEnum):
    """How bad a finding is; the value is what JSON, JUnit and the text output show."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class Role(_TextEnum):
    """What the disk will be in Azure (``check --role``)."""

    OS = "os"
    DATA = "data"


ERROR, WARNING, INFO = Severity.ERROR, Severity.WARNING, Severity.INFO
# docs/azure-rules.md §1: managed-disk direct upload range (file size), OS disk by generation, data disk, page blob.
UPLOAD_MIN_FILE = 20 * MiB + FOOTER_SIZE
UPLOAD_MAX_FILE = 32767 * GiB + FOOTER_SIZE  # "32 TiB" in Azure's wording: 35,183,298,347,520
OS_DISK_MAX = {"V1": 2 * TiB, "V2": 4 * TiB}
DATA_DISK_MAX = 32767 * GiB
PAGE_BLOB_MAX = 8 * TiB
STATES = (GENERALIZED, SPECIALIZED)
GENERATIONS = ("V1", "V2")
ROLES = tuple(r.value for r in Role)


@dataclass(frozen=True)
class Finding:
    """One problem or note, with the fix in its message."""

    rule: str
    severity: Severity
    message: str

    def to_json(self) -> dict[str, str]:
        return {"id": self.rule, "severity": self.severity, "message": self.message}


Findings = list[tuple[Severity, str]]  # what a rule raises: (severity, message with the fix)
RuleFunc = Callable[[Facts], Findings]


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    func: RuleFunc


@dataclass(frozen=True)
class RuleResult:
    rule: Rule
    findings: tuple[Finding, ...]


RULES: list[Rule] = []


def rule(rule_id: str, title: str) -> Callable[[RuleFunc], RuleFunc]:
    def register(func: RuleFunc) -> RuleFunc:
        RULES.append(Rule(rule_id, title, func))
        return func

    return register


def _is_fixed_vhd(f: Facts) -> bool:
    return f.format == "vhd" and f.disk_type == "fixed"


def _os_family(f: Facts) -> str | None:
    return f.report.os.family if f.report is not None and f.report.os is not None else None


def _linux_facts(f: Facts) -> LinuxFacts | None:
    if f.role != Role.OS or f.report is None or f.report.os is None:
        return None
    facts = f.report.os.facts
    return facts if isinstance(facts, LinuxFacts) else None


def _footer_type_known(f: Facts) -> bool:
    return f.footer is None or f.footer.disk_type in (DISK_TYPE_FIXED, DISK_TYPE_DYNAMIC, DISK_TYPE_DIFFERENCING)


@rule("format-fixed-vhd", "the image is a fixed VHD")
def _format(f: Facts) -> Findings:
    if _is_fixed_vhd(f) or not _footer_type_known(f):  # an unknown footer type is footer-disk-type's finding
        return []
    what = {"vhdx": "a VHDX", "raw": "a raw image"}.get(f.format, f"a {f.disk_type} VHD")
    return [(ERROR, f"{what}: Azure accepts only fixed VHD; run `vhdtool convert IMAGE OUT.vhd`")]


@rule("size-whole-mib", "the virtual size is a whole number of MiB")
def _size_mib(f: Facts) -> Findings:
    if f.virtual_size % MiB == 0:
        return []
    up = -(-f.virtual_size // MiB) * MiB
    return [
        (
            ERROR,
            f"virtual size {f.virtual_size} bytes is not a whole number of MiB; "
            f"`vhdtool convert` pads it to {up} bytes",
        )
    ]


def _data_beyond_current_size(f: Facts) -> bool:
    """A fixed VHD whose footer's current size leaves bytes unused between the data and the footer."""
    return _is_fixed_vhd(f) and f.virtual_size + FOOTER_SIZE < f.file_size


@rule("file-size", "file size = virtual size + 512")
def _file_size(f: Facts) -> Findings:
    # A current size short of the data is footer-current-size's finding (the same mismatch, its cause named).
    if not _is_fixed_vhd(f) or f.file_size == f.virtual_size + FOOTER_SIZE or _data_beyond_current_size(f):
        return []
    return [
        (
            ERROR,
            f"file is {f.file_size} bytes, expected virtual size + 512 = "
            f"{f.virtual_size + FOOTER_SIZE}; rewrite it with `vhdtool convert`",
        )
    ]


@rule("footer-cookie", "footer cookie is 'conectix'")
def _footer_cookie(f: Facts) -> Findings:
    if f.footer is None or f.footer.cookie == VHD_COOKIE:
        return []
    return [
        (
            ERROR,
            f"footer cookie is {f.footer.cookie.decode('latin-1')!r}, not 'conectix': no reader takes it as a VHD; "
            "drop "
            "the damaged footer (`truncate -s -512 IMAGE`, on a copy if need be) and run "
            "`vhdtool convert IMAGE OUT.vhd`",
        )
    ]


@rule("footer-disk-type", "footer disk type is fixed (2)")
def _footer_type(f: Facts) -> Findings:
    # Dynamic and differencing disks are the format rule's finding; this one catches unknown types.
    if _footer_type_known(f):
        return []
    assert f.footer is not None
    return [
        (
            ERROR,
            f"footer disk type is {f.footer.disk_type_name}, not fixed (2): no reader takes the file; if it "
            "is a fixed disk, drop the footer (`truncate -s -512 IMAGE`) and run `vhdtool convert IMAGE OUT.vhd`",
        )
    ]


@rule("footer-data-offset", "footer data offset is all 0xFF on a fixed disk")
def _footer_data_offset(f: Facts) -> Findings:
    if (
        f.footer is None
        or f.footer.disk_type != DISK_TYPE_FIXED
        or f.footer.data_offset == FIXED_DATA_OFFSET
    ):
        return []
    return [
        (
            ERROR,
            f"fixed VHD footer has data offset {f.footer.data_offset}, expected 0xFFFFFFFFFFFFFFFF; "
            "`vhdtool fix IMAGE` rewrites the footer in place",
        )
    ]


@rule("footer-checksum", "footer checksum is valid")
def _footer_checksum(f: Facts) -> Findings:
    if f.footer is None or f.footer.checksum_valid:
        return []
    return [(ERROR, f"footer checksum 0x{f.footer.checksum:08x} is wrong; "
                    "`vhdtool fix IMAGE` rewrites the footer in place")]


@rule("footer-current-size", "footer current size covers the data before the footer")
def _footer_size(f: Facts) -> Findings:
    # Azure reads current size and wants the file to be exactly that + 512: bytes past it are refused or lost.
    if f.footer is None or not _data_beyond_current_size(f):
        return []
    data = f.file_size - FOOTER_SIZE
    return [
        (
            ERROR,
            f"footer current size is {f.footer.current_size} bytes but the file holds {data} bytes before "
            "the footer; `vhdtool fix IMAGE` sets it to the data's size (keeping every byte)",
        )
    ]


@rule("upload-size-range", "size within the managed-disk upload range")
def _upload_range(f: Facts) -> Findings:
    size = f.virtual_size + FOOTER_SIZE
    if UPLOAD_MIN_FILE <= size <= UPLOAD_MAX_FILE:
        return []
    return [
        (
            ERROR,
            f"upload size {size} bytes is outside Azure's direct-upload range {UPLOAD_MIN_FILE}"
            f"-{UPLOAD_MAX_FILE}; resize with `vhdtool convert --size`",
        )
    ]


def _target_generation(f: Facts) -> str | None:
    if f.generation:
        return f.generation
    if f.report is not None and len(f.report.generation.supported) == 1:
        return f.report.generation.supported[0]
    return None


@rule("os-disk-size", "OS disk within its generation's limit")
def _os_size(f: Facts) -> Findings:
    if f.role != Role.OS:
        return []
    gen = _target_generation(f) or "V2"
    limit = OS_DISK_MAX[gen]
    if f.virtual_size <= limit:
        return []
    return [
        (
            ERROR,
            f"OS disk of {f.virtual_size / TiB:.2f} TiB exceeds the {limit // TiB} TiB limit of "
            f"Generation {gen[1]}" + ("; use Generation 2 with GPT" if gen == "V1" else ""),
        )
    ]


@rule("data-disk-size", "data disk within 32,767 GiB")
def _data_size(f: Facts) -> Findings:
    if f.role != Role.DATA or f.virtual_size <= DATA_DISK_MAX:
        return []
    return [(ERROR, f"data disk of {f.virtual_size // GiB} GiB exceeds Azure's 32,767 GiB limit")]


@rule("page-blob-size", "fits in a page blob (8 TiB)")
def _page_blob(f: Facts) -> Findings:
    if f.virtual_size + FOOTER_SIZE <= PAGE_BLOB_MAX:
        return []
    return [
        (
            WARNING,
            "larger than a page blob's 8 TiB: upload it directly to a managed disk, not a storage "
            "account blob",
        )
    ]


@rule("generation", "the disk boots as the wanted Hyper-V generation")
def _generation(f: Facts) -> Findings:
    if f.role != Role.OS or f.report is None:
        return []
    gen = f.report.generation
    why = "; ".join(gen.evidence)
    if not gen.supported:
        return [(WARNING, f"no BIOS or UEFI boot path found ({why}); the disk may not boot as an OS disk")]
    if f.generation and f.generation not in gen.supported:
        return [
            (
                ERROR,
                f"--generation {f.generation} but the disk boots only as {gen.value} ({why}); "
                f"create the image as {gen.supported[0]}",
            )
        ]
    if f.generation is None:
        return [
            (
                INFO,
                f"boots as {gen.value} ({why}): create the image with Hyper-V generation {gen.supported[-1]}",
            )
        ]
    return []


@rule("os-encrypted", "the OS volume is not encrypted")
def _encrypted(f: Facts) -> Findings:
    if f.report is None:
        return []
    found = [f"partition {v.partition.number} ({v.info.kind})" for v in f.report.encrypted_volumes]
    if not found:
        return []
    if f.role == Role.OS:
        return [
            (
                ERROR,
                f"encrypted volume(s): {', '.join(found)}; an uploaded OS disk cannot be unlocked at "
                "boot: decrypt (BitLocker off / LUKS removed) before capture",
            )
        ]
    return [(WARNING, f"encrypted volume(s): {', '.join(found)}; the VM must unlock them itself")]


@rule("unclean-capture", "captured from a cleanly shut-down OS")
def _unclean(f: Facts) -> Findings:
    if f.report is None or not f.report.unclean:
        return []
    state = f.report.os.state if f.report.os is not None else None
    severe = GENERALIZED in (f.expect, state)
    text = "; ".join(f.report.unclean)
    return [
        (
            ERROR if severe else WARNING,
            f"unclean capture: {text}; shut the VM down cleanly (no hibernation / Fast Startup) "
            "and capture again" + (" (a generalized image must be shut down)" if severe else ""),
        )
    ]


@rule("os-found", "an OS was found on an OS disk")
def _os_found(f: Facts) -> Findings:
    if f.report is None:
        return []
    if f.role == Role.OS and f.report.os is None:
        if f.report.missing_readers:
            return [(WARNING, f"the OS was not looked for: {_missing_readers(f.report)}")]
        return [(WARNING, "no Windows or Linux OS found; if this is a data disk use --role data")]
    if f.role == Role.DATA and f.report.os is not None:
        return [(INFO, f"an OS ({f.report.os.name or f.report.os.family}) is on this data disk")]
    return []


def _missing_readers(report: DiskReport) -> str:
    kinds = ", ".join(report.missing_readers)
    return f"reading {kinds} needs the optional extra: pip install 'vhdtool[inspect]'"


@rule("os-state", "OS state matches --expect")
def _os_state(f: Facts) -> Findings:
    if f.report is None or f.role != Role.OS:
        return []
    if f.report.os is None:
        if f.expect is None:
            return []  # os-found says it
        why = _missing_readers(f.report) if f.report.missing_readers else "no Windows or Linux OS was found"
        return [(ERROR, f"--expect {f.expect} cannot be confirmed: {why}")]
    os_report = f.report.os
    state = os_report.state
    if isinstance(os_report.facts, WindowsFacts) and os_report.facts.undeployable:
        return [
            (
                ERROR,
                "Windows ImageState is IMAGE_STATE_UNDEPLOYABLE: this image can never be deployed; "
                "capture a new one",
            )
        ]
    if f.expect is not None:
        if state == f.expect:
            return [(INFO, f"OS is {state}, as expected: create the image definition with OS state "
                           f"{state.capitalize()}")]
        hint = (
            "generalize it (Sysprep /generalize /oobe /shutdown, or `waagent -deprovision+user` and shut "
            "down)"
            if f.expect == GENERALIZED
            else "create the image as Generalized, or use a specialized capture"
        )
        return [(ERROR, f"OS is {state}, expected {f.expect}: {hint}")]
    if state in (IN_BETWEEN, UNKNOWN):
        return [
            (
                WARNING,
                f"OS state is {state}: see `vhdtool inspect` evidence before choosing the gallery OS state",
            )
        ]
    return [(INFO, f"OS is {state}: create the image definition with OS state {state.capitalize()}")]


@rule("linux-swap", "no swap on the OS disk")
def _swap(f: Facts) -> Findings:
    if f.report is None or f.role != Role.OS:
        return []
    parts = [
        str(v.partition.number) for v in f.report.volumes if v.partition.is_swap or v.info.kind == "swap"
    ]
    lines = _linux_facts(f)
    fstab = lines.fstab_swap if lines else ()
    if not parts and not fstab:
        return []
    where = (
        (f"swap partition {', '.join(parts)}" if parts else "")
        + ("; " if parts and fstab else "")
        + (f"/etc/fstab swap line {fstab[0]!r}" if fstab else "")
    )
    return [
        (
            WARNING,
            f"{where}: Azure advises no swap on the OS disk; remove it and set "
            "ResourceDisk.EnableSwap in waagent.conf (or cloud-init) instead",
        )
    ]


@rule("linux-hyperv-drivers", "Hyper-V drivers present")
def _drivers(f: Facts) -> Findings:
    facts = _linux_facts(f)
    if facts is None:
        return []
    missing = [name for name, kernels in facts.hyperv_drivers.items() if not kernels]
    if not missing:
        return []
    return [
        (
            ERROR,
            f"Hyper-V driver(s) {', '.join(missing)} not found in /lib/modules or the kernel config: "
            "install a kernel with them and rebuild the initramfs",
        )
    ]


@rule("linux-agent", "Azure Linux agent or cloud-init installed and enabled")
def _agent(f: Facts) -> Findings:
    facts = _linux_facts(f)
    if facts is None:
        return []
    if not facts.waagent_installed and not facts.cloud_init_installed:
        return [
            (
                ERROR,
                "neither the Azure Linux Agent (waagent) nor cloud-init is installed: the VM cannot be "
                "provisioned; install WALinuxAgent",
            )
        ]
    if not facts.waagent_enabled and not facts.cloud_init_enabled:
        return [
            (
                WARNING,
                "waagent / cloud-init installed but no systemd unit is enabled: "
                "`systemctl enable walinuxagent` (or waagent / cloud-init)",
            )
        ]
    return []


@rule("linux-serial-console", "kernel logs to the serial console")
def _console(f: Facts) -> Findings:
    facts = _linux_facts(f)
    if facts is None or facts.kernel_cmdline is None or "console=ttyS0" in facts.kernel_cmdline:
        return []
    return [
        (
            WARNING,
            "GRUB_CMDLINE_LINUX lacks console=ttyS0: boot diagnostics and the serial console "
            "will be blank; add it in /etc/default/grub",
        )
    ]


@rule("linux-machine-id", "a generalized Linux image has no machine id")
def _machine_id(f: Facts) -> Findings:
    facts = _linux_facts(f)
    if facts is None or not facts.machine_id_set:
        return []
    state = f.report.os.state if f.report is not None and f.report.os is not None else None
    if GENERALIZED not in (f.expect, state):
        return []
    return [
        (
            WARNING,
            "/etc/machine-id is set: every VM made from this image would share it; empty it "
            "(`truncate -s 0 /etc/machine-id`) before capture",
        )
    ]


@rule("partition-table", "partition table is consistent")
def _table(f: Facts) -> Findings:
    if f.report is None or not f.report.table.problems:
        return []
    return [(WARNING, f"partition table: {p}") for p in f.report.table.problems]


@rule("billing-tier", "billing tier of the size")
def _tier(f: Facts) -> Findings:
    return [(INFO, billing_text(billing_tier(f.virtual_size)))]


def billing_text(tier: BillingTier) -> str:
    """The ``billing-tier`` finding: the managed-disk tiers the size is billed as."""
    if tier.tier_size_gib is None:
        return f"{tier.size_gib} GiB is above the largest tier ({LARGEST_GIB:,} GiB)"
    return (
        f"billed as {tier.tier_size_gib} GiB: {tier.premium_ssd} (Premium SSD) / {tier.standard_ssd} "
        f"(Standard SSD) / {tier.standard_hdd} (Standard HDD)"
    )


def evaluate(facts: Facts) -> list[RuleResult]:
    """Run every rule over ``facts``; a rule with no finding passed."""
    results = []
    for r in RULES:
        findings = tuple(Finding(r.id, sev, msg) for sev, msg in r.func(facts))
        results.append(RuleResult(r, findings))
    return results


def junit_xml(results: list[RuleResult], name: str) -> str:
    """A JUnit XML report: one testcase per rule; errors are failures, warnings and notes go to system-out."""
    failures = sum(1 for r in results if any(x.severity == ERROR for x in r.findings))
    suites = ET.Element("testsuites")
    suite = ET.SubElement(suites, "testsuite", name=f"vhdtool check {name}", tests=str(len(results)),
                          failures=str(failures), errors="0", skipped="0")
    for r in results:
        case = ET.SubElement(suite, "testcase", classname="vhdtool.check", name=r.rule.id)
        for x in r.findings:
            if x.severity == ERROR:
                ET.SubElement(case, "failure", type="error", message=x.message).text = x.message
        notes = [f"{x.severity}: {x.message}" for x in r.findings if x.severity != ERROR]
        if notes:
            ET.SubElement(case, "system-out").text = "\n".join(notes)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


__all__ = [
    "Severity",
    "Role",
    "ERROR",
    "WARNING",
    "INFO",
    "Facts",
    "Finding",
    "Rule",
    "RuleResult",
    "RULES",
    "evaluate",
    "facts_from_disk",
    "billing_tier",
    "billing_text",
    "junit_xml",
    "STATES",
    "GENERATIONS",
    "ROLES",
]
