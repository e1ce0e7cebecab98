"""`harness report` on a store written through our own tracking code, checked against hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib import image as mpimg
from omegaconf import OmegaConf

from harness.eval import metrics
from harness.report.runs import RunResult, group_runs
from harness.report.write import write_report
from harness.tracking.store import Tracker, flatten_config

# Issue #25: intervals come from the crossed seed x item estimate (harness.report.crossed). These runs carry no
# item-level data, so only the seed part is left: the t-interval on the runs' values with runs - 1 degrees of
# freedom. With two runs x, y: mean +- t(0.975, 1) * |x - y| / 2, t(0.975, 1) = 12.7062047362 (tables).

TASKS, SUITE = ["a", "b"], ["g1", "g2"]
# (method, seed) -> (R, G); rows = base, after a, after b
RUNS = {
    ("sft", 0): ([[0.1, 0.2], [0.9, 0.3], [0.5, 0.8]], [[0.6, 0.8], [0.5, 0.7], [0.4, 0.6]]),
    ("sft", 1): ([[0.1, 0.2], [0.7, 0.1], [0.3, 1.0]], [[0.6, 0.8], [0.5, 0.5], [0.4, 0.4]]),
    ("sdft", 0): ([[0.1, 0.2], [0.6, 0.2], [0.6, 0.7]], [[0.6, 0.8], [0.6, 0.8], [0.6, 0.7]]),
    ("sdft", 1): ([[0.1, 0.3], [0.8, 0.4], [0.7, 0.9]], [[0.6, 0.8], [0.6, 0.7], [0.5, 0.7]]),
}
# Per-run summary values worked out by hand from the matrices above (docs/design.md §5):
# a/new = R[1,a], a/general = mean G[1], b/new = R[2,b], b/general = mean G[2], then the CL metrics.
COLS = [
    "a/new",
    "a/general",
    "b/new",
    "b/general",
    "acc",
    "new_task_acc",
    "bwt",
    "fwt",
    "forgetting",
    "general_delta",
]
BY_HAND = {
    ("sft", 0): [0.9, 0.6, 0.8, 0.5, 0.65, 0.85, -0.4, 0.1, 0.4, -0.2],
    ("sft", 1): [0.7, 0.5, 1.0, 0.4, 0.65, 0.85, -0.4, -0.1, 0.4, -0.3],
    ("sdft", 0): [0.6, 0.7, 0.7, 0.65, 0.65, 0.65, 0.0, 0.0, 0.0, -0.05],
    ("sdft", 1): [0.8, 0.65, 0.9, 0.6, 0.8, 0.85, -0.1, 0.1, 0.1, -0.1],
}


def _frame(rows, cols) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=cols, index=pd.Index(range(len(rows)), name="stage"))


def _config(method: str, seed: int) -> dict:
    return {
        "method": {"name": method},
        "seed": seed,
        "trainer": {"lr": 5e-5},
        "eval": {"limit": 20},
        "model": {"name": "tiny-test"},
        "stream": {"name": "demo", "tasks": TASKS},
        "results_dir": f"/somewhere/{seed}",
    }


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    tracker = Tracker(f"sqlite:///{results / 'mlflow.db'}", "cmp", results / "mlartifacts")
    for (method, seed), (R, G) in RUNS.items():
        params = flatten_config(_config(method, seed))
        params.update({"stream_tasks": '["a", "b"]', "suite_tasks": '["g1", "g2"]'})
        tags = {"method": method, "stream": "demo", "seed": seed, "model": "tiny-test"}
        parent = tracker.open_parent(f"{method}-{seed}", tags, params)
        r, g = _frame(R, TASKS), _frame(G, SUITE)
        for stage in range(3):
            tracker.log_stage(
                parent,
                stage,
                "base" if stage == 0 else TASKS[stage - 1],
                {
                    **{f"score/{t}": r.loc[stage, t] for t in TASKS},
                    **{f"general/{m}": g.loc[stage, m] for m in SUITE},
                    **({"n_items/a": 20, "n_items/b": 15} if stage == 0 else {}),
                },
            )
        tracker.finish_parent(parent, r, g, metrics.all_metrics(r, g))
    # an unfinished run (killed at stage 1) must not enter the report
    unfinished = tracker.open_parent(
        "sft-2",
        {"method": "sft", "stream": "demo", "seed": 2},
        {**flatten_config(_config("sft", 2)), "stream_tasks": '["a", "b"]'},
    )
    tracker.log_stage(unfinished, 0, "base", {"score/a": 0.0, "score/b": 0.0})
    cfg = OmegaConf.create({"experiment_name": "cmp", "results_dir": str(results), "tracking_uri": None})
    out = write_report(cfg)
    assert out == results / "cmp"
    return out


T_1DF = 12.7062047362  # the 97.5% point of Student's t with 1 degree of freedom


def _mean_ci2(x: float, y: float) -> tuple[float, float, float]:
    # two runs: mean +- t(1 df) x standard error, the standard error of two values being |x - y| / 2
    half = T_1DF * abs(x - y) / 2
    return (x + y) / 2, (x + y) / 2 - half, (x + y) / 2 + half


def _text(x: float, y: float, signed: bool = False) -> str:
    """How the report prints that interval, in %."""
    m, lo, hi = (100 * v for v in _mean_ci2(x, y))
    return f"{'+' if signed and m > 0 else ''}{m:.1f} [{lo:.1f}, {hi:.1f}]"


def test_summary_csv_numbers(report_dir):
    summary = pd.read_csv(report_dir / "summary.csv")
    # rows are named by the methods' display names; the override string is the machines' column
    assert summary["method"].tolist() == ["base model", "SDFT", "SFT"]
    assert summary["overrides"].tolist() == ["base model", "sdft", "sft"]
    # n counts independent evaluations: the base row holds 2 distinct stage-0 evaluations (issue #14: it said 4)
    assert summary["n"].tolist() == [2, 2, 2]
    assert summary["seeds"].tolist() == ["0 1", "0 1", "0 1"]
    for method in ("sft", "sdft"):
        row = summary.set_index("overrides").loc[method]
        # two runs without items: no gain interval clears the base (t with 1 df), so no task counts as
        # learned and BWT / Forgetting read "n/a (not learned)" (NaN in the csv)
        assert np.isnan(row["bwt"]) and np.isnan(row["forgetting"])
        for k, col in enumerate(COLS):
            if col in ("bwt", "forgetting"):
                continue
            mean, lo, hi = _mean_ci2(BY_HAND[(method, 0)][k], BY_HAND[(method, 1)][k])
            assert row[col] == pytest.approx(mean, abs=1e-9), (method, col)
            assert (row[f"{col}_lo"], row[f"{col}_hi"]) == pytest.approx((lo, hi), abs=1e-9), (method, col)
    base = summary.set_index("overrides").loc["base model"]
    assert base["a/new"] == pytest.approx(0.1) and base["a/new_hi"] - base["a/new_lo"] == pytest.approx(0.0)
    # b at stage 0: 0.2 (three runs, one deterministic evaluation) and 0.3 -> two distinct evaluations
    assert base["b/new"] == pytest.approx(0.25)
    assert (base["b/new_lo"], base["b/new_hi"]) == pytest.approx(_mean_ci2(0.2, 0.3)[1:])
    assert base["a/general"] == pytest.approx(0.7) and base["b/general"] == pytest.approx(0.7)
    for col in ("acc", "new_task_acc", "bwt", "fwt", "forgetting", "general_delta"):
        assert np.isnan(base[col])


def test_matrix_csv(report_dir):
    sft = pd.read_csv(report_dir / "matrix_demo_sft.csv", index_col="stage")
    expected = pd.DataFrame(
        {"a": [0.1, 0.8, 0.4], "b": [0.2, 0.2, 0.9]}, index=pd.Index([0, 1, 2], name="stage")
    )
    pd.testing.assert_frame_equal(sft, expected, atol=1e-12)
    sdft = pd.read_csv(report_dir / "matrix_demo_sdft.csv", index_col="stage")
    np.testing.assert_allclose(sdft.to_numpy(), [[0.1, 0.25], [0.7, 0.3], [0.65, 0.8]])
    md = (report_dir / "matrix_demo_sft.md").read_text()
    assert f"| 2 (b) | {_text(0.5, 0.3)} | {_text(0.8, 1.0)} | {_text(0.5, 0.4)} |" in md


def test_tables_and_comparison(report_dir):
    md = (report_dir / "summary.md").read_text()
    # the paper layout: base row first, per task "new / general"
    # no "± 0.0": a degenerate interval says why it has no width
    assert (
        f"| base model | 2 | 10.0 (no spread) / 70.0 (no spread) | {_text(0.2, 0.3)} / 70.0 (no spread) |"
        in md
    )
    assert "± 0.0" not in md
    assert (
        "Evaluation items per task (`eval.limit`; None = the full eval set): 20; evaluated: a 20, b 15" in md
    )
    assert "WARNING" not in md
    assert "Model: tiny-test" in md and "Seeds: 0, 1 (4 complete runs; 1 incomplete runs ignored)" in md
    # the comparison sentence is computed from the numbers
    # paired differences per seed: new-task 0.2 and 0.0 -> a t-interval (1 df) that covers 0
    assert (
        f"SFT and SDFT are not distinguishable on new-task accuracy (85.0 (no spread) vs {_text(0.65, 0.85)}; "
        f"paired difference {_text(0.2, 0.0, signed=True)} covers 0)"
    ) in md
    # final general average, sdft minus sft per seed: 0.15 and 0.2; with 2 seeds the interval covers 0
    assert (
        f"SDFT and SFT are not distinguishable on final general-suite average "
        f"({_text(0.65, 0.6)} vs {_text(0.5, 0.4)}; paired difference {_text(0.15, 0.2, signed=True)} covers 0)"
    ) in md
    assert "forgetting (Chaudhry): n/a (not learned) for SDFT, SFT" in md
    # issue 25: every report states the base model beside chance, and the power of its figures
    assert "### Base model and chance: stream `demo`" in md and "### Power: stream `demo`" in md
    assert "| SFT: new-task acc. |" in md and "| SDFT minus SFT: new-task acc. |" in md
    tex = (report_dir / "summary.tex").read_text()
    for rule in ("\\toprule", "\\midrule", "\\bottomrule", "\\begin{tabular}{lrrrrrrrrr}"):
        assert rule in tex
    new, gen = (_text(*pair).replace(" [", "\\,[") for pair in ((0.9, 0.7), (0.6, 0.5)))
    assert f"${new}$ / ${gen}$" in tex  # sft, task a
    assert "new\\_task" not in tex and "general $\\Delta$" not in tex.lower()


def test_plots_are_valid_pngs_and_html_is_self_contained(report_dir):
    pngs = sorted(p.name for p in report_dir.glob("*.png"))
    assert pngs == [
        "forgetting_demo.png",
        "general_demo.png",
        "heatmap_demo_sdft.png",
        "heatmap_demo_sft.png",
    ]  # no normalized figure: with 2 seeds no gain exceeds its own interval's half-width
    for name in pngs:
        data = (report_dir / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
        pixels = mpimg.imread(report_dir / name)
        assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 300, name
        # not a blank canvas: many distinct colours and real variance
        assert pixels[..., :3].std() > 0.05, name
        assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 50, name
    page = (report_dir / "report.html").read_text()
    assert page.count("src='data:image/png;base64,") == len(pngs)
    assert "http://" not in page and "https://" not in page  # opens offline
    assert "<td>base model</td>" in page


def test_grouping_splits_swept_params_not_seeds():
    frame = _frame([[0.0], [1.0]], ["a"])
    empty = _frame([[], []], [])

    def run(method, seed, lr, results_dir):
        params = {"trainer.lr": lr, "seed": str(seed), "results_dir": results_dir, "method.name": method}
        return RunResult(f"{method}{seed}{lr}", method, "s", str(seed), "m", params, frame, empty, empty)

    runs = [
        run("sft", 0, "1e-4", "/x"),
        run("sft", 1, "1e-4", "/y"),
        run("sft", 0, "5e-5", "/x"),
        run("sdft", 0, "5e-5", "/x"),
        run("sdft", 1, "5e-5", "/z"),
    ]
    labels = {g.label: len(g.runs) for g in group_runs(runs)}
    assert labels == {"sdft": 2, "sft (trainer.lr=1e-4)": 2, "sft (trainer.lr=5e-5)": 1}


def test_single_seed_single_task_without_suite(tmp_path):
    """The degenerate corners: n = 1 (no CI), T = 1 (BWT/FWT/Forgetting undefined), no general suite."""
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "edge", tmp_path / "mlartifacts")
    for method, after in (("sft", 0.9), ("sdft", 0.6)):
        parent = tracker.open_parent(
            method,
            {"method": method, "stream": "one", "seed": 0, "model": "m"},
            {"stream_tasks": '["a"]', "suite_tasks": "[]", "method.name": method},
        )
        r, g = _frame([[0.2], [after]], ["a"]), _frame([[], []], [])
        tracker.finish_parent(parent, r, g, metrics.all_metrics(r, g))
    cfg = OmegaConf.create({"experiment_name": "edge", "results_dir": str(tmp_path), "tracking_uri": None})
    out = write_report(cfg)
    summary = pd.read_csv(out / "summary.csv").set_index("overrides")
    assert summary.loc["sft", "a/new"] == pytest.approx(0.9)
    assert summary.loc["sft", "a/new_lo"] == summary.loc["sft", "a/new_hi"] == pytest.approx(0.9)  # no width
    assert np.isnan(summary.loc["sft", "bwt"]) and np.isnan(summary.loc["sft", "general_delta"])
    md = (out / "summary.md").read_text()
    assert "SFT has the higher new-task accuracy (90.0 vs 60.0 for SDFT; no CI with a single seed)" in md
    assert "forgetting (Chaudhry) is undefined here" in md
    assert not (out / "general_one.png").exists()
    assert sorted(p.name for p in out.glob("*.png")) == [
        "forgetting_one.png",
        "heatmap_one_sdft.png",
        "heatmap_one_sft.png",
        "normalized_one.png",
    ]


# ---- hand-made runs with item-level scores (issue #14): what the sentences may and may not claim ----------
N_ITEMS = 30


def _items(run: str, stage: int, scores: dict[str, np.ndarray]) -> bytes:
    import gzip

    rows = [
        {
            "run": run,
            "stage": stage,
            "task": task,
            "doc_id": i,
            "item_id": f"{task}-{i}",
            "metric": "exact_match",
            "score": float(v),
            "generation": f"answer {i}",
            "target": f"gold {i}",
            "prompt": f"question {i}",
        }
        for task, values in scores.items()
        for i, v in enumerate(values)
    ]
    return gzip.compress(pd.DataFrame(rows).to_csv(index=False).encode())


def _right(k: int, shift: int = 0) -> np.ndarray:
    """N_ITEMS item scores with k right answers (starting at item `shift`)."""
    out = np.zeros(N_ITEMS)
    out[[(shift + i) % N_ITEMS for i in range(k)]] = 1.0
    return out


def _log_item_run(tracker: Tracker, stream: str, method: str, seed: int, stages: list[dict[str, np.ndarray]]):
    """One complete parent run whose R is the mean of the given item scores (tasks a, b; no suite)."""
    from harness.tracking.store import ITEMS_ARTIFACT

    params = {
        **flatten_config({**_config(method, seed), "stream": {"name": stream, "tasks": TASKS}}),
        "stream_tasks": '["a", "b"]',
        "suite_tasks": "[]",
    }
    parent = tracker.open_parent(
        f"{stream}-{method}-{seed}", {"method": method, "stream": stream, "seed": seed, "model": "m"}, params
    )
    R = _frame([[stages[i][t].mean() for t in TASKS] for i in range(3)], TASKS)
    for i in range(3):
        metrics_i = {f"score/{t}": R.loc[i, t] for t in TASKS}
        if i == 0:
            metrics_i.update({f"n_items/{t}": N_ITEMS for t in TASKS})
        tracker.log_stage(
            parent,
            i,
            "base" if i == 0 else TASKS[i - 1],
            metrics_i,
            artifacts={ITEMS_ARTIFACT: _items(parent, i, stages[i])},
        )
    G = _frame([[], [], []], [])
    tracker.finish_parent(parent, R, G, metrics.all_metrics(R, G))


@pytest.fixture(scope="module")
def item_report(tmp_path_factory):
    results = tmp_path_factory.mktemp("items")
    tracker = Tracker(f"sqlite:///{results / 'mlflow.db'}", "items", results / "mlartifacts")
    for seed in range(3):
        s = seed  # each seed gets a slightly different set of right answers
        learns_and_forgets = [
            {"a": _right(0), "b": _right(0)},
            {"a": _right(24 + s, s), "b": _right(1)},
            {"a": _right(5 + s, s), "b": _right(25 - s, s)},
        ]
        learns_nothing = [{"a": _right(0), "b": _right(0)}] * 3
        _log_item_run(tracker, "mixed", "sft", seed, learns_and_forgets)
        _log_item_run(tracker, "mixed", "sdft", seed, learns_nothing)
        # identical methods: the same item scores under two method names
        _log_item_run(tracker, "same", "sft", seed, learns_and_forgets)
        _log_item_run(tracker, "same", "dft", seed, learns_and_forgets)
        # one lucky item over the base: nothing worth normalising by
        lucky = [
            {"a": _right(0), "b": _right(0)},
            {"a": _right(1, s), "b": _right(0)},
            {"a": _right(1, s), "b": _right(1, s)},
        ]
        _log_item_run(tracker, "lucky", "sft", seed, lucky)
        _log_item_run(tracker, "lucky", "dft", seed, lucky)
    cfg = OmegaConf.create({"experiment_name": "items", "results_dir": str(results), "tracking_uri": None})
    return write_report(cfg)


def _sentence(md: str, stream: str) -> str:
    return next(line for line in md.splitlines() if line.startswith(f"Stream `{stream}`:"))


def test_method_that_learns_nothing_gets_no_forgetting_credit(item_report):
    md = (item_report / "summary.md").read_text()
    sentence = _sentence(md, "mixed")
    assert "lower forgetting" not in sentence
    assert "forgetting (Chaudhry): n/a (not learned) for SDFT" in sentence
    summary = pd.read_csv(item_report / "summary.csv")
    mixed = summary[summary["stream"] == "mixed"].set_index("overrides")
    assert np.isnan(mixed.loc["sdft", "forgetting"]) and np.isnan(mixed.loc["sdft", "bwt"])
    row = next(line for line in md.splitlines() if line.startswith("| SDFT | 3 |"))
    assert row.count("n/a (not learned)") == 2  # BWT and Forgetting
    # sft learned a (24-26 of 30 over a base of 0) and forgot most of it: interval above 0
    assert mixed.loc["sft", "learned"] == "a b"
    assert mixed.loc["sft", "forgetting"] == pytest.approx(np.mean([(24 + s - 5 - s) / 30 for s in range(3)]))
    assert mixed.loc["sft", "forgetting_lo"] > 0.4
    assert "SFT has the higher new-task accuracy" in sentence and "paired difference" in sentence
    # a base model evaluated identically by all six runs is one evaluation
    assert mixed.loc["base model", "n"] == 1


def test_identical_methods_are_not_distinguishable(item_report):
    sentence = _sentence((item_report / "summary.md").read_text(), "same")
    assert "DFT and SFT are not distinguishable on new-task accuracy" in sentence
    assert "not distinguishable on forgetting (Chaudhry)" in sentence
    assert "has the higher" not in sentence and "has the lower" not in sentence
    assert "paired difference 0.0 (no spread) covers 0" in sentence


def test_item_level_intervals_and_normalized_guard(item_report):
    summary = pd.read_csv(item_report / "summary.csv")
    lucky = summary[summary["stream"] == "lucky"].set_index("overrides")
    # one right item of 30 after training: the interval of a's new score reaches 0 (items resampled)
    assert lucky.loc["sft", "a/new"] == pytest.approx(1 / 30) and lucky.loc["sft", "a/new_lo"] <= 0.0
    assert pd.isna(lucky.loc["sft", "learned"])  # a 1-item gain is not "learned" (its interval reaches 0)
    assert not (item_report / "normalized_lucky.png").exists()  # a one-item gain is not blown up to 1.0
    assert (item_report / "normalized_mixed.png").exists()
    page = (item_report / "report.html").read_text()
    assert "Sample generations: SFT" in page and "answer 0" in page


def test_item_level_results_are_written_beside_the_report(item_report):
    items = pd.read_csv(item_report / "items.csv.gz")
    # 6 streams-x-methods x 3 seeds = 18 runs, 3 stages each, tasks a and b of N_ITEMS items per stage
    assert len(items) == 18 * 3 * 2 * N_ITEMS
    assert list(items.columns[:7]) == ["stream", "method", "seed", "order", "run_key", "stage", "task"]
    after_a = items[(items["stage"] == 1) & (items["task"] == "a") & (items["seed"] == 1)]
    right = after_a.groupby(["stream", "method"])["score"].sum()
    # seed 1: "learns_and_forgets" has 25 right answers on a after stage 1, "learns_nothing" 0, "lucky" 1
    assert right.to_dict() == {
        ("lucky", "dft"): 1.0,
        ("lucky", "sft"): 1.0,
        ("mixed", "sdft"): 0.0,
        ("mixed", "sft"): 25.0,
        ("same", "dft"): 25.0,
        ("same", "sft"): 25.0,
    }
