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
- normalized score where no compared method beat the base on task j by more than a floor (denominator
  <= floor, 0 by default) -> NaN for that column: there is no improvement to normalise by.
- BWT and Forgetting accept a mask of the tasks to average over (the report passes the tasks a method
  learned); an empty choice -> NaN, i.e. "not defined", never 0.
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
    """R as an array whose last two axes are (T+1, T); leading axes (bootstrap replicates, runs) broadcast."""
    a = np.asarray(R, dtype=float)
    if a.ndim < 2 or a.shape[-2] != a.shape[-1] + 1 or a.shape[-1] < 1:
        raise ValueError(f"R must have shape (T+1, T) with T >= 1 (row 0 = base model); got {a.shape}")
    return a


def _general(G: ArrayLike, rows: int | None = None) -> np.ndarray:
    a = np.asarray(G, dtype=float)
    if a.ndim == 1 and a.size == 0:
        a = a.reshape(rows or 1, 0)
    if a.ndim < 2 or (rows is not None and a.shape[-2] != rows):
        raise ValueError(f"G must have shape (T+1, M) matching R's {rows} rows; got {a.shape}")
    return a


def _out(values: np.ndarray) -> float | np.ndarray:
    """A Python float for one matrix, an array over the leading axes for a stack of matrices."""
    return float(values) if np.ndim(values) == 0 else values


def _mean(terms: list[np.ndarray], like: np.ndarray) -> float | np.ndarray:
    """Mean of per-task terms (each of the leading shape of `like`); NaN over an empty set of tasks."""
    if not terms:
        return _out(np.full(like.shape[:-2], np.nan))
    return _out(np.mean(np.stack(terms), axis=0))


def _chosen(tasks: ArrayLike | None, t: int) -> np.ndarray:
    """Boolean mask over the T stream tasks (None = all of them)."""
    if tasks is None:
        return np.ones(t, dtype=bool)
    mask = np.asarray(tasks, dtype=bool)
    if mask.shape != (t,):
        raise ValueError(
            f"tasks must be a boolean mask with one entry per stream task ({t}); got {mask.shape}"
        )
    return mask


def acc_final(R: ArrayLike) -> float | np.ndarray:
    """ACC: mean_j R[T, j], the average score over all stream tasks after the last stage."""
    r = _matrix(R)
    return _out(np.mean(r[..., -1, :], axis=-1))


def new_task_accuracy(R: ArrayLike) -> float | np.ndarray:
    """mean_j R[j, j]: each task's score right after it was learned (the paper's 'new-task accuracy')."""
    r = _matrix(R)
    t = r.shape[-1]
    return _mean([r[..., j, j - 1] for j in range(1, t + 1)], r)


def learning_gains(R: ArrayLike) -> float | np.ndarray:
    """Per task j: R[j, j] - R[0, j], what learning task j added over the base model (last axis = tasks)."""
    r = _matrix(R)
    t = r.shape[-1]
    return np.stack([r[..., j, j - 1] - r[..., 0, j - 1] for j in range(1, t + 1)], axis=-1)


def bwt(R: ArrayLike, tasks: ArrayLike | None = None) -> float | np.ndarray:
    """BWT: mean over j < T of R[T, j] - R[j, j]; negative = forgetting. NaN when T = 1.

    `tasks` (a boolean mask over the T stream tasks) restricts the mean to those tasks, e.g. to the tasks
    a method actually learned: a task never learned cannot be forgotten, and counting it would credit the
    method with "no forgetting". NaN when no chosen task precedes the last."""
    r = _matrix(R)
    t = r.shape[-1]
    mask = _chosen(tasks, t)
    return _mean([r[..., t, j - 1] - r[..., j, j - 1] for j in range(1, t) if mask[j - 1]], r)


def fwt(R: ArrayLike) -> float | np.ndarray:
    """FWT: mean over j >= 2 of R[j-1, j] - R[0, j] (what earlier stages did for task j before it was
    trained, relative to the base model). NaN when T = 1."""
    r = _matrix(R)
    t = r.shape[-1]
    return _mean([r[..., j - 1, j - 1] - r[..., 0, j - 1] for j in range(2, t + 1)], r)


def forgetting(R: ArrayLike, tasks: ArrayLike | None = None) -> float | np.ndarray:
    """Chaudhry et al. 2018: mean over j < T of max_{l in j..T-1} R[l, j] - R[T, j]. NaN when T = 1.
    `tasks` restricts the mean to the chosen tasks, as in `bwt`."""
    r = _matrix(R)
    t = r.shape[-1]
    mask = _chosen(tasks, t)
    # rows j..T-1 (1-based stages) are r[j:t] in numpy slicing; column j-1 is task j
    return _mean(
        [np.max(r[..., j:t, j - 1], axis=-1) - r[..., t, j - 1] for j in range(1, t) if mask[j - 1]], r
    )


def avalanche_forgetting(R: ArrayLike) -> float | np.ndarray:
    """The simpler mean over j < T of R[j, j] - R[T, j] (Avalanche's default). Kept for comparison only:
    the harness reports Chaudhry's definition."""
    r = _matrix(R)
    t = r.shape[-1]
    return _mean([r[..., j, j - 1] - r[..., t, j - 1] for j in range(1, t)], r)


def general_delta_curve(G: ArrayLike) -> np.ndarray:
    """Per stage i: mean_m (G[i, m] - G[0, m]). Row 0 is 0 by construction; all NaN when M = 0."""
    g = _general(G)
    if g.shape[-1] == 0:
        return np.full(g.shape[:-1], np.nan)
    return np.mean(g - g[..., :1, :], axis=-1)


def general_delta(G: ArrayLike) -> float | np.ndarray:
    """mean_m (G[T, m] - G[0, m]): change of the general suite from the base model to the last stage."""
    return _out(general_delta_curve(G)[..., -1])


def general_average(G: ArrayLike) -> np.ndarray:
    """Per stage: the general-suite average mean_m G[i, m] (NaN when M = 0)."""
    g = _general(G)
    if g.shape[-1] == 0:
        return np.full(g.shape[:-1], np.nan)
    return np.mean(g, axis=-1)


def best_scores(matrices: Sequence[ArrayLike]) -> np.ndarray:
    """Per task j: the best R[i, j] over every stage i of every compared method's matrix (NaN ignored)."""
    stacked = np.concatenate([_matrix(m) for m in matrices], axis=0)
    with np.errstate(all="ignore"):
        return np.nanmax(stacked, axis=0) if stacked.size else np.array([])


def normalized_scores(R: ArrayLike, best: ArrayLike, floor: ArrayLike = 0.0) -> np.ndarray:
    """Paper Fig. 3: (R[i, j] - R[0, j]) / (best[j] - R[0, j]), so 0 = the base model, 1 = the best score
    any compared method reached on task j. `best` comes from `best_scores` over the methods compared.

    A column whose denominator is <= `floor` (a scalar or one value per task) is NaN. With floor 0 this
    only avoids dividing by zero; a caller should pass the smallest improvement it can tell from noise
    (e.g. one eval item, 1/n, or the CI half-width of the best score), or one lucky item (3% on 30
    items) becomes "1.0 = best" and every other value is a multiple of it.
    """
    r = _matrix(R)
    b = np.asarray(best, dtype=float)
    if b.shape != (r.shape[-1],):
        raise ValueError(f"best must have one entry per task ({r.shape[-1]}); got shape {b.shape}")
    denom = b - r[..., 0, :]
    with np.errstate(invalid="ignore"):
        ok = denom > np.broadcast_to(np.asarray(floor, dtype=float), b.shape)
    out = np.full_like(r, np.nan)
    with np.errstate(all="ignore"):
        norm = (r - r[..., :1, :]) / denom[..., None, :]
    out = np.where(ok[..., None, :], norm, out)
    return out


def all_metrics(R: ArrayLike, G: ArrayLike, tasks: ArrayLike | None = None) -> dict[str, float]:
    """Every scalar metric of docs/design.md §5, keyed by `METRIC_NAMES` (the `final/<name>` MLflow keys);
    `tasks` restricts BWT and Forgetting to a subset of the stream tasks (see `bwt`)."""
    r = _matrix(R)
    g = _general(G, rows=r.shape[-2])
    return {
        "acc": acc_final(r),
        "new_task_acc": new_task_accuracy(r),
        "bwt": bwt(r, tasks),
        "fwt": fwt(r),
        "forgetting": forgetting(r, tasks),
        "general_delta": general_delta(g),
    }
