"""A real `mlflow server` on 127.0.0.1: an experiment logs to it over HTTP and reads back; a dead server
fails at start-up, before any training.

The experiment is the tiny-model FAST configuration of tests/test_loop.py with one task, not
`experiment=smoke`: the smoke config trains the real 135M model for minutes, and what this test checks
(runs, stages, metrics and artifacts travel over HTTP and read back) does not depend on the model.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from fast_config import FAST_ONE_TASK
from mlflow import MlflowClient

from harness.cli import compose

FAST = FAST_ONE_TASK


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"mlflow server not healthy after {timeout_s}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` with a SQLite store and proxied artifacts in a temp dir; always stopped."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    mlflow_exe = Path(sys.executable).with_name("mlflow")
    log = root / "server.log"
    # The job-execution backend would start several `huey` worker processes we do not need; they also
    # outlive a SIGTERM to the server, hence a process group of our own that we stop as a whole.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [
                str(mlflow_exe),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{root / 'mlflow.db'}",
                "--artifacts-destination",
                str(root / "artifacts"),
                "--serve-artifacts",
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        _wait_healthy(url, proc, log)
        yield url, root
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_experiment_logs_to_a_remote_server_and_reads_back(mlflow_server, tmp_path):
    from harness.run.loop import run_experiment

    url, server_root = mlflow_server
    out = run_experiment(
        compose([*FAST, f"results_dir={tmp_path}", f"tracking_uri={url}", "experiment_name=remote"])
    )

    client = MlflowClient(url)  # a fresh reader: everything comes back over HTTP
    exp = client.get_experiment_by_name("remote")
    parents = client.search_runs([exp.experiment_id], "tags.`harness.role` = 'parent'")
    assert [p.info.run_id for p in parents] == [out["parent_run_id"]]
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["harness.complete"] == "true"
    assert parent.data.params["tracking_uri"] == url
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(int(c.data.tags["stage"]) for c in children) == [0, 1]
    assert all(c.info.status == "FINISHED" for c in children)
    assert [m.step for m in client.get_metric_history(parent.info.run_id, "score/tooluse")] == [0, 1]

    # Artifacts go through the server (mlflow-artifacts:/), land in its folder, not in our results_dir.
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:")
    path = client.download_artifacts(parent.info.run_id, "accuracy_matrix.csv", str(tmp_path / "dl"))
    pd.testing.assert_frame_equal(pd.read_csv(path, index_col=0), out["R"], check_names=False)
    assert list((server_root / "artifacts").rglob("accuracy_matrix.csv"))
    assert not (tmp_path / "mlflow.db").exists(), "nothing may go to the local SQLite store"

    # A rerun of the same command against the server finds the complete run: no new parent, no new stages.
    again = run_experiment(
        compose([*FAST, f"results_dir={tmp_path}", f"tracking_uri={url}", "experiment_name=remote"])
    )
    assert again["parent_run_id"] == out["parent_run_id"]
    assert len(client.search_runs([exp.experiment_id], "tags.`harness.role` = 'stage'")) == 2


def test_unreachable_tracking_server_fails_before_training(tmp_path):
    started = time.time()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "run",
            *FAST,
            f"results_dir={tmp_path}",
            "tracking_uri=http://127.0.0.1:9",
        ],  # port 9 (discard): nothing listens there
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert "harness run: error: MLflow tracking server http://127.0.0.1:9 is not reachable" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "[stage" not in proc.stdout, "no stage may run"
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "mlflow.db").exists()
    assert time.time() - started < 120  # seconds of imports, not MLflow's minutes of retries
