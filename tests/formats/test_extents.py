"""Properties of the extent arithmetic every reader and sink relies on."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vhdtool.extents import (
    Extent,
    align_down,
    align_up,
    allocated_bytes,
    allocated_ranges,
    check_cover,
    extents_from_ranges,
    merge_ranges,
    split,
)

ranges = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 2_000)).map(lambda t: (t[0], t[0] + t[1])),
                  max_size=30)


def covered(rs: list[tuple[int, int]]) -> set[int]:
    return {i for s, e in rs for i in range(s, e)}


@given(ranges)
def test_merge_ranges_keeps_the_covered_set_and_is_disjoint(rs: list[tuple[int, int]]) -> None:
    merged = merge_ranges(rs)
    assert covered(merged) == covered(rs)
    for (s1, e1), (s2, e2) in zip(merged, merged[1:], strict=False):
        assert e1 < s2, "merged ranges must be separated by a gap"
        assert s1 < e1 and s2 < e2


@given(ranges, st.integers(1, 13_000))
def test_extents_cover_the_disk_and_mark_exactly_the_ranges(rs: list[tuple[int, int]], size: int) -> None:
    extents = extents_from_ranges(rs, size)
    check_cover(extents, size)
    inside = {i for i in covered(rs) if i < size}
    assert covered(allocated_ranges(extents)) == inside
    assert allocated_bytes(extents) == len(inside)
    for a, b in zip(extents, extents[1:], strict=False):
        assert a.allocated != b.allocated, "neighbours with the same flag must be merged"


@given(ranges, st.integers(1, 13_000), st.integers(1, 5_000))
def test_split_respects_the_limit_and_keeps_coverage(rs: list[tuple[int, int]], size: int, limit: int) -> None:
    extents = extents_from_ranges(rs, size)
    pieces = list(split(extents, limit))
    assert all(p.length <= limit for p in pieces)
    check_cover(pieces, size)
    assert allocated_bytes(pieces) == allocated_bytes(extents)


@given(st.integers(0, 1 << 50), st.sampled_from([1, 512, 4096, 1 << 20]))
def test_alignment(value: int, alignment: int) -> None:
    up, down = align_up(value, alignment), align_down(value, alignment)
    assert up % alignment == 0 and down % alignment == 0
    assert down <= value <= up and up - down in (0, alignment)


def test_extent_end() -> None:
    assert Extent(10, 5, True).end == 15


@given(ranges, ranges)
def test_subtract_ranges_is_set_difference(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> None:
    from vhdtool.extents import subtract_ranges

    result = subtract_ranges(merge_ranges(a), merge_ranges(b))
    assert covered(result) == covered(a) - covered(b)
    assert result == merge_ranges(result)
