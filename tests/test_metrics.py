"""Continual-learning metrics against values computed by hand from docs/design.md §5's formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.eval import metrics

# Three tasks (1-based in docs/design.md, columns 0..2 here). Rows: base, after stage 1, 2, 3.
# Task 1 rises after stage 2 (transfer from task 2), then drops: Chaudhry and Avalanche forgetting differ.
R3 = np.array(
    [
        [0.10, 0.20, 0.30],  # base
        [0.50, 0.25, 0.30],  # after learning task 1
        [0.80, 0.70, 0.40],  # after learning task 2
        [0.40, 0.60, 0.90],  # after learning task 3
    ]
)
G3 = np.array(
    [
        [0.60, 0.80],
        [0.50, 0.80],
        [0.55, 0.70],
        [0.40, 0.60],
    ]
)


def test_acc_and_new_task_accuracy():
    assert metrics.acc_final(R3) == pytest.approx((0.40 + 0.60 + 0.90) / 3)
    # R[1,1], R[2,2], R[3,3] in 1-based notation
    assert metrics.new_task_accuracy(R3) == pytest.approx((0.50 + 0.70 + 0.90) / 3)


def test_bwt():
    # j=1: R[3,1]-R[1,1] = 0.40-0.50 ; j=2: R[3,2]-R[2,2] = 0.60-0.70
    assert metrics.bwt(R3) == pytest.approx(((0.40 - 0.50) + (0.60 - 0.70)) / 2)


def test_fwt():
    # j=2: R[1,2]-R[0,2] = 0.25-0.20 ; j=3: R[2,3]-R[0,3] = 0.40-0.30
    assert metrics.fwt(R3) == pytest.approx(((0.25 - 0.20) + (0.40 - 0.30)) / 2)


def test_chaudhry_forgetting_differs_from_avalanche():
    # j=1: max(R[1,1], R[2,1]) = 0.80, minus R[3,1] = 0.40 -> 0.40
    # j=2: max(R[2,2]) = 0.70, minus R[3,2] = 0.60 -> 0.10
    chaudhry = (0.40 + 0.10) / 2
    # Avalanche: j=1: 0.50-0.40 = 0.10 ; j=2: 0.70-0.60 = 0.10
    avalanche = (0.10 + 0.10) / 2
    assert metrics.forgetting(R3) == pytest.approx(chaudhry)
    assert metrics.avalanche_forgetting(R3) == pytest.approx(avalanche)
    assert metrics.forgetting(R3) != pytest.approx(metrics.avalanche_forgetting(R3))


def test_forgetting_ignores_scores_before_the_task_was_learned():
    # Task 1's score at stage 0 (0.95) is higher than anything after learning it; l starts at j=1.
    r = np.array([[0.95, 0.0], [0.50, 0.1], [0.30, 0.9]])
    assert metrics.forgetting(r) == pytest.approx(0.50 - 0.30)


def test_general_delta_and_curve():
    curve = metrics.general_delta_curve(G3)
    expected = [0.0, (-0.10 + 0.0) / 2, (-0.05 - 0.10) / 2, (-0.20 - 0.20) / 2]
    np.testing.assert_allclose(curve, expected)
    assert metrics.general_delta(G3) == pytest.approx(-0.20)
    np.testing.assert_allclose(metrics.general_average(G3), [0.70, 0.65, 0.625, 0.50])


def test_general_delta_without_suite_is_nan():
    g = np.zeros((4, 0))
    assert math.isnan(metrics.general_delta(g))
    assert math.isnan(metrics.all_metrics(R3, g)["general_delta"])


def test_single_task_stream():
    r = np.array([[0.2], [0.7]])
    out = metrics.all_metrics(r, np.array([[0.5], [0.4]]))
    assert out["acc"] == pytest.approx(0.7)
    assert out["new_task_acc"] == pytest.approx(0.7)
    assert math.isnan(out["bwt"]) and math.isnan(out["fwt"]) and math.isnan(out["forgetting"])
    assert out["general_delta"] == pytest.approx(-0.1)


def test_all_metrics_keys_and_values():
    out = metrics.all_metrics(R3, G3)
    assert tuple(out) == metrics.METRIC_NAMES
    assert out["forgetting"] == pytest.approx(0.25)
    assert out["bwt"] == pytest.approx(-0.10)
    assert out["fwt"] == pytest.approx(0.075)


def test_normalized_scores_and_zero_denominator():
    other = R3.copy()
    other[2, 0] = 0.90  # the other method peaks higher on task 1
    other[:, 2] = 0.30  # nobody... except R3 itself, which reaches 0.90 on task 3
    best = metrics.best_scores([R3, other])
    np.testing.assert_allclose(best, [0.90, 0.70, 0.90])
    norm = metrics.normalized_scores(R3, best)
    # task 1: (R - 0.10) / (0.90 - 0.10)
    np.testing.assert_allclose(norm[:, 0], (R3[:, 0] - 0.10) / 0.80)
    np.testing.assert_allclose(norm[:, 2], (R3[:, 2] - 0.30) / 0.60)
    assert norm[0].tolist() == [0.0, 0.0, 0.0]
    # zero denominator: no method beat the base on task 3 -> NaN column, not inf or 0
    flat = R3.copy()
    flat[:, 2] = 0.30
    norm_flat = metrics.normalized_scores(flat, metrics.best_scores([flat]))
    assert np.isnan(norm_flat[:, 2]).all()
    assert not np.isnan(norm_flat[:, :2]).any()


def test_shape_errors():
    with pytest.raises(ValueError, match="T\\+1, T"):
        metrics.acc_final(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="G must have shape"):
        metrics.all_metrics(R3, np.zeros((2, 2)))


def test_bwt_and_forgetting_over_chosen_tasks():
    # only task 2 chosen: BWT = R[3,2] - R[2,2] = 0.60 - 0.70; Forgetting = 0.70 - 0.60
    mask = [False, True, False]
    assert metrics.bwt(R3, mask) == pytest.approx(-0.10)
    assert metrics.forgetting(R3, mask) == pytest.approx(0.10)
    # no task chosen (e.g. a method that learned nothing): undefined, never 0
    assert math.isnan(metrics.forgetting(R3, [False] * 3)) and math.isnan(metrics.bwt(R3, [False] * 3))
    assert metrics.all_metrics(R3, G3, [True, True, True]) == metrics.all_metrics(R3, G3)
    with pytest.raises(ValueError, match="one entry per stream task"):
        metrics.bwt(R3, [True])


def test_metrics_broadcast_over_leading_axes():
    # a stack of matrices gives, entry by entry, what each matrix gives alone (the bootstrap relies on it)
    other = R3[::-1].copy()
    stack = np.stack([R3, other])
    gstack = np.stack([G3, G3[::-1]])
    batched = metrics.all_metrics(stack, gstack)
    for k, (r, g) in enumerate([(R3, G3), (other, G3[::-1])]):
        single = metrics.all_metrics(r, g)
        for name in metrics.METRIC_NAMES:
            assert batched[name][k] == pytest.approx(single[name]), name


def test_normalized_scores_floor():
    # task 1 gains 0.40 over the base, task 3 0.60: a floor of 0.5 drops task 1's column only
    best = np.array([0.50, 0.70, 0.90])
    norm = metrics.normalized_scores(R3, best, floor=0.5)
    assert np.isnan(norm[:, 0]).all() and not np.isnan(norm[:, 2]).any()
    per_task = metrics.normalized_scores(R3, best, floor=[0.0, 0.6, 0.0])
    assert np.isnan(per_task[:, 1]).all() and not np.isnan(per_task[:, 0]).any()
