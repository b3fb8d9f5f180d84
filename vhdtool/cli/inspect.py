"""``vhdtool inspect``: what is on the disk, which OS, generalized or specialized, and why."""

from __future__ import annotations

import click

from vhdtool.cli import absolute_parent_option, emit_json, human_size, main, parent_option
from vhdtool.cli.sources import echo_read_cost, open_argument, read_cost, source_options
from vhdtool.formats.open import open_image
from vhdtool.inspect.report import LVM_LV_TYPE, DiskReport, inspect_disk


@main.command("inspect")
@click.argument("image")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (schema in docs/inspect.md).")
@parent_option
@absolute_parent_option
@source_options
def inspect_command(image: str, as_json: bool, parent: str | None, allow_absolute_parent: bool,
                    connection_string: str | None, account_url: str | None) -> None:
    """Read IMAGE (any format) without mounting it: partitions, filesystems, OS and its state.

    IMAGE is a file or a blob (a URL, or CONTAINER/BLOB with --connection-string / --account-url).
    """
    source = open_argument(image, connection_string, account_url)
    with open_image(source, parent=parent, allow_absolute_parent=allow_absolute_parent) as disk:
        report = inspect_disk(disk)
    cost = read_cost(source)
    if as_json:
        emit_json(report.to_json() if cost is None else {**report.to_json(), "read": cost})
    else:
        print_report(report)
        echo_read_cost(cost)


def print_report(report: DiskReport) -> None:
    """The human form of :func:`inspect_disk`'s report."""
    click.echo(f"image       {report.path}")
    click.echo(f"format      {report.format} ({report.disk_type}), {human_size(report.virtual_size)}")
    table = report.table
    extra = f", disk GUID {table.disk_guid}" if table.disk_guid else ""
    click.echo(f"partitions  {table.scheme}{extra}")
    for vol in report.volumes:
        part, info = vol.partition, vol.info
        flags = (" active" if part.bootable else "") + (" [OS]" if vol.holds_os else "")
        label = f" label={info.label!r}" if info.label else ""
        if part.type_id == LVM_LV_TYPE:
            label = f" {part.name}{label}"
        click.echo(
            f"  {part.number:>2}  {human_size(part.length):<32} {part.type_name:<22} {info.kind}"
            f"{label}{flags}"
        )
    click.echo(f"generation  {report.generation.value} ({'; '.join(report.generation.evidence)})")
    click.echo(f"arch        {report.architecture or 'unknown (nothing read tells, or the clues disagree)'}")
    os_report = report.os
    if os_report is None:
        click.echo("os          none found")
    else:
        name = os_report.name or os_report.family
        version = f" {os_report.version}" if os_report.version and os_report.version not in name else ""
        host = f", hostname {os_report.hostname}" if os_report.hostname else ""
        click.echo(f"os          {name}{version} ({os_report.family}{host})")
        click.echo(f"state       {os_report.state}")
        for e in os_report.evidence:
            value = "absent" if e.value is None else e.value
            click.echo(f"  [{e.points_to}] {e.source}: {value} - {e.meaning}")
    for signal in report.unclean:
        click.echo(f"unclean     {signal}")
    for warning in report.warnings:
        click.echo(f"warning     {warning}")
