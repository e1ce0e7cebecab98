"""Evaluation work dealt out to processes and put back together in one process's order.

Each process takes one *contiguous* block of the work (eval tasks, or greedy batches): the blocks are as
equal as whole units allow (sizes differ by at most one, the larger ones first) and concatenating them in
rank order gives the list back. Contiguous rather than round-robin because a merged result must come out
in the order one process would have produced (lm-eval lists tasks, and the loop writes items, in the order
asked for); with blocks that is plain concatenation. More processes than units leaves the last ones idle.

Pure Python, no torch: the collectives that carry the parts are `Replicas.gather`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

T = TypeVar("T")


def share_range(count: int, rank: int, world: int) -> range:
    """Positions `rank` evaluates out of `count` units shared by `world` processes (maybe empty)."""
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not one of {world} processes")
    size, extra = divmod(count, world)
    start = rank * size + min(rank, extra)  # the first `extra` ranks take one unit more
    return range(start, start + size + (1 if rank < extra else 0))


def share(units: Sequence[T], rank: int, world: int) -> list[T]:
    """This process's contiguous block of `units`."""
    block = share_range(len(units), rank, world)
    return list(units[block.start : block.stop])


def merge_indexed(parts: Sequence[Mapping[int, T]], count: int) -> list[T]:
    """Results keyed by position (0..count-1), each position computed by exactly one process, as one list.

    Refuses a position that no process or two processes computed: a silent gap or double count would make
    the merged scores differ from one process's without anyone noticing.
    """
    merged: dict[int, T] = {}
    for rank, part in enumerate(parts):
        for index, value in part.items():
            if index in merged:
                raise ValueError(f"position {index} was evaluated twice (again by rank {rank})")
            merged[index] = value
    missing = [i for i in range(count) if i not in merged]
    if missing or len(merged) != count:
        raise ValueError(f"positions {missing or sorted(set(merged) - set(range(count)))} not evaluated once")
    return [merged[i] for i in range(count)]
