"""``vhdtool info``: what an image is, from its metadata alone."""

from __future__ import annotations

from typing import Any

import click

from vhdtool.cli import absolute_parent_option, emit_json, human_size, main, parent_option
from vhdtool.cli.sources import echo_read_cost, open_argument, read_cost, source_options
from vhdtool.formats.open import open_image


@main.command()
@click.argument("image")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (schema in docs/info.md).")
@parent_option
@absolute_parent_option
@source_options
def info(image: str, as_json: bool, parent: str | None, allow_absolute_parent: bool,
         connection_string: str | None, account_url: str | None) -> None:
    """Describe IMAGE: format, type, sizes, allocation, parent chain, log state, footer.

    IMAGE is a file, or a page blob / managed disk: a URL (with a SAS token, or signed in with
    DefaultAzureCredential) or CONTAINER/BLOB with --connection-string / --account-url.
    """
    source = open_argument(image, connection_string, account_url)
    with open_image(source, parent=parent, allow_absolute_parent=allow_absolute_parent) as disk:
        facts = disk.info()
    cost = read_cost(source)
    if as_json:
        emit_json(facts if cost is None else {**facts, "read": cost})
    else:
        _print_human(facts)
        echo_read_cost(cost)


def _print_human(facts: dict[str, Any]) -> None:
    rows: list[tuple[str, str]] = [
        ("image", facts["path"]),
        ("format", f"{facts['format']} ({facts['type']})"),
        ("virtual size", human_size(facts["virtual_size"])),
        ("allocated", human_size(facts["allocated_bytes"])),
        ("sector size", f"{facts['logical_sector_size']} logical, {facts['physical_sector_size']} physical"),
    ]
    if facts.get("block_size"):
        rows.append(("block size", human_size(facts["block_size"])))
    if facts.get("log"):
        rows.append(("log", facts["log"]))
    parent = facts.get("parent")
    while parent:
        rows.append(("parent", f"{parent.get('path')} (id {parent.get('id')})"))
        parent = parent.get("parent")
    footer = facts.get("footer")
    if footer:
        geo = footer["geometry"]
        rows += [
            ("creator", f"{footer['creator_application']!r} {footer['creator_version']} on "
                        f"{footer['creator_host_os']}"),
            ("current size", human_size(footer["current_size"])),
            ("original size", human_size(footer["original_size"])),
            ("geometry", f"C/H/S {geo['cylinders']}/{geo['heads']}/{geo['sectors_per_track']} "
                         f"({geo['size']:,} bytes)"),
            ("disk id", footer["unique_id"]),
            ("footer checksum", "valid" if footer["checksum_valid"] else "INVALID"),
        ]
    for warning in facts.get("warnings", []):
        rows.append(("warning", warning))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")
