"""Fuzzing the VHD and VHDX readers with structure-aware damage (issue 7).

Valid images come from the spec-following builders (tests/support/vhd_builder.py, tests/support/vhdx_builder.py);
hypothesis then damages named fields (sizes, offsets, counts, BAT and log entries, parent locators) and
repairs checksums some of the time. Every entry point must succeed or raise a VhdtoolError, within a
time bound, with reads that agree with each other. A fixed, derandomised number of examples runs here;
``python benchmarks/fuzz_campaign.py --minutes N`` runs the same strategies at random for longer.
"""

from __future__ import annotations

import tempfile
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.strategies import Case, vhd_cases, vhdx_cases

from fuzz.harness import exercise
from vhdtool.errors import VhdtoolError
from vhdtool.formats.open import open_image

pytestmark = pytest.mark.slow  # left out of scripts/test.sh --fast

SUITE = settings(max_examples=200, derandomize=True, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def run_case(case: Case, *, inspect: bool = False) -> None:
    with tempfile.TemporaryDirectory(prefix="vhdtool-fuzz-") as folder:
        path = case.build(Path(folder))
        outcome = exercise(path, work_dir=folder, inspect=inspect, check=inspect, time_limit=10.0)
        assert outcome.crash is None, f"{case}\n{outcome.crash}"


@SUITE
@given(vhd_cases())
def test_vhd_damage(case: Case) -> None:
    run_case(case)


@settings(SUITE, max_examples=150)
@given(vhdx_cases())
def test_vhdx_damage(case: Case) -> None:
    run_case(case)


def _open_peak(path: Path) -> int:
    """Peak Python-traced memory (numpy included) of open + extents + info."""
    tracemalloc.start()
    try:
        try:
            with open_image(path) as disk:
                disk.extents()
                disk.info()
        except VhdtoolError:
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@settings(SUITE, max_examples=60)
@given(vhd_cases(max_mutations=2))
def test_vhd_memory_bounded_by_file(case: Case) -> None:
    """A header field never drives an allocation larger than the file justifies."""
    with tempfile.TemporaryDirectory(prefix="vhdtool-fuzz-") as folder:
        path = case.build(Path(folder))
        limit = 2 * sum(p.stat().st_size for p in Path(folder).iterdir()) + (8 << 20)
        assert _open_peak(path) <= limit


@settings(SUITE, max_examples=40)
@given(vhdx_cases(max_mutations=2))
def test_vhdx_memory_bounded_by_file(case: Case) -> None:
    with tempfile.TemporaryDirectory(prefix="vhdtool-fuzz-") as folder:
        path = case.build(Path(folder))
        limit = 2 * sum(p.stat().st_size for p in Path(folder).iterdir()) + (8 << 20)
        assert _open_peak(path) <= limit


@settings(SUITE, max_examples=30)
@given(st.one_of(vhd_cases(max_mutations=0), vhdx_cases(max_mutations=0)))
def test_undamaged_images_open(case: Case) -> None:
    """The strategies' valid images open and read cleanly: the fuzzing starts from real, readable images.

    Only a VHDX whose relative locator is hostile (and so is refused) is allowed not to open.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = case.build(Path(folder))
        outcome = exercise(path, work_dir=folder, inspect=False, check=False)
        assert outcome.crash is None, outcome.crash
        honest = case.kind != "vhdx" or not case.params["parent"] or case.params["relative"] in (
            ".\\parent.vhdx", "parent.vhdx")
        if honest:
            assert set(outcome.steps.values()) == {"ok"}, (case, outcome.steps)
