"""The shapes inspection results take, and the read-only file tree OS detectors work on.

OS detectors (``linux.py``, ``windows.py``) see a filesystem only through :class:`FileTree`,
so they never touch the host's files and can be tested on any tree implementation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Protocol

from vhdtool.inspect.os_facts import OsFacts

if TYPE_CHECKING:
    from vhdtool.inspect.linux_readiness import LinuxReadiness
    from vhdtool.inspect.windows_readiness import WindowsReadiness

# OS states, as reported and as accepted by ``check --expect``.
GENERALIZED = "generalized"
SPECIALIZED = "specialized"
IN_BETWEEN = "in-between"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Evidence:
    """One observation behind a verdict: where it was read, what it said, what it means."""

    source: str  # a path inside the image or a registry key/value
    value: str | None  # what was found (None: absent)
    meaning: str  # one line for a person
    points_to: str  # GENERALIZED | SPECIALIZED | IN_BETWEEN | "neutral"

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "value": self.value, "meaning": self.meaning,
                "points_to": self.points_to}


@dataclass
class OsReport:
    """The operating system found on a volume and whether it is generalized."""

    family: str  # "windows" | "linux"
    name: str | None
    version: str | None
    hostname: str | None
    state: str  # GENERALIZED | SPECIALIZED | IN_BETWEEN | UNKNOWN
    evidence: list[Evidence] = field(default_factory=list)
    facts: OsFacts | None = None  # extras: build, edition, agent config, drivers
    windows: WindowsReadiness | None = None  # boot and reachability facts of a Windows OS disk
    linux: LinuxReadiness | None = None  # boot and reachability facts of a Linux OS disk

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "name": self.name, "version": self.version,
                "hostname": self.hostname, "state": self.state,
                "evidence": [e.to_json() for e in self.evidence], "facts": to_jsonable(self.facts),
                "windows": to_jsonable(self.windows), "linux": to_jsonable(self.linux)}


def to_jsonable(value: Any) -> Any:
    """The JSON form of a typed fact: dataclasses become objects (field names as keys), tuples lists.

    The one serialisation of the OS and readiness facts, so ``inspect --json`` and ``check --json`` show
    the same shape the rules read. A field whose metadata has ``omit_if`` is left out when
    ``omit_if(value_owner, field_value)`` holds (see :mod:`vhdtool.inspect.os_facts`).
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            omit = f.metadata.get("omit_if")
            if omit is None or not omit(value, item):
                out[f.name] = to_jsonable(item)
        return out
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    return value


class FileTree(Protocol):
    """A read-only view of one filesystem inside the image.

    Paths are absolute and ``/``-separated; symlinks inside the image are followed within the image
    (bounded, loops end); NTFS lookups are case-insensitive. Absent paths give ``None`` / ``False``.
    """

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists (after following symlinks)."""
        ...

    def is_dir(self, path: str) -> bool:
        """Whether ``path`` is a directory (after following symlinks)."""
        ...

    def listdir(self, path: str) -> list[str] | None:
        """Entry names of a directory, or ``None`` if it is not one."""
        ...

    def read_file(self, path: str, limit: int = 16 * 1024 * 1024) -> bytes | None:
        """At most ``limit`` bytes of a regular file, or ``None`` if it is not one."""
        ...

    def file_size(self, path: str) -> int | None:
        """Size of a regular file, or ``None``."""
        ...

    def open_file(self, path: str) -> IO[bytes] | None:
        """A read-only stream over a regular file (read in pieces, never whole), or ``None``."""
        ...

    def readlink(self, path: str) -> str | None:
        """The target of a symlink (not followed), or ``None`` if ``path`` is not a symlink."""
        ...
