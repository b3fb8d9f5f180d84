"""Build the Linux fixture images of ``fixtures/linux/make_linux.py`` once per test run."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

from support.run_folder import build_once, shared_folder

SCRIPT = Path(__file__).resolve().parents[2] / "fixtures" / "linux" / "make_linux.py"
_spec = importlib.util.spec_from_file_location("make_linux", SCRIPT)
assert _spec is not None and _spec.loader is not None
make_linux = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_linux)


class ImageCache:
    """``cache.get(layout, state)`` builds the image the first time, then returns the same path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.built: dict[tuple[str, str, str], Path] = {}

    def get(self, layout: str, state: str, container: str = "raw") -> Path:
        key = (layout, state, container)
        if key not in self.built:
            raw = build_once(self.root / f"{layout}-{state}.img", lambda out: make_linux.build(out, layout, state))
            if container == "raw":
                self.built[key] = raw
            else:
                args = {
                    "vhdx": ["-O", "vhdx"],
                    "dynamic": ["-O", "vpc", "-o", "subformat=dynamic,force_size"],
                    "fixed": ["-O", "vpc", "-o", "subformat=fixed,force_size"],
                }[container]
                self.built[key] = build_once(self.root / f"{layout}-{state}.{container}", lambda out: subprocess.run(
                    ["qemu-img", "convert", "-f", "raw", *args, str(raw), str(out)], check=True, capture_output=True))
        return self.built[key]


_CACHE: list[ImageCache] = []


def shared_cache(factory: pytest.TempPathFactory) -> ImageCache:
    """One cache per test run, shared by every module (and every xdist worker) that builds Linux images."""
    if not _CACHE:
        _CACHE.append(ImageCache(shared_folder(factory, "linux-images")))
    return _CACHE[0]
