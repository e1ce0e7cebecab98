"""Stage 0 evaluated once per sweep: the untouched model's scores, shared by every run that would repeat them.

Stage 0 evaluates the base model, greedily, before any training: for a given model, precision, set of eval
tasks (their files as they are now) and evaluation settings it is the same computation in every run of a
sweep over methods, seeds or learning rates, and it costs as much as any other stage's evaluation. The
first run stores its result under `<results_dir>/base_eval_cache/<key>.pkl`; later runs with the same key
read it instead of evaluating again (their MLflow stage-0 run is logged as usual, tagged as reused).

The key covers everything that can change a stage-0 score: the model section, the resolved compute
precision, the evaluation settings, the eval task names and the content of every file under the task
folders, the library versions and the harness's own evaluation code. Anything else (method, seed, trainer)
cannot change the base model's greedy answers. Off with `eval.reuse_base=false`.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import harness
from harness.durable import write_bytes_durably

FOLDER = "base_eval_cache"
_EVAL_KEYS = (
    "limit",
    "suite_limit",
    "decoder",  # static and hf give the same greedy answers in the tests, but a cache is not the place to rely on it
    "batch_size",
    "max_gen_toks",
    "log_samples",
    "backend",
    "allow_code_execution",
    "auto_batch_size",
)
_TASK_FILE_SUFFIXES = (".jsonl", ".json", ".yaml", ".yml", ".py", ".csv", ".txt")


def _files_digest(folders: list[str], digest: Any) -> None:
    """Every task file under `folders`, path and content, in a fixed order."""
    for folder in sorted(set(folders)):
        root = Path(folder)
        if not root.is_dir():
            continue
        for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in _TASK_FILE_SUFFIXES):
            if "__pycache__" in path.parts:
                continue
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())


def cache_key(
    model_cfg: dict,
    eval_cfg: dict,
    compute: str,
    eval_tasks: list[str],
    include_paths: list[str],
    builtin_index: bool,
) -> str:
    """A hash of what determines the base model's stage-0 scores (see the module docstring)."""
    import lm_eval
    import torch
    import transformers

    settings = {
        "model": model_cfg,
        "compute": compute,
        "eval": {k: eval_cfg.get(k) for k in _EVAL_KEYS},
        "tasks": list(eval_tasks),
        "builtin_index": builtin_index,
        "versions": [lm_eval.__version__, transformers.__version__, torch.__version__],
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    _files_digest(include_paths, digest)
    package = Path(harness.__file__).parent
    for module in ("eval/lmeval.py", "eval/scoring.py", "models.py", "tracking/store.py", "tracking/keys.py"):
        digest.update((package / module).read_bytes())
    return digest.hexdigest()[:20]


def load(results_dir: Path, key: str) -> tuple[dict[str, float], Any] | None:
    """(metrics, EvalResult) stored under `key`, or None; an unreadable entry counts as absent."""
    path = Path(results_dir) / FOLDER / f"{key}.pkl"
    if not path.is_file():
        return None
    try:
        metrics, result = pickle.loads(path.read_bytes())
    except Exception:  # a file from another version of the code: evaluate again and overwrite it
        return None
    return metrics, result


def store(results_dir: Path, key: str, metrics: dict[str, float], result: Any) -> None:
    folder = Path(results_dir) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    write_bytes_durably(folder / f"{key}.pkl", pickle.dumps((metrics, result)))
