"""Names of the disks of an image set, by the capture convention (docs/azure-rules.md §5).

``NAME-os-YYYY-MM-DD`` and ``NAME-datadisk-LUN-YYYY-MM-DD``, with ``-NN`` appended only when a
name is already taken. The whole set shares one counter, so the OS disk and the data disks of one
``prepare`` run can always be recognised as belonging together. Everything here is pure: what is
"taken" is a predicate the caller supplies (files in the output folder, blobs at the destination).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date

from vhdtool.errors import UsageError

# Managed disk and gallery names: 1-80 characters, letters, digits, '_', '.', '-'; they start with
# a letter or digit and end with a letter, digit or '_'. The set name is the stem of every disk name.
NAME_PATTERN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
MAX_NAME_LENGTH = 80
MAX_LUN = 63  # Azure attaches at most 64 data disks, LUN 0..63
MAX_COUNTER = 99  # NN is two digits
MANIFEST_SUFFIX = ".manifest.json"
VHD_SUFFIX = ".vhd"


def validate_name(name: str) -> str:
    """Return ``name`` if it can stem every disk name of a set, else raise :class:`UsageError`."""
    if not NAME_PATTERN.fullmatch(name):
        raise UsageError(f"image name {name!r}: use letters, digits, '_', '.' and '-', starting with a "
                         "letter or digit and ending with a letter, digit or '_'")
    longest = len(disk_name(name, MAX_LUN, date(2000, 1, 1), MAX_COUNTER))
    if longest > MAX_NAME_LENGTH:
        raise UsageError(f"image name {name!r} is too long: disk names would reach {longest} characters "
                         f"(Azure allows {MAX_NAME_LENGTH})")
    return name


def validate_lun(lun: int) -> int:
    """Return ``lun`` if Azure can attach a data disk there (0..63), else raise :class:`UsageError`."""
    if not 0 <= lun <= MAX_LUN:
        raise UsageError(f"LUN {lun} is out of range: Azure data disks use LUN 0 to {MAX_LUN}")
    return lun


def disk_name(name: str, lun: int | None, day: date, counter: int | None = None) -> str:
    """The capture-convention name of one disk: ``lun=None`` is the OS disk."""
    role = "os" if lun is None else f"datadisk-{lun}"
    stem = f"{name}-{role}-{day.isoformat()}"
    return stem if counter is None else f"{stem}-{counter:02d}"


@dataclass(frozen=True)
class SetNames:
    """The names chosen for one image set (without file extensions) and its manifest file name."""

    os: str
    data: dict[int, str]
    counter: int | None
    manifest: str


def manifest_name(name: str, day: date, counter: int | None, plain: bool) -> str:
    """``NAME.manifest.json``, or, when that is taken, one named after the set's date and counter."""
    if plain:
        return name + MANIFEST_SUFFIX
    stem = f"{name}-{day.isoformat()}" if counter is None else f"{name}-{day.isoformat()}-{counter:02d}"
    return stem + MANIFEST_SUFFIX


def plan_names(name: str, luns: Iterable[int], day: date, taken: Callable[[str], bool]) -> SetNames:
    """Choose the set's names: no counter if every name is free, else the smallest free ``NN``.

    ``taken(disk_name)`` says whether a disk name (no extension) is in use (a file in the output
    folder, a blob at the destination). The manifest is ``NAME.manifest.json`` unless that is taken
    (``taken`` is asked with the full file name), in which case it carries the set's date and counter.
    Raises :class:`UsageError` when all 99 counters of the day are taken.
    """
    validate_name(name)
    lun_list = sorted(luns)
    if len(set(lun_list)) != len(lun_list):
        raise UsageError("each data disk needs its own LUN")
    for lun in lun_list:
        validate_lun(lun)
    plain_manifest = not taken(name + MANIFEST_SUFFIX)
    counters: list[int | None] = [None, *range(1, MAX_COUNTER + 1)]
    for counter in counters:
        os_name = disk_name(name, None, day, counter)
        data = {lun: disk_name(name, lun, day, counter) for lun in lun_list}
        manifest = manifest_name(name, day, counter, plain_manifest)
        if any(taken(n) for n in (os_name, *data.values())) or (not plain_manifest and taken(manifest)):
            continue
        return SetNames(os_name, data, counter, manifest)
    raise UsageError(f"every name for image {name!r} on {day.isoformat()} is taken "
                     f"(counters 01-{MAX_COUNTER})")
