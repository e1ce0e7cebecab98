"""Power: how precise each headline figure is, and the seeds x items that would make it +-5 or +-2 points.

Every figure's variance components (seed, item, seed x item; `harness.report.crossed`) are estimated once
from the stored item-level scores, and the half-width at S seeds and n items per task is projected as

    t(df) * sqrt(s2_seed / S + sum_c (s2_item_c / n + s2_inter_c / (S n)))

with Satterthwaite's df for that design (the interval the report would print, on average). The
interaction is counted once: it sits in the seed-by-item residual, not in the item or seed variance.
When the seed variance alone exceeds the target, more items cannot help and the answer says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from harness.report import stats as st
from harness.report.crossed import Estimate, satterthwaite
from harness.report.render import Section, Table, pct
from harness.report.streams import StreamStats

TARGETS = (0.05, 0.02)
ITEM_CHOICES = (120, 400, 1000)  # items per task to project to, besides the current count, when larger
MAX_SEEDS = 500
MIN_SEEDS = 3  # never plan on 2: a seed variance estimated on 1 degree of freedom (t = 12.7)


def projected_half_width(e: Estimate, seeds: int, items: int | None) -> float:
    """Half-width of the 95% interval with `seeds` seeds and `items` items per task (None = as now)."""
    terms = [
        ((e.s2_seed + sum(e.s2_inter.get(c, 0.0) / _n(e, c, items) for c in e.n_items)) / seeds, seeds - 1)
    ]
    for c in e.n_items:
        n = _n(e, c, items)
        inter = e.s2_inter.get(c, 0.0)
        if e.s2_item.get(c, 0.0) > 0:
            terms.append(((seeds * e.s2_item[c] + inter) / (seeds * n), n - 1))
            terms.append((-inter / (seeds * n), (seeds - 1) * (n - 1)))
    v = sum(t for t, _ in terms)
    if v <= 0:
        return 0.0
    return float(sps.t.ppf(0.975, satterthwaite(terms)) * np.sqrt(v))


def _n(e: Estimate, column: str, items: int | None) -> int:
    return e.n_items[column] if items is None else items


def seeds_needed(e: Estimate, target: float, items: int | None) -> int | None:
    """The fewest seeds (MIN_SEEDS..MAX_SEEDS) whose projected half-width is <= target; None if none is."""
    if projected_half_width(e, MAX_SEEDS, items) > target:
        return None
    lo, hi = MIN_SEEDS, MAX_SEEDS
    while lo < hi:  # the half-width falls as seeds grow
        mid = (lo + hi) // 2
        if projected_half_width(e, mid, items) <= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


@dataclass(frozen=True)
class PowerRow:
    figure: str
    mean: float
    estimate: Estimate

    def needs(self, target: float) -> str:
        """'7 seeds x 80 items; 5 x 400; ...' for the current and the projected item counts."""
        now = sorted(set(self.estimate.n_items.values()))
        label = "/".join(map(str, now)) or "1"
        options = []
        for items in (None, *ITEM_CHOICES):
            if items is not None and now and items <= max(now):
                continue
            s = seeds_needed(self.estimate, target, items)
            n = label if items is None else str(items)
            options.append(f"> {MAX_SEEDS} seeds x {n}" if s is None else f"{s} x {n}")
        return "; ".join(options)

    def cells(self) -> list[str]:
        e = self.estimate
        sd_item = np.sqrt(sum(e.s2_item.values()))
        sd_inter = np.sqrt(sum(e.s2_inter.values()))
        items = "/".join(map(str, sorted(set(e.n_items.values())))) or "1"
        return [
            self.figure,
            pct(self.mean),
            f"±{pct(e.half_width())} ({e.seeds} x {items})",
            f"{pct(np.sqrt(e.s2_seed))} / {pct(sd_item)} / {pct(sd_inter)}",
            *[self.needs(t) for t in TARGETS],
        ]


def power_rows(ss: StreamStats) -> list[PowerRow]:
    """Each group's headline figures, then every paired comparison of two groups."""
    rows = []
    labels = [g.label for g in ss.groups]
    for lab in labels:
        for name, stat in _figures(ss, [lab]):
            e = ss.boot.estimate(lab, stat)
            if _sizable(e):
                rows.append(PowerRow(f"{lab}: {name}", e.mean, e))
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            for name, stat in _figures(ss, [a, b]):
                e = ss.boot.difference_estimate(a, b, stat)
                if _sizable(e):
                    rows.append(PowerRow(f"{a} minus {b}: {name}", e.mean, e))
    return rows


def _sizable(e: Estimate) -> bool:
    """Two seeds or more and some variance: a figure with no spread at all (every item 0) has nothing
    to size."""
    return e.seeds >= 2 and bool(np.isfinite(e.mean)) and e.variance > 0


def _figures(ss: StreamStats, labels: list[str]) -> list[tuple[str, st.Statistic]]:
    out: list[tuple[str, st.Statistic]] = [("new-task acc.", st.cl_metric("new_task_acc"))]
    common = [t for t in ss.tasks if all(t in ss.forgettable(lab) for lab in labels)]
    if len(ss.tasks) > 1 and common:
        out.append((f"forgetting ({', '.join(common)})", st.cl_metric("forgetting", common)))
    if any(r.G.shape[1] for g in ss.groups for r in g.runs):
        out.append(("general Δ", st.cl_metric("general_delta")))
    return out


def power_section(ss: StreamStats) -> Section:
    header = ["Figure", "mean", "half-width now (seeds x items)", "sd seed / item / seed×item"]
    header += [f"±{round(100 * t)} points needs (seeds x items per task)" for t in TARGETS]
    rows = [r.cells() for r in power_rows(ss)]
    note = (
        "Variance components of each figure estimated once from the item-level scores (moments of the "
        "crossed seed x item design: seed, item and seed-by-item interaction, each counted once); the "
        "half-width at S seeds and n items is t(Satterthwaite df) x sqrt(seed/S + item/n + "
        "interaction/(S n)); at least 3 seeds. `> 500 seeds` = out of reach at that item count (the item "
        "variance alone exceeds the target, or the seed variance does whatever the items)."
    )
    if not rows:
        return Section(f"Power: stream `{ss.stream}`", level=3, text=["Needs at least 2 seeds per group."])
    return Section(f"Power: stream `{ss.stream}`", level=3, text=[note], tables=[Table(header, rows)])
