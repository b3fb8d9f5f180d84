"""What ``check`` opens and judges: an image as the readers open it, or a fixed VHD whose footer they refuse.

A damaged cookie makes a fixed VHD look raw, and an unknown disk type makes the readers refuse it;
the footer rules must still see such footers, and the content rules the data before them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from vhdtool.disk.base import BorrowedSource, ByteSource, ImageFile, VirtualDisk
from vhdtool.errors import ImageError
from vhdtool.extents import Extent, extents_from_ranges
from vhdtool.formats.open import open_image
from vhdtool.formats.raw import RawDisk
from vhdtool.formats.vhd.footer import (
    DISK_TYPE_DIFFERENCING,
    DISK_TYPE_DYNAMIC,
    DISK_TYPE_FIXED,
    FILE_FORMAT_VERSION,
    FIXED_DATA_OFFSET,
    VhdFooter,
    footer_checksum,
    parse_footer,
)
from vhdtool.formats.vhd.layout import FOOTER_SIZE, VHD_COOKIE
from vhdtool.inspect.report import DiskReport
from vhdtool.readiness.facts import Container, Facts, container_of, facts_for, footer_of


class _DataPart(VirtualDisk):
    """The first ``size`` bytes of a file: the data of a fixed VHD whose footer no reader takes."""

    format = "vhd"

    def __init__(self, inner: VirtualDisk, size: int, disk_type: str) -> None:
        super().__init__()
        self.inner = inner
        self.path = inner.path
        self.virtual_size = size
        self.disk_type = disk_type

    def extents(self) -> list[Extent]:
        ranges = [(e.offset, e.end) for e in self.inner.extents() if e.allocated]
        return extents_from_ranges(ranges, self.virtual_size)

    def readinto(self, offset: int, view: memoryview) -> None:
        self.check_range(offset, len(view))
        self.inner.readinto(offset, view)

    def details(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        self.inner.close()


def salvage_footer(path: str | ByteSource) -> VhdFooter | None:
    """The VHD footer at the end of ``path`` when the readers refuse it or take the file for raw.

    Two cases: a footer with the ``conectix`` cookie but a disk type that is not 2, 3 or 4; and a
    footer whose cookie is damaged but whose other fields are those of a fixed disk (version 1.0,
    type 2, data offset all 0xFF, a current size that fits the file) - too many exact values for
    the last sector of a raw image to match by chance. ``None`` otherwise.
    """
    if isinstance(path, str):
        try:
            image: ByteSource = ImageFile(path)  # refuses FIFOs and the like without blocking
        except (OSError, ImageError):
            return None
    else:
        image = path
    try:
        size = image.size
        if size < 2 * FOOTER_SIZE:
            return None
        raw = image.pread(size - FOOTER_SIZE, FOOTER_SIZE, "VHD footer")
    except (OSError, ImageError):
        return None
    finally:
        if isinstance(path, str):
            image.close()
    # The footer reader refuses a wrong cookie: give it the right one, then put back the bytes found.
    cookie = raw[: len(VHD_COOKIE)]
    try:
        read = parse_footer(VHD_COOKIE + raw[len(VHD_COOKIE):], image.path, size - FOOTER_SIZE)
    except ImageError:
        return None
    footer = replace(read, cookie=cookie, checksum_valid=footer_checksum(raw) == read.checksum)
    if footer.cookie == VHD_COOKIE:
        if footer.disk_type in (DISK_TYPE_FIXED, DISK_TYPE_DYNAMIC, DISK_TYPE_DIFFERENCING):
            return None  # the reader's own error about this footer stands
    elif not (
        footer.file_format_version == FILE_FORMAT_VERSION
        and footer.disk_type == DISK_TYPE_FIXED
        and footer.data_offset == FIXED_DATA_OFFSET
        and 0 < footer.current_size <= size - FOOTER_SIZE
        and footer.current_size % 512 == 0
    ):
        return None
    return footer


@dataclass
class CheckSubject:
    """The container facts ``check`` judges, and the disk whose contents ``inspect`` reads.

    ``disk`` is ``None`` when the layout cannot be told (a footer of unknown type that does not say
    where the data is): the container rules still run, the content rules do not.
    """

    path: str
    disk: VirtualDisk | None
    container: Container

    def facts(
        self, report: DiskReport | None, role: str = "os", expect: str | None = None, generation: str | None = None
    ) -> Facts:
        return facts_for(self.container, report, role, expect, generation)

    def close(self) -> None:
        if self.disk is not None:
            self.disk.close()

    def __enter__(self) -> CheckSubject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Owning(_DataPart):
    """A disk that also closes the byte source it was read from (a blob opened once for ``check``)."""

    def __init__(self, inner: VirtualDisk, source: ByteSource) -> None:
        super().__init__(inner, inner.virtual_size, inner.disk_type)
        self.format = inner.format
        self.source = source
        self.warnings = inner.warnings

    def extents(self) -> list[Extent]:
        return self.inner.extents()

    def details(self) -> dict[str, Any]:
        return self.inner.details()

    @property
    def parent(self) -> VirtualDisk | None:
        return self.inner.parent

    @property
    def log_state(self) -> str | None:
        return self.inner.log_state

    def parent_info(self) -> dict[str, Any] | None:
        return self.inner.parent_info()

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self.source.close()


def open_for_check(path: str | ByteSource, *, parent: str | None = None,
                   allow_absolute_parent: bool = False) -> CheckSubject:
    """Open ``path`` for ``check``: as the readers open it, or from a footer they refuse (:func:`salvage_footer`).

    ``path`` may be an opened byte source (a blob), which the subject then owns.
    """

    if not isinstance(path, str):
        return _open_source_for_check(path, parent=parent, allow_absolute_parent=allow_absolute_parent)
    try:
        disk = open_image(path, parent=parent, allow_absolute_parent=allow_absolute_parent)
    except ImageError:
        salvaged = salvage_footer(path)
        if salvaged is None:
            raise
        disk = RawDisk(ImageFile(path))
    else:
        salvaged = salvage_footer(path) if disk.format == "raw" else None
        if salvaged is None:
            return CheckSubject(path, disk, container_of(disk, os.stat(path).st_size))
    return _salvaged_subject(path, disk, salvaged)


def _open_source_for_check(source: ByteSource, *, parent: str | None,
                           allow_absolute_parent: bool) -> CheckSubject:

    try:
        try:
            inner = open_image(BorrowedSource(source), parent=parent, allow_absolute_parent=allow_absolute_parent)
        except ImageError:
            salvaged = salvage_footer(source)
            if salvaged is None:
                raise
            inner = RawDisk(BorrowedSource(source))
        else:
            salvaged = salvage_footer(source) if inner.format == "raw" else None
        disk = _Owning(inner, source)
    except BaseException:
        source.close()
        raise
    if salvaged is None:
        return CheckSubject(source.path, disk, container_of(disk, source.size, footer_of(inner)))
    return _salvaged_subject(source.path, disk, salvaged)


def _salvaged_subject(path: str, disk: VirtualDisk, salvaged: VhdFooter) -> CheckSubject:
    file_size = disk.virtual_size
    data: VirtualDisk | None = None
    if salvaged.data_offset == FIXED_DATA_OFFSET and 0 < salvaged.current_size <= file_size - FOOTER_SIZE:
        data = _DataPart(disk, salvaged.current_size, salvaged.disk_type_name)
    else:
        disk.close()
    return CheckSubject(
        path, data, Container("vhd", salvaged.disk_type_name, salvaged.current_size, file_size, salvaged)
    )
