"""The MLflow layer against a real SQLite store: the tracking contract, resume, idempotence, fast failure."""

from __future__ import annotations

import json
import math
import time

import pandas as pd
import pytest
from fast_config import FAST
from mlflow.entities import ViewType

from harness.tracking.store import (
    Tracker,
    flatten_config,
    lm_eval_metrics,
    run_key,
    sanitize_metric_key,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root / 'mlflow.db'}", root / "artifacts"


def _tracker(store, name: str) -> Tracker:
    uri, artifacts = store
    return Tracker(uri, name, artifacts)


def test_sanitize_metric_key():
    assert sanitize_metric_key("exact_match,none") == "exact_match"
    assert sanitize_metric_key("acc,none") == "acc"
    assert sanitize_metric_key("tooluse/exact_match,none") == "tooluse/exact_match"
    # two filters of one metric must stay distinct
    assert sanitize_metric_key("exact_match,strict-match") == "exact_match_strict-match"
    assert sanitize_metric_key("exact_match,flexible-extract") == "exact_match_flexible-extract"
    assert sanitize_metric_key("a(b)=c:d") == "a_b__c_d"
    assert sanitize_metric_key("/x//y/") == "x/y"
    assert sanitize_metric_key("x/../y") == "x/__/y"


def test_lm_eval_metrics_keeps_numbers_only():
    results = {
        "results": {
            "tooluse": {"alias": "tooluse", "exact_match,none": 0.5, "exact_match_stderr,none": "N/A"},
            "mc": {"acc,none": 1, "acc_stderr,none": 0.1},
        }
    }
    assert lm_eval_metrics(results) == {"tooluse/exact_match": 0.5, "mc/acc": 1.0, "mc/acc_stderr": 0.1}


def test_flatten_config_and_run_key():
    cfg = {
        "trainer": {"lr": 5e-5, "epochs": 2},
        "stream": {"tasks": ["a", "b"]},
        "x": None,
        "results_dir": "/tmp/a",
        "long": "v" * 7000,
    }
    flat = flatten_config(cfg)
    assert flat["trainer.lr"] == "5e-05"
    assert flat["stream.tasks"] == '["a", "b"]'
    assert flat["x"] == "None"
    assert len(flat["long"]) == 6000
    # the run key ignores where results go, not what is computed
    assert run_key(cfg) == run_key({**cfg, "results_dir": "/elsewhere"})
    assert run_key(cfg) != run_key({**cfg, "trainer": {"lr": 1e-4, "epochs": 2}})


def test_experiment_artifacts_under_root(store):
    uri, root = store
    t = _tracker(store, "exp-artifacts")
    location = t.client.get_experiment(t.experiment_id).artifact_location
    assert location.startswith("file://") and str(root.resolve()) in location
    # a second Tracker on the same name reuses the experiment
    assert _tracker(store, "exp-artifacts").experiment_id == t.experiment_id


def test_parent_child_contract_and_resume(store):
    t = _tracker(store, "exp-resume")
    tags = {"method": "sft", "stream": "demo", "seed": 0, "model": "tiny"}
    params = {"trainer.lr": "5e-05", "seed": "0"}
    parent = t.open_parent("key1", tags, params, artifacts={"config.yaml": "seed: 0\n"})
    run = t.client.get_run(parent)
    assert run.data.tags["harness.role"] == "parent" and run.data.tags["run_key"] == "key1"
    assert run.data.tags["method"] == "sft" and run.data.tags["seed"] == "0"
    assert run.data.params == params
    assert run.info.run_name == "sft-demo-0"

    t.log_stage(
        parent,
        0,
        "base",
        {"score/a": 0.1, "mc/acc,none": 0.5},
        artifacts={
            "lm_eval_results.json": {"results": {"a": {"x": 1}}},
            "samples.csv": pd.DataFrame({"task": ["a"], "response": ["hi, there"]}),
        },
    )
    t.log_stage(
        parent,
        1,
        "a",
        {"score/a": 0.9, "time/train_s": 3.0},
        step_stats=[{"loss": 2.0}, {"loss": 1.0}, {"step": 7, "loss": 0.5}],
    )
    # stage 2 "killed" midway: a RUNNING child with partial metrics
    killed = t.client.create_run(
        t.experiment_id,
        tags={"mlflow.parentRunId": parent, "harness.role": "stage", "stage": "2", "task": "b"},
    ).info.run_id
    t.client.log_metric(killed, "score/a", 0.3, step=2)

    # the rerun: same run key -> same parent, RUNNING again, params not re-logged
    t.mark_failed(parent, "killed")
    assert t.client.get_run(parent).info.status == "FAILED"
    again = t.open_parent("key1", tags, {**params, "results_dir": "/other"})
    assert again == parent
    resumed = t.client.get_run(parent)
    assert resumed.info.status == "RUNNING" and "harness.error" not in resumed.data.tags
    assert resumed.data.params["results_dir"] == "/other"

    done = t.completed_stages(parent)
    assert sorted(done) == [0, 1]
    assert done[0] == {"score/a": 0.1, "mc/acc": 0.5}
    assert done[1]["score/a"] == 0.9 and done[1]["train_step/loss"] == 0.5
    assert t.client.get_run(killed).info.lifecycle_stage == "deleted"

    child1 = next(r for r in t.children(parent) if r.data.tags["stage"] == "1")
    assert child1.info.status == "FINISHED" and child1.data.tags["task"] == "a"
    hist = sorted(
        (m.step, m.value) for m in t.client.get_metric_history(child1.info.run_id, "train_step/loss")
    )
    assert hist == [(1, 2.0), (2, 1.0), (7, 0.5)]
    assert [m.step for m in t.client.get_metric_history(child1.info.run_id, "score/a")] == [1]
    child0 = next(r for r in t.children(parent) if r.data.tags["stage"] == "0")
    samples = t.read_artifact_text(child0.info.run_id, "samples.csv")
    assert samples.splitlines() == ["task,response", 'a,"hi, there"']
    assert json.loads(t.read_artifact_text(child0.info.run_id, "lm_eval_results.json")) == {
        "results": {"a": {"x": 1}}
    }
    assert t.read_artifact_text(parent, "config.yaml") == "seed: 0\n"

    with pytest.raises(ValueError, match="already logged"):
        t.log_stage(parent, 1, "a", {"score/a": 0.8})

    # stage 2 logged for real after the resume: exactly one child per stage, all visible children finished
    t.log_stage(parent, 2, "b", {"score/a": 0.4})
    stages = sorted(int(r.data.tags["stage"]) for r in t.children(parent))
    assert stages == [0, 1, 2]
    everything = t.search("tags.`harness.role` = 'stage'", view=ViewType.ALL)
    assert len(everything) == 4  # the deleted killed child is still in the store, just not active


def test_finish_parent_is_idempotent(store):
    t = _tracker(store, "exp-finish")
    parent = t.open_parent("k", {"method": "sdft", "stream": "s", "seed": 1, "model": "m"}, {})
    R = pd.DataFrame({"a": [0.1, 0.8, 0.6], "b": [0.2, 0.3, 0.9]})
    G = pd.DataFrame({"g1": [0.5, 0.4, 0.45], "g2": [0.7, 0.7, 0.6]})
    final = {"acc": 0.75, "bwt": -0.2, "fwt": float("nan")}
    t.finish_parent(parent, R, G, final, config_yaml="seed: 1\n")
    # a rerun after a crash inside finish_parent
    t.finish_parent(parent, R, G, final, config_yaml="seed: 1\n")
    run = t.client.get_run(parent)
    assert run.info.status == "FINISHED" and run.data.tags["harness.complete"] == "true"
    assert t.is_complete(parent)
    for key, column in (("score/a", R["a"]), ("score/b", R["b"]), ("general/g1", G["g1"])):
        hist = t.client.get_metric_history(parent, key)
        assert sorted((m.step, m.value) for m in hist) == list(enumerate(column))
    avg = sorted((m.step, m.value) for m in t.client.get_metric_history(parent, "general/avg"))
    assert [s for s, _ in avg] == [0, 1, 2]
    assert [v for _, v in avg] == pytest.approx([0.6, 0.55, 0.525])
    assert len(t.client.get_metric_history(parent, "final/acc")) == 1
    assert run.data.metrics["final/bwt"] == -0.2 and math.isnan(run.data.metrics["final/fwt"])
    assert json.loads(run.data.params["stream_tasks"]) == ["a", "b"]
    assert json.loads(run.data.params["suite_tasks"]) == ["g1", "g2"]
    matrix = t.read_artifact_csv(parent, "accuracy_matrix.csv")
    assert matrix.index.name == "stage" and matrix.index.tolist() == [0, 1, 2]
    pd.testing.assert_frame_equal(matrix.reset_index(drop=True), R)
    assert t.read_artifact_text(parent, "config.yaml") == "seed: 1\n"
    assert [r.info.run_id for r in t.parents()] == [parent]


def test_runs_do_not_leak_between_parents(store):
    t = _tracker(store, "exp-two")
    p1 = t.open_parent("k1", {"method": "sft"}, {"seed": "0"})
    p2 = t.open_parent("k2", {"method": "sdft"}, {"seed": "1"})
    t.log_stage(p1, 0, "base", {"score/a": 0.1})
    t.log_stage(p2, 0, "base", {"score/a": 0.2})
    assert t.completed_stages(p1) == {0: {"score/a": 0.1}}
    assert t.completed_stages(p2) == {0: {"score/a": 0.2}}
    assert t.parents() == []  # neither is complete yet
    assert len(t.parents(complete_only=False)) == 2


def test_unreachable_server_fails_fast(tmp_path):
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=r"http://127\.0\.0\.1:9"):
        Tracker("http://127.0.0.1:9", "x", tmp_path)
    assert time.monotonic() - start < 10


def test_report_mode_does_not_create(tmp_path):
    with pytest.raises(FileNotFoundError, match="no MLflow store"):
        Tracker(f"sqlite:///{tmp_path / 'none.db'}", "x", create=False)
    assert not (tmp_path / "none.db").exists()


# ---- issue #14: item-level artifact, live step curves, source tags, task order (tiny model) -------------
TINY = FAST  # tests/fast_config.py


def test_ordered_tasks():
    from harness.run.stream_plan import ordered_tasks

    tasks = ["a", "b", "c"]
    orders = [tuple(ordered_tasks(tasks, k)) for k in range(6)]
    assert orders[0] == ("a", "b", "c") and ordered_tasks(tasks, None) == tasks
    assert len(set(orders)) == 6  # 0..T!-1 are the T! distinct permutations
    assert ordered_tasks(tasks, "reverse") == ["c", "b", "a"]
    assert ordered_tasks(tasks, 4) == ordered_tasks(list(tasks), 4)  # fixed: the same in every run
    with pytest.raises(ValueError, match="valid integers are 0..5"):
        ordered_tasks(tasks, 6)
    with pytest.raises(ValueError, match="stream.order='sideways' is not known"):
        ordered_tasks(tasks, "sideways")


def test_tiny_run_stores_items_live_steps_and_source_tags(tmp_path):
    from harness.cli import compose
    from harness.run.loop import run_experiment
    from harness.tracking.store import ITEMS_ARTIFACT

    out = run_experiment(
        compose(
            [
                *TINY,
                f"results_dir={tmp_path / 'a'}",
                "eval.every_steps=2",
                "eval.every_steps_items=2",
                "stream.order=reverse",
            ]
        )
    )
    tracker = Tracker(f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}", "default", create=False)
    parent = tracker.client.get_run(out["parent_run_id"])
    tags = parent.data.tags
    assert tags["order"] == "reverse" and tags["tasks"] == "dates -> tooluse"
    assert list(out["R"].columns) == ["dates", "tooluse"]
    assert len(tags["mlflow.source.git.commit"]) == 40 and tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.name"]
    children = {int(c.data.tags["stage"]): c for c in tracker.children(parent.info.run_id)}
    assert sorted(children) == [0, 1, 2]
    for stage, child in children.items():
        items = tracker.read_items(child.info.run_id)
        assert items is not None and set(items["stage"]) == {stage}
        assert list(items.columns[:4]) == ["run", "stage", "task", "doc_id"]
        for task in ("dates", "tooluse"):
            sub = items[items["task"] == task]
            assert sorted(sub["doc_id"]) == [0, 1, 2]  # every evaluated item, not a sample of them
            # the item scores reproduce the R entry logged for the stage
            assert sub["score"].mean() == pytest.approx(child.data.metrics[f"score/{task}"])
            assert sub["generation"].map(type).eq(str).all()
        assert ITEMS_ARTIFACT in {f.path for f in tracker.client.list_artifacts(child.info.run_id)}
    trained = children[1].info.run_id
    assert sorted(tracker.history(trained, "train_step/loss")) == [1, 2, 3]
    assert sorted(tracker.history(trained, "step_eval/score")) == [0, 2, 3]  # before, every 2, the last
    assert "step_eval/score" not in children[0].data.metrics

    # the within-stage evaluation draws no random numbers: the same training without it
    plain = run_experiment(compose([*TINY, f"results_dir={tmp_path / 'b'}", "stream.order=reverse"]))
    other = Tracker(f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}", "default", create=False)
    stage1 = next(c for c in other.children(plain["parent_run_id"]) if c.data.tags["stage"] == "1")
    assert other.history(stage1.info.run_id, "train_step/loss") == tracker.history(trained, "train_step/loss")
