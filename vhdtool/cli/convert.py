"""``vhdtool convert``: any readable image to an Azure-ready fixed VHD (or a raw image)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import click

from vhdtool.cli import absolute_parent_option, emit_json, human_size, main, parent_option
from vhdtool.cli.bars import BarProgress
from vhdtool.cli.params import BYTE_SIZE
from vhdtool.errors import UsageError
from vhdtool.formats.open import open_image
from vhdtool.jobs.convert import OutputFormat, convert, output_size
from vhdtool.stream.digest import NAME as SPARSE_DIGEST
from vhdtool.stream.hasher import parse_algorithms


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while converting, so the temporary file is removed either way."""
    if not hasattr(signal, "SIGTERM") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@main.command("convert")
@click.argument("image", type=click.Path(dir_okay=False))
@click.argument("output_arg", metavar="[OUTPUT]", required=False, type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="The file to write (or give it as OUTPUT).")
@click.option("--format", "output_format", type=click.Choice(["vhd", "raw"]), default="vhd",
              show_default=True, help="vhd: fixed VHD for Azure; raw: the plain disk bytes.")
@click.option("--size", type=BYTE_SIZE, metavar="SIZE",
              help="Grow the disk to SIZE (e.g. 30G; rounded up to a MiB). Shrinking is refused.")
@click.option("--keep-id", is_flag=True, help="Reuse the source's VHD unique id / VHDX data write GUID.")
@click.option("--hash", "hash_text", metavar="ALGS",
              help="Digests of the output: sparse-sha256 (costs only the data), md5, sha256, sha1, sha512 "
                   "(these read every zero too), e.g. md5,sha256.")
@click.option("--sync", is_flag=True,
              help="Flush the output to the disk before renaming it into place (durable after a crash); "
                   "without it, like cp and qemu-img, the kernel writes it out later.")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON summary with the sparse digest (schema in docs/convert.md).")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress bar, no warnings and no summary (digests still print).")
@parent_option
@absolute_parent_option
def convert_command(image: str, output_arg: str | None, output: str | None, output_format: OutputFormat,
                    size: int | None, keep_id: bool, hash_text: str | None, sync: bool, force: bool,
                    as_json: bool, quiet: bool, parent: str | None, allow_absolute_parent: bool) -> None:
    """Write IMAGE (VHDX, VHD of any type, or raw) as a fixed VHD Azure accepts.

    The output (OUTPUT or -o) holds the disk's bytes, zero padding to the next MiB and a Hyper-V
    style footer; it is written sparsely beside OUTPUT and renamed into place only on success.
    The rename is atomic but not synced to the disk unless --sync is given.
    """
    if output is not None and output_arg is not None and output != output_arg:
        raise UsageError(f"two outputs given ({output_arg} and -o {output}); give one")
    target = output if output is not None else output_arg
    if target is None:
        raise UsageError("no output given: vhdtool convert IMAGE OUT.vhd (or -o OUT.vhd)")
    names = parse_algorithms(hash_text, extra=(SPARSE_DIGEST,)) if hash_text else ()
    hashes = tuple(name for name in names if name != SPARSE_DIGEST)
    sparse = as_json or SPARSE_DIGEST in names
    with open_image(image, parent=parent, allow_absolute_parent=allow_absolute_parent) as disk:
        total = output_size(disk, output_format, size)
        with BarProgress(total, show=None if not quiet and not as_json else False) as progress, \
                terminate_as_interrupt():
            result = convert(disk, target, output_format=output_format, size=size, keep_id=keep_id,
                             hashes=hashes, sparse_digest=sparse, sync=sync, force=force, progress=progress)
    if as_json:
        emit_json(result.to_json())
        return
    if not quiet:
        for warning in result.warnings:
            click.echo(f"vhdtool: warning: {warning}", err=True)
        kind = "fixed VHD" if result.format == "vhd" else "raw image"
        click.echo(f"wrote {result.output}: {kind}, virtual size {human_size(result.virtual_size)}")
        click.echo(f"{human_size(result.bytes_written)} written in {result.seconds:.1f} s "
                   f"(file size {result.file_size:,} bytes; {human_size(result.bytes_data)} of data read, "
                   f"{human_size(result.bytes_skipped)} empty skipped)")
    for name in names:  # in the order asked for
        click.echo(f"{name}  {result.digests[name]}")
