"""Synthetic item-level results with known effects and variance components, for checking interval coverage.

A stream of T tasks is scored after every stage (rows 0..T) on N binary items per task. The probability
that seed s answers item i of task j right after stage l is

    sigmoid(mu[l, j] + a[s, j] + a'[s, l, j] + b[i, j] + ab[s, i, j])

with a seed effect per task (a, shared by the stages: a seed that learned a task well keeps more of it),
a seed x stage part (a'), an item difficulty (b, shared by stages and by methods: the same eval items),
and a seed x item interaction (ab). Scores are Bernoulli draws, as the real 0/1 item scores are.

The true value of a figure is the mean over many seeds of its per-run formula applied to that seed's cell
means over infinitely many items (each the integral of the sigmoid over the normal of the item and
interaction effects, by Gauss-Hermite quadrature): what an infinite number of seeds and items would give.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.eval import metrics
from harness.report import stats as st
from harness.report.stats import Scores

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(80)


@dataclass(frozen=True)
class Design:
    """Logit-scale means mu (T+1, T) per method and the standard deviations of the random effects."""

    mu: dict[str, np.ndarray]
    sd_seed: float = 0.5
    sd_seed_stage: float = 0.3
    sd_item: float = 1.5
    sd_inter: float = 0.5
    seed_corr: float = 0.5  # correlation of a seed's effects between two methods run with that seed

    @property
    def sd_total(self) -> float:
        return float(np.sqrt(self.sd_seed**2 + self.sd_seed_stage**2 + self.sd_item**2 + self.sd_inter**2))

    def truth(self, method: str, seeds: int = 20000) -> np.ndarray:
        """Per seed, the population mean score of every cell over infinitely many items: (seeds, T+1, T).

        The seeds are a fixed large sample (seeded): a figure's true value is the mean over them of its
        per-run formula, which is what the report's mean over runs estimates (for Forgetting the max is
        taken per run, as the report does)."""
        rng = np.random.default_rng(12345)
        T = self.mu[method].shape[1]
        a = rng.normal(0, self.sd_seed, (seeds, 1, T)) + rng.normal(0, self.sd_seed_stage, (seeds, T + 1, T))
        within = np.sqrt(self.sd_item**2 + self.sd_inter**2)  # what varies over items for a fixed seed
        x = (self.mu[method][None] + a)[..., None] + within * _NODES
        return (1 / (1 + np.exp(-x))) @ _WEIGHTS / _WEIGHTS.sum()


def stream_design(spread: str = "items") -> Design:
    """Two methods on a 3-task stream; "items" = item variance dominates, "seeds" = seed variance does."""
    # method a learns each task (logit ~1) and forgets it partly; method b learns less and forgets less
    a = np.array([[-2.5, -2.5, -2.5], [1.2, -2.0, -2.2], [0.3, 1.0, -2.0], [-0.4, 0.2, 1.1]])
    b = np.array([[-2.5, -2.5, -2.5], [0.9, -2.0, -2.2], [0.5, 0.8, -2.0], [0.2, 0.4, 0.9]])
    if spread == "seeds":
        return Design({"a": a, "b": b}, sd_seed=1.2, sd_seed_stage=0.4, sd_item=0.8, sd_inter=0.3)
    if spread != "items":
        raise ValueError(f"spread must be 'items' or 'seeds', got {spread!r}")
    return Design({"a": a, "b": b})


def draw(design: Design, seeds: int, items: int, rng: np.random.Generator) -> dict[str, Scores]:
    """One synthetic study: every method on the same `seeds` seeds and the same `items` items per task."""
    methods = list(design.mu)
    T = design.mu[methods[0]].shape[1]
    b = rng.normal(0, design.sd_item, (items, T))
    shared = rng.normal(0, 1, (seeds, T))
    out = {}
    for m in methods:
        own = rng.normal(0, 1, (seeds, T))
        a = design.sd_seed * (design.seed_corr * shared + np.sqrt(1 - design.seed_corr**2) * own)
        a2 = rng.normal(0, design.sd_seed_stage, (seeds, T + 1, T))
        ab = rng.normal(0, design.sd_inter, (seeds, items, T))
        logit = (
            design.mu[m][None, :, None, :]
            + a[:, None, None, :]
            + a2[:, :, None, :]
            + b[None, None, :, :]
            + ab[:, None, :, :]
        )  # (seeds, stages, items, T)
        x = (rng.random(logit.shape) < 1 / (1 + np.exp(-logit))).astype(float)
        tasks = [f"t{j}" for j in range(T)]
        columns = {t: x[..., j] for j, t in enumerate(tasks)}
        out[m] = Scores("0", [str(s) for s in range(seeds)], tasks, [], columns, dict.fromkeys(tasks, True))
    return out


# ---- coverage of the three kinds of figure ---------------------------------------------------------------
def figures() -> dict[str, tuple]:
    """name -> (interval from an estimator of the synthetic groups "a", "b"; true value from a Design)."""
    new = st.cl_metric("new_task_acc")
    forget = st.cl_metric("forgetting")
    return {
        "mean (new-task acc.)": (
            lambda est: est.interval("a", new),
            lambda d: float(np.mean(metrics.new_task_accuracy(d.truth("a")))),
        ),
        "paired difference (new-task acc., a - b)": (
            lambda est: est.difference("a", "b", new),
            lambda d: float(
                np.mean(metrics.new_task_accuracy(d.truth("a")))
                - np.mean(metrics.new_task_accuracy(d.truth("b")))
            ),
        ),
        "forgetting (max minus final)": (
            lambda est: est.interval("a", forget),
            lambda d: float(np.mean(metrics.forgetting(d.truth("a")))),
        ),
    }


def coverage(
    design: Design, seeds: int, items: int, reps: int, estimator: Callable, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Per figure: (share of `reps` synthetic studies whose 95% interval covers the truth, mean half-width).
    `estimator(groups)` builds the interval object (`Crossed`, or a `stats.Bootstrap`)."""
    rng = np.random.default_rng(seed)
    figs = figures()
    truth = {name: true(design) for name, (_, true) in figs.items()}
    hits = dict.fromkeys(figs, 0)
    widths = dict.fromkeys(figs, 0.0)
    for _ in range(reps):
        data = draw(design, seeds, items, rng)
        est = estimator({k: [v] for k, v in data.items()})
        for name, (interval, _) in figs.items():
            iv = interval(est)
            hits[name] += iv.covers(truth[name])
            widths[name] += (iv.hi - iv.lo) / 2
    return {name: (hits[name] / reps, widths[name] / reps) for name in figs}
