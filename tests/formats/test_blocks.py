"""The shared block machinery of the VHD and VHDX readers: read plans and the stored-block checks."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from vhdtool.formats.blocks import ReadPlan, Source, consecutive_runs, first_inside, first_overlap, first_past

pieces = st.lists(st.tuples(st.sampled_from(list(Source)), st.integers(0, 3), st.integers(0, 2)), max_size=40)


@given(pieces)
def test_a_plan_tiles_the_range_and_merges_only_what_one_read_can_serve(spec: list[tuple[Source, int, int]]) -> None:
    # Pieces laid end to end; a FILE piece either continues the previous one in the file or jumps.
    plan = ReadPlan()
    position, file_at, expected = 0, 1000, []
    for source, length, jump in spec:
        file_at += jump * 7
        plan.add(source, position, position + length, file_at if source is Source.FILE else 0)
        expected.extend((position + i, source, file_at + i if source is Source.FILE else None) for i in range(length))
        position += length
        if source is Source.FILE:
            file_at += length
    got = [(seg.start + i, seg.source, seg.file_offset + i if seg.source is Source.FILE else None)
           for seg in plan.segments for i in range(seg.end - seg.start)]
    assert got == expected  # byte for byte: same source, same file offset
    for a, b in zip(plan.segments, plan.segments[1:], strict=False):
        assert a.end == b.start
        mergeable = a.source is b.source and (
            a.source is not Source.FILE or a.file_offset + (a.end - a.start) == b.file_offset)
        assert not mergeable  # neighbours that one read could serve are one segment


blocks = st.lists(st.tuples(st.integers(0, 200), st.integers(1, 40)), max_size=25)


@given(blocks)
def test_first_overlap_finds_a_clash_exactly_when_two_blocks_share_a_byte(spec: list[tuple[int, int]]) -> None:
    starts = np.array([s for s, _ in spec], np.int64)
    ends = np.array([s + n for s, n in spec], np.int64)
    clash = first_overlap(starts, ends)
    overlapping = [(i, j) for i in range(len(spec)) for j in range(len(spec))
                   if i != j and starts[i] < ends[j] and starts[j] < ends[i]]
    if clash is None:
        assert not overlapping
    else:
        later, earlier = clash
        assert (later, earlier) in overlapping
        assert (starts[earlier], earlier) <= (starts[later], later)  # in file order


@given(blocks, st.integers(0, 250), st.integers(0, 60))
def test_first_past_and_first_inside_pick_the_first_offender(spec: list[tuple[int, int]], lo: int, n: int) -> None:
    starts = np.array([s for s, _ in spec], np.int64)
    ends = np.array([s + k for s, k in spec], np.int64)
    past = [i for i in range(len(spec)) if ends[i] > lo]
    assert first_past(ends, lo) == (past[0] if past else None)
    inside = [i for i in range(len(spec)) if starts[i] < lo + n and ends[i] > lo]
    assert first_inside(starts, ends, lo, lo + n) == (inside[0] if inside else None)


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1)), max_size=30))
def test_consecutive_runs_break_at_gaps_and_state_changes(steps: list[tuple[int, int]]) -> None:
    numbers, states, n = [], [], 0
    for gap, state in steps:
        n += gap + 1
        numbers.append(n)
        states.append(state)
    starts, ends, firsts = consecutive_runs(np.array(numbers, np.int64), np.array(states, np.int64))
    runs = list(zip(starts.tolist(), ends.tolist(), firsts.tolist(), strict=True))
    assert [(b, states[f]) for s, e, f in runs for b in range(s, e)] == list(zip(numbers, states, strict=True))
    for (_, end, first), (start, _, following) in zip(runs, runs[1:], strict=False):
        assert end < start or states[first] != states[following]  # every break is a gap or a change
