"""vhdtool: read VHD, VHDX and raw disk images and make them ready for Azure.

The names of the library API below are imported on first use (PEP 562), so that ``import vhdtool``
(and so the ``vhdtool`` command's start, see :mod:`vhdtool.__main__`) costs the errors only, not the
readers and numpy: a Ctrl-C during the command's start-up is then one line, not a traceback.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vhdtool.errors import (
    ImageError,
    OutputError,
    ParentError,
    TransferError,
    UnsupportedImageError,
    UsageError,
    VhdtoolError,
)
from vhdtool.startup import imports_without_gc

if TYPE_CHECKING:
    from vhdtool.disk.base import DiskReader, VirtualDisk
    from vhdtool.extents import Extent
    from vhdtool.formats.open import open_image

__version__ = "0.1.0"

# Public name -> the module that defines it.
_DEFINED_IN = {
    "DiskReader": "vhdtool.disk.base",
    "VirtualDisk": "vhdtool.disk.base",
    "Extent": "vhdtool.extents",
    "open_image": "vhdtool.formats.open",
}

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


def __getattr__(name: str) -> Any:
    module = _DEFINED_IN.get(name)
    if module is None:
        raise AttributeError(f"module 'vhdtool' has no attribute {name!r}")
    with imports_without_gc():
        value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # looked up once
    return value
