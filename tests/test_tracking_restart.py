"""A real `mlflow server` stopped in the middle of a run (before stage 1 trains) and started again.

What the harness does (README, Guarantees): it keeps MLflow's own bounded retry (MLFLOW_HTTP_REQUEST_MAX_RETRIES=7,
backoff factor 2: about four minutes in all). A server back within that time: the run goes on and finishes as
if nothing happened. A server away for longer: the run stops with one line saying so and how to resume, and
the same command, rerun once the server is back, resumes after the finished stages.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fast_config import FAST_ONE_TASK
from mlflow import MlflowClient
from test_remote_tracking import _free_port, _wait_healthy

from harness.cli import compose


class Server:
    """`mlflow server` on a fixed port and store, which can be stopped and started again."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = self.root / "server.log"
        with log.open("a") as fh:
            self.proc = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("mlflow")),
                    "server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                    "--backend-store-uri",
                    f"sqlite:///{self.root / 'mlflow.db'}",
                    "--artifacts-destination",
                    str(self.root / "artifacts"),
                    "--serve-artifacts",
                ],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                start_new_session=True,
            )
        _wait_healthy(self.url, self.proc, log)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path / "server")
    srv.root.mkdir()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _stop_before_stage_1(monkeypatch, server: Server, restart_after_s: float | None) -> dict:
    """Stop the server when stage 1 starts training (and start it again after a while, in a thread)."""
    import harness.run.loop as loop

    real, seen = loop._train_stage, {}

    def train_stage(run, stage, *args, **kwargs):
        if stage == 1 and not seen:
            server.stop()
            seen["stopped"] = True
            if restart_after_s is not None:
                threading.Timer(restart_after_s, server.start).start()
        return real(run, stage, *args, **kwargs)

    monkeypatch.setattr(loop, "_train_stage", train_stage)
    return seen


def _parent(url: str):
    client = MlflowClient(url)
    exp = client.get_experiment_by_name("default")
    return client, client.search_runs([exp.experiment_id], "tags.`harness.role` = 'parent'")


def test_server_back_within_the_retries_the_run_goes_on(server, tmp_path, monkeypatch):
    from harness.run.loop import run_experiment

    seen = _stop_before_stage_1(monkeypatch, server, restart_after_s=3)
    out = run_experiment(compose([*FAST_ONE_TASK, f"results_dir={tmp_path}", f"tracking_uri={server.url}"]))
    assert seen == {"stopped": True}
    client, parents = _parent(server.url)
    assert [p.info.run_id for p in parents] == [out["parent_run_id"]]
    assert parents[0].info.status == "FINISHED" and parents[0].data.tags["harness.complete"] == "true"
    stages = client.search_runs(
        [parents[0].info.experiment_id], f"tags.`mlflow.parentRunId` = '{out['parent_run_id']}'"
    )
    assert sorted((s.data.tags["stage"], s.info.status) for s in stages) == [
        ("0", "FINISHED"),
        ("1", "FINISHED"),
    ]
    stage1 = next(s for s in stages if s.data.tags["stage"] == "1")
    assert "train/last_loss" in stage1.data.metrics  # logged after the restart


def test_server_away_longer_stops_cleanly_and_the_rerun_resumes(server, tmp_path, monkeypatch, capsys):
    from harness.run.loop import run_experiment

    # MLflow's retries cut short, so that "longer than the retries" takes seconds here
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    args = [*FAST_ONE_TASK, f"results_dir={tmp_path}", f"tracking_uri={server.url}"]
    _stop_before_stage_1(monkeypatch, server, restart_after_s=None)
    with pytest.raises(
        ConnectionError, match=r"stopped answering during the run.*rerun the same command"
    ) as err:
        run_experiment(compose(args))
    assert "\n" not in str(err.value)

    server.start()
    monkeypatch.undo()  # the real stage training, MLflow's own retry settings
    capsys.readouterr()
    out = run_experiment(compose(args))
    assert "stages 0..0 already done" in capsys.readouterr().out
    _, parents = _parent(server.url)
    assert [p.info.run_id for p in parents] == [out["parent_run_id"]] == [err.value.parent_run_id]
    assert parents[0].info.status == "FINISHED"
