"""Stage 0 is evaluated once per results_dir and reused by every run it would be identical for."""

from __future__ import annotations

import shutil

import mlflow
from fast_config import FAST

from harness.cli import compose
from harness.run import base_eval_cache


def test_second_run_reuses_stage_0_and_gets_the_same_scores(tmp_path, monkeypatch):
    import harness.run.loop as loop
    import harness.run.stage_eval as stage_eval

    calls: list[int] = []
    original = stage_eval._evaluate_stage

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(stage_eval, "_evaluate_stage", counting)
    first = loop.run_experiment(compose([*FAST, f"results_dir={tmp_path}", "seed=0"]))
    assert len(calls) == 3  # stages 0, 1, 2
    second = loop.run_experiment(compose([*FAST, f"results_dir={tmp_path}", "seed=1"]))
    assert len(calls) == 5  # stage 0 came from the cache
    assert first["R"].loc[0].tolist() == second["R"].loc[0].tolist()

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    stage0 = client.search_runs(
        [client.get_run(second["parent_run_id"]).info.experiment_id],
        f"tags.mlflow.parentRunId = '{second['parent_run_id']}' and tags.stage = '0'",
    )[0]
    assert stage0.data.metrics["base_eval_reused"] == 1.0
    local = client.download_artifacts(stage0.info.run_id, "items.csv.gz", str(tmp_path / "dl"))
    assert local.endswith("items.csv.gz")  # the item-level artifact is written for a reused stage too

    loop.run_experiment(compose([*FAST, f"results_dir={tmp_path}", "seed=2", "eval.reuse_base=false"]))
    assert len(calls) == 8  # turned off: stage 0 evaluated again


def _key(cfg, include: list[str]) -> str:
    return base_eval_cache.cache_key(dict(cfg.model), dict(cfg.eval), "float32", ["tooluse"], include, False)


def test_key_changes_with_what_changes_a_base_score_and_only_with_that(tmp_path):
    from harness.tasks.spec import TASKS_ROOT

    folder = tmp_path / "tasks"
    shutil.copytree(TASKS_ROOT / "tooluse", folder / "tooluse")
    cfg = compose([*FAST])
    key = _key(cfg, [str(folder)])
    assert key == _key(compose([*FAST, "seed=5", "method=sdft", "trainer.lr=1e-3"]), [str(folder)])
    assert key != _key(compose([*FAST, "eval.limit=4"]), [str(folder)])
    for other in ("eval.suite_limit=2", "eval.decoder=hf"):  # the decoder is the default `static` in FAST
        assert key != _key(compose([*FAST, other]), [str(folder)]), other
    assert key != base_eval_cache.cache_key(
        dict(cfg.model), dict(cfg.eval), "bfloat16", ["tooluse"], [str(folder)], False
    )
    eval_file = folder / "tooluse" / "eval.jsonl"
    eval_file.write_text(eval_file.read_text().replace("a", "b", 1))  # a regenerated data file
    assert key != _key(cfg, [str(folder)])


def test_unreadable_entry_counts_as_absent(tmp_path):
    (tmp_path / base_eval_cache.FOLDER).mkdir()
    (tmp_path / base_eval_cache.FOLDER / "abc.pkl").write_bytes(b"not a pickle")
    assert base_eval_cache.load(tmp_path, "abc") is None
    base_eval_cache.store(tmp_path, "abc", {"score/x": 0.5}, {"any": "object"})
    assert base_eval_cache.load(tmp_path, "abc") == ({"score/x": 0.5}, {"any": "object"})
