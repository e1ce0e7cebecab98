"""Seed-level intervals that hold with 3-5 seeds: a crossed random-effects moment estimator.

The model
---------
Every run (seed) of a group is scored on the same eval items, so seeds and items are *crossed*. For one
column (task) the item-level score of seed s on item i is

    x_si = mu + a_s + b_i + e_si        a: seed effect, b: item effect, e: seed x item interaction,

and the figure reported is the mean over seeds of a per-run statistic y_s (a cell of R, new-task accuracy,
a max-minus-final forgetting, ...). With S seeds and N items the variance of that mean is

    Var = s2_seed / S + s2_item / N + s2_inter / (S N).

A percentile bootstrap over 3 seeds has 10 distinct resamples and shrinks the seed term to 2/3 of its
estimate; this module estimates the three terms once, by moments, and refers the result to a t
distribution, which is what keeps a 95% interval near 95% at 3 seeds (`results/stats/coverage.py`
measures it on simulated data from `harness.report.simulate`).

How a statistic becomes item-level values
-----------------------------------------
A statistic is any function of the per-run accuracy matrices (`stats.Statistic`). Its item-level values
are jackknife pseudo-values: for column c and item i, z_si = N y_s - (N - 1) y_s(-i), y_s(-i) being the
statistic with item i of column c left out. For a statistic linear in the item means (a score, a gain, a
paired difference, an average over tasks) this is exact: z_si is the item's own contribution. For a
max-minus-final forgetting it is the contribution at the stage the maximum picks.

The estimate (per column c with N_c items; MS = two-way ANOVA mean squares of the S x N_c pseudo-values)
    seed part   v_seed = max(var_s(y_s), sum_c MS_inter_c / N_c) / S   (s2_seed / S plus the interaction
                         / (S N); the max truncates the seed component at 0, as the item one is)
    item part   v_c    = max(0, MS_item - MS_inter) / (S N_c)   (s2_item / N_c, interaction not counted twice)
    Var = v_seed + sum_c v_c, with Satterthwaite's degrees of freedom over those mean squares.

With one run (a base model evaluated once) there is no seed part: the interval covers the items only
(`Interval.n` = 1 says so). Runs in several task orders are pooled as one sample of seeds; order
differences then widen the seed part (conservative).

Paired differences (same seeds on both sides) difference y and the pseudo-values per (seed, item) before
estimating; unpaired ones add the two seed parts and take the item part of the difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from harness.report.stats import LEVEL, Interval, Scores, Statistic


@dataclass(frozen=True)
class Part:
    """One side of an estimate: per-run values y (S,) and per column the (S, N_c) pseudo-values."""

    y: np.ndarray
    z: dict[str, np.ndarray]
    sign: float = 1.0


@dataclass(frozen=True)
class Estimate:
    """The mean, the variance terms of its estimate and the variance components behind them."""

    mean: float
    seeds: int
    terms: tuple[tuple[float, float], ...]  # (signed mean-square term, its degrees of freedom)
    s2_seed: float  # seed variance of the statistic, item noise removed
    s2_item: dict[str, float]  # per column: item variance of the statistic's item-level values
    s2_inter: dict[str, float]  # per column: seed x item interaction variance
    n_items: dict[str, int]

    @property
    def variance(self) -> float:
        return max(0.0, sum(t for t, _ in self.terms))

    @property
    def df(self) -> float:
        return satterthwaite(self.terms)

    def half_width(self) -> float:
        v = self.variance
        if v <= 0 or not np.isfinite(v):
            return 0.0 if v == 0 else float("nan")
        return float(sps.t.ppf(0.5 + LEVEL / 2, self.df) * np.sqrt(v))


def satterthwaite(terms: Sequence[tuple[float, float]]) -> float:
    """Degrees of freedom of a sum of mean-square terms (Satterthwaite 1946); inf when none is random."""
    total = sum(t for t, _ in terms)
    denom = sum(t * t / d for t, d in terms if d > 0 and np.isfinite(d))
    if denom <= 0 or total <= 0:
        return float("inf")
    return float(max(1.0, total * total / denom))


def mean_squares(z: np.ndarray) -> tuple[float, float]:
    """(MS_item, MS_inter) of an S x N matrix: two-way ANOVA without replication (MS_inter NaN at S = 1)."""
    S, N = z.shape
    cols = z.mean(axis=0)
    ms_item = S * cols.var(ddof=1) if N > 1 else 0.0
    if S < 2 or N < 2:
        return float(ms_item), float("nan")
    resid = z - z.mean(axis=1, keepdims=True) - cols[None, :] + z.mean()
    return float(ms_item), float((resid**2).sum() / ((S - 1) * (N - 1)))


def estimate(parts: Sequence[Part]) -> Estimate:
    """The mean of sum_g sign_g * mean_s y_g and its variance terms (module docstring)."""
    mean = float(sum(p.sign * p.y.mean() for p in parts))
    terms: list[tuple[float, float]] = []
    s2_seed = 0.0
    s2_inter: dict[str, float] = {}
    for p in parts:
        S = p.y.size
        if S < 2:
            continue
        v = float(p.y.var(ddof=1))
        inter = [(c, *_shape(z), mean_squares(z)[1]) for c, z in p.z.items()]
        for c, _, _, ms_e in inter:
            s2_inter[c] = s2_inter.get(c, 0.0) + ms_e
        floor = sum(ms_e / n for _, _, n, ms_e in inter)  # what the interaction alone puts in var(y)
        if v >= floor:
            terms.append((v / S, S - 1))
            s2_seed += v - floor
        else:  # the seed component, truncated at 0 as the item component is: the interaction stays
            terms.extend((ms_e / (S * n), (S - 1) * (n - 1)) for _, _, n, ms_e in inter)
    s2_item, n_items = {}, {}
    for c in sorted({c for p in parts for c in p.z}):
        zs = [(p, p.z[c]) for p in parts if c in p.z]
        N = zs[0][1].shape[1]
        n_items[c] = N
        u = sum(
            p.sign * z.mean(axis=0) for p, z in zs
        )  # the item-level values of the (difference of) mean(s)
        var_u = float(np.var(u, ddof=1)) if N > 1 else 0.0
        inter_terms = []
        for _, z in zs:
            S = z.shape[0]
            ms_e = mean_squares(z)[1]
            if np.isfinite(ms_e):
                inter_terms.append((-ms_e / (S * N), (S - 1) * (N - 1)))
        item_part = var_u + N * sum(t for t, _ in inter_terms)  # s2_item: the interaction taken out once
        s2_item[c] = max(0.0, item_part)
        if item_part > 0:
            terms.append((var_u / N, N - 1))
            terms.extend(inter_terms)
    seeds = min(p.y.size for p in parts)
    return Estimate(mean, seeds, tuple(terms), s2_seed, s2_item, s2_inter, n_items)


def _shape(z: np.ndarray) -> tuple[int, int]:
    return z.shape[0], z.shape[1]


class Crossed:
    """The same questions as `stats.Bootstrap` (interval, difference, per_run), answered by the crossed
    random-effects estimate. `groups` maps a label to its strata (one `Scores` per task order)."""

    def __init__(self, groups: dict[str, Sequence[Scores]]) -> None:
        self.groups = {label: list(strata) for label, strata in groups.items()}

    # ---- item-level values of a statistic ---------------------------------------------------------------
    def _part(self, label: str, stat: Statistic, sign: float = 1.0) -> Part:
        ys: list[np.ndarray] = []
        zs: dict[str, list[np.ndarray]] = {}
        for s in self.groups[label]:
            y, z = pseudo_values(s, stat)
            ys.append(y)
            for c, v in z.items():
                zs.setdefault(c, []).append(v)
        y = np.concatenate(ys)
        # strata evaluated on different numbers of items (another eval.limit) share their first items
        z = {
            c: np.concatenate([a[:, : min(b.shape[1] for b in v)] for a in v])
            for c, v in zs.items()
            if len(v) == len(ys)
        }
        keep = np.isfinite(y)  # a run whose statistic is undefined (NaN score) drops out, as in the mean
        z = {c: v[keep][:, np.isfinite(v[keep]).all(axis=0)] for c, v in z.items()}
        return Part(y[keep], {c: v for c, v in z.items() if v.shape[1] > 1}, sign)

    def _item_level(self, label: str) -> bool:
        return all(all(s.item_level.get(n, False) for n in s.columns) for s in self.groups[label])

    def per_run(self, label: str, stat: Statistic) -> np.ndarray:
        out = []
        for s in self.groups[label]:
            R, G = s.matrices({n: x.mean(axis=-1) for n, x in s.columns.items()})
            out.append(np.broadcast_to(np.asarray(stat(R, G, s.tasks), dtype=float), (s.runs,)))
        return np.concatenate(out)

    # ---- the report's questions ------------------------------------------------------------------------
    def estimate(self, label: str, stat: Statistic) -> Estimate:
        return estimate([self._part(label, stat)])

    def interval(self, label: str, stat: Statistic) -> Interval:
        part = self._part(label, stat)
        n = sum(s.runs for s in self.groups[label])
        if part.y.size == 0:
            return Interval(float("nan"), float("nan"), float("nan"), n, self._item_level(label))
        return _interval(estimate([part]), n, self._item_level(label))

    def paired(self, a: str, b: str) -> bool:
        keys = [sorted((s.order, tuple(s.seeds)) for s in self.groups[g]) for g in (a, b)]
        return keys[0] == keys[1]

    def difference_estimate(self, a: str, b: str, stat: Statistic) -> Estimate:
        pa, pb = self._part(a, stat), self._part(b, stat, -1.0)
        if self.paired(a, b) and pa.y.size == pb.y.size:
            z = {}
            for c in set(pa.z) | set(pb.z):
                za = pa.z.get(c, np.repeat(pa.y[:, None], pb.z[c].shape[1] if c in pb.z else 1, axis=1))
                zb = pb.z.get(c, np.repeat(pb.y[:, None], za.shape[1], axis=1))
                if za.shape == zb.shape:
                    z[c] = za - zb
            return estimate([Part(pa.y - pb.y, z)])
        return estimate([pa, pb])

    def difference(self, a: str, b: str, stat: Statistic) -> Interval:
        """Mean of `stat` over a's runs minus over b's runs: paired on items always, on seeds when both
        groups hold the same seeds in each order."""
        pa, pb = self._part(a, stat), self._part(b, stat)
        n = min(sum(s.runs for s in self.groups[g]) for g in (a, b))
        items = self._item_level(a) and self._item_level(b)
        if pa.y.size == 0 or pb.y.size == 0:
            return Interval(float("nan"), float("nan"), float("nan"), n, items, self.paired(a, b))
        return _interval(self.difference_estimate(a, b, stat), n, items, self.paired(a, b))


def pseudo_values(s: Scores, stat: Statistic) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-run statistic (runs,) and, per item-level column it depends on, the (runs, N) jackknife
    pseudo-values N y - (N - 1) y(-i)."""
    means = {n: x.mean(axis=-1) for n, x in s.columns.items()}
    R, G = s.matrices(means)
    y = np.broadcast_to(np.asarray(stat(R, G, s.tasks), dtype=float), (s.runs,)).copy()
    z: dict[str, np.ndarray] = {}
    for name, x in s.columns.items():
        N = x.shape[-1]
        if N < 2:
            continue
        loo = (x.sum(axis=-1, keepdims=True) - x) / (N - 1)  # (runs, stages, N)
        lead = {n: np.broadcast_to(m, (N, *m.shape)) for n, m in means.items()}
        lead[name] = np.moveaxis(loo, -1, 0)
        Rl, Gl = s.matrices(lead)
        yl = np.broadcast_to(np.asarray(stat(Rl, Gl, s.tasks), dtype=float), (N, s.runs))
        with np.errstate(invalid="ignore"):
            if np.allclose(yl, y[None], equal_nan=True):
                continue  # the statistic does not read this column
        z[name] = (N * y[None] - (N - 1) * yl).T
    return y, z


def _interval(e: Estimate, n: int, items: bool, paired: bool = True) -> Interval:
    h = e.half_width()
    if not np.isfinite(e.mean):
        return Interval(e.mean, float("nan"), float("nan"), n, items, paired)
    return Interval(e.mean, e.mean - h, e.mean + h, n, items, paired)
