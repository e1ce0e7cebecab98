"""The disk fills during a write (simulated by patching the write to fail with ENOSPC after writing part of
its data): a checkpoint or an artifact. The run stops with one clear error naming what was being written,
the previous checkpoint stays whole and loadable, no half-written file is left, and the parent run is
FAILED with that reason (stage 0 kept for the rerun)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from fast_config import FAST_ONE_TASK
from mlflow import MlflowClient

from harness.cli import compose
from harness.durable import DiskFullError


def _full(path: str) -> None:
    """What a full disk does to a write: part of the data lands, then ENOSPC."""
    Path(path).write_bytes(b"\0" * 4096)
    raise OSError(errno.ENOSPC, "No space left on device", path)


def _parent(results: Path):
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("default").experiment_id])
    return next(r for r in runs if r.data.tags.get("harness.role") == "parent"), runs


def test_disk_full_during_checkpoint_write(tmp_path, monkeypatch):
    import safetensors.torch

    from harness.run.loop import run_experiment

    real_save, calls = safetensors.torch.save_model, []

    def save_model(model, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:  # stage 1's checkpoint; stage 0's was written
            _full(path)
        return real_save(model, path, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_model", save_model)
    results = tmp_path / "results"
    with pytest.raises(
        DiskFullError, match=r"no space left on device while writing stage 1's checkpoint"
    ) as err:
        run_experiment(compose([*FAST_ONE_TASK, f"results_dir={results}"]))
    assert "\n" not in str(err.value) and "rerun the same command" in str(err.value)

    parent, runs = _parent(results)
    assert parent.info.status == "FAILED" and parent.data.tags["harness.error"] == str(err.value)
    assert [r.info.status for r in runs if r.info.status == "RUNNING"] == []
    stages = {r.data.tags["stage"]: r.info.status for r in runs if r.data.tags.get("harness.role") == "stage"}
    assert stages == {"0": "FINISHED", "1": "FAILED"}
    files = sorted(p.name for p in (results / "checkpoints").rglob("*") if p.is_file())
    assert files == ["stage_0.safetensors"], "the previous checkpoint stays, the half-written one goes"
    from safetensors.torch import load_file

    assert load_file(str(next((results / "checkpoints").rglob("stage_0.safetensors"))))


def test_disk_full_during_artifact_write(tmp_path, monkeypatch):
    """MLflow's copy of an artifact into the local store fails: the same clear error and FAILED run."""
    import shutil

    from harness.run.loop import run_experiment

    real_copy, seen = shutil.copyfileobj, []

    def copyfileobj(src, dst, *args, **kwargs):
        if str(getattr(src, "name", "")).endswith("items.csv.gz"):
            seen.append(src.name)
            if len(seen) == 2:  # stage 1's item scores, as MLflow copies them into the store
                dst.write(b"\0" * 4096)
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfileobj", copyfileobj)
    results = tmp_path / "results"
    with pytest.raises(
        DiskFullError, match=r"no space left on device while writing the artifacts .*items.csv.gz"
    ):
        run_experiment(compose([*FAST_ONE_TASK, f"results_dir={results}"]))
    parent, runs = _parent(results)
    assert parent.info.status == "FAILED" and parent.data.tags["harness.error"].startswith("no space left")
    assert [r.info.status for r in runs if r.info.status == "RUNNING"] == []
