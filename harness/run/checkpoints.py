"""Stage checkpoints: the student's weights after each stage, written atomically and durably before the
stage is marked done, so that a resumed run continues from whole weights."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.config import Config, results_path
from harness.durable import naming_disk_full, replace_durably


def checkpoint_dir(cfg: Config, key: str) -> Path:
    return results_path(cfg) / "checkpoints" / cfg.experiment_name / key


def save_checkpoint(model: torch.nn.Module, directory: Path, stage: int, policy: str) -> Path | None:
    """Write stage weights atomically and durably (temp file, fsync, rename, fsync the folder); apply the
    keep policy afterwards."""
    if policy == "none":
        return None
    from safetensors.torch import save_model

    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"stage_{stage}.safetensors"
    tmp = directory / f".stage_{stage}.safetensors.tmp"
    try:
        with naming_disk_full(f"stage {stage}'s checkpoint {final}"):
            save_model(model, str(tmp))
            # atomic (a reader sees the old file or the new one, never half of one) and durable: the data
            # and the rename are on disk before the stage's run is marked FINISHED, even across a power loss
            replace_durably(tmp, final)
    except BaseException:  # a full disk, a signal: the half-written file goes, the previous one stays
        tmp.unlink(missing_ok=True)
        raise
    if policy == "last":
        for old in directory.glob("stage_*.safetensors"):
            if old != final:
                old.unlink(missing_ok=True)
    return final


def load_checkpoint(model: torch.nn.Module, directory: Path, stage: int) -> bool:
    path = directory / f"stage_{stage}.safetensors"
    if not path.is_file():
        return False
    from safetensors.torch import load_model

    load_model(model, str(path), device=str(next(model.parameters()).device))
    return True
