"""CRC-32C (Castagnoli), the checksum of every VHDX header, region table and log entry (MS-VHDX 2.2.2).

The computing is the ``crc32c`` package's C extension (the CPU's CRC32 instruction where it has
one). Its ``__init__`` imports ``importlib.metadata`` (and through it email, zipfile and argparse)
only to set ``__version__``: about 25 ms of every VHDX command's start-up, measured with
``-X importtime``. So the extension is loaded from the package's folder by the standard import
machinery without running that ``__init__``; where the package is laid out otherwise (or the
extension is missing), the package is imported as usual and nothing else changes.
"""

from __future__ import annotations

import importlib.machinery
import sys
from collections.abc import Callable
from typing import Any

_EXTENSION = "crc32c._crc32c"


def _extension() -> Any:
    """The ``crc32c._crc32c`` module, loaded on its own (registered, so a later ``import crc32c``
    reuses it rather than loading the extension twice)."""
    loaded = sys.modules.get(_EXTENSION)
    if loaded is not None:
        return loaded
    package = importlib.machinery.PathFinder.find_spec("crc32c")
    folders = package.submodule_search_locations if package is not None else None
    if not folders:
        raise ImportError("no crc32c package folder")
    spec = importlib.machinery.PathFinder.find_spec(_EXTENSION, list(folders))
    if spec is None or not isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
        raise ImportError("crc32c has no C extension module")
    module = spec.loader.create_module(spec)
    spec.loader.exec_module(module)
    sys.modules[_EXTENSION] = module
    return module


def _function() -> Callable[..., int]:
    try:
        found = getattr(_extension(), "crc32c", None)
        if callable(found):
            return found  # type: ignore[no-any-return]
    except (ImportError, OSError):
        pass
    import crc32c as package  # the layout changed: the documented way, at its usual cost

    return package.crc32c


# ``crc32c(data, value=0)``: the CRC-32C of ``data``, continuing from ``value`` (the CRC of the bytes before).
crc32c: Callable[..., int] = _function()
