"""Fuzzing partition tables, filesystems and registry hives through ``inspect`` and ``check`` (issue 7).

The disks are MBR (with a chain of logical partitions) or GPT, built by our own small writer, holding
real volumes made by mke2fs (a tree with symlink loops and a very deep path), mkfs.fat + mtools and
the Windows fixture builder (NTFS with registry hives). Hypothesis damages partition entries, GPT
headers (CRC repaired sometimes), EBR links, superblocks, boot sectors and bytes deeper inside the
volumes; hives are damaged directly and read through :class:`vhdtool.inspect.registry.Hive`.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.strategies import Case, Volumes, _build_table, hive_mutations, make_volumes, table_cases

from fuzz.harness import exercise, watchdog
from fuzz.mutate import apply_bytes
from vhdtool.errors import VhdtoolError
from vhdtool.formats.open import open_image
from vhdtool.inspect.registry import Hive, base_block_checksum
from vhdtool.inspect.report import inspect_disk

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
        case = Case("table", {"scheme": scheme, "filesystems": names}, (),
                    lambda folder, p: _build_table(folder, p, volumes()))
        with tempfile.TemporaryDirectory() as folder:
            path = case.build(Path(folder))
            outcome = exercise(path, work_dir=folder, time_limit=30.0)
            assert outcome.crash is None, outcome.crash
            assert set(outcome.steps.values()) == {"ok"}, outcome.steps

            with open_image(path) as disk:
                report = inspect_disk(disk)
            # Every filesystem is found; the only other volume listed is the extended partition
            # that holds the logical ones.
            containers = [v for v in report.volumes if "extended" in v.partition.type_name.lower()]
            assert all(v.info.kind == "none" for v in containers)
            assert len(containers) == (1 if scheme == "mbr-logical" else 0), (scheme, report.warnings)
            kinds = sorted(v.info.kind for v in report.volumes if v not in containers)
            assert kinds == sorted(names), (scheme, kinds, report.warnings)


def test_damaged_tables_and_volumes() -> None:
    """No damage crashes inspect or check; and the damage is not all stopped at the door: a floor of
    cases must open and get through inspect, so the suite shows it reaches the table and filesystem code."""
    steps: Counter[str] = Counter()

    @SUITE
    @given(st.data())
    def one(data: st.DataObject) -> None:
        case = data.draw(table_cases(volumes()))
        with tempfile.TemporaryDirectory(prefix="vhdtool-fuzz-") as folder:
            path = case.build(Path(folder))
            outcome = exercise(path, work_dir=folder, time_limit=20.0, convert=False)
            assert outcome.crash is None, f"{case}\n{outcome.crash}"
            steps["cases"] += 1
            steps.update(f"{step} {'ok' if result == 'ok' else 'refused'}" for step, result in outcome.steps.items())
            if outcome.steps.get("inspect") == "ok":
                with open_image(path) as disk:
                    report = inspect_disk(disk)
                found = {v.info.kind for v in report.volumes} - {"none"}
                steps["a filesystem read"] += bool(found)
                steps["damage reported"] += bool(report.warnings or report.table.problems or report.unclean)

    one()
    print(dict(steps))
    cases = steps["cases"]
    assert steps["open ok"] >= 0.9 * cases, steps  # the damage is inside the disk, not its container
    assert steps["a filesystem read"] >= 0.3 * cases, steps  # past the tables, into the filesystem readers
    assert steps["damage reported"] >= 0.3 * cases, steps  # and the damage is seen, not read past


def _read_hive(data: bytes) -> None:
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


def test_damaged_hives() -> None:
    """No damaged hive escapes a typed error or hangs; and a floor of them are still read as hives
    (the base block taken, keys looked up), so the suite reaches the cell walker, not only the header check."""
    images = volumes().images
    if "hive_software" not in images:
        pytest.skip("hivexregedit is not installed")
    read: Counter[str] = Counter()

    @settings(SUITE, max_examples=400)
    @given(st.data())
    def one(data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(["hive_software", "hive_system"]))
        original = images[name]
        ops = data.draw(hive_mutations(len(original)))
        damaged = apply_bytes(original, ops)
        if data.draw(st.booleans()):
            fixed = bytearray(damaged.ljust(4096, b"\0"))
            fixed[508:512] = base_block_checksum(bytes(fixed[:4096])).to_bytes(4, "little")
            damaged = bytes(fixed)
        read["cases"] += 1
        with watchdog(5.0):
            try:
                _read_hive(damaged)
            except VhdtoolError:
                read["refused"] += 1
            else:
                read["read"] += 1

    one()
    print(dict(read))
    assert read["read"] >= 0.3 * read["cases"], read
