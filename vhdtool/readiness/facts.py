"""What the readiness rules judge: the container as read (with its typed VHD footer), the inspection, the ask.

:func:`facts_for` is the one place :class:`Facts` is put together, whether ``check`` opened a file or a
blob (:mod:`vhdtool.readiness.subject`), ``prepare`` judges the fixed VHD it is about to write, or a
library caller holds an open disk (:func:`facts_from_disk`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from vhdtool.disk.base import VirtualDisk
from vhdtool.formats.vhd.footer import VhdFooter
from vhdtool.formats.vhd.reader import VhdDisk
from vhdtool.inspect.report import DiskReport


@dataclass(frozen=True)
class Container:
    """The container facts: format and type as read, sizes, and the VHD footer (``None`` for other formats)."""

    format: str  # "vhd" | "vhdx" | "raw"
    disk_type: str  # "fixed" | "dynamic" | "differencing" | "unknown (N)" for a salvaged footer
    virtual_size: int
    file_size: int
    footer: VhdFooter | None


@dataclass(frozen=True)
class Facts:
    """What the rules judge: the container, its footer, the inspection, and what the user asked for."""

    format: str
    disk_type: str
    virtual_size: int
    file_size: int
    footer: VhdFooter | None
    report: DiskReport | None
    role: str = "os"
    expect: str | None = None
    generation: str | None = None  # the generation the user will create the image with


def footer_of(disk: VirtualDisk) -> VhdFooter | None:
    """The footer a VHD reader opened ``disk`` with; ``None`` for any other format."""
    return disk.footer if isinstance(disk, VhdDisk) else None


def container_of(disk: VirtualDisk, file_size: int, footer: VhdFooter | None = None) -> Container:
    """The container facts of an open disk whose file (or blob) is ``file_size`` bytes."""
    return Container(disk.format, disk.disk_type, disk.virtual_size, file_size,
                     footer if footer is not None else footer_of(disk))


def facts_for(
    container: Container,
    report: DiskReport | None,
    role: str = "os",
    expect: str | None = None,
    generation: str | None = None,
) -> Facts:
    """The :class:`Facts` of ``container`` and its inspection ``report``, for the target the user named."""
    return Facts(container.format, container.disk_type, container.virtual_size, container.file_size,
                 container.footer, report, role, expect, generation)


def facts_from_disk(
    disk: VirtualDisk,
    report: DiskReport | None,
    role: str = "os",
    expect: str | None = None,
    generation: str | None = None,
) -> Facts:
    """:class:`Facts` of an open disk (its footer as the reader parsed it, its file size from the file)."""
    return facts_for(container_of(disk, os.stat(disk.path).st_size), report, role, expect, generation)
