"""``prepare``'s checks of one disk: inspect it, run the ``check`` rules, and keep what the manifest records.

The rules judge the fixed VHD that ``prepare`` is about to write, not the source container: a VHDX or
a size off the MiB is what conversion fixes. What they find is kept as the readiness rules report
it (:class:`~vhdtool.readiness.rules.Finding`), together with the OS, Hyper-V generation and
architecture the manifest and the gallery image definition need.
"""

from __future__ import annotations

from dataclasses import dataclass

from vhdtool.disk.base import VirtualDisk
from vhdtool.formats.vhd.footer import parse_footer
from vhdtool.inspect.report import DiskReport, inspect_disk
from vhdtool.jobs.manifest import OsRecord
from vhdtool.readiness.facts import Container, facts_for
from vhdtool.readiness.rules import ERROR, Finding, evaluate
from vhdtool.stream.fixed_view import FixedVhdView


@dataclass(frozen=True)
class CheckOutcome:
    """What checking one disk found."""

    findings: tuple[Finding, ...]
    os: OsRecord | None
    hyper_v_generation: str | None
    architecture: str | None

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]


def check_disk(disk: VirtualDisk, role: str, path: str, expect: str | None) -> CheckOutcome:
    """Inspect ``disk`` and run the ``check`` rules for its ``role``, as they apply to its fixed VHD."""

    report = inspect_disk(disk)
    findings = run_rules(FixedVhdView(disk), report, role, path, expect)
    os_record: OsRecord | None = None
    generation: str | None = None
    architecture: str | None = None
    if role == "os":
        if report.os is not None:
            os_record = OsRecord(report.os.family, report.os.name, report.os.version, report.os.state)
        else:
            os_record = OsRecord(None, None, None, "unknown")
        supported = report.generation.supported
        # A disk bootable both ways is recorded as V2 (UEFI, the generation Azure recommends).
        generation = "V2" if "V2" in supported else ("V1" if "V1" in supported else None)
        architecture = report.architecture
    return CheckOutcome(tuple(findings), os_record, generation, architecture)


def run_rules(view: FixedVhdView, report: DiskReport, role: str, path: str, expect: str | None) -> list[Finding]:
    """The ``vhdtool check`` findings for the fixed VHD that ``view`` describes.

    The rules judge the output, not the source: a VHDX or a size off the MiB is what conversion
    fixes, so those rules run against the footer and sizes vhdtool is about to write (which also
    cross-checks them), while the inspection rules (OS, state, generation, drivers...) judge the
    source's contents, which conversion copies unchanged.
    """

    footer = parse_footer(view.footer_bytes, f"{path} (fixed VHD footer)", view.virtual_size)
    facts = facts_for(Container("vhd", "fixed", view.virtual_size, view.size, footer), report, role, expect)
    return [f for result in evaluate(facts) for f in result.findings]
