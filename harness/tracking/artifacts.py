"""Artifacts of a run: written through MLflow from text, bytes, JSON, frames or files, and fsynced when the
store is a local folder (harness.tracking.store.Tracker.log_artifacts)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd
from mlflow import MlflowClient

from harness.durable import fsync_dir, fsync_file, naming_disk_full


def log_artifacts(client: MlflowClient, run_id: str, artifacts: Mapping[str, Any]) -> None:
    """name -> str (text) | bytes | dict/list (JSON) | DataFrame (CSV) | Path (file copied).
    A name may contain '/' (a sub-folder). Re-logging a name overwrites it, which keeps resumes clean.
    In a local artifact store the copies are on disk (fsynced) when this returns."""
    written: list[Path] = []  # where each artifact lands, relative to the run's artifact folder
    with naming_disk_full(f"the artifacts {', '.join(artifacts)}"), tempfile.TemporaryDirectory() as tmp:
        for name, obj in artifacts.items():
            rel = Path(name)
            if rel.is_absolute() or ".." in rel.parts:
                raise ValueError(f"artifact name {name!r} must be a relative path inside the run")
            if isinstance(obj, Path):
                client.log_artifact(run_id, str(obj), rel.parent.as_posix() if rel.parent.parts else None)
                written.append(rel.parent / obj.name)
                continue
            local = Path(tmp) / rel.name
            if isinstance(obj, bytes):
                local.write_bytes(obj)
            elif isinstance(obj, str):
                local.write_text(obj, encoding="utf-8")
            elif isinstance(obj, pd.DataFrame):
                # a plain 0..n-1 index carries no information; a named one (stage) does
                keep_index = not isinstance(obj.index, pd.RangeIndex) or obj.index.name is not None
                local.write_text(obj.to_csv(index=keep_index), encoding="utf-8")
            elif isinstance(obj, (dict, list)):
                local.write_text(json.dumps(obj, indent=2, default=_json_default), encoding="utf-8")
            else:
                raise TypeError(f"artifact {name!r}: unsupported type {type(obj).__name__}")
            client.log_artifact(run_id, str(local), rel.parent.as_posix() if rel.parent.parts else None)
            local.unlink()
            written.append(rel)
    _sync_local(client, run_id, written)


def _sync_local(client: MlflowClient, run_id: str, written: list[Path]) -> None:
    """fsync artifacts copied into a local store (MLflow copies without syncing): a run is set FINISHED
    after its artifacts, and after a power loss a FINISHED run must not point at a half-written file."""
    uri = client.get_run(run_id).info.artifact_uri or ""
    if urlparse(uri).scheme not in ("", "file"):
        return  # a server or object store: durability is its business
    from urllib.request import url2pathname

    root = Path(url2pathname(urlparse(uri).path))  # file URIs percent-encode spaces
    for rel in written:
        if (root / rel).is_file():
            fsync_file(root / rel)
    for folder in {(root / rel).parent for rel in written}:
        if folder.is_dir():
            fsync_dir(folder)


def read_artifact_text(client: MlflowClient, run_id: str, name: str) -> str:
    """The text of one artifact (downloaded to a temporary folder first)."""
    with tempfile.TemporaryDirectory() as tmp:
        return Path(client.download_artifacts(run_id, name, tmp)).read_text(encoding="utf-8")


def _json_default(obj: Any) -> Any:
    # lm-eval results hold numpy scalars, dtypes and callables: keep what is a number, name the rest
    if hasattr(obj, "item"):
        try:
            return obj.item()
        except (TypeError, ValueError):
            pass
    return str(obj)
