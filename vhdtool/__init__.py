"""vhdtool: read VHD, VHDX and raw disk images and make them ready for Azure."""

from __future__ import annotations

from .disk import DiskReader, VirtualDisk
from .errors import (
    ImageError,
    OutputError,
    ParentError,
    TransferError,
    UnsupportedImageError,
    UsageError,
    VhdtoolError,
)
from .extents import Extent
from .open import open_image

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
