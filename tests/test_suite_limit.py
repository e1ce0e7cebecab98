"""`eval.suite_limit`: the general suite evaluated on its own number of items, the stream tasks on eval.limit."""

from __future__ import annotations

import pytest
from fast_config import FAST

from harness.cli import compose
from harness.run.stage_eval import limit_groups


def test_limit_groups_keep_the_task_order_and_cut_only_where_the_limit_changes():
    names = ["tooluse", "dates", "general_mc", "general_arith"]
    suite = ["general_mc", "general_arith"]
    assert limit_groups(names, suite, 400, None) == [(400, names)]  # one lm-eval run, as before
    assert limit_groups(names, suite, 400, 80) == [(400, ["tooluse", "dates"]), (80, suite)]
    assert limit_groups(names, suite, None, 80) == [(None, ["tooluse", "dates"]), (80, suite)]
    assert limit_groups(["general_arith"], suite, 400, 80) == [(80, ["general_arith"])]  # a process's share
    assert limit_groups([], suite, 400, 80) == [(400, [])]  # a process with nothing to evaluate


def test_suite_tasks_are_evaluated_on_suite_limit_items(tmp_path):
    from harness.run.loop import run_experiment  # lazy: the loop loads torch and transformers

    overrides = [o for o in FAST if o != "suite=none"]
    cfg = compose([*overrides, "suite=general", "eval.suite_limit=2", f"results_dir={tmp_path}"])
    run_experiment(cfg)
    import mlflow  # lazy: only this test reads the store

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    stages = client.search_runs(
        [client.get_experiment_by_name("default").experiment_id], "tags.`harness.role` = 'stage'"
    )
    assert len(stages) == 3
    for run in stages:
        n = {k.split("/", 1)[1]: v for k, v in run.data.metrics.items() if k.startswith("n_items/")}
        assert {n[t] for t in ("tooluse", "dates")} == {3.0}, n  # eval.limit
        suite = [t for t in n if t.startswith("general_")]
        assert len(suite) == 3 and {n[t] for t in suite} == {2.0}, n  # eval.suite_limit
        assert "general/avg" in run.data.metrics


def test_a_task_both_learned_and_in_the_suite_is_refused():
    from harness.run.stream_plan import plan_stream  # lazy: reads the tasks' data files

    suite = ["suite=general", "suite.tasks=[general_mc,dates]"]
    cfg = compose([o for o in FAST if o != "suite=none"] + suite)
    with pytest.raises(ValueError, match="suite 'general' holds dates, which stream 'pair' evaluates"):
        plan_stream(cfg)
