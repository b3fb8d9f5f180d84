"""What a command imports before it works: start-up is most of a small job's time, so modules that
only some runs need are not loaded by the others (measured with ``-X importtime``; the figures are in
docs/benchmarks.md)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient
from support.azurite import Azurite
from support.cli import cli_command, cli_environment


def imported_modules(*args: str) -> set[str]:
    """The modules a real ``vhdtool`` process imports for ``args`` (which must succeed)."""
    command = cli_command(*args)
    proc = subprocess.run([command[0], "-X", "importtime", *command[1:]], env=cli_environment(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")
            and "|" in line}


@pytest.mark.parametrize("extra", [["--quiet"], ["--json"]])
def test_a_convert_without_a_bar_loads_neither_tqdm_nor_package_metadata(tmp_path: Path, extra: list[str]
                                                                          ) -> None:
    """A VHDX made by qemu-img, converted with no bar to draw: tqdm (and the multiprocessing it
    pulls in) and ``importlib.metadata`` (which the crc32c package imports for its version) stay
    unloaded, while the readers that do the work are loaded."""
    image = tmp_path / "disk.vhdx"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vhdx", str(image), "64M"], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x5a 1M 3M", str(image)], check=True, capture_output=True)
    modules = imported_modules("convert", str(image), "-o", str(tmp_path / "out.vhd"), *extra)
    assert {"vhdtool.formats.vhdx.reader", "vhdtool.formats.vhdx.crc", "numpy"} <= modules
    assert not {"tqdm", "multiprocessing", "importlib.metadata", "crc32c", "secrets"} & modules
    assert (tmp_path / "out.vhd").stat().st_size == 64 * 2**20 + 512


@pytest.mark.parametrize(("asked", "threads"), [(None, 1), ("2", 2)])
def test_the_command_asks_openblas_for_no_thread_pool(tmp_path: Path, asked: str | None, threads: int) -> None:
    """numpy's OpenBLAS starts spinning threads that vhdtool never uses; the command asks for none
    beyond the main thread, unless the caller chose a number (then that is kept)."""
    image = tmp_path / "disk.raw"
    image.write_bytes(bytes(1 << 20))
    probe = ("import atexit, os, sys; "
             "atexit.register(lambda: print(os.environ.get('OPENBLAS_NUM_THREADS'), "
             "len(os.listdir('/proc/self/task')))); "
             f"sys.argv = ['vhdtool', 'info', {str(image)!r}]; "
             "from vhdtool.__main__ import main; main()")
    env = cli_environment({"OPENBLAS_NUM_THREADS": asked})
    command = cli_command("info")
    proc = subprocess.run([command[0], "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-2:] == [asked or "1", str(threads)]


def test_imports_pause_the_garbage_collector_and_leave_it_as_it_was() -> None:
    """The collector is off while a command's modules load, and as it was afterwards (on, or off
    where the embedding program turned it off), even when the import fails."""
    import gc

    from vhdtool.startup import imports_without_gc

    assert gc.isenabled()
    with imports_without_gc():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ImportError), imports_without_gc():
        import vhdtool.no_such_module  # noqa: F401
    assert gc.isenabled()
    gc.disable()
    try:
        with imports_without_gc():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_plain_upload_leaves_the_azure_sdk_unloaded_and_one_that_lists_pages_loads_it(
        tmp_path: Path, azurite: Azurite) -> None:
    """A fresh upload sends Get Blob Properties, Put Blob, Put Page and Set Blob Metadata, all over
    ``azure/rest.py``: the SDK (about 0.2 s to import) is never loaded, and the blob holds the disk.
    ``--verify`` lists the blob's page ranges, which only the SDK does: then it is loaded."""
    image = tmp_path / "disk.vhdx"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vhdx", str(image), "16M"], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x5a 1M 3M", "-c", "write -P 0xa5 12M 64k", str(image)],
                   check=True, capture_output=True)
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True)
    service = BlobServiceClient.from_connection_string(azurite.connection_string())
    container = "startup" + uuid.uuid4().hex[:8]
    service.create_container(container)
    conn = ["--connection-string", azurite.connection_string(), "--json"]

    plain = imported_modules("upload", str(image), f"{container}/plain.vhd", *conn)
    assert {"vhdtool.azure.rest", "vhdtool.azure.upload", "http.client"} <= plain
    # ("azure" and "azure.storage" are namespace packages, found empty when the extra is looked for.)
    assert not {m for m in plain if m.startswith(("azure.storage.", "azure.core", "azure.identity", "requests"))}
    blob = service.get_blob_client(container, "plain.vhd")
    assert blob.download_blob().readall()[:-512] == raw.read_bytes()
    assert blob.get_blob_properties().metadata  # the completed-upload marker, set over rest.py

    verified = imported_modules("upload", str(image), f"{container}/verified.vhd", "--verify", *conn)
    assert {"azure.storage.blob", "vhdtool.azure.rest"} <= verified
