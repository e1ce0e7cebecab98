"""The crossed seed x item estimate (harness.report.crossed) against hand computations and simulated coverage."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from harness.report import simulate as sim
from harness.report import stats as st
from harness.report.crossed import Crossed, Part, estimate, pseudo_values


def _scores(x: np.ndarray, seeds: list[str] | None = None) -> st.Scores:
    """One task "a": x = (runs, items) scores after stage 1; the base (stage 0) is all 0."""
    runs = x.shape[0]
    col = np.stack([np.zeros_like(x), x], axis=1)
    return st.Scores("0", seeds or [str(i) for i in range(runs)], ["a"], [], {"a": col}, {"a": True})


def _anova_by_hand(x: np.ndarray) -> tuple[float, float]:
    """Var of the grand mean, (MS_seed + MS_item - MS_res) / (S N), and its Satterthwaite df, with loops."""
    S, N = x.shape
    g = sum(x[s, i] for s in range(S) for i in range(N)) / (S * N)
    rows = [sum(x[s]) / N for s in range(S)]
    cols = [sum(x[:, i]) / S for i in range(N)]
    ms_a = N * sum((r - g) ** 2 for r in rows) / (S - 1)
    ms_b = S * sum((c - g) ** 2 for c in cols) / (N - 1)
    ms_e = sum((x[s, i] - rows[s] - cols[i] + g) ** 2 for s in range(S) for i in range(N))
    ms_e /= (S - 1) * (N - 1)
    v = (ms_a + ms_b - ms_e) / (S * N)
    terms = [(ms_a / (S * N), S - 1), (ms_b / (S * N), N - 1), (-ms_e / (S * N), (S - 1) * (N - 1))]
    df = v**2 / sum(t**2 / d for t, d in terms)
    return v, df


def test_mean_matches_two_way_anova_by_hand() -> None:
    rng = np.random.default_rng(3)
    # items differ in difficulty, seeds in skill: both components clearly above 0 (no truncation)
    p = np.clip(np.linspace(0.1, 0.8, 25)[None, :] + np.array([[-0.1], [0.0], [0.15], [0.2]]), 0, 1)
    x = (rng.random((4, 25)) < p).astype(float)
    iv = Crossed({"m": [_scores(x)]}).interval("m", st.new_score("a"))
    v, df = _anova_by_hand(x)
    half = sps.t.ppf(0.975, df) * np.sqrt(v)
    assert iv.mean == pytest.approx(x.mean())
    assert (iv.lo, iv.hi) == pytest.approx((x.mean() - half, x.mean() + half), rel=1e-9)


def test_pseudo_values_of_a_linear_statistic_are_the_item_scores() -> None:
    x = np.array([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0]])
    y, z = pseudo_values(_scores(x), st.gain("a"))  # R[1, a] - R[0, a], base all 0
    np.testing.assert_allclose(y, [0.75, 0.25])
    np.testing.assert_allclose(z["a"], x)


def test_paired_difference_is_the_estimate_of_the_per_item_differences() -> None:
    rng = np.random.default_rng(5)
    a = (rng.random((3, 40)) < 0.6).astype(float)
    b = (rng.random((3, 40)) < 0.4).astype(float)
    c = Crossed({"A": [_scores(a)], "B": [_scores(b)]})
    diff = c.difference("A", "B", st.new_score("a"))
    direct = estimate([Part((a - b).mean(axis=1), {"a": a - b})])
    assert diff.paired and diff.mean == pytest.approx((a - b).mean())
    assert diff.hi - diff.mean == pytest.approx(direct.half_width())


def test_one_seed_driving_a_difference_gives_an_interval_covering_0() -> None:
    # the case: per-seed differences 26.25, 1.25 and 40.0 points, no item spread within a seed
    per_seed = np.array([0.2625, 0.0125, 0.40])
    x = np.repeat(per_seed[:, None], 80, axis=1)
    iv = Crossed({"m": [_scores(x)]}).interval("m", st.new_score("a"))
    half = sps.t.ppf(0.975, 2) * per_seed.std(ddof=1) / np.sqrt(3)  # the seed-level t-interval, 2 df
    assert (iv.lo, iv.hi) == pytest.approx((per_seed.mean() - half, per_seed.mean() + half))
    assert iv.covers(0.0) and not iv.excludes_zero


def test_interaction_is_not_taken_for_seed_variance() -> None:
    # every seed gets exactly one (different) item right: identical seed means, all spread is seed x item
    x = np.zeros((3, 30))
    x[0, 0] = x[1, 1] = x[2, 2] = 1.0
    e = Crossed({"m": [_scores(x)]}).estimate("m", st.new_score("a"))
    assert e.s2_seed == 0.0 and e.s2_item["a"] == 0.0
    assert e.half_width() > 0  # the interaction still counts, once


@pytest.mark.parametrize("spread", ["items", "seeds"])
def test_coverage_at_3_seeds_beats_the_percentile_bootstrap(spread: str) -> None:
    """A fast, seeded version of results/stats/coverage.py (which runs 1000 studies per cell)."""
    design = sim.stream_design(spread)
    crossed = sim.coverage(design, seeds=3, items=40, reps=100, estimator=Crossed, seed=1)
    for name, (cov, _) in crossed.items():
        assert cov >= 0.9, (name, cov)  # 95% nominal; 100 studies put 2.2 points of noise on it
    if spread == "seeds":
        boot = sim.coverage(design, 3, 40, 60, lambda g: st.Bootstrap(g, replicates=300), seed=1)
        assert boot["mean (new-task acc.)"][0] <= 0.88  # the old interval: well below 95% at 3 seeds


def test_runs_in_two_task_orders_are_pooled_as_one_sample_of_seeds() -> None:
    rng = np.random.default_rng(9)
    x = (rng.random((4, 30)) < 0.5).astype(float)
    first, second = _scores(x[:2], ["0", "1"]), _scores(x[2:], ["2", "3"])
    second = st.Scores("1", second.seeds, second.tasks, [], second.columns, second.item_level)
    split = Crossed({"m": [first, second]}).interval("m", st.new_score("a"))
    pooled = Crossed({"m": [_scores(x)]}).interval("m", st.new_score("a"))
    assert (split.mean, split.lo, split.hi) == pytest.approx((pooled.mean, pooled.lo, pooled.hi))
