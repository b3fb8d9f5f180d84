"""``vhdtool upload``: any image to an Azure page blob as a fixed VHD, converted on the fly."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from vhdtool.azure.failures import PermanentError
from vhdtool.azure.storage import DEFAULT_TIMEOUT, make_destination, scrub
from vhdtool.azure.upload import DEFAULT_THREADS, UploadOptions
from vhdtool.azure.upload import upload as run_upload
from vhdtool.cli import absolute_parent_option, emit_json, human_size, main, parent_option
from vhdtool.cli.bars import BarProgress
from vhdtool.cli.params import BYTE_SIZE
from vhdtool.cli.patch import patch_command
from vhdtool.formats.open import open_image
from vhdtool.formats.vhd.layout import FOOTER_SIZE
from vhdtool.stream.fixed_view import azure_virtual_size
from vhdtool.stream.hasher import parse_algorithms

# The flags that make an UploadOptions, in --help order.
_OPTION_FLAGS = (
    click.option("--threads", type=click.IntRange(1, 64), default=DEFAULT_THREADS, show_default=True,
                 help="Put Page requests in flight at once."),
    click.option("--overwrite", is_flag=True,
                 help="Replace an existing blob; its written ranges are cleared first."),
    click.option("--resume", is_flag=True,
                 help="Continue an interrupted upload of the same image, sending only what is missing."),
    click.option("--verify", type=click.Choice(["pages", "full"]), is_flag=False, flag_value="pages",
                 default=None,
                 help="Afterwards compare the blob's page ranges (--verify) and bytes (--verify=full)."),
    click.option("--managed-disk/--no-managed-disk", default=None,
                 help="Treat DEST as a managed disk opened for upload (default: detected from the URL)."),
    click.option("--size", type=BYTE_SIZE, default=None, metavar="SIZE",
                 help="Grow the virtual size to SIZE (e.g. 30G, or bytes; rounded up to a MiB)."),
    click.option("--timeout", type=click.FloatRange(1, 3600), default=DEFAULT_TIMEOUT, show_default=True,
                 help="Seconds one request may take before it is retried."),
    click.option("--hash", "hash_text", metavar="ALGS",
                 help="Whole-file digests of the fixed VHD besides the sparse digest (always computed): md5 "
                      "(then stored as the blob's Content-MD5), sha256, ... These hash every zero of the disk "
                      "too."),
)


def upload_options(command: Callable[..., None]) -> Callable[..., None]:
    """Adds the flags of :class:`UploadOptions` to ``command``, which gets them as one ``options`` value."""

    @functools.wraps(command)
    def with_options(*args: Any, threads: int, overwrite: bool, resume: bool, verify: str | None,
                     managed_disk: bool | None, size: int | None, timeout: float, hash_text: str | None,
                     **rest: Any) -> None:
        options = UploadOptions(threads=threads, overwrite=overwrite, resume=resume, verify=verify,
                                managed_disk=managed_disk, size=size, timeout=timeout,
                                hashes=parse_algorithms(hash_text) if hash_text else ())
        command(*args, options=options, **rest)

    decorated: Callable[..., None] = with_options
    for flag in reversed(_OPTION_FLAGS):
        decorated = flag(decorated)
    return decorated


@main.command()
@click.argument("image", type=click.Path(dir_okay=False))
@click.argument("dest", required=False)
@click.option("--connection-string", envvar="AZURE_STORAGE_CONNECTION_STRING", show_envvar=True,
              help="Storage connection string (account key or SAS); DEST is then CONTAINER/BLOB.")
@click.option("--account-url",
              help="https://ACCOUNT.blob.core.windows.net, signed in with DefaultAzureCredential.")
@click.option("--container", help="Container name (instead of CONTAINER/BLOB).")
@click.option("--blob", "blob_name", help="Blob name (instead of CONTAINER/BLOB).")
@upload_options
@click.option("--base", "base_url", metavar="URL",
              help="IMAGE is a differencing disk whose parent (any level) was uploaded to the page blob URL: "
                   "copy that blob to DEST and send only the ranges the descendants own.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@click.option("--progress/--no-progress", "show_progress", default=None,
              help="Show a progress bar on stderr (default: when stderr is a terminal).")
@parent_option
@absolute_parent_option
def upload(image: str, dest: str | None, connection_string: str | None, account_url: str | None,
           container: str | None, blob_name: str | None, options: UploadOptions, base_url: str | None,
           as_json: bool, show_progress: bool | None, parent: str | None, allow_absolute_parent: bool) -> None:
    """Upload IMAGE (VHDX, VHD or raw) to the page blob DEST as the fixed VHD Azure needs.

    DEST is a blob URL with a SAS token (also a managed disk's `az disk grant-access` URL), a blob
    URL without one (signed in with DefaultAzureCredential), or CONTAINER/BLOB with
    --connection-string / AZURE_STORAGE_CONNECTION_STRING or --account-url. Only non-zero pages
    are sent; no temporary file is written. The sparse digest of the fixed VHD (which costs only
    the data) is reported and recorded in the blob's metadata.
    """

    destination = make_destination(dest, connection_string=connection_string, account_url=account_url,
                                   container=container, blob=blob_name)
    if base_url:
        if options.hashes:
            raise click.UsageError("--base does not combine with --hash (the sparse digest is recorded)")
        patch_command(image, destination, base_url, options, connection_string=connection_string,
                      account_url=account_url, as_json=as_json, show_progress=show_progress, parent=parent,
                      allow_absolute_parent=allow_absolute_parent)
        return
    with open_image(image, parent=parent, allow_absolute_parent=allow_absolute_parent) as disk:
        bar = BarProgress(azure_virtual_size(disk.virtual_size, options.size) + FOOTER_SIZE, "upload", show_progress,
                          data_label="sent")
        try:
            result = run_upload(disk, destination, options, progress=bar)
        except PermanentError as err:
            if err.reason != "sas-expired":
                raise
            # What was sent stays on the blob: --resume sends only the rest.
            raise PermanentError(err.detail, err.status, err.reason, "rerun with --resume and a fresh SAS") from None
        finally:
            bar.close()
    facts = result.to_json()
    facts["blob"] = scrub(str(facts["blob"]), destination.secrets())
    if as_json:
        emit_json(facts)
        return
    for warning in result.warnings:
        click.echo(f"vhdtool: warning: {warning}", err=True)
    rate = result.bytes_sent / result.seconds if result.seconds > 0 else 0.0
    rows = [
        ("blob", facts["blob"]),
        ("blob size", human_size(result.blob_size)),
        ("sent", f"{human_size(result.bytes_sent)} in {result.requests} requests, {result.retries} retries"),
        ("skipped", human_size(result.bytes_skipped) + (" (resumed)" if result.resumed else "")),
        ("cleared", human_size(result.bytes_cleared)),
        ("sparse-sha256", result.sparse_sha256),
        *((("md5", f"{result.md5} (Content-MD5 {result.content_md5}"
                   f"{'' if result.md5_stored else ', not stored'})"),) if result.md5 else ()),
        *((name, value) for name, value in result.digests.items() if name not in ("sparse-sha256", "md5")),
        ("verified", result.verified or "no"),
        ("time", f"{result.seconds:.1f} s, {human_size(int(rate))}/s sent"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")
