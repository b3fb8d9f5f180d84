"""``vhdtool upload CHILD DEST --base URL``: the output of a patch upload (the engine is vhdtool.azure.patch)."""

from __future__ import annotations

import click

from vhdtool.azure.patch import patch_upload
from vhdtool.azure.remote.address import blob_address
from vhdtool.azure.storage import Destination, scrub
from vhdtool.azure.upload import UploadOptions
from vhdtool.cli import emit_json, human_size
from vhdtool.cli.bars import BarProgress
from vhdtool.formats.open import open_image


def patch_command(image: str, destination: Destination, base_url: str, options: UploadOptions, *,
                  connection_string: str | None, account_url: str | None, as_json: bool, show_progress: bool | None,
                  parent: str | None, allow_absolute_parent: bool) -> None:
    """Run the patch upload and print what it did (a table, or ``--json``)."""

    base = blob_address(base_url, connection_string=connection_string, account_url=account_url)
    with open_image(image, parent=parent, allow_absolute_parent=allow_absolute_parent) as disk:
        bar = BarProgress(0, "patch", show_progress, data_label="sent")
        try:
            result = patch_upload(disk, destination, base, options, progress=bar)
        finally:
            bar.close()
    facts = result.to_json()
    secrets = destination.secrets() + base.secrets()
    facts["blob"] = scrub(str(facts["blob"]), secrets)
    facts["base"] = scrub(str(facts["base"]), secrets)
    if as_json:
        emit_json(facts)
        return
    for warning in result.warnings:
        click.echo(f"vhdtool: warning: {warning}", err=True)
    share = result.bytes_sent / result.full_upload_bytes if result.full_upload_bytes else 0.0
    rows = [
        ("blob", facts["blob"]),
        ("base", f"{facts['base']} = {result.ancestor} (proved by {result.proof})"),
        ("blob size", human_size(result.blob_size)),
        ("copied", f"{human_size(result.bytes_copied_by_service)} by the service, "
                   f"{human_size(result.copy_bytes_sent)} relayed ({result.copy_mode})"),
        ("sent", f"{human_size(result.bytes_sent)} of the {human_size(result.full_upload_bytes)} a full upload "
                 f"sends ({share:.1%})"),
        ("cleared", human_size(result.bytes_cleared)),
        ("sparse-sha256", result.sparse_sha256),
        ("verified", result.verified or "no"),
        ("time", f"{result.seconds:.1f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")
