"""The Python examples of docs/api.md run as written, on the sample image set and a real Azurite.

Each ```python block is executed in a fresh folder holding the sample OS disk under every name the
examples use, with ``AZURE_STORAGE_CONNECTION_STRING`` pointing at Azurite and its ``images``
container created. A block that raises fails the test, so the documentation cannot drift from
the API.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from pathlib import Path

import pytest
from support.azurite import Azurite
from support.fixture_files import unpack_fixture
from support.oracles import reference_sparse_digest

pytestmark = pytest.mark.slow  # left out of scripts/test.sh --fast

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
NAMES = ("disk.vhdx", "os.vhdx", "web-os.vhdx")


def api_examples() -> list[str]:
    return BLOCK.findall((DOCS / "api.md").read_text())


@pytest.fixture(scope="module")
def images_container(azurite: Azurite) -> Azurite:
    """The shared Azurite with the ``images`` container the docs' examples upload to."""
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import BlobServiceClient

    with contextlib.suppress(ResourceExistsError):
        BlobServiceClient.from_connection_string(azurite.connection_string()).create_container("images")
    return azurite


def test_api_page_has_examples() -> None:
    assert len(api_examples()) >= 4


@pytest.mark.parametrize("index", range(len(api_examples())))
def test_api_example_runs(index: int, tmp_path: Path, images_container: Azurite, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "src").mkdir()
    source = unpack_fixture("sample/linux-os.vhdx.gz", tmp_path / "src")
    for name in NAMES:
        shutil.copyfile(source, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", images_container.connection_string())
    code = api_examples()[index]
    exec(compile(code, f"docs/api.md example {index + 1}", "exec"), {"__name__": "__docs__"})
    printed = capsys.readouterr().out
    if "convert(disk, \"os.vhd\"" in code:
        assert reference_sparse_digest(tmp_path / "os.vhd") in printed
    if "upload(disk, dest" in code:
        from azure.storage.blob import BlobClient

        blob = BlobClient.from_connection_string(os.environ["AZURE_STORAGE_CONNECTION_STRING"], "images",
                                                 "web-os.vhd").download_blob().readall()
        assert hashlib.sha256(blob).hexdigest() in printed
