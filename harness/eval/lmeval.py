"""Evaluation: lm-eval run in process on the live model, greedy, no caches.

Every stage evaluates the model as it is *now*; lm-eval's request cache (`use_cache`) is keyed by request
only and would return answers from an earlier stage, so it is never used (docs/design.md §10).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.decoding.choose import pick
from harness.eval.static_lm import static_hflm_class
from harness.models import autocast, precision_of
from harness.tasks.spec import TaskSpec

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    metrics: dict[str, dict[str, float]]  # lm-eval task -> {"exact_match,none": 0.5, ...}
    samples: list[dict[str, Any]] = field(default_factory=list)  # a few generations per task
    n_items: dict[str, int] = field(default_factory=dict)  # items actually scored per task
    raw: dict[str, Any] = field(default_factory=dict)  # lm-eval's results/configs, JSON-safe
    # every scored item (not only `samples`): task, doc_id, filter, prompt, generation, target, scores
    items: list[dict[str, Any]] = field(default_factory=list)


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
    """lm-eval's TaskManager for these folders (and its own index when `builtin_index`), built once per
    process: indexing lm-eval's ~10,000 task YAML files takes seconds and every stage would redo it."""
    return _task_manager(tuple(str(p) for p in include_paths), bool(builtin_index))


@functools.lru_cache(maxsize=8)
def _task_manager(include_paths: tuple[str, ...], builtin_index: bool) -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(include_paths), include_defaults=builtin_index)


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
    vllm_snapshot: Path | None = None,
    max_length: int | None = None,
    allow_code_execution: bool = False,
    auto_batch_size: bool = True,
    decoder: str = "static",
) -> EvalResult:
    """Run lm-eval's `simple_evaluate` on the model as it is now for `task_names` (greedy, chat template).

    `max_length` (model.max_length) bounds the context lm-eval and vLLM plan for: a model's own maximum
    (131072 for Llama-3.1) would size vLLM's KV cache and HFLM's automatic batch probe for contexts no stage
    uses. `vllm_snapshot`: the folder `write_snapshot` filled with this stage's weights (backend vllm).
    `auto_batch_size`: on CUDA lm-eval finds the largest batch that fits instead of `batch_size`.
    `allow_code_execution`: lets tasks marked unsafe_code (HumanEval) execute the model's code.
    `decoder`: greedy generation of the hf backend on harness.decoding ("static", falling back to `generate`
    where it cannot run) or on lm-eval's own `generate` ("hf").
    """
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
    if allow_code_execution:
        os.environ["HF_ALLOW_CODE_EVAL"] = "1"  # HF evaluate's code_eval refuses to run code without it
    context = _context_length(model, max_length)
    device = next(model.parameters()).device
    if backend == "vllm":
        if vllm_snapshot is None:
            raise ValueError(
                "eval.backend=vllm evaluates a snapshot of the stage's weights: pass vllm_snapshot "
                "(a folder written by harness.eval.lmeval.write_snapshot)"
            )
        lm = _vllm_lm(Path(vllm_snapshot), seed, vllm_gpu_memory, context, device)
    else:
        from lm_eval.models.huggingface import HFLM

        hf_batch = "auto" if auto_batch_size and device.type == "cuda" else batch_size
        model_class = static_hflm_class() if pick(model, decoder)[0] == "static" else HFLM
        lm = model_class(
            pretrained=model,
            tokenizer=tokenizer,
            batch_size=hf_batch,
            max_length=context,
            **_hflm_precision(model_class, model),
        )
    gen_kwargs = {"do_sample": False}
    if max_gen_toks:
        gen_kwargs["max_gen_toks"] = int(max_gen_toks)
    try:
        # the model's compute dtype for the whole run: autocast casts each weight once, not once per batch
        with _as_single_process(), autocast(model):
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
                confirm_run_unsafe_code=allow_code_execution,
            )
    finally:
        model.train(was_training)
        if backend == "vllm":
            _release_vllm(lm)
    if out is None:
        raise RuntimeError(
            f"lm-eval returned no results for {list(task_names)} (LOCAL_RANK="
            f"{os.environ.get('LOCAL_RANK')}, lm rank {getattr(lm, 'rank', '?')})"
        )
    metrics = {
        task: {k: float(v) for k, v in vals.items() if isinstance(v, (int, float)) and not _is_nan(v)}
        for task, vals in out["results"].items()
    }
    samples: list[dict[str, Any]] = []
    n_items: dict[str, int] = {}
    items: list[dict[str, Any]] = []
    for task, rows in (out.get("samples") or {}).items():
        n_items[task] = len({row.get("doc_id") for row in rows})  # a task with 2 filters logs each doc twice
        items += [_item(task, row, _metric_names(out, task)) for row in rows]
        for row in rows[:log_samples]:
            samples.append(
                {
                    "task": task,
                    "doc_id": row.get("doc_id"),
                    "prompt": _first_arg(row),
                    "response": _first_response(row),
                    "target": str(row.get("target", "")),
                    **{m: row[m] for m in _metric_names(out, task) if m in row},
                }
            )
    raw = {
        "results": out["results"],
        "n-samples": out.get("n-samples", {}),
        "versions": out.get("versions", {}),
        "config": {"limit": limit, "max_gen_toks": max_gen_toks},
    }
    return EvalResult(metrics=metrics, samples=samples, n_items=n_items, raw=_json_safe(raw), items=items)


def _item(task: str, row: dict, metric_names: list[str]) -> dict[str, Any]:
    """One lm-eval logged sample, reduced to what item-level statistics and the report need."""
    doc = row.get("doc") if isinstance(row.get("doc"), dict) else {}
    scores = {}
    for name in metric_names:
        try:
            scores[name] = float(row[name])
        except (KeyError, TypeError, ValueError):  # absent, or a corpus-level metric's tuple (e.g. bleu)
            continue
    return {
        "task": task,
        "doc_id": row.get("doc_id"),
        "item_id": doc.get("id"),
        "filter": row.get("filter"),
        "prompt": _first_arg(row),
        "generation": _first_response(row),
        "target": str(row.get("target", "")),
        "scores": scores,
    }


ITEM_COLUMNS = ("task", "doc_id", "item_id", "metric", "score", "generation", "target", "prompt")


def item_frame(result: EvalResult, preferred: dict[str, str | None] | None = None):
    """Every scored item as a frame with ITEM_COLUMNS: `score` is the item's value of the task's primary
    metric, the one that enters R or G (`preferred[task]`, else the first score metric, as
    `primary_metric` picks it), so that its mean over a task's items is the logged score."""
    import pandas as pd

    preferred = preferred or {}
    rows = []
    for row in result.items:
        task = row["task"]
        keys = score_keys(result.metrics.get(task, {}))
        want = preferred.get(task)
        key = next((k for k in keys if want and k.split(",")[0] == want), keys[0] if keys else None)
        if key is None:
            continue
        metric, _, filt = key.partition(",")
        if (row.get("filter") or "none") != (filt or "none") or metric not in row["scores"]:
            continue
        rows.append(
            {
                "task": task,
                "doc_id": row["doc_id"],
                "item_id": row.get("item_id"),
                "metric": metric,
                "score": row["scores"][metric],
                "generation": row["generation"],
                "target": row["target"],
                "prompt": row["prompt"],
            }
        )
    return pd.DataFrame(rows, columns=list(ITEM_COLUMNS))


def _context_length(model: Any, max_length: int | None) -> int | None:
    """The longest context evaluation needs: the model's own limit, bounded by the harness's model.max_length."""
    limits = [n for n in (getattr(model.config, "max_position_embeddings", None), max_length) if n]
    return min(limits) if limits else None


SNAPSHOT_DONE = "SNAPSHOT_COMPLETE"  # written last: a folder without it is a half-written snapshot


def write_snapshot(model: Any, tokenizer: Any, folder: Path, dtype: str | None = None) -> Path:
    """Save the stage's weights and tokenizer where vLLM can load them (vLLM reads a folder, not a live
    module), replacing any earlier snapshot in `folder`'s parent: one snapshot on disk per run, under the
    run's results, never a stale one (each stage's folder is new) and never /tmp (often small, per node).

    The tokenizer goes with the weights, so vLLM pads and stops exactly like HFLM would. `dtype` (e.g. the
    compute dtype) is recorded in the config for vLLM; None keeps the weights' own.
    """
    import shutil

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    for old in folder.parent.iterdir():
        if old.is_dir() and old != folder:
            shutil.rmtree(old, ignore_errors=True)
    if (folder / SNAPSHOT_DONE).is_file():
        return folder  # already written for this stage (a resumed run)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if dtype:
        config = tmp / "config.json"
        data = json.loads(config.read_text())
        data["dtype"] = data["torch_dtype"] = dtype
        config.write_text(json.dumps(data, indent=2))
    (tmp / SNAPSHOT_DONE).write_text("ok")
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def _physical_gpu(device: Any) -> str:
    """The CUDA_VISIBLE_DEVICES entry of this process's GPU (`cuda:i` counts the visible GPUs only)."""
    index = device.index if device.index is not None else 0
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[index] if visible else str(index)


@contextmanager
def _only_gpu(device: Any):
    """Let the vLLM engine see this process's GPU only. lm-eval's VLLM drops a `device` argument and the
    engine takes the first visible GPU, so every data-parallel rank would start its engine on GPU 0. The
    engine core runs in a child process (vLLM's default, forced here) that reads CUDA_VISIBLE_DEVICES when
    it starts; this process's own CUDA context is unaffected, and the variable is restored afterwards."""
    saved = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "VLLM_ENABLE_V1_MULTIPROCESSING")}
    if device.type == "cuda":
        os.environ["CUDA_VISIBLE_DEVICES"] = _physical_gpu(device)
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _hflm_precision(hflm: Any, model: Any) -> dict[str, Any]:
    """HFLM's own precision knobs, set to the model's (harness.models.Precision): bf16 matmuls, log-likelihood
    softmaxes in float32. HFLM wraps each forward in autocast(enabled=mixed_precision_dtype is not None): left
    unset, that would switch the caller's autocast off. Only where this lm-eval version knows them."""
    precision = precision_of(model)
    if not precision.mixed:
        return {}
    known = inspect.signature(hflm.__init__).parameters
    wanted = {"mixed_precision_dtype": precision.compute, "softmax_dtype": torch.float32}
    return {k: v for k, v in wanted.items() if k in known}


def _vllm_lm(folder: Path, seed: int, gpu_memory: float, context: int | None, device: Any) -> Any:
    """lm-eval's vLLM backend on the stage's snapshot, on this process's GPU, after the trainer's cached
    GPU memory is handed back (vLLM sizes its KV cache from the memory free when it starts)."""
    import gc

    import torch
    from lm_eval.models.vllm_causallms import VLLM

    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    with _only_gpu(device):
        return VLLM(
            pretrained=str(folder),
            tokenizer=str(folder),
            dtype="auto",
            batch_size="auto",
            seed=seed,
            max_model_len=context,
            gpu_memory_utilization=gpu_memory,
        )


def _release_vllm(lm: Any) -> None:
    """Give the engine's GPU memory back before training resumes."""
    import gc

    import torch

    lm.model = None
    gc.collect()
    if torch.cuda.is_initialized():
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
        merged.items.extend(part.items)
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
