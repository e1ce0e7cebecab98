"""The power section against a second implementation (pandas pivots and the two-way ANOVA by formula) on the
committed study's item-level scores, and the projection against hand arithmetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from harness.cli import main
from harness.report import stats as st
from harness.report.crossed import Estimate
from harness.report.folder import load_folder
from harness.report.power import power_rows, projected_half_width, seeds_needed
from harness.report.streams import StreamStats

STUDY = Path(__file__).resolve().parents[1] / "results" / "study"


@pytest.fixture(scope="module")
def study() -> StreamStats:
    groups = load_folder(STUDY)
    return StreamStats("study", groups, [r for g in groups for r in g.runs])


def _cell(items: pd.DataFrame, group: str, stage: int, task: str) -> np.ndarray:
    runs = pd.read_csv(STUDY / "runs.csv")
    ids = runs.loc[runs["group"] == group, "run_key"]
    sub = items[items["run_key"].isin(ids) & (items["stage"] == stage) & (items["task"] == task)]
    return sub.pivot_table(index="seed", columns="doc_id", values="score").to_numpy(dtype=float)


def test_sft_new_task_accuracy_matches_a_direct_anova(study: StreamStats) -> None:
    items = pd.read_csv(STUDY / "items.csv.gz")
    # new-task accuracy = (tooluse after stage 1 + science after stage 2) / 2: each task's items count 1/2
    cells = [_cell(items, "SFT", 1, "tooluse") / 2, _cell(items, "SFT", 2, "science") / 2]
    S = cells[0].shape[0]
    per_seed = sum(c.mean(axis=1) for c in cells)
    terms = [(per_seed.var(ddof=1) / S, S - 1)]
    for c in cells:
        N = c.shape[1]
        resid = c - c.mean(1, keepdims=True) - c.mean(0, keepdims=True) + c.mean()
        ms_e = (resid**2).sum() / ((S - 1) * (N - 1))
        ms_b = S * c.mean(0).var(ddof=1)
        assert ms_b > ms_e  # the item component is positive for both tasks: no truncation
        terms += [(ms_b / (S * N), N - 1), (-ms_e / (S * N), (S - 1) * (N - 1))]
    v = sum(t for t, _ in terms)
    df = v**2 / sum(t**2 / d for t, d in terms)
    half = sps.t.ppf(0.975, df) * np.sqrt(v)
    row = next(r for r in power_rows(study) if r.figure == "SFT: new-task acc.")
    assert row.mean == pytest.approx(per_seed.mean())
    assert row.estimate.half_width() == pytest.approx(half, rel=1e-9)
    # and the summary table prints the same interval
    iv = study.boot.interval("SFT", st.cl_metric("new_task_acc"))
    assert iv.hi - iv.mean == pytest.approx(half, rel=1e-9)
    # the projection at the design as run gives back the half-width now
    assert projected_half_width(row.estimate, S, None) == pytest.approx(half, rel=1e-6)


def test_projection_by_hand() -> None:
    e = Estimate(0.5, 3, (), s2_seed=0.01, s2_item={"a": 0.04}, s2_inter={"a": 0.09}, n_items={"a": 80})
    # 4 seeds x 100 items: seed/S + item/n + inter/(S n) = 0.0025 + 0.0004 + 0.000225
    seed_term = (0.01 + 0.09 / 100) / 4
    item_term = (4 * 0.04 + 0.09) / (4 * 100)
    inter_term = -0.09 / (4 * 100)
    v = seed_term + item_term + inter_term
    assert v == pytest.approx(0.0025 + 0.0004 + 0.000225)
    df = v**2 / (seed_term**2 / 3 + item_term**2 / 99 + inter_term**2 / (3 * 99))
    assert projected_half_width(e, 4, 100) == pytest.approx(sps.t.ppf(0.975, df) * np.sqrt(v))
    # +-5 points: the fewest seeds whose half-width is <= 0.05, and one fewer is not enough
    s = seeds_needed(e, 0.05, 100)
    assert s is not None and projected_half_width(e, s, 100) <= 0.05 < projected_half_width(e, s - 1, 100)
    # the seed variance alone (sd 10 points) can never be cut below +-2 by items: s / sqrt(S) needs S > 96
    assert seeds_needed(e, 0.02, 1_000_000) > 96


def test_harness_power_prints_the_sections(capsys) -> None:
    assert main(["power", str(STUDY)]) == 0
    out = capsys.readouterr().out
    assert "## Power: stream `study`" in out and "| SFT: new-task acc. |" in out
    assert "## Base model and chance: stream `study`" in out
    # science: SFT's 6.3% right after learning it does not clear the chance level on these items
    science = next(line for line in out.splitlines() if line.startswith("| science |"))
    assert science.count("not learned") == 3
