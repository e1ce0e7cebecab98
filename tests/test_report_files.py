"""The report's tracked files do not change when the same experiment is run again: runs.csv and items.csv.gz
name runs by their run key (MLflow's run ids are new every time) and sort their rows."""

from __future__ import annotations

import pandas as pd
from omegaconf import OmegaConf
from test_report import _log_item_run, _right

from harness.report.write import write_report
from harness.tracking.store import Tracker


def _experiment(results, order: list[tuple[str, int]]):
    tracker = Tracker(f"sqlite:///{results / 'mlflow.db'}", "again", results / "mlartifacts")
    for method, seed in order:
        stages = [{"a": _right(0), "b": _right(0)}, {"a": _right(20 + seed, seed), "b": _right(1)}]
        stages.append({"a": _right(5, seed), "b": _right(20 if method == "sft" else 3, seed)})
        _log_item_run(tracker, "s", method, seed, stages)
    cfg = OmegaConf.create({"experiment_name": "again", "results_dir": str(results), "tracking_uri": None})
    return write_report(cfg)


def test_the_same_experiment_twice_writes_the_same_runs_and_items_files(tmp_path):
    jobs = [(m, s) for m in ("sft", "sdft") for s in (0, 1)]
    first = _experiment(tmp_path / "first", jobs)
    second = _experiment(tmp_path / "second", list(reversed(jobs)))  # another order of finishing, too
    for name in ("runs.csv", "items.csv.gz", "summary.csv"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    runs = pd.read_csv(first / "runs.csv")
    assert "run_id" not in runs.columns and runs["run_key"].is_unique
    assert runs[["group", "overrides", "seed"]].values.tolist() == [
        ["SDFT", "sdft", 0],
        ["SDFT", "sdft", 1],
        ["SFT", "sft", 0],
        ["SFT", "sft", 1],
    ]
    ids = {
        Tracker(f"sqlite:///{d / 'mlflow.db'}", "again", create=False)
        .parents(complete_only=True)[0]
        .info.run_id
        for d in (tmp_path / "first", tmp_path / "second")
    }
    assert len(ids) == 2  # the stores really hold different run ids
