"""``vhdtool download``: a page blob or managed disk to a sparse local file, only its written ranges fetched."""

from __future__ import annotations

import click

from vhdtool.azure.remote import open_remote
from vhdtool.azure.remote.download import download
from vhdtool.cli import emit_json, human_size, main
from vhdtool.cli.bars import BarProgress
from vhdtool.cli.sources import source_options


@main.command("download")
@click.argument("src")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--format", "output_format", type=click.Choice(["vhd", "raw"]), default="vhd", show_default=True,
              help="vhd: the fixed VHD as stored; raw: the disk's bytes without the footer.")
@click.option("--threads", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Ranged reads in flight at once.")
@click.option("--resume", is_flag=True, help="Continue a partial download of the same, unchanged blob.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.option("--timeout", type=click.FloatRange(1, 3600), default=120.0, show_default=True,
              help="Seconds one request may take before it is retried.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@click.option("--progress/--no-progress", "show_progress", default=None,
              help="Show a progress bar on stderr (default: when stderr is a terminal).")
@source_options
def download_command(src: str, out: str, output_format: str, threads: int, resume: bool, force: bool,
                     timeout: float, as_json: bool, show_progress: bool | None, connection_string: str | None,
                     account_url: str | None) -> None:
    """Download the blob SRC (page blob, managed disk or snapshot) to OUT, sparse.

    SRC is a blob URL with a SAS token (also `az disk grant-access` / `az snapshot grant-access`
    URLs), a blob URL signed in with DefaultAzureCredential, or CONTAINER/BLOB with
    --connection-string / --account-url. Only written ranges are fetched; OUT appears when complete.
    A VHDX or dynamic VHD blob is converted on the way.
    """

    source = open_remote(src, connection_string=connection_string, account_url=account_url, timeout=timeout,
                         threads=threads, granule=4096)
    try:
        bar = BarProgress(source.size, "download", show_progress)
        try:
            result = download(source, out, output_format=output_format, threads=threads, resume=resume,
                              force=force, progress=bar)
        finally:
            bar.close()
    finally:
        source.close()
    facts = result.to_json()
    if as_json:
        emit_json(facts)
        return
    rate = result.bytes_read / result.seconds if result.seconds > 0 else 0.0
    rows = [
        ("source", result.source),
        ("output", f"{result.output} ({result.format}, {human_size(result.size)})"),
        ("blob holds", f"{result.source_format}, {human_size(result.written_bytes)} written"
                       + (", converted on the way" if result.converted else "")),
        ("fetched", f"{human_size(result.bytes_read)} in {result.requests} requests, {result.retries} retries"
                    + (" (resumed)" if result.resumed else "")),
        ("wrote", human_size(result.bytes_written) + " (the rest left sparse)"),
        ("digest", f"{result.sparse_digest} (sparse-sha256 of the {result.digest_of})"),
        ("time", f"{result.seconds:.1f} s, {human_size(int(rate))}/s"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")
