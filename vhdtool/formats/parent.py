"""Finding and opening the parent of a differencing disk, treating the child's locators as untrusted.

A child names its parent by paths (relative, absolute, volume-based). We accept only a regular file
that is itself a VHD or VHDX whose identity matches what the child recorded; absolute paths only
when the user allows them; never devices, FIFOs or pseudo-filesystems; chains of bounded depth.
"""

from __future__ import annotations

import ntpath
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from vhdtool.errors import ParentError

MAX_CHAIN_DEPTH = 32
_FORBIDDEN_ROOTS = ("/proc", "/sys", "/dev")


@dataclass(frozen=True)
class OpenOptions:
    """How to open an image and its parents.

    ``parent`` overrides the first parent's location; ``allow_absolute_parent`` lets locators
    point outside the child's folder; ``depth`` and ``seen`` guard against loops and long chains.
    ``opener(path, options)`` opens each parent; ``open_image`` passes itself down here, so the
    format readers open parents without importing the module that imports them.
    """

    parent: str | None = None
    allow_absolute_parent: bool = False
    max_chain_depth: int = MAX_CHAIN_DEPTH
    depth: int = 0
    seen: frozenset[tuple[int, int]] = field(default_factory=frozenset)
    opener: Callable[[str, OpenOptions], object] | None = None

    def for_parent(self, identity: tuple[int, int]) -> OpenOptions:
        """Options for opening the next parent up the chain."""
        return OpenOptions(parent=None, allow_absolute_parent=self.allow_absolute_parent,
                           max_chain_depth=self.max_chain_depth, depth=self.depth + 1,
                           seen=self.seen | {identity}, opener=self.opener)


@dataclass(frozen=True)
class Locator:
    """One place a child says its parent is: ``kind`` is e.g. ``relative``, ``absolute``, ``W2ru``."""

    kind: str
    path: str
    relative: bool


def _to_posix(path: str) -> str:
    """Windows locator paths (``.\\a\\b.vhdx``, ``C:\\x.vhd``) as paths usable here."""
    return path.replace("\\", "/")


def candidate_paths(child_path: str, locators: list[Locator], allow_absolute: bool) -> list[tuple[str, str]]:
    """Ordered ``(description, path)`` candidates: relative locators, then same-folder names, then absolute."""
    folder = os.path.dirname(os.path.abspath(child_path))
    out: list[tuple[str, str]] = []
    for loc in locators:
        if loc.relative and loc.path:
            out.append((f"{loc.kind} locator", os.path.normpath(os.path.join(folder, _to_posix(loc.path)))))
    for loc in locators:
        if not loc.relative and loc.path:
            # A copied chain keeps its file names: look beside the child before trusting an absolute path.
            name = ntpath.basename(loc.path) if "\\" in loc.path else os.path.basename(loc.path)
            if name:
                out.append((f"file name from {loc.kind} locator", os.path.join(folder, name)))
    if allow_absolute:
        for loc in locators:
            if not loc.relative and loc.path:
                out.append((f"{loc.kind} locator", _to_posix(loc.path)))
    seen: set[str] = set()
    unique = []
    for desc, p in out:
        if p not in seen:
            seen.add(p)
            unique.append((desc, p))
    return unique


def check_parent_file(path: str) -> tuple[int, int]:
    """Raise :class:`ParentError` unless ``path`` is a regular file outside pseudo-filesystems."""
    real = os.path.realpath(path)
    if any(real == root or real.startswith(root + "/") for root in _FORBIDDEN_ROOTS):
        raise ParentError(f"parent path {path} resolves to {real}, which is not a disk image file")
    try:
        st = os.stat(real)
    except OSError as err:
        raise ParentError(f"parent {path}: {err.strerror}") from err
    if not stat.S_ISREG(st.st_mode):
        raise ParentError(f"parent {path} is not a regular file")
    return (st.st_dev, st.st_ino)


def resolve_parent(child_path: str, locators: list[Locator], options: OpenOptions) -> tuple[object, str]:
    """Open the parent of ``child_path``: the override, else the first locator candidate that exists.

    ``options.opener(path, options)`` opens an image (it checks the format and the recorded identity).
    Returns the opened parent and the path used.
    """
    opener = options.opener
    if opener is None:
        raise ParentError(f"{child_path}: a differencing disk opened without a way to open its parent "
                          "(use vhdtool.open_image)")
    if options.depth + 1 > options.max_chain_depth:
        raise ParentError(f"{child_path}: differencing chain deeper than {options.max_chain_depth} disks")
    if options.parent is not None:
        candidates = [("--parent", options.parent)]
    else:
        candidates = candidate_paths(child_path, locators, options.allow_absolute_parent)
    tried: list[str] = []
    for _desc, path in candidates:
        if options.parent is None and not os.path.lexists(path):
            tried.append(path)
            continue
        identity = check_parent_file(path)
        if identity in options.seen:
            raise ParentError(f"{child_path}: differencing chain loops back to {path}")
        return opener(path, options.for_parent(identity)), path
    names = ", ".join(loc.path for loc in locators if loc.path) or "(none)"
    hint = "" if options.allow_absolute_parent else "; pass --parent PATH or --allow-absolute-parent"
    raise ParentError(f"{child_path}: parent disk not found (locators: {names}; tried: "
                      f"{', '.join(tried) or 'nothing'}){hint}")
