"""The one exception family of vhdtool.

Subclasses are chosen by what the caller can do about the failure: fix or replace the
image, convert it with another tool, supply a parent, free space, or retry a transfer.
"""

from __future__ import annotations


class VhdtoolError(Exception):
    """Base of every error vhdtool raises on purpose."""


class ImageError(VhdtoolError):
    """The image is damaged or inconsistent: the message names the file, structure and byte offset."""

    def __init__(self, path: str, structure: str, offset: int | None, problem: str) -> None:
        self.path = path
        self.structure = structure
        self.offset = offset
        self.problem = problem
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{path}: {structure}{where}: {problem}")


class UnsupportedImageError(VhdtoolError):
    """The file is recognised but is not a format vhdtool reads (qcow2, VMDK, an archive, ...)."""


class ParentError(VhdtoolError):
    """A differencing disk's parent is missing, does not match, or cannot be trusted."""


class OutputError(VhdtoolError):
    """An output file cannot be written (exists, no space, no permission)."""


class TransferError(VhdtoolError):
    """An upload failed permanently or ran out of retries."""


class UsageError(VhdtoolError):
    """Arguments that are well-formed but make no sense together (e.g. shrinking below the data)."""
