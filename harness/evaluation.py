"""Evaluation: lm-eval run in process on the live model, greedy, no caches.

Every stage evaluates the model as it is *now*; lm-eval's request cache (`use_cache`) is keyed by request
only and would return answers from an earlier stage, so it is never used (docs/design.md §10).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.tasks import TaskSpec

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    metrics: dict[str, dict[str, float]]  # lm-eval task -> {"exact_match,none": 0.5, ...}
    samples: list[dict[str, Any]] = field(default_factory=list)  # a few generations per task
    n_items: dict[str, int] = field(default_factory=dict)  # items actually scored per task
    raw: dict[str, Any] = field(default_factory=dict)  # lm-eval's results/configs, JSON-safe


# Entries of lm-eval's per-task results that are bookkeeping, not scores.
NON_SCORE_KEYS = ("alias", "sample_len", "sample_count", "samples")


def score_keys(task_metrics: dict[str, Any]) -> list[str]:
    return [k for k in task_metrics if "stderr" not in k and k.split(",")[0] not in NON_SCORE_KEYS]


def primary_metric(task_metrics: dict[str, float], preferred: str | None = None) -> float:
    """The score that goes into the accuracy matrix: `preferred` if given, else the first score metric."""
    keys = score_keys(task_metrics)
    if preferred:
        for key in keys:
            if key.split(",")[0] == preferred:
                return float(task_metrics[key])
        raise KeyError(f"metric {preferred!r} not in lm-eval output {keys}")
    if not keys:
        raise KeyError("lm-eval returned no metric")
    return float(task_metrics[keys[0]])


def make_task_manager(include_paths: list[str | Path], builtin_index: bool = False) -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=[str(p) for p in include_paths], include_defaults=builtin_index,
                       verbosity="ERROR")


def evaluate(
    model: Any,
    tokenizer: Any,
    task_names: list[str],
    include_paths: list[str | Path],
    *,
    builtin_index: bool = False,
    limit: int | None = None,
    batch_size: int = 16,
    max_gen_toks: int | None = None,
    log_samples: int = 5,
    seed: int = 0,
    backend: str = "hf",
    vllm_gpu_memory: float = 0.3,
) -> EvalResult:
    """Run lm-eval's `simple_evaluate` on the model as it is now for `task_names` (greedy, chat template)."""
    if not task_names:
        return EvalResult(metrics={})
    from lm_eval import simple_evaluate

    if not builtin_index:
        # Our tasks read local JSON files; never let datasets/hub reach for the network.
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # lm-eval logs every context it builds at INFO; one line per stage from the loop is what users read.
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    was_training = model.training
    model.eval()
    snapshot = None
    if backend == "vllm":
        snapshot = tempfile.TemporaryDirectory(prefix="harness-vllm-")
        lm = _vllm_lm(model, tokenizer, Path(snapshot.name), seed, vllm_gpu_memory)
    else:
        from lm_eval.models.huggingface import HFLM

        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size,
                  max_length=getattr(model.config, "max_position_embeddings", None))
    gen_kwargs = {"do_sample": False}
    if max_gen_toks:
        gen_kwargs["max_gen_toks"] = int(max_gen_toks)
    try:
        with _as_single_process():
            out = simple_evaluate(
                model=lm,
                tasks=list(task_names),
                task_manager=make_task_manager(include_paths, builtin_index),
                limit=limit,
                apply_chat_template=True,
                gen_kwargs=gen_kwargs,
                use_cache=None,
                cache_requests=False,
                log_samples=True,
                bootstrap_iters=0,
                random_seed=seed,
                numpy_random_seed=seed,
                torch_random_seed=seed,
                fewshot_random_seed=seed,
                verbosity="ERROR",
            )
    finally:
        model.train(was_training)
        if snapshot is not None:
            _release_vllm(lm)
            snapshot.cleanup()
    if out is None:
        raise RuntimeError(f"lm-eval returned no results for {list(task_names)} (LOCAL_RANK="
                           f"{os.environ.get('LOCAL_RANK')}, lm rank {getattr(lm, 'rank', '?')})")
    metrics = {
        task: {k: float(v) for k, v in vals.items() if isinstance(v, (int, float)) and not _is_nan(v)}
        for task, vals in out["results"].items()
    }
    samples: list[dict[str, Any]] = []
    n_items: dict[str, int] = {}
    for task, rows in (out.get("samples") or {}).items():
        n_items[task] = len(rows)
        for row in rows[:log_samples]:
            samples.append({
                "task": task,
                "doc_id": row.get("doc_id"),
                "prompt": _first_arg(row),
                "response": _first_response(row),
                "target": str(row.get("target", "")),
                **{m: row[m] for m in _metric_names(out, task) if m in row},
            })
    raw = {"results": out["results"], "n-samples": out.get("n-samples", {}),
           "versions": out.get("versions", {}), "config": {"limit": limit, "max_gen_toks": max_gen_toks}}
    return EvalResult(metrics=metrics, samples=samples, n_items=n_items, raw=_json_safe(raw))


def _vllm_lm(model: Any, tokenizer: Any, folder: Path, seed: int, gpu_memory: float) -> Any:
    """lm-eval's vLLM backend on a snapshot of the current weights (vLLM loads from a folder, not from a
    live torch module). The tokenizer is saved with them, so vLLM pads and stops exactly like HFLM would.

    Not exercised by the test suite (it needs a GPU and the vllm extra); config validation checks both.
    """
    from lm_eval.models.vllm_causallms import VLLM

    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return VLLM(pretrained=str(folder), tokenizer=str(folder), dtype=dtype, batch_size="auto", seed=seed,
                max_model_len=getattr(model.config, "max_position_embeddings", None),
                gpu_memory_utilization=gpu_memory)


def _release_vllm(lm: Any) -> None:
    """Give the engine's GPU memory back before training resumes."""
    import gc

    import torch

    lm.model = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextmanager
def _as_single_process():
    """lm-eval returns results only where LOCAL_RANK is 0 (its tensor-parallel heuristic for torchrun). Our
    data-parallel ranks each evaluate their own tasks on their own full replica, so each must get its results."""
    saved = os.environ.get("LOCAL_RANK")
    os.environ["LOCAL_RANK"] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("LOCAL_RANK", None)
        else:
            os.environ["LOCAL_RANK"] = saved


def merge_results(parts: list[EvalResult]) -> EvalResult:
    """One result from several processes' results on disjoint eval tasks."""
    merged = EvalResult(metrics={})
    for part in parts:
        merged.metrics.update(part.metrics)
        merged.samples.extend(part.samples)
        merged.n_items.update(part.n_items)
        for key, value in part.raw.items():
            if isinstance(value, dict) and key != "config":
                merged.raw.setdefault(key, {}).update(value)
            else:
                merged.raw.setdefault(key, value)
    return merged


def stream_eval_names(specs: list[TaskSpec]) -> list[str]:
    return [name for spec in specs for name in spec.eval_tasks]


def _metric_names(out: dict, task: str) -> list[str]:
    return [k.split(",")[0] for k in score_keys(out["results"].get(task, {}))]


def _first_arg(row: dict) -> str:
    args = row.get("arguments")
    try:
        if isinstance(args, dict):
            first = next(iter(args.values()))
            return str(first.get("arg_0", first)) if isinstance(first, dict) else str(first)
        return str(args[0][0])
    except (TypeError, IndexError, KeyError, StopIteration):
        return ""


def _first_response(row: dict) -> str:
    resp = row.get("filtered_resps") or row.get("resps") or [""]
    while isinstance(resp, (list, tuple)) and resp:
        resp = resp[0]
    return str(resp)


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)
