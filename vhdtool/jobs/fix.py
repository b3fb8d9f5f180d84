"""``vhdtool fix``: make an existing fixed VHD Azure-ready in place, writing only its footer area.

The commonest broken upload is a fixed VHD whose size is not a whole number of MiB or whose footer
is wrong: qemu-img without ``force_size`` sizes the disk from CHS geometry (64 MiB becomes
67,125,248 bytes); some tools write a bad checksum or the CHS size as ``current_size``. Converting
would copy the whole disk; fixing extends the file sparsely to the next MiB and rewrites the footer.

Which size is right (see docs/convert.md, "vhdtool fix"): the bytes of a fixed VHD are everything
before the footer (spec: "Fixed Hard Disk Image"). A tool may have shown the guest the footer's
``current_size`` (Hyper-V, Azure) or the CHS geometry size (Virtual PC, qemu for its own images),
and both are at most the data part. Keeping every byte of the data part and rounding up to a MiB
therefore never drops a byte any reader could have shown the guest; the disk only grows, by less
than a MiB plus whatever lay beyond ``current_size``. A footer claiming more than the file holds is
a truncated file and is refused.

The plan is a pure description (what changes, which bytes are written where) made from a read-only
look; :func:`apply_fix` re-checks that the file is unchanged before writing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from vhdtool.blockio import fileio
from vhdtool.blockio.fileio import describe_os_error
from vhdtool.disk.base import ImageFile
from vhdtool.errors import ImageError, OutputError, UnsupportedImageError
from vhdtool.extents import align_up
from vhdtool.formats.detect import sniff
from vhdtool.formats.vhd.footer import (
    DISK_TYPE_FIXED,
    FEATURES_RESERVED,
    FILE_FORMAT_VERSION,
    FIXED_DATA_OFFSET,
    VhdFooter,
    build_footer,
    fixed_footer,
)
from vhdtool.formats.vhd.layout import FOOTER_SIZE
from vhdtool.formats.vhd.reader import read_footer
from vhdtool.units import MiB


@dataclass(frozen=True)
class FixWrite:
    """One write of the plan: ``length`` bytes at ``offset`` and why."""

    offset: int
    length: int
    what: str


@dataclass(frozen=True)
class FieldChange:
    """A footer field whose value changes."""

    name: str
    old: Any
    new: Any


@dataclass(frozen=True)
class FixPlan:
    """What :func:`apply_fix` would do to ``path``; ``writes`` is empty when nothing is wrong."""

    path: str
    file_size: int
    data_size: int
    old_footer: VhdFooter
    old_footer_offset: int
    old_footer_raw: bytes
    new_virtual_size: int
    new_footer: VhdFooter
    new_footer_raw: bytes
    reasons: tuple[str, ...]
    changes: tuple[FieldChange, ...]
    writes: tuple[FixWrite, ...]

    @property
    def needed(self) -> bool:
        return bool(self.writes)

    @property
    def new_file_size(self) -> int:
        return self.new_virtual_size + FOOTER_SIZE if self.needed else self.file_size

    @property
    def bytes_to_write(self) -> int:
        return sum(w.length for w in self.writes)

    def to_json(self) -> dict[str, Any]:
        """The ``fix --json`` object."""
        return {
            "path": self.path,
            "needed": self.needed,
            "reasons": list(self.reasons),
            "file_size": self.file_size,
            "new_file_size": self.new_file_size,
            "data_size": self.data_size,
            "virtual_size": self.old_footer.current_size,
            "new_virtual_size": self.new_virtual_size if self.needed else self.old_footer.current_size,
            "bytes_to_write": self.bytes_to_write,
            "writes": [{"offset": w.offset, "length": w.length, "what": w.what} for w in self.writes],
            "changes": [{"field": c.name, "old": c.old, "new": c.new} for c in self.changes],
        }


def _footer_problems(footer: VhdFooter, data_size: int, new_size: int, footer_length: int) -> list[str]:
    problems: list[str] = []
    if footer_length != FOOTER_SIZE:
        problems.append(f"the footer is {footer_length} bytes long; Azure needs a 512-byte footer")
    if not footer.checksum_valid:
        problems.append("the footer checksum is wrong")
    if footer.disk_type != DISK_TYPE_FIXED:
        problems.append(f"the footer says disk type {footer.disk_type_name}; the file is laid out as fixed")
    if footer.data_offset != FIXED_DATA_OFFSET:
        problems.append(f"the footer's data offset is 0x{footer.data_offset:x}, not all ones (fixed disk)")
    if not footer.features & FEATURES_RESERVED:
        problems.append("the footer's reserved feature bit 0x2 is not set")
    if footer.file_format_version != FILE_FORMAT_VERSION:
        problems.append(f"the footer's format version is 0x{footer.file_format_version:08x}, not 1.0")
    if data_size % MiB:
        problems.append(f"the disk holds {data_size:,} bytes, not a whole number of MiB (Azure refuses it)")
    if footer.current_size != new_size:
        problems.append(f"the footer's current size is {footer.current_size:,} bytes; Azure reads it and "
                        f"needs {new_size:,}")
    return problems


_COMPARED = ("features", "file_format_version", "data_offset", "creator_application", "creator_version",
             "creator_host_os", "original_size", "current_size", "geometry", "disk_type", "saved_state",
             "checksum")


def _json_value(name: str, value: Any) -> Any:
    """A footer field as ``info`` shows it: versions as ``major.minor``, the checksum in hex."""
    if name in ("creator_version", "file_format_version"):
        return f"{value >> 16}.{value & 0xFFFF}"
    if name == "checksum":
        return f"0x{value:08x}"
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if hasattr(value, "cylinders"):
        return f"{value.cylinders}/{value.heads}/{value.sectors_per_track}"
    return value


def plan_fix(path: str | os.PathLike[str]) -> FixPlan:
    """Look at a fixed VHD (read-only) and describe how to make it Azure-ready in place."""
    image = ImageFile(path)
    try:
        kind = sniff(image)  # names qcow2, VMDK, archives, ... with what to do instead
        if kind != "vhd":
            what = "a VHDX image" if kind == "vhdx" else "not a VHD (no footer with cookie 'conectix' at its end)"
            raise UnsupportedImageError(
                f"{image.path}: {what}; fix repairs fixed VHDs in place; write a fixed VHD with "
                f"`vhdtool convert {image.path} OUT.vhd`")
        choice = read_footer(image)
        file_size = image.size
    finally:
        image.close()
    footer = choice.footer
    if choice.source != "end" or (footer.checksum_valid and footer.disk_type != DISK_TYPE_FIXED):
        raise UnsupportedImageError(
            f"{image.path}: a {footer.disk_type_name} VHD cannot be fixed in place; write a fixed VHD with "
            f"`vhdtool convert {image.path} OUT.vhd`")
    data_size = choice.data_end
    if footer.checksum_valid and footer.current_size > data_size:
        raise ImageError(image.path, "VHD footer", data_size,
                         f"current size {footer.current_size} is larger than the {data_size} bytes before "
                         "the footer: the file looks truncated; not fixing")
    new_size = align_up(max(data_size, FOOTER_SIZE), MiB)
    reasons = _footer_problems(footer, data_size, new_size, file_size - data_size)
    if footer.checksum_valid and footer.current_size < data_size:
        reasons.append(f"{data_size - footer.current_size:,} bytes lie between current size and the footer; "
                       "they are kept (fix never drops data)")
    old_raw = image_tail(image.path, choice.data_end, file_size - choice.data_end)
    new_footer = fixed_footer(new_size, unique_id=footer.unique_id)
    new_raw = build_footer(new_footer)
    writes: list[FixWrite] = []
    changes: list[FieldChange] = []
    if reasons:
        if new_size == data_size and file_size - data_size == FOOTER_SIZE:
            writes.append(FixWrite(data_size, FOOTER_SIZE, "footer rewritten in place"))
        else:
            # The new footer goes first, beyond the end: the file then ends in a valid footer at every
            # moment, and the old footer becomes zero padding afterwards.
            writes.append(FixWrite(new_size, FOOTER_SIZE,
                                   f"new footer; the file grows from {file_size:,} to "
                                   f"{new_size + FOOTER_SIZE:,} bytes, the gap a sparse zero range"))
            if min(file_size, new_size) > data_size:
                writes.append(FixWrite(data_size, min(file_size, new_size) - data_size,
                                       "zeros over the old footer (now padding)"))
        for name in _COMPARED:
            old, new = getattr(footer, name), getattr(new_footer, name)
            if old != new:
                changes.append(FieldChange(name, _json_value(name, old), _json_value(name, new)))
    return FixPlan(path=image.path, file_size=file_size, data_size=data_size, old_footer=footer,
                   old_footer_offset=choice.data_end, old_footer_raw=old_raw, new_virtual_size=new_size,
                   new_footer=new_footer, new_footer_raw=new_raw, reasons=tuple(reasons),
                   changes=tuple(changes), writes=tuple(writes))


def image_tail(path: str, offset: int, length: int) -> bytes:
    """The footer bytes as they are now (compared again just before writing)."""
    image = ImageFile(path)
    try:
        return image.pread(offset, length, "VHD footer")
    finally:
        image.close()


def apply_fix(plan: FixPlan, *, sync: bool = False) -> None:
    """Carry out ``plan``: write the new footer past the end, then zero the old footer.

    With ``sync`` each write is flushed to the disk before the next, so the file ends in a valid
    footer at every moment even across a crash; without it the order holds for every reader of
    the running system, and the kernel writes the pages out later. Refuses (:class:`OutputError`)
    if the file changed since the plan was made.
    """
    if not plan.needed:
        return
    try:
        fd = os.open(plan.path, os.O_RDWR | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise describe_os_error(plan.path, err, "open the image for writing") from err
    try:
        size = os.fstat(fd).st_size
        current = fileio.pread(fd, len(plan.old_footer_raw), plan.old_footer_offset)
        if size != plan.file_size or current != plan.old_footer_raw:
            raise OutputError(f"{plan.path}: changed since the fix was planned; run vhdtool fix again")
        for write in plan.writes:
            if write.offset == plan.new_virtual_size and write.length == FOOTER_SIZE:
                fileio.pwrite_all(fd, plan.new_footer_raw, write.offset)
            else:
                fileio.pwrite_all(fd, bytes(write.length), write.offset)
            if sync:
                os.fsync(fd)
    except OSError as err:
        raise describe_os_error(plan.path, err, "write the fix") from err
    finally:
        os.close(fd)

