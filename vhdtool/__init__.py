"""vhdtool: read VHD, VHDX and raw disk images and make them ready for Azure."""

from __future__ import annotations

from vhdtool.disk.base import DiskReader, VirtualDisk
from vhdtool.errors import (
    ImageError,
    OutputError,
    ParentError,
    TransferError,
    UnsupportedImageError,
    UsageError,
    VhdtoolError,
)
from vhdtool.extents import Extent
from vhdtool.formats.open import open_image

__version__ = "0.1.0"

__all__ = [
    "DiskReader",
    "Extent",
    "ImageError",
    "OutputError",
    "ParentError",
    "TransferError",
    "UnsupportedImageError",
    "UsageError",
    "VhdtoolError",
    "VirtualDisk",
    "open_image",
    "__version__",
]
