"""Bad input and faults: each case checks the message the user sees AND that nothing finished was lost.

One finished reference run (module fixture) lives in a shared results dir; every failing run below uses
the same results dir and must leave that run, its stages and its checkpoint untouched. (A stream that
repeats a task and an unknown task name are covered in tests/test_loop.py; a SIGKILL during training
there too.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from fast_config import FAST_ONE_TASK
from mlflow import MlflowClient

from harness.cli import compose
from harness.tasks.spec import TASKS_ROOT, TaskDataError

# The tiny-model configuration of tests/test_loop.py with one task (stage 0 = base, stage 1 = tooluse).
FAST = FAST_ONE_TASK


def _client(results: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{results / 'mlflow.db'}")


def _stage_runs(client: MlflowClient, parent_id: str) -> dict[int, str]:
    exp = client.get_run(parent_id).info.experiment_id
    runs = client.search_runs(
        [exp], f"tags.`mlflow.parentRunId` = '{parent_id}' and tags.`harness.role` = 'stage'"
    )
    return {int(r.data.tags["stage"]): r.info.run_id for r in runs if r.info.status == "FINISHED"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished run (also the uninterrupted reference of the SIGKILL test)."""
    from harness.run.loop import run_experiment

    results = tmp_path_factory.mktemp("shared-results")
    out = run_experiment(compose([*FAST, f"results_dir={results}"]))
    client = _client(results)
    stages = _stage_runs(client, out["parent_run_id"])
    assert sorted(stages) == [0, 1]
    ckpts = sorted((results / "checkpoints").rglob("*.safetensors"))
    return {
        "results": results,
        "parent": out["parent_run_id"],
        "stages": stages,
        "R": out["R"],
        "checkpoints": {p: p.read_bytes() for p in ckpts},
    }


def _assert_intact(ref: dict) -> None:
    """The reference run is still complete, with the same stage runs and byte-identical checkpoints."""
    client = _client(ref["results"])
    parent = client.get_run(ref["parent"])
    assert parent.info.status == "FINISHED" and parent.data.tags["harness.complete"] == "true"
    assert _stage_runs(client, ref["parent"]) == ref["stages"]
    for path, data in ref["checkpoints"].items():
        assert path.read_bytes() == data


def _parent_count(results: Path) -> int:
    client = _client(results)
    exp = client.get_experiment_by_name("default")
    return len(client.search_runs([exp.experiment_id], "tags.`harness.role` = 'parent'"))


def _user_task(root: Path, lines: list[str]) -> Path:
    """A copy of the built-in tooluse task folder under its own name (a copy that kept the name would collide
    with the built-in task), with our own train.jsonl."""
    folder = root / "mytask"
    shutil.copytree(TASKS_ROOT / "tooluse", folder)
    meta = (folder / "task.yaml").read_text().replace("name: tooluse", "name: mytask")
    (folder / "task.yaml").write_text(meta.replace("eval_tasks: [tooluse]", "eval_tasks: [mytask]"))
    (folder / "mytask.yaml").write_text(
        (folder / "tooluse.yaml").read_text().replace("task: tooluse", "task: mytask")
    )
    (folder / "tooluse.yaml").unlink()
    (folder / "train.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return folder


GOOD = json.dumps({"prompt": "Say hi.", "demonstration": "hi"})


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([GOOD, '{"prompt": "x", "demonstration": "y"'], r"train.jsonl:2: malformed JSON"),
        ([GOOD, GOOD, json.dumps({"demonstration": "y"})], r"train.jsonl:3: missing field\(s\) \['prompt'\]"),
        ([json.dumps({"prompt": "x"})], r"train.jsonl:1: missing field\(s\) \['demonstration'\]"),
        ([], r"train.jsonl: no items \(the file is empty\)"),
    ],
    ids=["malformed-json", "missing-prompt", "missing-demonstration", "empty"],
)
def test_bad_task_file_names_file_and_line(finished, tmp_path, lines, expected):
    from harness.run.loop import run_experiment

    folder = _user_task(tmp_path, lines)
    before = _parent_count(finished["results"])
    cfg = compose([*FAST, f"results_dir={finished['results']}", f"stream.tasks=[tooluse,{folder}]"])
    with pytest.raises(TaskDataError, match=expected) as err:
        run_experiment(cfg)
    assert str(folder / "train.jsonl") in str(err.value)
    assert _parent_count(finished["results"]) == before, "bad data must fail before any run is opened"
    _assert_intact(finished)


def test_prompt_plus_demonstration_longer_than_context_names_the_item(finished, tmp_path):
    from harness.run.loop import run_experiment

    long_item = json.dumps({"prompt": "Repeat.", "demonstration": "word " * 400, "id": "too-long"})
    folder = _user_task(tmp_path, [GOOD, long_item])
    before = _parent_count(finished["results"])
    for method in ("sft", "sdft"):  # SFT would otherwise cut the demonstration silently
        cfg = compose(
            [
                *FAST,
                f"results_dir={finished['results']}",
                f"method={method}",
                f"stream.tasks=[{folder}]",
                "model.max_length=256",
            ]
        )
        with pytest.raises(
            ValueError,
            match=r"train.jsonl:2 id=too-long: prompt \+ demonstration have \d+ tokens, "
            r"more than model.max_length=256",
        ):
            run_experiment(cfg)
    assert _parent_count(finished["results"]) == before
    _assert_intact(finished)


def test_unknown_model_name_is_one_clear_error(finished):
    """Offline (as the tests run), an uncached hub id is refused before anything loads (transformers would
    retry the hub for about a minute and then blame the repo id's syntax)."""
    from harness.run.loop import run_experiment

    before = _parent_count(finished["results"])
    cfg = compose([*FAST, f"results_dir={finished['results']}", "model=hf", "model.name=no/such-model"])
    with pytest.raises(
        ValueError,
        match=r"model.name=no/such-model: not in the local Hugging Face cache, and "
        r"HF_HUB_OFFLINE is set",
    ):
        run_experiment(cfg)
    assert _parent_count(finished["results"]) == before, "the model is checked before the parent run opens"
    _assert_intact(finished)


def test_model_that_fails_to_load_leaves_no_store(tmp_path):
    """A folder that looks like a model but is not one passes the checks and fails in transformers: the
    error is one line and results_dir holds no MLflow store (the tracker opens after the model)."""
    from harness.run.loop import run_experiment

    fake = tmp_path / "fake-model"
    fake.mkdir()
    (fake / "config.json").write_text("{}")
    (fake / "tokenizer_config.json").write_text("{}")
    results = tmp_path / "results"
    # the tokenizer, loaded alone for the length checks before the weights, is what fails first now
    with pytest.raises(ValueError, match=rf"model.name='{fake}'(: its tokenizer)? could not be loaded"):
        run_experiment(compose([*FAST, f"results_dir={results}", "model=hf", f"model.name={fake}"]))
    assert not (results / "mlflow.db").exists() and not (results / "mlartifacts").exists()


def test_late_crash_marks_the_parent_failed(tmp_path, monkeypatch):
    """Any error once the parent run is open (here: a bug inside stage 1's training) leaves it FAILED with
    the error as its tag, and no stage run RUNNING; stage 0 stays logged for the rerun."""
    import harness.run.loop
    from harness.run.loop import run_experiment

    def crash(*_args, **_kwargs):
        raise RuntimeError("boom in training")

    monkeypatch.setattr(harness.run.loop, "_train_stage", crash)
    results = tmp_path / "results"
    with pytest.raises(RuntimeError, match="boom in training") as err:
        run_experiment(compose([*FAST, f"results_dir={results}"]))
    client = _client(results)
    exp = client.get_experiment_by_name("default")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("harness.role") == "parent")
    assert err.value.parent_run_id == parent.info.run_id
    assert parent.info.status == "FAILED"
    assert parent.data.tags["harness.error"] == "RuntimeError: boom in training"
    assert [r.info.status for r in runs if r.info.status == "RUNNING"] == []
    assert sorted(_stage_runs(client, parent.info.run_id)) == [0]


def test_unknown_method_name_in_schema_lists_valid_ones():
    with pytest.raises(ValueError, match=r"method.name='nosuch' is not known; valid values: .*\bsdft\b"):
        compose([*FAST, "method.name=nosuch"])


def test_non_finite_loss_stops_the_stage_and_keeps_earlier_ones(finished):
    """lr=1e30: the first step with a non-zero lr (step 1, after one warmup step at lr 0) throws the weights
    to ~1e30, so the next forward overflows float32 and the loss is NaN/inf."""
    from harness.run.loop import StageFailedError, run_experiment

    cfg = compose([*FAST, f"results_dir={finished['results']}", "trainer.lr=1e30"])
    with pytest.raises(
        StageFailedError,
        match=r"stage 1 \(tooluse\): non-finite training loss \S+ at optimizer "
        r"step \d+; .*stages 0..0 are logged and kept",
    ) as err:
        run_experiment(cfg)
    client = _client(finished["results"])
    exp = client.get_experiment_by_name("default")
    failed = client.search_runs(
        [exp.experiment_id], "tags.`harness.role` = 'parent' and params.`trainer.lr` = '1e+30'"
    )
    assert len(failed) == 1
    parent = failed[0]
    assert parent.info.status == "FAILED" and parent.data.tags["harness.error"] == str(err.value)
    assert sorted(_stage_runs(client, parent.info.run_id)) == [0], "stage 0 stays logged, stage 1 is not"
    assert "harness.complete" not in parent.data.tags
    _assert_intact(finished)


# ---- the command line: one line on stderr, exit code 1, no traceback --------------------------------------


def _harness_run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_errors_are_one_clear_line(finished, tmp_path):
    results = finished["results"]
    # unknown option of a config group: Hydra lists the options (composition fails before our code runs)
    for group, valid in (("method", "sft_replay"), ("suite", "general")):
        proc = _harness_run(*FAST, f"results_dir={results}", f"{group}=nosuch")
        assert proc.returncode == 1
        assert (
            f"Could not find '{group}/nosuch'" in proc.stderr
            and f"Available options in '{group}'" in proc.stderr
        )
        assert valid in proc.stderr

    # bad task data: our message, not a Hydra traceback
    folder = _user_task(tmp_path, [GOOD, "{not json"])
    proc = _harness_run(*FAST, f"results_dir={results}", f"stream.tasks=[{folder}]")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"harness run: error: {folder / 'train.jsonl'}:2: malformed JSON" in proc.stderr

    # a results dir that cannot be created (under a regular file: blocks even root, unlike chmod)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = _harness_run(*FAST, f"results_dir={blocker / 'results'}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"harness run: error: results_dir {blocker / 'results'} is not writable" in proc.stderr
    _assert_intact(finished)


def test_unwritable_results_dir_in_process(tmp_path):
    from harness.run.loop import run_experiment

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="results_dir .* is not writable"):
        run_experiment(compose([*FAST, f"results_dir={blocker / 'results'}"]))


# ---- SIGKILL during evaluation ----------------------------------------------------------------------------

# `harness run` with the real evaluation, announcing on stdout when each evaluation starts and ends.
TRACED_RUN = textwrap.dedent("""
    import sys
    import harness.run.stage_eval as stage_eval
    from harness.cli import main

    real = stage_eval.evaluate
    def traced(*args, **kwargs):
        print("EVAL-START", flush=True)
        out = real(*args, **kwargs)
        print("EVAL-END", flush=True)
        return out
    stage_eval.evaluate = traced
    sys.exit(main(["run", *sys.argv[1:]]))
""")


def test_sigkill_during_evaluation_then_rerun_resumes(finished, tmp_path, capsys):
    from harness.run.loop import run_experiment

    results = tmp_path / "run"
    args = [*FAST, f"results_dir={results}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", TRACED_RUN, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    starts, deadline = 0, time.time() + 300
    for line in proc.stdout:
        starts += line.strip() == "EVAL-START"
        if starts == 2 or time.time() > deadline:  # stage 1's evaluation (after its training) has begun
            break
    # Kill at once: building lm-eval's tasks alone takes far longer than delivering a signal, and an idle
    # machine finishes the FAST evaluation in about a second (checked below, not assumed).
    proc.send_signal(signal.SIGKILL)
    rest = proc.stdout.read()
    proc.wait()
    assert starts == 2 and proc.returncode == -signal.SIGKILL
    assert "EVAL-END" not in rest, "the kill must land inside stage 1's evaluation"
    client = _client(results)
    parent_id = client.search_runs(
        [client.get_experiment_by_name("default").experiment_id], "tags.`harness.role` = 'parent'"
    )[0].info.run_id
    stage0 = _stage_runs(client, parent_id)
    assert sorted(stage0) == [0]

    capsys.readouterr()
    run_experiment(compose(args))  # the rerun, in process to save a second start-up
    assert "stages 0..0 already done" in capsys.readouterr().out
    assert _parent_count(results) == 1, "the rerun continues the same parent run"
    stages = _stage_runs(client, parent_id)
    assert sorted(stages) == [0, 1] and stages[0] == stage0[0], "stage 0 was kept, not redone"
    path = client.download_artifacts(parent_id, "accuracy_matrix.csv", str(tmp_path / "dl"))
    pd.testing.assert_frame_equal(pd.read_csv(path, index_col=0), finished["R"], check_names=False)
    # The tiny model scores 0 everywhere, so the matrix alone proves little: the stage-1 training losses
    # and the final weights must equal the uninterrupted run's too.
    ref_client = _client(finished["results"])
    for key in ("train/first_loss", "train/last_loss"):
        assert (
            client.get_run(stages[1]).data.metrics[key]
            == ref_client.get_run(finished["stages"][1]).data.metrics[key]
        )
    ours = next((results / "checkpoints").rglob("stage_1.safetensors")).read_bytes()
    theirs = next(p for p in finished["checkpoints"] if p.name == "stage_1.safetensors").read_bytes()
    assert ours == theirs


# ---- checkpoints are never half-written -------------------------------------------------------------------


def _uniform_value(path: Path) -> float:
    """Load a checkpoint of `torch.nn.Linear(1024, 1024, bias=False)` and return its single value."""
    from harness.run.checkpoints import load_checkpoint

    model = torch.nn.Linear(1024, 1024, bias=False)
    assert load_checkpoint(model, path.parent, int(path.stem.split("_")[1]))
    values = model.weight.unique()
    assert values.numel() == 1, "a checkpoint mixes two writes"
    return float(values[0].detach())


def test_checkpoint_is_fsynced_before_rename_and_reads_back(tmp_path, monkeypatch):
    """The data is on disk before the rename and the folder after it (a power loss cannot leave the new
    name pointing at unwritten data); what was written loads back equal."""
    from harness.run.checkpoints import load_checkpoint, save_checkpoint

    synced: list[tuple[str, bool]] = []  # (path fsynced, whether the final name existed at that moment)
    real_fsync = os.fsync
    final = tmp_path / "stage_2.safetensors"

    def recording_fsync(fd: int) -> None:
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), final.exists()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 32)
    assert save_checkpoint(model, tmp_path, 2, "last") == final
    assert synced == [(str(tmp_path / ".stage_2.safetensors.tmp"), False), (str(tmp_path), True)]
    copy = torch.nn.Linear(64, 32)
    assert load_checkpoint(copy, tmp_path, 2)
    for ours, theirs in zip(model.state_dict().values(), copy.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs)


def test_local_artifacts_are_fsynced(tmp_path, monkeypatch):
    """Artifacts copied into a local store are on disk before the run that holds them can be FINISHED."""
    from harness.tracking.store import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", tmp_path / "mlartifacts")
    run = tracker.client.create_run(tracker.experiment_id).info.run_id
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    tracker.log_artifacts(run, {"a.txt": "hello", "sub/b.json": {"x": 1}})
    assert tracker.read_artifact_text(run, "a.txt") == "hello"
    assert json.loads(tracker.read_artifact_text(run, "sub/b.json")) == {"x": 1}
    names = {Path(p).name for p in synced}
    assert {"a.txt", "b.json", "sub"} <= names


def test_leftover_temp_file_does_not_break_loading_or_saving(tmp_path):
    from harness.run.checkpoints import save_checkpoint

    model = torch.nn.Linear(1024, 1024, bias=False)
    torch.nn.init.constant_(model.weight, 1.0)
    final = save_checkpoint(model, tmp_path, 1, "last")
    # what a write killed midway leaves behind: a truncated temp file next to the good checkpoint
    (tmp_path / ".stage_1.safetensors.tmp").write_bytes(final.read_bytes()[:1000])
    assert _uniform_value(final) == 1.0
    torch.nn.init.constant_(model.weight, 2.0)
    assert save_checkpoint(model, tmp_path, 1, "last") == final
    assert _uniform_value(final) == 2.0 and not (tmp_path / ".stage_1.safetensors.tmp").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage_1.safetensors"]


# Overwrites stage 1's checkpoint again and again, a different constant each time (~64 MB per write).
WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    import torch
    from harness.run.checkpoints import save_checkpoint

    model = torch.nn.Linear(4096, 4096, bias=False)
    for k in range(1, 10_000):
        torch.nn.init.constant_(model.weight, float(k))
        save_checkpoint(model, Path(sys.argv[1]), 1, "last")
        print(k, flush=True)
""")


def test_sigkill_during_checkpoint_write_leaves_previous_checkpoint(tmp_path):
    from safetensors.torch import load_file

    tmp = tmp_path / ".stage_1.safetensors.tmp"
    final = tmp_path / "stage_1.safetensors"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    caught = False
    try:
        assert proc.stdout.readline().strip() == "1"  # one complete checkpoint exists
        deadline = time.time() + 60
        while not caught and time.time() < deadline:
            if not tmp.exists():
                time.sleep(0.001)
                continue
            # A write is under way. Freeze the writer and look again: if the temp file is still there, the
            # writer is stopped before its os.replace, i.e. inside save_checkpoint, and the kill lands there.
            # (Polling alone is too slow: a 64 MB write lives ~50 ms and often ends before the kill arrives.)
            proc.send_signal(signal.SIGSTOP)
            time.sleep(0.05)
            caught = tmp.exists()
            if not caught:
                proc.send_signal(signal.SIGCONT)
        written = tmp.stat().st_size if caught else None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert caught, "never caught the writer inside a write"
    completed = [int(k) for k in proc.stdout.read().split()]
    last_done = max([1, *completed])
    assert tmp.exists() and tmp.stat().st_size == written
    weight = load_file(str(final))["weight"]
    values = weight.unique()
    assert values.numel() == 1, "the checkpoint mixes two writes"
    # the previous checkpoint: the last completed write (the kill may come between a rename and its print)
    assert float(values[0]) in (float(last_done), float(last_done + 1))
