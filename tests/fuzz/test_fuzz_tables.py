"""Fuzzing partition tables, filesystems and registry hives through ``inspect`` and ``check`` (issue 7).

The disks are MBR (with a chain of logical partitions) or GPT, built by our own small writer, holding
real volumes made by mke2fs (a tree with symlink loops and a very deep path), mkfs.fat + mtools and
the Windows fixture builder (NTFS with registry hives). Hypothesis damages partition entries, GPT
headers (CRC repaired sometimes), EBR links, superblocks, boot sectors and bytes deeper inside the
volumes; hives are damaged directly and read through :class:`vhdtool.inspect.registry.Hive`.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.strategies import Case, Volumes, hive_mutations, make_volumes, table_cases

from fuzz.harness import exercise
from fuzz.mutate import apply_bytes
from vhdtool.errors import VhdtoolError

pytestmark = pytest.mark.slow  # left out of scripts/test.sh --fast

SUITE = settings(max_examples=120, derandomize=True, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_VOLUMES: list[Volumes] = []


def volumes() -> Volumes:
    """Made once per session (about two seconds; NTFS needs ntfs-3g and wimtools)."""
    if not _VOLUMES:
        folder = Path(tempfile.mkdtemp(prefix="vhdtool-fuzz-volumes-"))
        _VOLUMES.append(make_volumes(folder))
    return _VOLUMES[0]


def test_volumes_were_made() -> None:
    assert {"ext4", "fat"} <= set(volumes().images)


def test_undamaged_disks_inspect() -> None:
    """The undamaged tables: inspect finds every volume (the ext4 one with its symlink loops terminates)."""
    names = tuple(n for n in ("ext4", "fat", "ntfs") if n in volumes().images)
    for scheme in ("gpt", "mbr", "mbr-logical"):
        from support.strategies import _build_table

        case = Case("table", {"scheme": scheme, "filesystems": names}, (),
                    lambda folder, p: _build_table(folder, p, volumes()))
        with tempfile.TemporaryDirectory() as folder:
            path = case.build(Path(folder))
            outcome = exercise(path, work_dir=folder, time_limit=30.0)
            assert outcome.crash is None, outcome.crash
            assert set(outcome.steps.values()) == {"ok"}, outcome.steps
            from vhdtool.formats.open import open_image
            from vhdtool.inspect.report import inspect_disk

            with open_image(path) as disk:
                report = inspect_disk(disk)
            # Every filesystem is found; the only other volume listed is the extended partition
            # that holds the logical ones.
            containers = [v for v in report.volumes if "extended" in v.partition.type_name.lower()]
            assert all(v.info.kind == "none" for v in containers)
            assert len(containers) == (1 if scheme == "mbr-logical" else 0), (scheme, report.warnings)
            kinds = sorted(v.info.kind for v in report.volumes if v not in containers)
            assert kinds == sorted(names), (scheme, kinds, report.warnings)


@SUITE
@given(st.data())
def test_damaged_tables_and_volumes(data: st.DataObject) -> None:
    case = data.draw(table_cases(volumes()))
    with tempfile.TemporaryDirectory(prefix="vhdtool-fuzz-") as folder:
        path = case.build(Path(folder))
        outcome = exercise(path, work_dir=folder, time_limit=20.0, convert=False)
        assert outcome.crash is None, f"{case}\n{outcome.crash}"


def _read_hive(data: bytes) -> None:
    from vhdtool.inspect.registry import Hive

    hive = Hive(data, "Windows/System32/config/SOFTWARE")
    for key in ("Microsoft\\Windows NT\\CurrentVersion", "Microsoft\\Windows\\CurrentVersion\\Setup\\State",
                "Select", "ControlSet001\\Control\\ComputerName\\ComputerName"):
        hive.has_key(key)
        hive.subkey_names(key)
        for name in ("ProductName", "ImageState", "Current", "ComputerName", "CurrentBuild"):
            value = hive.value(key, name)
            if value is not None:
                value.as_text()
                value.as_int()
                value.display()


@settings(SUITE, max_examples=400)
@given(st.data())
def test_damaged_hives(data: st.DataObject) -> None:
    images = volumes().images
    if "hive_software" not in images:
        pytest.skip("hivexregedit is not installed")
    name = data.draw(st.sampled_from(["hive_software", "hive_system"]))
    original = images[name]
    ops = data.draw(hive_mutations(len(original)))
    damaged = apply_bytes(original, ops)
    if data.draw(st.booleans()):
        from vhdtool.inspect.registry import base_block_checksum

        fixed = bytearray(damaged.ljust(4096, b"\0"))
        fixed[508:512] = base_block_checksum(bytes(fixed[:4096])).to_bytes(4, "little")
        damaged = bytes(fixed)
    from fuzz.harness import watchdog

    with watchdog(5.0), contextlib.suppress(VhdtoolError):
        _read_hive(damaged)
