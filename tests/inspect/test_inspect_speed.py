"""``inspect`` reads metadata only: on a 30 GiB OS disk it reads about a MiB, whatever the container."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.linux_images import make_linux
from support.oracles import qemu_img

from vhdtool.disk.base import ImageFile
from vhdtool.formats.open import open_image
from vhdtool.inspect.model import GENERALIZED
from vhdtool.inspect.report import inspect_disk

pytestmark = pytest.mark.slow  # left out of scripts/test.sh --fast

GiB, MiB = 1 << 30, 1 << 20
READ_BUDGET = 8 * MiB  # measured: 1.1 MiB in about 300 reads (docs/inspect.md, "Speed")


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("large")
    raw = make_linux.build_large(base / "large.img", GENERALIZED, size=30 * GiB, filler=16 * MiB)
    vhdx = base / "large.vhdx"
    qemu_img("convert", "-f", "raw", "-O", "vhdx", str(raw), str(vhdx))
    return {"raw": raw, "vhdx": vhdx}


@pytest.mark.parametrize("container", ["raw", "vhdx"])
def test_a_30_gib_disk_costs_a_few_reads(
    large: dict[str, Path], container: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    read = [0]
    pread, preadinto = ImageFile.pread, ImageFile.preadinto

    def counting_pread(self: ImageFile, offset: int, length: int, structure: str) -> bytes:
        read[0] += length
        return pread(self, offset, length, structure)

    def counting_preadinto(self: ImageFile, offset: int, view: memoryview, structure: str) -> Any:
        read[0] += len(view)
        return preadinto(self, offset, view, structure)

    monkeypatch.setattr(ImageFile, "pread", counting_pread)
    monkeypatch.setattr(ImageFile, "preadinto", counting_preadinto)
    with open_image(large[container]) as disk:
        assert disk.virtual_size == 30 * GiB
        report = inspect_disk(disk)
    assert report.os is not None and report.os.state == GENERALIZED
    # The boot facts are part of the budget: the default kernel's initramfs was walked to the drivers.
    boot = report.os.linux.boot if report.os.linux is not None else None
    assert boot is not None and boot.initramfs is not None and "hv_storvsc" in boot.initramfs.found
    assert 0 < read[0] < READ_BUDGET, f"{read[0]} bytes read"
