"""The stage loop on the tiny model: sweeps, determinism, resume after SIGKILL, bad streams."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from fast_config import FAST  # tiny random model, SFT, two short tasks, small eval subsets

from harness.cli import compose


def _cli(results_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "run", *FAST, f"results_dir={results_dir}", *overrides]


def _parents(results_dir: Path, experiment: str = "default") -> pd.DataFrame:
    mlflow.set_tracking_uri(f"sqlite:///{results_dir / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=[experiment], filter_string="tags.`harness.role` = 'parent'")


def _matrix(results_dir: Path, run_id: str) -> pd.DataFrame:
    client = mlflow.MlflowClient(f"sqlite:///{results_dir / 'mlflow.db'}")
    path = client.download_artifacts(run_id, "accuracy_matrix.csv", str(results_dir / f"dl-{run_id}"))
    return pd.read_csv(path, index_col=0)


def test_same_seed_same_matrix_and_full_lineage(tmp_path):
    from harness.run.loop import run_experiment

    first = run_experiment(compose([*FAST, f"results_dir={tmp_path / 'a'}"]))
    second = run_experiment(compose([*FAST, f"results_dir={tmp_path / 'b'}"]))
    pd.testing.assert_frame_equal(first["R"], second["R"])
    assert list(first["R"].index) == [0, 1, 2] and list(first["R"].columns) == ["tooluse", "dates"]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}")
    parent = client.get_run(first["parent_run_id"])
    assert parent.data.tags["method"] == "sft" and parent.data.tags["harness.complete"] == "true"
    assert parent.data.params["trainer.lr"] == "5e-05"
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(int(c.data.tags["stage"]) for c in children) == [0, 1, 2]
    history = client.get_metric_history(parent.info.run_id, "score/tooluse")
    assert [m.step for m in history] == [0, 1, 2]


def test_multirun_sweep_gives_one_parent_per_combination(tmp_path):
    proc = subprocess.run(
        _cli(tmp_path, "-m", "method=sft,dft", "seed=0,1"), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = _parents(tmp_path)
    assert len(runs) == 4
    assert sorted(zip(runs["tags.method"], runs["tags.seed"], strict=True)) == [
        ("dft", "0"),
        ("dft", "1"),
        ("sft", "0"),
        ("sft", "1"),
    ]


def test_sigkill_during_stage_2_then_rerun_resumes(tmp_path):
    # stage 2 trains long enough to be killed inside it: 12 items x 10 epochs / batch 4 = 30 tiny-model
    # steps per stage (seconds), and the kill follows stage 1's summary line within milliseconds
    slow = ["trainer.epochs=10", "trainer.max_steps=30"]
    reference = subprocess.run(_cli(tmp_path / "ref", *slow), capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr[-3000:]

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        _cli(tmp_path / "run", *slow), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
    )
    deadline = time.time() + 300
    # Stage 1's summary line is printed after its checkpoint and child run are written; stage 2's training
    # (30 steps) starts right after it. Kill at once: on an idle machine a sleep here let the run finish.
    for line in proc.stdout:
        if line.startswith("[stage 1:") or time.time() > deadline:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed = _parents(tmp_path / "run")
    assert len(killed) == 1
    assert "tags.harness.complete" not in killed or killed["tags.harness.complete"].isna().all()
    before = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}")
    stage1_before = before.search_runs([killed["experiment_id"][0]], "tags.stage = '1'")[0]
    stage2_before = before.search_runs([killed["experiment_id"][0]], "tags.stage = '2'")
    assert all(r.info.status != "FINISHED" for r in stage2_before), "the kill came after stage 2 ended"

    rerun = subprocess.run(_cli(tmp_path / "run", *slow), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "already done" in rerun.stdout
    runs = _parents(tmp_path / "run")
    assert len(runs) == 1, "the rerun must continue the same parent run, not start another"
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}")
    stage_runs = client.search_runs([runs["experiment_id"][0]], "tags.`harness.role` = 'stage'")
    finished = [r for r in stage_runs if r.info.status == "FINISHED"]
    assert sorted(int(r.data.tags["stage"]) for r in finished) == [0, 1, 2], "no duplicate stage runs"
    stage1_after = next(r for r in finished if r.data.tags["stage"] == "1")
    assert stage1_after.info.run_id == stage1_before.info.run_id, "stage 1 was not redone"
    pd.testing.assert_frame_equal(
        _matrix(tmp_path / "run", runs["run_id"][0]),
        _matrix(tmp_path / "ref", _parents(tmp_path / "ref")["run_id"][0]),
    )


def test_repeated_task_in_stream_is_rejected(tmp_path):
    from harness.run.loop import run_experiment

    cfg = compose([*FAST, f"results_dir={tmp_path}", "stream.tasks=[tooluse,tooluse]"])
    with pytest.raises(ValueError, match="repeats task"):
        run_experiment(cfg)


def test_unknown_task_lists_builtin_ones(tmp_path):
    from harness.run.loop import run_experiment

    cfg = compose([*FAST, f"results_dir={tmp_path}", "stream.tasks=[nosuchtask]"])
    with pytest.raises(ValueError, match="unknown task 'nosuchtask'.*tooluse"):
        run_experiment(cfg)
