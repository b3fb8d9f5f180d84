"""``vhdtool check``: will Azure take this disk? Findings with ids; exit 1 on any error."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from vhdtool.cli import EXIT_ERROR, absolute_parent_option, emit_json, main, parent_option
from vhdtool.cli.sources import echo_read_cost, open_argument, read_cost, source_options
from vhdtool.errors import OutputError
from vhdtool.inspect.report import inspect_disk
from vhdtool.readiness.rules import ERROR, GENERATIONS, ROLES, STATES, evaluate, junit_xml
from vhdtool.readiness.subject import open_for_check


@main.command("check")
@click.argument("image")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (schema in docs/inspect.md).")
@click.option(
    "--role",
    type=click.Choice(ROLES),
    default="os",
    show_default=True,
    help="What the disk will be in Azure.",
)
@click.option("--expect", type=click.Choice(STATES), help="The OS state the image definition will declare.")
@click.option("--generation", type=click.Choice(GENERATIONS), help="The Hyper-V generation you will use.")
@click.option("--junit", "junit", type=click.Path(dir_okay=False), help="Also write a JUnit XML report here.")
@parent_option
@absolute_parent_option
@source_options
def check_command(
    image: str,
    as_json: bool,
    role: str,
    expect: str | None,
    generation: str | None,
    junit: str | None,
    parent: str | None,
    allow_absolute_parent: bool,
    connection_string: str | None,
    account_url: str | None,
) -> None:
    """Check IMAGE against Azure's rules; exit 1 on any error (rule ids: docs/check-rules.md).

    IMAGE is a file or a blob (a URL, or CONTAINER/BLOB with --connection-string / --account-url).
    """
    source = open_argument(image, connection_string, account_url)
    with open_for_check(source, parent=parent, allow_absolute_parent=allow_absolute_parent) as subject:
        report = inspect_disk(subject.disk) if subject.disk is not None else None
        facts = subject.facts(report, role, expect, generation)
    cost = read_cost(source)
    results = evaluate(facts)
    findings = [f for r in results for f in r.findings]
    ready = not any(f.severity == ERROR for f in findings)
    if junit:
        try:
            name = image if isinstance(source, str) else source.path  # a blob's URL without its SAS token
            Path(junit).write_text(junit_xml(results, name), encoding="utf-8")
        except OSError as err:
            raise OutputError(f"{junit}: {err.strerror or err}") from err
    if as_json:
        result = {
            "ready": ready,
            "findings": [f.to_json() for f in findings],
            "os": None if report is None or report.os is None else report.os.to_json(),
            "generation": None if report is None else report.generation.value,
            "architecture": None if report is None else report.architecture,
            "unclean": [] if report is None else report.unclean,
            "warnings": [] if report is None else report.warnings,
        }
        emit_json(result if cost is None else {**result, "read": cost})
    else:
        for f in sorted(findings, key=lambda x: ("error", "warning", "info").index(x.severity)):
            click.echo(f"{f.severity.upper():<7} {f.rule}: {f.message}")
        click.echo("ready for Azure" if ready else "NOT ready for Azure")
        echo_read_cost(cost)
    if not ready:
        sys.exit(EXIT_ERROR)
