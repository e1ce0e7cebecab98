"""A two-job sweep through hydra-submitit-launcher's `local` launcher (conf/hydra/launcher/local.yaml): the
same plugin and job packaging as the SLURM launcher, with each job a local subprocess."""

from __future__ import annotations

import subprocess
import sys

import pytest
from fast_config import FAST_ONE_TASK
from mlflow import MlflowClient

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the dev/cluster extra")

FAST = [o for o in FAST_ONE_TASK if o != "method=sft"]


def test_local_submitit_sweep_runs_both_jobs_into_one_store(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            "-m",
            "hydra/launcher=local",
            "method=sft,dft",
            *FAST,
            f"results_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # submitit ran the jobs: its folder holds one result pickle per job
    assert len(list((tmp_path / "runs" / "hydra-multirun").rglob("*_result.pkl"))) == 2

    # Both jobs opened the same SQLite store at once (the loop serialises its creation) and both finished.
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("default")
    parents = client.search_runs([exp.experiment_id], "tags.`harness.role` = 'parent'")
    assert sorted(p.data.tags["method"] for p in parents) == ["dft", "sft"]
    for parent in parents:
        assert parent.info.status == "FINISHED" and parent.data.tags["harness.complete"] == "true"
        children = client.search_runs(
            [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
        )
        assert sorted(int(c.data.tags["stage"]) for c in children) == [0, 1]
