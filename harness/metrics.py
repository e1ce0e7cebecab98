"""Continual-learning metrics from the accuracy matrix R and the general matrix G (pure functions, no I/O).

Shapes and indexing
-------------------
``R`` has shape (T+1, T): row i = after stage i (row 0 = the untouched base model), column j = stream
task j in stream order. ``G`` has shape (T+1, M): the same rows, column m = general-suite task m.
docs/design.md §5 numbers stream tasks 1..T, so task j is *learned* at stage j; with 0-based numpy columns,
task j lives in column j-1 and the score right after learning it is ``R[j, j-1]``. Every formula below is
written in docs/design.md's 1-based task notation; the code converts.

Definitions (docs/design.md §5, verbatim)
----------------------------------------
=============================  ==================================================================
metric                         definition
=============================  ==================================================================
ACC (final average)            mean_j R[T, j]
new-task accuracy              mean_j R[j, j] (score right after learning j)
BWT                            mean over j < T of (R[T, j] - R[j, j]) (negative = forgetting)
FWT                            mean over j >= 2 of (R[j-1, j] - R[0, j])
Forgetting (Chaudhry 2018)     mean over j < T of (max over l in j..T-1 of R[l, j] - R[T, j])
general delta                  mean_m (G[T, m] - G[0, m]); also per stage, i.e. a curve
normalized score (Fig. 3)      (R[i, j] - R[0, j]) / (best R[., j] of any compared method - R[0, j])
=============================  ==================================================================

Undefined cases, on purpose NaN rather than 0 (a 0 would read as "no forgetting" in a table):
- T = 1: BWT, FWT and Forgetting average over an empty set of tasks -> NaN.
- M = 0 (no general suite): general delta -> NaN.
- normalized score where no compared method ever beat the base on task j (denominator 0) -> NaN for
  that column: there is no improvement to normalise by.
NaN entries inside R or G propagate into the metrics that use them.

Note on Forgetting: Avalanche-style forgetting, R[j, j] - R[T, j], differs from Chaudhry's whenever a
task's score keeps rising after it was learned (e.g. later tasks transfer to it) and then drops: Chaudhry
measures the drop from the *best* score seen between learning j and the last stage.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

METRIC_NAMES = ("acc", "new_task_acc", "bwt", "fwt", "forgetting", "general_delta")


def _matrix(R: ArrayLike) -> np.ndarray:
    a = np.asarray(R, dtype=float)
    if a.ndim != 2 or a.shape[0] != a.shape[1] + 1 or a.shape[1] < 1:
        raise ValueError(f"R must have shape (T+1, T) with T >= 1 (row 0 = base model); got {a.shape}")
    return a


def _general(G: ArrayLike, rows: int | None = None) -> np.ndarray:
    a = np.asarray(G, dtype=float)
    if a.ndim == 1 and a.size == 0:
        a = a.reshape(rows or 1, 0)
    if a.ndim != 2 or (rows is not None and a.shape[0] != rows):
        raise ValueError(f"G must have shape (T+1, M) matching R's {rows} rows; got {a.shape}")
    return a


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def acc_final(R: ArrayLike) -> float:
    """ACC: mean_j R[T, j], the average score over all stream tasks after the last stage."""
    r = _matrix(R)
    return float(np.mean(r[-1]))


def new_task_accuracy(R: ArrayLike) -> float:
    """mean_j R[j, j]: each task's score right after it was learned (the paper's 'new-task accuracy')."""
    r = _matrix(R)
    t = r.shape[1]
    return _mean([r[j, j - 1] for j in range(1, t + 1)])


def bwt(R: ArrayLike) -> float:
    """BWT: mean over j < T of R[T, j] - R[j, j]; negative = forgetting. NaN when T = 1."""
    r = _matrix(R)
    t = r.shape[1]
    return _mean([r[t, j - 1] - r[j, j - 1] for j in range(1, t)])


def fwt(R: ArrayLike) -> float:
    """FWT: mean over j >= 2 of R[j-1, j] - R[0, j] (what earlier stages did for task j before it was
    trained, relative to the base model). NaN when T = 1."""
    r = _matrix(R)
    t = r.shape[1]
    return _mean([r[j - 1, j - 1] - r[0, j - 1] for j in range(2, t + 1)])


def forgetting(R: ArrayLike) -> float:
    """Chaudhry et al. 2018: mean over j < T of max_{l in j..T-1} R[l, j] - R[T, j]. NaN when T = 1."""
    r = _matrix(R)
    t = r.shape[1]
    # rows j..T-1 (1-based stages) are r[j:t] in numpy slicing; column j-1 is task j
    return _mean([float(np.max(r[j:t, j - 1])) - r[t, j - 1] for j in range(1, t)])


def avalanche_forgetting(R: ArrayLike) -> float:
    """The simpler mean over j < T of R[j, j] - R[T, j] (Avalanche's default). Kept for comparison only:
    the harness reports Chaudhry's definition."""
    r = _matrix(R)
    t = r.shape[1]
    return _mean([r[j, j - 1] - r[t, j - 1] for j in range(1, t)])


def general_delta_curve(G: ArrayLike) -> np.ndarray:
    """Per stage i: mean_m (G[i, m] - G[0, m]). Row 0 is 0 by construction; all NaN when M = 0."""
    g = _general(G)
    if g.shape[1] == 0:
        return np.full(g.shape[0], np.nan)
    return np.mean(g - g[0], axis=1)


def general_delta(G: ArrayLike) -> float:
    """mean_m (G[T, m] - G[0, m]): change of the general suite from the base model to the last stage."""
    return float(general_delta_curve(G)[-1])


def general_average(G: ArrayLike) -> np.ndarray:
    """Per stage: the general-suite average mean_m G[i, m] (NaN when M = 0)."""
    g = _general(G)
    if g.shape[1] == 0:
        return np.full(g.shape[0], np.nan)
    return np.mean(g, axis=1)


def best_scores(matrices: Sequence[ArrayLike]) -> np.ndarray:
    """Per task j: the best R[i, j] over every stage i of every compared method's matrix (NaN ignored)."""
    stacked = np.concatenate([_matrix(m) for m in matrices], axis=0)
    with np.errstate(all="ignore"):
        return np.nanmax(stacked, axis=0) if stacked.size else np.array([])


def normalized_scores(R: ArrayLike, best: ArrayLike) -> np.ndarray:
    """Paper Fig. 3: (R[i, j] - R[0, j]) / (best[j] - R[0, j]), so 0 = the base model, 1 = the best score
    any compared method reached on task j. `best` comes from `best_scores` over the methods compared.

    A column whose denominator is <= 0 (no compared method beat this base on task j) is NaN: dividing
    by zero would fabricate either an infinite or an arbitrary value.
    """
    r = _matrix(R)
    b = np.asarray(best, dtype=float)
    if b.shape != (r.shape[1],):
        raise ValueError(f"best must have one entry per task ({r.shape[1]}); got shape {b.shape}")
    denom = b - r[0]
    out = np.full_like(r, np.nan)
    ok = denom > 0
    out[:, ok] = (r[:, ok] - r[0, ok]) / denom[ok]
    return out


def all_metrics(R: ArrayLike, G: ArrayLike) -> dict[str, float]:
    """Every scalar metric of docs/design.md §5, keyed by `METRIC_NAMES` (the `final/<name>` MLflow keys)."""
    r = _matrix(R)
    g = _general(G, rows=r.shape[0])
    return {
        "acc": acc_final(r),
        "new_task_acc": new_task_accuracy(r),
        "bwt": bwt(r),
        "fwt": fwt(r),
        "forgetting": forgetting(r),
        "general_delta": general_delta(g),
    }
