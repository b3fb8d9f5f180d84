"""``vhdtool copy``: a disk already in Azure to another blob or managed disk, server-side where allowed."""

from __future__ import annotations

import click

from vhdtool.azure.remote import open_remote
from vhdtool.azure.remote.copy import copy
from vhdtool.azure.storage import make_destination
from vhdtool.azure.upload import UploadOptions
from vhdtool.cli import emit_json, human_size, main
from vhdtool.cli.bars import BarProgress


@main.command("copy")
@click.argument("src")
@click.argument("dest")
@click.option("--connection-string", envvar="AZURE_STORAGE_CONNECTION_STRING", show_envvar=True,
              help="Connection string of DEST's account (DEST as CONTAINER/BLOB); also SRC's unless "
                   "--source-connection-string or --source-account-url is given.")
@click.option("--account-url", help="DEST's account URL, signed in with DefaultAzureCredential.")
@click.option("--source-connection-string", metavar="TEXT", help="Connection string of SRC's account.")
@click.option("--source-account-url", metavar="URL", help="SRC's account URL, signed in with DefaultAzureCredential.")
@click.option("--mode", type=click.Choice(["auto", "server", "relay"]), default="auto", show_default=True,
              help="server: Put Page From URL only; relay: through this machine; auto: server, relay if refused.")
@click.option("--threads", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Requests in flight at once.")
@click.option("--overwrite", is_flag=True, help="Replace DEST if it exists (its written ranges are cleared first).")
@click.option("--resume", is_flag=True, help="Continue an interrupted copy of the same, unchanged SRC.")
@click.option("--verify", type=click.Choice(["pages", "full"]), is_flag=False, flag_value="pages", default=None,
              help="Afterwards compare DEST's page ranges (--verify) and bytes with SRC (--verify=full).")
@click.option("--managed-disk/--no-managed-disk", default=None,
              help="Treat DEST as a managed disk opened for upload (default: detected from the URL).")
@click.option("--timeout", type=click.FloatRange(1, 3600), default=120.0, show_default=True,
              help="Seconds one request may take before it is retried.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@click.option("--progress/--no-progress", "show_progress", default=None,
              help="Show a progress bar on stderr (default: when stderr is a terminal).")
def copy_command(src: str, dest: str, connection_string: str | None, account_url: str | None,
                 source_connection_string: str | None, source_account_url: str | None, mode: str, threads: int,
                 overwrite: bool, resume: bool, verify: str | None, managed_disk: bool | None, timeout: float,
                 as_json: bool, show_progress: bool | None) -> None:
    """Copy the page blob, managed disk or snapshot SRC to the page blob or managed disk DEST.

    Each of SRC and DEST is a blob URL with a SAS token (a managed disk's or snapshot's
    `grant-access` URL too), a blob URL signed in with DefaultAzureCredential, or CONTAINER/BLOB with
    a connection string or account URL. Only written ranges move, server-side (Put Page From URL)
    where the service allows it; otherwise vhdtool relays them and says why. A VHDX or dynamic VHD
    SRC is converted to the fixed VHD Azure needs on the way.
    """

    destination = make_destination(dest, connection_string=connection_string, account_url=account_url)
    if source_connection_string or source_account_url:
        src_cs, src_url = source_connection_string, source_account_url
    else:
        src_cs, src_url = connection_string, account_url
    source = open_remote(src, connection_string=src_cs, account_url=src_url, timeout=timeout,
                         threads=threads, granule=4096)
    try:
        bar = BarProgress(source.size, "copy", show_progress)
        try:
            options = UploadOptions(threads=threads, overwrite=overwrite, resume=resume, verify=verify,
                                    managed_disk=managed_disk, timeout=timeout)
            result = copy(source, destination, options, mode=mode, progress=bar)
        finally:
            bar.close()
    finally:
        source.close()
    if as_json:
        emit_json(result.to_json())
        return
    for warning in result.warnings:
        click.echo(f"vhdtool: warning: {warning}", err=True)
    if result.relay_reason:
        click.echo(f"vhdtool: relaying through this machine: {result.relay_reason}", err=True)
    rows = [
        ("source", result.source),
        ("dest", result.dest),
        ("mode", result.mode + (" (converted)" if result.converted else "")),
        ("written", human_size(result.written_bytes) + " in the source"),
        ("by service", human_size(result.bytes_copied_by_service)),
        ("relayed", f"{human_size(result.bytes_read)} read, {human_size(result.bytes_sent)} sent"),
        ("cleared", human_size(result.bytes_cleared)),
        ("requests", f"{result.requests}, {result.retries} retries" + (" (resumed)" if result.resumed else "")),
        ("verified", result.verified or "no"),
        ("digest", f"{result.sparse_digest} (sparse-sha256)" if result.sparse_digest else
                   "not computed (the data did not cross this machine; --verify=full reads it back)"),
        ("time", f"{result.seconds:.1f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")
