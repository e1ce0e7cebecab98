"""Integration: the `smoke` experiment end to end with the real embedded model, real lm-eval, real MLflow."""

from __future__ import annotations

import math

import mlflow
import pytest

from harness.cli import compose


@pytest.mark.slow
def test_smoke_experiment_with_the_real_model(tmp_path):
    from harness.run.loop import run_experiment

    cfg = compose(["experiment=smoke", f"results_dir={tmp_path}"])
    out = run_experiment(cfg)
    R, G = out["R"], out["G"]
    assert list(R.index) == [0, 1, 2] and list(R.columns) == list(cfg.stream.tasks)
    assert R.notna().all().all() and ((R >= 0) & (R <= 1)).all().all()
    assert list(G.columns) == list(cfg.suite.tasks) and G.notna().all().all()
    for key in ("acc", "new_task_acc", "bwt", "general_delta"):
        assert key in out["metrics"] and not math.isnan(out["metrics"][key])

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("smoke")
    parents = client.search_runs([exp.experiment_id], "tags.`harness.role` = 'parent'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.tags["model"] == "smollm2-135m-instruct" and parent.data.tags["method"] == "sdft"
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(int(c.data.tags["stage"]) for c in children) == [0, 1, 2]
    stage1 = next(c for c in children if c.data.tags["stage"] == "1")
    assert stage1.data.metrics["score/tooluse"] == R.loc[1, "tooluse"]
    assert "train/last_loss" in stage1.data.metrics and "train/teacher_in_context_acc" in stage1.data.metrics
    assert not any(k.endswith("sample_len") for k in stage1.data.metrics)
    assert any(k.startswith("general_mc/") for k in stage1.data.metrics)
    arts = {a.path for a in client.list_artifacts(stage1.info.run_id)}
    assert {"lm_eval_results.json", "samples.csv"} <= arts
