"""How many seeds and eval items the study would need for 95% half-widths of 5 points (issue #14).

Reads results/study/items.csv.gz (written by `harness report experiment=study`) and splits the variance of
each method's new-task accuracy (the mean over stream tasks of the score right after learning each) into a
seed part and an item part, the two levels the report's bootstrap resamples. With S seeds and N items per
task the variance of the mean is about var_seed / S + var_item / N (items are crossed with seeds: every
run sees the same items), so the half-width is 1.96 * sqrt(var_seed / S + var_item / N).

    .venv/bin/python results/study/power.py
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
TARGET = 0.05


def stream_order() -> list[str]:
    """The stream's tasks in training order, from the report's runs.csv (one order in this study)."""
    orders = pd.read_csv(HERE / "runs.csv")["tasks"].unique()
    if len(orders) != 1:
        raise SystemExit(f"expected one task order, found {list(orders)}")
    return [t.strip() for t in orders[0].split("->")]


def load_items() -> pd.DataFrame:
    """items.csv.gz with each run's report group (runs.csv): one method may hold several groups, e.g. SDFT
    with and without the SFT anchor."""
    items = pd.read_csv(HERE / "items.csv.gz")
    key = "run_key" if "run_key" in items else "run_id"  # reports before issue 30 named runs by MLflow id
    groups = pd.read_csv(HERE / "runs.csv")[[key, "group"]]
    return items.merge(groups, on=key, how="left", validate="many_to_one")


def new_task_items(items: pd.DataFrame, group: str, tasks: list[str]) -> pd.DataFrame:
    """seed x item matrix of the score right after learning each task (items of all tasks side by side)."""
    runs = items[items["group"] == group]
    frames = []
    for stage, task in enumerate(tasks, start=1):
        cell = runs[(runs["stage"] == stage) & (runs["task"] == task)]
        frames.append(cell.pivot_table(index="seed", columns="doc_id", values="score").add_prefix(f"{task}:"))
    return pd.concat(frames, axis=1)


def predicted_half_width(
    var_seed: float, var_items: dict[str, float], n_task: dict[str, int], seeds: int, scale: float
) -> float:
    """1.96 x the standard error of the mean over tasks, with `scale` x each task's eval items."""
    item_part = sum(var_items[t] / (scale * n_task[t]) for t in var_items) / len(var_items) ** 2
    return 1.96 * math.sqrt(var_seed / seeds + item_part)


def main() -> None:
    items = load_items()
    tasks = stream_order()
    for method in sorted(items["group"].unique()):
        frame = new_task_items(items, method, tasks)
        m = frame.to_numpy(dtype=float)
        seeds = m.shape[0]
        per_seed = m.mean(axis=1)  # each seed's new-task accuracy (items of every task, equal counts)
        var_seed = per_seed.var(ddof=1) if seeds > 1 else float("nan")
        # item part, task by task: the tasks are fixed, only their items are a sample
        cols = {t: [c for c in frame.columns if c.startswith(f"{t}:")] for t in tasks}
        var_items = {t: frame[c].mean(axis=0).var(ddof=1) for t, c in cols.items()}
        n_task = {t: len(c) for t, c in cols.items()}

        print(
            f"{method}: {seeds} seeds, {n_task} eval items; new-task acc {m.mean():.3f}; per-seed sd "
            f"{math.sqrt(var_seed):.3f}; per-item sd by task "
            + ", ".join(f"{t} {math.sqrt(v):.3f}" for t, v in var_items.items())
            + f"; half-width now ~{100 * predicted_half_width(var_seed, var_items, n_task, seeds, 1.0):.1f} points"
        )
        if m.mean() == 0.0:
            print("  no item was ever right: nothing to size (the interval is a point at 0)")
            continue
        for s in (3, 5, 10):
            for scale in (1.0, 1.5, 3.0):
                h = predicted_half_width(var_seed, var_items, n_task, s, scale)
                mark = "  <= 5" if h <= TARGET else ""
                print(f"  {s:>2} seeds, {scale:.1f}x the items per task: ~{100 * h:.1f}{mark}")


if __name__ == "__main__":
    main()
