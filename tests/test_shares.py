"""Evaluation shared by processes (harness.parallel.shares): every split of every small case against a
brute-force expectation, and the merge that must give back exactly one process's list."""

from __future__ import annotations

import itertools

import pytest

from harness.parallel.shares import merge_indexed, share, share_range


def _brute_force_blocks(count: int, world: int) -> list[list[int]]:
    """The expected split, found by search rather than arithmetic: among all ways to cut 0..count-1 into
    `world` consecutive blocks, the one whose sizes are as equal as possible, larger blocks first."""
    best = None
    for cuts in itertools.combinations_with_replacement(range(count + 1), world - 1):
        bounds = [0, *cuts, count]
        sizes = [bounds[i + 1] - bounds[i] for i in range(world)]
        key = (max(sizes) - min(sizes), [-s for s in sizes])  # most even, then front-loaded
        if best is None or key < best[0]:
            best = (key, [list(range(bounds[i], bounds[i + 1])) for i in range(world)])
    assert best is not None
    return best[1]


@pytest.mark.parametrize("world", range(1, 7))
@pytest.mark.parametrize("count", range(0, 10))
def test_shares_match_the_brute_force_split_and_merge_back(count, world):
    units = [f"task{i}" for i in range(count)]
    expected = _brute_force_blocks(count, world)
    parts = [share(units, rank, world) for rank in range(world)]
    assert parts == [[units[i] for i in block] for block in expected]
    assert [u for part in parts for u in part] == units  # concatenated in rank order: one process's list


def test_more_processes_than_units_leaves_the_last_ones_idle():
    assert [share(["a", "b"], rank, 5) for rank in range(5)] == [["a"], ["b"], [], [], []]
    assert [list(share_range(7, rank, 3)) for rank in range(3)] == [[0, 1, 2], [3, 4], [5, 6]]


def test_share_refuses_a_rank_outside_the_world():
    with pytest.raises(ValueError, match="rank 2 is not one of 2"):
        share([1, 2, 3], 2, 2)


@pytest.mark.parametrize("world", range(1, 6))
@pytest.mark.parametrize("count", range(0, 9))
def test_indexed_parts_merge_into_one_process_order(count, world):
    """Greedy batches are shared after sorting by length, so a process's positions are scattered: each
    part is {position: score}, and the merge must put every position back exactly once."""
    scrambled = sorted(range(count), key=lambda i: (i * 7) % (count or 1))  # a length order, say
    batches = [scrambled[i : i + 2] for i in range(0, count, 2)]
    parts = [{i: i * 0.5 for batch in share(batches, rank, world) for i in batch} for rank in range(world)]
    assert merge_indexed(parts, count) == [i * 0.5 for i in range(count)]


def test_indexed_merge_refuses_gaps_and_double_counts():
    with pytest.raises(ValueError, match="position 1 was evaluated twice"):
        merge_indexed([{0: 1.0, 1: 0.0}, {1: 0.0}], 2)
    with pytest.raises(ValueError, match=r"positions \[2\] not evaluated once"):
        merge_indexed([{0: 1.0}, {1: 0.0}], 3)
    with pytest.raises(ValueError, match=r"positions \[5\] not evaluated once"):
        merge_indexed([{0: 1.0, 5: 1.0}], 1)
