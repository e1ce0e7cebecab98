"""One stream's runs and their intervals (`StreamStats`): what the report's sections and figures read.

Intervals come from the crossed seed x item estimate (`harness.report.crossed`), which holds its 95% at
3-5 seeds; `harness.report.stats.Bootstrap` is kept only as the baseline the coverage study compares with.
"""

from __future__ import annotations

import numpy as np

from harness.report import stats as st
from harness.report.baselines import chance_levels
from harness.report.crossed import Crossed
from harness.report.runs import BASE_LABEL, Group, RunResult, base_scores, scores_of, seed_order


class StreamStats:
    """The intervals of one stream: every group (all orders; and each order apart) and the base model."""

    def __init__(
        self,
        stream: str,
        groups: list[Group],
        runs: list[RunResult],
        chance: dict[str, float | None] | None = None,
    ) -> None:
        """`chance`: each stream task's chance level; None = looked up from the task folders."""
        self.stream, self.groups = stream, groups
        listed = [r for r in runs if r.order == "0"] or runs
        self.tasks = listed[0].tasks  # the stream as listed
        self.orders = sorted({r.order for g in groups for r in g.runs}, key=seed_order)
        strata: dict[str, list[st.Scores]] = {}
        self.extra_strata: dict[str, list[st.Scores]] = {}
        for g in groups:
            for order, members in g.orders().items():
                s = scores_of(members, order)
                strata.setdefault(g.label, []).append(s)
                strata[self.sub(g.label, order)] = [s]
                if len(members[0].extra.columns):
                    self.extra_strata[self.sub(g.label, order)] = [scores_of(members, order, "extra")]
        base, self.base_n = base_scores([r for g in groups for r in g.runs], self.tasks)
        strata[BASE_LABEL] = [base]
        self.boot = Crossed(strata)
        self.extra_boot = Crossed(self.extra_strata) if self.extra_strata else None
        self.chance = chance_levels(self.tasks, runs) if chance is None else chance
        self.learned = {g.label: self._learned(g.label) for g in groups}

    def sub(self, label: str, order: str) -> str:
        return label if len(self.orders) == 1 else f"{label} @ order {order}"

    def _learned(self, label: str) -> dict[str, st.Interval]:
        """Per task, the interval of its gain over max(base, chance) (`harness.report.baselines`)."""
        return {t: self.boot.interval(label, st.gain_over(t, self.chance.get(t))) for t in self.tasks}

    def learned_tasks(self, label: str) -> list[str]:
        return [t for t, iv in self.learned[label].items() if iv.excludes_zero and iv.mean > 0]

    def forgettable(self, label: str) -> list[str]:
        """Learned tasks that some later stage could make it forget (not last in every order)."""
        last = {g_run.tasks[-1] for g in self.groups if g.label == label for g_run in g.runs}
        return [t for t in self.learned_tasks(label) if t not in last or len(last) > 1]

    def item_level(self) -> bool:
        return all(all(s.item_level.values()) for strata in self.boot.groups.values() for s in strata)


def normalized_floor(ss: StreamStats, label_best: dict[str, str]) -> np.ndarray:
    """Per task, the smallest improvement over the base worth normalising by: one eval item (1/n items)
    and the half-width of the best group's interval on that task, whichever is larger."""
    floors = []
    for t in ss.tasks:
        lab = label_best.get(t)
        iv = ss.boot.interval(lab, st.new_score(t)) if lab else st.NAN_INTERVAL
        half = (iv.hi - iv.lo) / 2 if not iv.degenerate else 0.0
        n = min((r.eval_sizes.get(t, 0) for g in ss.groups for r in g.runs), default=0)
        floors.append(max(half, 1.0 / n if n else 0.0))
    return np.asarray(floors)
