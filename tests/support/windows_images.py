"""The Windows fixture images of ``fixtures/windows/make_fixtures.py``, imported once as a module."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from support.fixture_files import FIXTURES

SCRIPT = FIXTURES / "windows" / "make_fixtures.py"


def load_builder() -> ModuleType:
    """Import the fixture script as a module (it is a script, not part of a package)."""
    name = "vhdtool_windows_fixtures"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


builder = load_builder()
