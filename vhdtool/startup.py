"""Importing heavy modules (numpy, the readers, the Azure SDK) with the garbage collector paused.

Those imports create a few hundred thousand objects that all live to the end of the process, so
collections during them find nothing to free, and each costs more as the heap grows: measured on
the imports of an upload (vhdtool's readers, numpy and the Azure SDK), 0.61 s with the collector on,
0.51 s with it paused (medians of 8 processes). Every place that imports them lazily (the command's
entry point and subcommands, the package's API names, the SDK's first use) goes through
:func:`imports_without_gc`.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def imports_without_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector for the duration; leave it as it was (nested or
    disabled by the program) afterwards, even on an error."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
