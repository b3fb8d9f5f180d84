"""``vhdtool prepare``: check, convert, name, record and (optionally) upload an image set."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import click

from vhdtool.azure.container import parse_destination
from vhdtool.azure.remote.address import blob_address
from vhdtool.cli import emit_json, human_size, main
from vhdtool.cli.bars import BarProgress
from vhdtool.errors import UsageError
from vhdtool.jobs.manifest import DiskRecord, Manifest
from vhdtool.jobs.manifest_file import manifest_to_json
from vhdtool.jobs.prepare import ChecksFailedError, PrepareRequest, disk_label, prepare
from vhdtool.readiness.rules import ERROR, WARNING, Finding
from vhdtool.stream.hasher import parse_algorithms


def parse_data_option(values: tuple[str, ...], option: str = "--data",
                      form: str = "LUN=IMAGE") -> tuple[tuple[int, str], ...]:
    """``("0=data.vhdx", "1=logs.vhd")`` -> ``((0, "data.vhdx"), (1, "logs.vhd"))``."""
    result: list[tuple[int, str]] = []
    for text in values:
        lun_text, sep, path = text.partition("=")
        if not sep or not lun_text.strip().isdigit() or not path:
            example = "0=data.vhdx" if option == "--data" else "0=https://ACCOUNT.blob.core.windows.net/c/b.vhd"
            raise UsageError(f"{option} {text!r}: write {form}, e.g. {option} {example}")
        result.append((int(lun_text), path))
    return tuple(result)


def _print_findings(disks: Iterable[tuple[str, Sequence[Finding]]]) -> None:
    """Errors and warnings of each ``(disk label, findings)`` on stderr (notes such as the billing tier
    go to the manifest only)."""
    for label, findings in disks:
        for f in findings:
            if f.severity not in (ERROR, WARNING):
                continue
            click.echo(f"{f.severity:<7} {label}: [{f.rule}] {f.message}", err=True)


def summary_rows(manifest: Manifest) -> list[list[str]]:
    """The summary table: one row per disk."""
    rows = [["DISK", "NAME", "SOURCE", "SIZE", "TIER", "OS", "GEN", "CHECKS", "SPARSE-SHA256"]]
    for d in manifest.disks:
        rows.append([
            "os" if d.lun is None else f"data {d.lun}",
            d.name,
            f"{d.source.format}/{d.source.disk_type}",
            human_size(d.fixed_vhd.virtual_size).split(" (")[0],
            f"{d.billing_tier.premium_ssd or '-'}/{d.billing_tier.standard_ssd or '-'}",
            _os_text(d),
            d.hyper_v_generation or "-",
            _checks_text(d),
            (d.fixed_vhd.sparse_sha256 or "-")[:16] + "…",
        ])
    return rows


def _os_text(d: DiskRecord) -> str:
    if d.os is None:
        return "-"
    return f"{d.os.family or '?'} {d.os.state}"


def _checks_text(d: DiskRecord) -> str:
    errors = sum(1 for f in d.findings if f.severity == ERROR)
    warnings = sum(1 for f in d.findings if f.severity == WARNING)
    if not errors and not warnings:
        return "ok"
    return ", ".join(p for p in (f"{errors} error(s)" if errors else "",
                                 f"{warnings} warning(s)" if warnings else "") if p)


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@main.command("prepare")
@click.option("--name", required=True, help="The image name: the stem of every disk name.")
@click.option("--os", "os_image", required=True, metavar="IMAGE",
              help="The OS disk (VHDX, VHD or raw).")
@click.option("--data", "data", multiple=True, metavar="LUN=IMAGE",
              help="A data disk at LUN (0-63); repeat for each data disk.")
@click.option("-o", "--output-dir", required=True, metavar="DIR",
              help="Where the fixed VHDs and NAME.manifest.json go (created if missing).")
@click.option("--expect", type=click.Choice(["generalized", "specialized"]),
              help="Fail the checks unless the OS is in this state.")
@click.option("--upload", "destination", metavar="DEST",
              help="Upload each disk as the page blob DISKNAME.vhd to DEST: a container URL (with a SAS "
                   "token, or signed in with Azure AD), or a container name with --connection-string "
                   "or --account-url.")
@click.option("--connection-string", envvar="AZURE_STORAGE_CONNECTION_STRING", metavar="TEXT",
              help="Storage connection string, for --upload CONTAINER "
                   "(default: $AZURE_STORAGE_CONNECTION_STRING).")
@click.option("--account-url", metavar="URL",
              help="https://ACCOUNT.blob.core.windows.net, for --upload CONTAINER with an Azure AD login.")
@click.option("--no-local-copy", is_flag=True,
              help="With --upload: upload straight from the sources, writing no VHD files.")
@click.option("--base-os", "base_os", metavar="URL",
              help="With --upload: the OS disk is a differencing disk whose parent was uploaded to this page "
                   "blob; copy it and send only what the descendants own (see docs/upload.md).")
@click.option("--base-data", "base_data", multiple=True, metavar="LUN=URL",
              help="The same for the data disk at LUN; repeat for each.")
@click.option("--hash", "hash_text", metavar="ALGS",
              help="Also record md5 and/or sha256 of each fixed VHD (e.g. md5,sha256): these hash every zero "
                   "of the disk. The sparse digest is always recorded.")
@click.option("--sync", is_flag=True,
              help="Flush each fixed VHD and the manifest to the disk before renaming them into place "
                   "(durable after a crash); without it the kernel writes them out later.")
@click.option("--force", is_flag=True, help="Go on even if a check reports errors.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON instead of the table.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def prepare_command(name: str, os_image: str, data: tuple[str, ...], output_dir: str, expect: str | None,
                    destination: str | None, connection_string: str | None, account_url: str | None,
                    no_local_copy: bool, base_os: str | None, base_data: tuple[str, ...],
                    hash_text: str | None, sync: bool, force: bool, as_json: bool,
                    quiet: bool) -> None:
    """Check, convert, name and record an image set: one OS disk and its data disks.

    Each disk is checked (errors stop the run unless --force), converted to a fixed VHD named
    NAME-os-YYYY-MM-DD / NAME-datadisk-LUN-YYYY-MM-DD (with -NN on a name collision), hashed
    (the sparse digest; MD5/SHA-256 with --hash) in the same pass, optionally uploaded, and the set
    is described in NAME.manifest.json (schema in docs/prepare.md). The VHDs are renamed into place
    atomically, but not synced to the disk unless --sync.
    """

    hashes = parse_algorithms(hash_text) if hash_text else ()
    dest = None if destination is None else parse_destination(
        destination, connection_string=connection_string, account_url=account_url)

    bases: list[tuple[int | None, str]] = [(None, base_os)] if base_os else []
    bases += [(lun, url) for lun, url in parse_data_option(base_data, "--base-data", "LUN=URL")]
    request = PrepareRequest(name=name, os_image=os_image, data_images=parse_data_option(data),
                             output_dir=output_dir, expect=expect, destination=dest,
                             no_local_copy=no_local_copy, force=force, hashes=hashes, sync=sync,
                             bases=tuple((lun, blob_address(url, connection_string=connection_string,
                                                            account_url=account_url)) for lun, url in bases))
    try:
        # Over the whole set: a bar on a terminal, one line per step otherwise.
        with BarProgress(0, show=None if not quiet and not as_json else False, stage_lines=True) as progress:
            result = prepare(request, progress=progress)
    except ChecksFailedError as err:
        _print_findings((item.label, outcome.findings) for item, outcome in err.failed)
        raise
    if not quiet and not as_json:
        _print_findings((disk_label(d.lun), d.findings) for d in result.manifest.disks)
    if as_json:
        emit_json(manifest_to_json(result.manifest))
        return
    print_table(summary_rows(result.manifest))
    g = result.manifest.gallery_image_definition
    click.echo("")
    click.echo(f"gallery image definition: OS type {g.os_type or '?'}, OS state {g.os_state or '?'}, "
               f"Hyper-V generation {g.hyper_v_generation or '?'}, architecture {g.architecture or '?'}")
    for d in result.manifest.disks:
        if d.blob_url:
            click.echo(f"uploaded: {d.blob_url}")
    shown = os.path.relpath(result.manifest_path)
    click.echo(f"manifest: {result.manifest_path if shown.startswith('..') else shown}")
