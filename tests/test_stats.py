"""harness.report.stats against independent computations: an exact binomial case, a brute-force enumeration of the
run-then-item resampling, and paired differences."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as sps

from harness.report import stats as st


def _one_task(scores: np.ndarray, seeds: list[str] | None = None, item_level: bool = True) -> st.Scores:
    """scores: (runs, items) of task "a" after stage 1; stage 0 all zero."""
    runs, n = scores.shape
    x = np.stack([np.zeros((runs, n)), scores], axis=1)  # (runs, stages=2, items)
    return st.Scores("0", seeds or [str(i) for i in range(runs)], ["a"], [], {"a": x}, {"a": item_level})


def test_single_run_is_an_exact_binomial_bootstrap():
    # one run, k of n items right: the resampled mean is Binomial(n, k/n) / n exactly, so the percentile
    # interval must sit on that distribution's 2.5% / 97.5% quantiles (to within one item: Monte Carlo)
    n, k = 200, 70
    scores = np.array([[1.0] * k + [0.0] * (n - k)])
    boot = st.Bootstrap({"m": [_one_task(scores)]}, replicates=20000, seed=1)
    iv = boot.interval("m", st.new_score("a"))
    lo, hi = sps.binom.ppf([0.025, 0.975], n, k / n) / n
    assert iv.mean == pytest.approx(k / n)
    assert abs(iv.lo - lo) <= 1 / n + 1e-12 and abs(iv.hi - hi) <= 1 / n + 1e-12
    assert iv.n == 1 and iv.items and not iv.degenerate


def test_runs_then_items_matches_brute_force_enumeration():
    # 2 runs x 5 items: enumerate every run draw (2^2) and every item draw (5^5), the item draw shared by
    # both drawn runs, as the module docstring says; the bootstrap's quantiles must match the exact ones
    scores = np.array([[1.0, 0.0, 1.0, 0.5, 0.0], [0.0, 0.0, 1.0, 1.0, 0.25]])
    values, weights = [], []
    for runs in itertools.product(range(2), repeat=2):
        for items in itertools.product(range(5), repeat=5):
            values.append(np.mean([scores[r][list(items)].mean() for r in runs]))
            weights.append(1.0)
    values = np.array(values)
    order = np.argsort(values)
    cdf = np.cumsum(np.array(weights)[order]) / np.sum(weights)

    def exact_quantile(q: float) -> float:
        return float(values[order][np.searchsorted(cdf, q)])

    boot = st.Bootstrap({"m": [_one_task(scores)]}, replicates=40000, seed=2)
    iv = boot.interval("m", st.new_score("a"))
    assert iv.mean == pytest.approx(scores.mean())
    # the exact distribution is discrete: the empirical percentile lands on the exact quantile's atom, or
    # (interpolating) between neighbouring atoms, never outside [q - 0.5%, q + 0.5%]
    assert exact_quantile(0.02) <= iv.lo <= exact_quantile(0.03)
    assert exact_quantile(0.97) <= iv.hi <= exact_quantile(0.98)
    assert exact_quantile(0.03) < exact_quantile(0.05)  # fine enough to tell a 90% interval from a 95% one


def test_two_runs_without_items_give_min_and_max():
    boot = st.Bootstrap({"m": [_one_task(np.array([[0.3], [0.7]]), item_level=False)]}, replicates=4000)
    iv = boot.interval("m", st.new_score("a"))
    assert (iv.mean, iv.lo, iv.hi) == pytest.approx((0.5, 0.3, 0.7))
    assert not iv.items


def test_single_run_without_items_is_degenerate():
    boot = st.Bootstrap({"m": [_one_task(np.array([[0.4]]), item_level=False)]}, replicates=500)
    iv = boot.interval("m", st.new_score("a"))
    assert iv.degenerate and iv.n == 1 and not iv.excludes_zero


def test_paired_difference_removes_shared_item_difficulty():
    # B scores 0.1 more than A on every item of every run: paired on items and runs, the difference is
    # exactly 0.1 in every replicate (zero width), while the two groups' own intervals are wide and overlap
    a = (np.random.default_rng(0).random((3, 30)) < 0.5) * 0.9
    b = a + 0.1
    boot = st.Bootstrap({"A": [_one_task(a)], "B": [_one_task(b)]}, replicates=3000)
    diff = boot.difference("B", "A", st.new_score("a"))
    assert diff.paired and diff.mean == pytest.approx(0.1)
    assert diff.lo == pytest.approx(0.1) and diff.hi == pytest.approx(0.1)
    ia, ib = boot.interval("A", st.new_score("a")), boot.interval("B", st.new_score("a"))
    assert ia.hi > ib.lo  # the unpaired intervals overlap: only pairing tells the methods apart


def test_identical_groups_difference_is_zero_and_covers_zero():
    a = (np.random.default_rng(3).random((3, 20)) < 0.4).astype(float)
    boot = st.Bootstrap({"A": [_one_task(a)], "B": [_one_task(a.copy())]}, replicates=1000)
    diff = boot.difference("A", "B", st.new_score("a"))
    assert diff.mean == 0 and diff.covers(0.0) and not diff.excludes_zero


def test_different_seeds_are_drawn_unpaired():
    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    boot = st.Bootstrap({"A": [_one_task(a, ["0", "1"])], "B": [_one_task(a, ["5", "6"])]}, replicates=200)
    assert not boot.difference("A", "B", st.new_score("a")).paired


def test_scores_shape_is_checked():
    with pytest.raises(ValueError, match="expected \\(runs, stages\\)"):
        st.Scores("0", ["0"], ["a"], [], {"a": np.zeros((2, 2, 3))})
