"""``vhdtool verify``: re-hash a prepared image set (files or uploaded blobs) against its manifest."""

from __future__ import annotations

import sys

import click

from vhdtool.cli import EXIT_ERROR, emit_json, main
from vhdtool.jobs.manifest_file import read_manifest
from vhdtool.jobs.verify import blob_hasher, verify_blobs, verify_files
from vhdtool.stream.hasher import parse_algorithms


@main.command("verify")
@click.argument("manifest_path", metavar="MANIFEST", type=click.Path(dir_okay=False))
@click.option("--dest", "destination", metavar="DEST",
              help="Compare with the blobs at DEST (as given to prepare --upload) instead of the files.")
@click.option("--connection-string", envvar="AZURE_STORAGE_CONNECTION_STRING", metavar="TEXT",
              help="Storage connection string, for --dest CONTAINER "
                   "(default: $AZURE_STORAGE_CONNECTION_STRING).")
@click.option("--account-url", metavar="URL", help="For --dest CONTAINER with an Azure AD login.")
@click.option("--hash", "hash_text", metavar="ALGS",
              help="Also recompute these whole-file digests where the manifest records them (md5, sha256): "
                   "they hash every zero of the disk.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdicts as JSON.")
def verify_command(manifest_path: str, destination: str | None, connection_string: str | None,
                   account_url: str | None, hash_text: str | None, as_json: bool) -> None:
    """Re-hash the fixed VHDs of MANIFEST and report any drift (exit 1 if any).

    Without --dest the files next to the manifest are read; with --dest the blobs are read back
    from the storage account (only their written page ranges) and hashed. The sparse digest is
    compared (for manifests of schema 1, which have none, MD5 and SHA-256).
    """

    hashes = parse_algorithms(hash_text) if hash_text else ()
    manifest = read_manifest(manifest_path)
    if destination is None:
        result = verify_files(manifest, manifest_path, hashes=hashes)
    else:
        hasher = blob_hasher(destination, connection_string=connection_string, account_url=account_url)
        result = verify_blobs(manifest, manifest_path, hasher, hashes=hashes)
    if as_json:
        emit_json(result.to_json())
    else:
        for v in result.verdicts:
            click.echo(f"{v.status.upper():<8} {v.name}  {v.target}")
            for problem in v.problems:
                click.echo(f"         {problem}")
        if result.ok:
            click.echo("no drift")
        elif all(v.status == "skipped" for v in result.verdicts):
            click.echo("nothing verified: the set has no local files; compare with the blobs using --dest")
        else:
            click.echo("DRIFT: the set does not match its manifest")
    if not result.ok:
        sys.exit(EXIT_ERROR)
