"""The report's words follow its intervals (issue 25), on hand-made runs built in memory (no MLflow)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.report.baseline_table import baseline_section
from harness.report.runs import Group, RunResult
from harness.report.sections import comparison_text
from harness.report.streams import StreamStats

N = 100  # items per task


def _run(method: str, seed: int, right: list[int], shift: int = 0) -> RunResult:
    """A one-task stream ("a"): the base gets nothing right, the trained model `right[1]` items (from `shift`)."""
    rows = []
    for stage, k in enumerate(right):
        scores = np.zeros(N)
        scores[[(shift + i) % N for i in range(k)]] = 1.0
        rows += [{"stage": stage, "task": "a", "doc_id": i, "score": s} for i, s in enumerate(scores)]
    items = pd.DataFrame(rows)
    stages = pd.Index(range(len(right)), name="stage")
    R = items.groupby("stage")["score"].mean().to_frame("a").reindex(stages)
    return RunResult(
        f"{method}-{seed}",
        method,
        "s",
        str(seed),
        "m",
        {},
        R,
        pd.DataFrame(index=stages),
        pd.DataFrame(index=stages),
        items=items,
        eval_sizes={"a": N},
    )


def _stats(groups: dict[str, list[RunResult]], chance: float) -> StreamStats:
    gs = [Group("s", m, m, runs) for m, runs in groups.items()]
    return StreamStats("s", gs, [r for g in gs for r in g.runs], chance={"a": chance})


def test_a_gain_below_chance_is_not_learned() -> None:
    # 6, 6 and 7 of 100 right after training on every seed, 0 before: clearly above the base model ...
    runs = [_run("sft", s, [0, 6 + (s == 2)], shift=7 * s) for s in range(3)]
    above_base = _stats({"sft": runs}, chance=0.0)
    assert above_base.learned_tasks("sft") == ["a"]
    # ... but a constant answer scores 10%: the gain interval over max(base, chance) is not above 0
    below_chance = _stats({"sft": runs}, chance=0.10)
    assert below_chance.learned_tasks("sft") == []
    table = baseline_section(below_chance).tables[0]
    assert table.rows[0][2] == "10.0" and table.rows[0][3].endswith(" not learned")


def test_one_seed_driving_a_difference_is_not_distinguishable() -> None:
    # per-seed differences of 26, 1 and 40 points (the study's anchored-SDFT forgetting pattern)
    a = [_run("A", s, [0, 60 + d], shift=s) for s, d in enumerate([26, 1, 40])]
    b = [_run("B", s, [0, 60], shift=s) for s in range(3)]
    text = comparison_text(_stats({"A": a, "B": b}, chance=0.0))
    assert "A and B are not distinguishable on new-task accuracy" in text
    assert "covers 0" in text and "equivalent" not in text and "as much as" not in text


def test_equivalence_needs_an_interval_inside_the_margin() -> None:
    # the same items right on every seed but one item more for A on one seed: a difference of 0.3 points
    a = [_run("A", s, [0, 50 + (s == 0)], shift=s) for s in range(3)]
    b = [_run("B", s, [0, 50], shift=s) for s in range(3)]
    text = comparison_text(_stats({"A": a, "B": b}, chance=0.0))
    assert "not distinguishable" in text and "equivalent within ±5 points" in text
    assert "as much as" not in text
