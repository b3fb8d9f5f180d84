"""A folder shared by every process of one test run, and building a file in it once.

Under pytest-xdist each worker has its own base temporary folder; their parent is the run's. Images
that tests only read (copying before they damage one) are built there once for all workers: the
first to ask builds, under an exclusive lock, into a temporary name that is renamed when complete;
the others wait on the lock and take the finished file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def shared_folder(factory: pytest.TempPathFactory, name: str) -> Path:
    """``name`` under the run's temporary folder: one for all xdist workers, this session's otherwise."""
    base = factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = root / name
    folder.mkdir(exist_ok=True)
    return folder


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold the lock of ``path`` (a ``.lock`` file beside it) against every other process of the run."""
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build_once(path: Path, build: Callable[[Path], object]) -> Path:
    """``path``, made by ``build(partial_path)`` unless a process of this run made it already."""
    with exclusive(path):
        if not path.exists():
            partial = path.with_name(path.name + ".partial")
            partial.unlink(missing_ok=True)
            build(partial)
            os.replace(partial, path)
    return path
