"""The Pareto view: frontier and matched-accuracy arithmetic on hand-made points; the report of a small sweep
(through our own MLflow tracking code) shows the points, the frontier figure, the matched sentence, the joint
reference and the pass@k table."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from omegaconf import OmegaConf

from harness.eval import metrics
from harness.report.pareto import frontier, matched_retention, matched_sentence, retention_at
from harness.report.write import write_report
from harness.tracking.store import Tracker

A = [(0.2, 0.0), (0.4, -0.02), (0.6, -0.10), (0.5, -0.15), (0.4, -0.05)]  # last two dominated
B = [(0.3, 0.01), (0.5, -0.01)]


def test_frontier_drops_dominated_points():
    assert frontier(A) == [(0.2, 0.0), (0.4, -0.02), (0.6, -0.10)]
    assert frontier(B) == B
    assert frontier([(0.5, 0.1), (0.5, 0.2)]) == [(0.5, 0.2)]  # same accuracy: the better retention


def test_retention_is_interpolated_along_the_frontier():
    front = frontier(A)
    assert retention_at(front, 0.5) == pytest.approx(-0.06)  # halfway from (0.4, -0.02) to (0.6, -0.10)
    assert retention_at(front, 0.4) == pytest.approx(-0.02)
    assert retention_at(front, 0.1) == pytest.approx(0.0)  # below: the least accurate point reaches it
    assert math.isnan(retention_at(front, 0.7))  # beyond the frontier: not reached


def test_matched_accuracy_is_the_highest_both_reach():
    x, at = matched_retention({"sft": frontier(A), "sdft": frontier(B)})
    assert x == pytest.approx(0.5)  # min(0.6, 0.5)
    assert at == pytest.approx({"sft": -0.06, "sdft": -0.01})
    sentence = matched_sentence({"sft": frontier(A), "sdft": frontier(B)})
    assert "at 50.0% new-task accuracy" in sentence
    assert "sdft -1.0, sft -6.0 points" in sentence
    assert matched_sentence({"sft": frontier(A)}) == ""  # one method: nothing to match


def _frame(rows, cols) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=cols, index=pd.Index(range(len(rows)), name="stage"))


# (method, lr) -> (R, G) on a two-task stream; new_task_acc = mean(R[1,a], R[2,b]), general delta = G[2]-G[0]
SWEEP = {
    ("sft", "1e-4"): ([[0.1, 0.1], [0.9, 0.1], [0.5, 0.9]], [[0.6], [0.5], [0.4]]),  # acc 0.9, delta -0.2
    ("sft", "1e-5"): ([[0.1, 0.1], [0.5, 0.1], [0.4, 0.5]], [[0.6], [0.6], [0.55]]),  # acc 0.5, delta -0.05
    ("sdft", "1e-4"): ([[0.1, 0.1], [0.7, 0.1], [0.6, 0.7]], [[0.6], [0.6], [0.58]]),  # acc 0.7, delta -0.02
    ("sdft", "1e-5"): ([[0.1, 0.1], [0.3, 0.1], [0.3, 0.3]], [[0.6], [0.6], [0.6]]),  # acc 0.3, delta 0
    ("joint", "1e-4"): ([[0.1, 0.1], [0.1, 0.1], [0.8, 0.9]], [[0.6], [0.6], [0.5]]),  # acc 0.85
}


def test_report_of_a_sweep_draws_the_pareto_view(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "sweep", tmp_path / "mlartifacts")
    for (method, lr), (r_rows, g_rows) in SWEEP.items():
        parent = tracker.open_parent(
            f"{method}{lr}",
            {"method": method, "stream": "two", "seed": 0, "model": "m"},
            {"stream_tasks": '["a", "b"]', "suite_tasks": '["g"]', "method.name": method, "trainer.lr": lr},
        )
        r, g = _frame(r_rows, ["a", "b"]), _frame(g_rows, ["g"])
        for stage in range(3):
            row = {"score/a": r_rows[stage][0], "score/b": r_rows[stage][1]}
            if method == "sft":
                row.update({"pass_at_1/a": 0.25 * stage, "pass_at_5/a": 0.3 * stage})
            tracker.log_stage(parent, stage, "base" if stage == 0 else "ab"[stage - 1], row)
        tracker.finish_parent(parent, r, g, metrics.all_metrics(r, g))
    cfg = OmegaConf.create({"experiment_name": "sweep", "results_dir": str(tmp_path), "tracking_uri": None})
    out = write_report(cfg)
    md = (out / "summary.md").read_text()
    # sft frontier: (0.5, -0.05), (0.9, -0.2); sdft: (0.3, 0.0), (0.7, -0.02); x* = 0.7:
    # sft at 0.7 = -0.05 + (-0.15) * 0.5 = -0.125; sdft at 0.7 = -0.02
    assert "at 70.0% new-task accuracy (the highest every method reaches)" in md
    assert "sdft -2.0, sft -12.5 points" in md
    assert "Joint training on all tasks at once (JOINT" in md and "final accuracy 85.0" in md
    assert (out / "pareto_two.png").stat().st_size > 10_000
    assert "pass@k: stream `two`" in md
    assert "a pass@1" in md and "a pass@5" in md and "| 50.0 | 60.0 |" in md  # stage 2: 0.5 and 0.6
