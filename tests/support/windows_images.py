"""The Windows fixture images of ``fixtures/windows/make_fixtures.py``: the script imported once as a
module, its images built once per test run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from support.fixture_files import FIXTURES
from support.run_folder import exclusive, shared_folder

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


_BUILT: dict[str, Path] = {}


def built_images(factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``builder.build_all`` once per test run (all xdist workers): name -> image. Tests only read these;
    one that changes an image copies it first."""
    if not _BUILT:
        folder = shared_folder(factory, "windows-images")
        index = folder / "built.json"
        with exclusive(index):
            if not index.exists():
                built = builder.build_all(folder / "images")
                index.write_text(json.dumps({name: str(path) for name, path in built.items()}))
            _BUILT.update({name: Path(path) for name, path in json.loads(index.read_text()).items()})
    return dict(_BUILT)
