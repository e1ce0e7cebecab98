"""Paired differences between SFT and SDFT with the SFT anchor on the measures the report does not pair.

The report pairs each method with its best-matched rival on new-task accuracy and the final general-suite
average. This script pairs SFT with the anchored SDFT group (`method.distill.sft_weight=1.0`) on:
- tooluse forgetting: its score after stage 1 minus after stage 2 (the only task learned before the last);
- science, the second task's score right after learning it;
- the final general-suite average (the three general tasks, equal weight).
Both groups ran the same seeds and were scored on the same items, so differences are taken per (seed, item).
The 95% interval is a percentile bootstrap that resamples seeds, then items (one item draw shared by every
seed), 4000 draws: the scheme the report uses.

    .venv/bin/python results/study/paired.py
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from power import load_items

A, B = "sft", "sdft (method.distill.sft_weight=1.0)"
GENERAL = ["general_mc", "general_ifeval", "general_arith"]
DRAWS = 4000


def cell(items: pd.DataFrame, group: str, stage: int, task: str) -> pd.DataFrame:
    """seed x doc_id scores of one (group, stage, task)."""
    rows = items[(items["group"] == group) & (items["stage"] == stage) & (items["task"] == task)]
    return rows.pivot_table(index="seed", columns="doc_id", values="score")


def bootstrap(diff: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float]:
    """Mean of a seed x item difference matrix and its seeds-then-items percentile interval."""
    seeds, n = diff.shape
    means = np.empty(DRAWS)
    for k in range(DRAWS):
        s = rng.integers(0, seeds, seeds)
        i = rng.integers(0, n, n)
        means[k] = diff[np.ix_(s, i)].mean()
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(diff.mean()), float(lo), float(hi)


def show(name: str, diff: pd.DataFrame, rng: np.random.Generator) -> None:
    mean, lo, hi = bootstrap(diff.to_numpy(dtype=float), rng)
    verdict = (
        "not distinguishable" if lo <= 0 <= hi else ("SFT higher" if mean > 0 else "anchored SDFT higher")
    )
    print(f"{name}: SFT minus anchored SDFT {100 * mean:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] ({verdict})")


def main() -> None:
    items = load_items()
    rng = np.random.default_rng(0)
    per_seed = {g: cell(items, g, 1, "tooluse") - cell(items, g, 2, "tooluse") for g in (A, B)}
    for g, drop in per_seed.items():
        print(f"{g}: tooluse forgetting per seed", (100 * drop.mean(axis=1)).round(1).to_dict())
    show("tooluse forgetting", per_seed[A] - per_seed[B], rng)
    show("science right after learning it", cell(items, A, 2, "science") - cell(items, B, 2, "science"), rng)
    general = {
        g: pd.concat([cell(items, g, 2, t).add_prefix(f"{t}:") for t in GENERAL], axis=1) for g in (A, B)
    }
    show("final general-suite average", general[A] - general[B], rng)


if __name__ == "__main__":
    main()
