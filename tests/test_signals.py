"""SIGINT and SIGTERM sent to a real `harness run` process: during training, during an evaluation (inside
lm-eval's generation) and during a checkpoint write. Each stops within seconds with one line naming the
signal and the command that resumes, exit code 128 + the signal, no traceback; the MLflow runs are KILLED,
none RUNNING; the finished stage 0 is kept, and the previous checkpoint is whole.

Where the signal lands is made certain, not left to timing: the process under test announces on stdout that
it reached the point and then sleeps there (a sleep that a signal interrupts, as it interrupts real work).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fast_config import FAST_ONE_TASK
from mlflow import MlflowClient

# `harness run`, pausing at one point (argv[1]: train | eval | checkpoint) after printing "AT-POINT".
PAUSING_RUN = textwrap.dedent("""
    import sys, time
    import safetensors.torch
    import transformers
    import harness.run.loop as loop
    import harness.run.stage_eval as stage_eval
    from harness.cli import main

    point, calls = sys.argv[1], {"eval": 0, "save": 0}

    def pause():
        print("AT-POINT", flush=True)
        time.sleep(120)

    real_train = loop._train_stage
    def train_stage(run, stage, on_step=None):
        def step_hook(*args, **kwargs):
            if point == "train":
                pause()  # after the first optimizer step of stage 1
            return on_step(*args, **kwargs) if on_step else None
        return real_train(run, stage, on_step=step_hook)
    loop._train_stage = train_stage

    real_evaluate = stage_eval.evaluate
    def evaluate(*args, **kwargs):
        calls["eval"] += 1
        return real_evaluate(*args, **kwargs)
    stage_eval.evaluate = evaluate

    real_generate = transformers.GenerationMixin.generate
    def generate(self, *args, **kwargs):
        if point == "eval" and calls["eval"] == 2:  # inside lm-eval's generation of stage 1's evaluation
            pause()
        return real_generate(self, *args, **kwargs)
    transformers.GenerationMixin.generate = generate

    real_save = safetensors.torch.save_model
    def save_model(model, path, *args, **kwargs):
        calls["save"] += 1
        real_save(model, path, *args, **kwargs)
        if point == "checkpoint" and calls["save"] == 2:  # stage 1's temp file written, not yet renamed
            pause()
    safetensors.torch.save_model = save_model

    sys.exit(main(["run", *sys.argv[2:]]))
""")


def _runs(results: Path) -> list:
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    return client.search_runs([client.get_experiment_by_name("default").experiment_id])


@pytest.mark.parametrize(
    ("point", "signum"),
    [
        ("train", signal.SIGTERM),
        ("train", signal.SIGINT),
        ("eval", signal.SIGTERM),
        ("eval", signal.SIGINT),
        ("checkpoint", signal.SIGTERM),
    ],
    ids=["train-SIGTERM", "train-SIGINT", "eval-SIGTERM", "eval-SIGINT", "checkpoint-SIGTERM"],
)
def test_signal_stops_cleanly_and_keeps_what_was_done(tmp_path, point, signum, capsys):
    results = tmp_path / "results"
    # eval.decoder=hf: the pause hooks `generate`, which the static decoder does not call
    args = [*FAST_ONE_TASK, "eval.decoder=hf", f"results_dir={results}"]
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSING_RUN, point, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        for line in proc.stdout:
            if line.strip() == "AT-POINT":
                break
        else:
            pytest.fail(f"never reached {point}:\n{proc.stderr.read()[-3000:]}")
        sent = time.time()
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
        took = time.time() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum, err[-3000:]
    assert took < 10, f"took {took:.1f}s to stop"
    assert "Traceback" not in err, err[-3000:]
    last = [line for line in err.splitlines() if line.strip()][-1]
    name = signal.Signals(signum).name
    assert re.fullmatch(
        rf"harness run: stopped by {name}; finished stages are kept, resume with: harness run .*"
        rf"results_dir={re.escape(str(results))}",
        last,
    ), last

    runs = _runs(results)
    assert [r.info.status for r in runs if r.info.status == "RUNNING"] == []
    parent = next(r for r in runs if r.data.tags.get("harness.role") == "parent")
    assert parent.info.status == "KILLED"
    assert parent.data.tags["harness.error"] == f"stopped by {name}; rerun the same command to resume"
    stages = {r.data.tags["stage"]: r.info.status for r in runs if r.data.tags.get("harness.role") == "stage"}
    assert stages == {"0": "FINISHED", "1": "KILLED"}, stages

    # the previous checkpoint is whole and nothing half-written is left beside it
    files = sorted(p.name for p in (results / "checkpoints").rglob("*") if p.is_file())
    assert files == ["stage_0.safetensors"], files
    from safetensors.torch import load_file

    assert load_file(str(next((results / "checkpoints").rglob("stage_0.safetensors"))))

    if point == "train" and signum == signal.SIGTERM:  # once: the printed command resumes (in process)
        from harness.cli import main

        capsys.readouterr()
        assert main(shlex.split(last.split("resume with: harness ", 1)[1])) == 0
        assert "stages 0..0 already done" in capsys.readouterr().out
        after = [r for r in _runs(results) if r.data.tags.get("harness.role") == "parent"]
        assert [(r.info.run_id, r.info.status) for r in after] == [(parent.info.run_id, "FINISHED")]


def test_submitit_requeue_exit_marks_killed_and_the_requeued_job_resumes(tmp_path, monkeypatch, capsys):
    """Under SLURM, submitit's preemption handler resubmits the job and then calls sys.exit(-1) in the
    middle of whatever runs: the run is KILLED (not FAILED, not RUNNING) and the requeued job, the same
    config, resumes after stage 0."""
    import harness.run.loop as loop
    from harness.cli import compose

    real = loop._train_stage

    def preempted(*_args, **_kwargs):
        sys.exit(-1)  # what submitit's JobEnvironment._exit does after requeueing

    monkeypatch.setattr(loop, "_train_stage", preempted)
    args = [*FAST_ONE_TASK, f"results_dir={tmp_path}"]
    with pytest.raises(SystemExit):
        loop.run_experiment(compose(args))
    parent = next(r for r in _runs(tmp_path) if r.data.tags.get("harness.role") == "parent")
    assert parent.info.status == "KILLED" and "SystemExit(-1)" in parent.data.tags["harness.error"]

    monkeypatch.setattr(loop, "_train_stage", real)
    capsys.readouterr()
    loop.run_experiment(compose(args))  # the requeued job
    assert "stages 0..0 already done" in capsys.readouterr().out
    parents = [r for r in _runs(tmp_path) if r.data.tags.get("harness.role") == "parent"]
    assert [(p.info.run_id, p.info.status) for p in parents] == [(parent.info.run_id, "FINISHED")]


def test_slurm_launcher_requeues_on_time_limit():
    """The SLURM launcher config the harness ships lets submitit requeue a job that reaches its time limit
    (submitit's default, 0, ends it), and requeues go through the launcher's checkpoint hook."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher

    from harness.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher.max_num_timeout >= 1
    assert callable(getattr(BaseSubmititLauncher, "checkpoint", None))


def test_ctrl_c_in_tasks_probe_is_one_line(monkeypatch, capsys):
    """Ctrl-C in any command (here `tasks probe`, which used to print an 88-line traceback): one line, 130."""
    import harness.tasktools.commands as commands
    from harness.cli import main

    def probe(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "cmd_probe", probe)
    capsys.readouterr()
    assert main(["tasks", "probe", "tooluse"]) == 130
    assert capsys.readouterr().err == "harness tasks: stopped by SIGINT\n"
