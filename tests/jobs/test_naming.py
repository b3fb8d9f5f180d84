"""Capture-convention names: examples, collisions and hypothesis properties."""

from __future__ import annotations

import re
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vhdtool.errors import UsageError
from vhdtool.jobs.naming import MAX_NAME_LENGTH, disk_name, plan_names, validate_lun, validate_name

DAY = date(2026, 11, 23)
NAME_RE = re.compile(r"^(?P<name>.+)-(?:os|datadisk-(?P<lun>\d+))-(?P<day>\d{4}-\d{2}-\d{2})"
                     r"(?:-(?P<nn>\d{2}))?$")


def test_plain_names() -> None:
    names = plan_names("sample", [2, 0], DAY, lambda n: False)
    assert names.os == "sample-os-2026-11-23"
    assert names.data == {0: "sample-datadisk-0-2026-11-23", 2: "sample-datadisk-2-2026-11-23"}
    assert names.counter is None
    assert names.manifest == "sample.manifest.json"


def test_collision_adds_one_counter_to_the_whole_set() -> None:
    taken = {"sample-datadisk-1-2026-11-23", "sample-os-2026-11-23-01", "sample.manifest.json"}
    names = plan_names("sample", [1], DAY, taken.__contains__)
    assert names.counter == 2
    assert names.os == "sample-os-2026-11-23-02"
    assert names.data == {1: "sample-datadisk-1-2026-11-23-02"}
    assert names.manifest == "sample-2026-11-23-02.manifest.json"


def test_taken_manifest_alone_does_not_force_a_counter() -> None:
    names = plan_names("img", [], DAY, {"img.manifest.json"}.__contains__)
    assert names.counter is None
    assert names.manifest == "img-2026-11-23.manifest.json"


def test_all_counters_taken() -> None:
    with pytest.raises(UsageError, match="taken"):
        plan_names("x", [], DAY, lambda n: n.startswith("x-os-"))


@pytest.mark.parametrize("bad", ["", "-a", "a-", "a b", "a/b", "ä", "a.", "x" * 60])
def test_bad_names_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        validate_name(bad)


@pytest.mark.parametrize("lun", [-1, 64])
def test_bad_luns_refused(lun: int) -> None:
    with pytest.raises(UsageError):
        validate_lun(lun)


def test_duplicate_lun_refused() -> None:
    with pytest.raises(UsageError, match="LUN"):
        plan_names("a", [3, 3], DAY, lambda n: False)


names_st = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,30}[A-Za-z0-9_])?", fullmatch=True)
days_st = st.dates(min_value=date(2000, 1, 1), max_value=date(9999, 12, 31))
luns_st = st.sets(st.integers(0, 63), max_size=8)


@given(names_st, st.one_of(st.none(), st.integers(0, 63)), days_st, st.one_of(st.none(), st.integers(1, 99)))
def test_name_round_trips(name: str, lun: int | None, day: date, counter: int | None) -> None:
    text = disk_name(name, lun, day, counter)
    match = NAME_RE.match(text)
    assert match is not None
    assert match["name"] == name
    assert (None if match["lun"] is None else int(match["lun"])) == lun
    assert date.fromisoformat(match["day"]) == day
    assert (None if match["nn"] is None else int(match["nn"])) == counter
    assert len(text) <= MAX_NAME_LENGTH


@given(names_st, luns_st, days_st, st.sets(st.integers(1, 99), max_size=20), st.booleans())
def test_plan_avoids_taken_names_and_uses_the_smallest_free_counter(
        name: str, luns: set[int], day: date, used: set[int], plain_taken: bool) -> None:
    # A previous set exists for counter "none" (if plain_taken) and for each counter in ``used``.
    taken: set[str] = set()
    for counter in ([None] if plain_taken else []) + sorted(used):
        taken.add(disk_name(name, None, day, counter))
    names = plan_names(name, luns, day, taken.__contains__)
    chosen = [names.os, *names.data.values()]
    assert not set(chosen) & taken
    assert len(set(chosen)) == len(chosen) == 1 + len(luns)
    free = [c for c in [None, *range(1, 100)] if c not in used and not (c is None and plain_taken)]
    assert names.counter == free[0]
    assert all(NAME_RE.match(n) for n in chosen)
    assert len({NAME_RE.match(n)["nn"] for n in chosen}) == 1  # type: ignore[index]
