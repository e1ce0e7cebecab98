"""Evaluation: lm-eval run in process on the live model, greedy, no caches.

Every stage evaluates the model as it is *now*; lm-eval's request cache (`use_cache`) is keyed by request
only and would return answers from an earlier stage, so it is never used (docs/design.md §10).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from harness.decoding import packed
from harness.decoding.choose import pick
from harness.eval.results import EvalResult, from_lm_eval
from harness.eval.static_lm import static_hflm_class
from harness.models import autocast, precision_of
from harness.tasks.spec import TaskSpec

log = logging.getLogger(__name__)


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
    decoder: str = "hf",
) -> EvalResult:
    """Run lm-eval's `simple_evaluate` on the model as it is now for `task_names` (greedy, chat template).

    `max_length` (model.max_length) bounds the context lm-eval and vLLM plan for (a model's own maximum would
    size vLLM's KV cache and HFLM's batch probe for contexts no stage uses). `vllm_snapshot`: the folder
    `write_snapshot` filled with this stage's weights. `auto_batch_size`: on CUDA, the largest batch that fits.
    `allow_code_execution`: tasks marked unsafe_code (HumanEval) may run the model's code. `decoder`: greedy
    generation on harness.decoding ("static", else `generate` where it cannot run) or lm-eval's own ("hf").
    """
    if not task_names:
        return EvalResult(metrics={})
    _prepare_environment(builtin_index, allow_code_execution)
    was_training = model.training
    model.eval()
    lm = _language_model(
        model,
        tokenizer,
        backend,
        batch_size,
        auto_batch_size,
        max_length,
        seed,
        vllm_gpu_memory,
        vllm_snapshot,
        decoder,
    )
    try:
        # the model's compute dtype for the whole run: autocast casts each weight once, not once per batch;
        # the static decoder packs the weights once for the whole run too
        with _as_single_process(), autocast(model), packed.reusing_pack(model):
            out = _simple_evaluate(
                lm, task_names, include_paths, builtin_index, limit, max_gen_toks, seed, allow_code_execution
            )
    finally:
        model.train(was_training)
        if backend == "vllm":
            _release_vllm(lm)
    if out is None:
        rank = f"LOCAL_RANK={os.environ.get('LOCAL_RANK')}, lm rank {getattr(lm, 'rank', '?')}"
        raise RuntimeError(f"lm-eval returned no results for {list(task_names)} ({rank})")
    return from_lm_eval(out, limit, max_gen_toks, log_samples)


def _simple_evaluate(
    lm: Any,
    task_names: list[str],
    include_paths: list[str | Path],
    builtin_index: bool,
    limit: int | None,
    max_gen_toks: int | None,
    seed: int,
    allow_code_execution: bool,
) -> dict | None:
    """lm-eval's run: greedy, chat template, no request cache, every sample logged, seeds fixed."""
    from lm_eval import simple_evaluate

    gen_kwargs: dict[str, Any] = {"do_sample": False}
    if max_gen_toks:
        gen_kwargs["max_gen_toks"] = int(max_gen_toks)
    return simple_evaluate(
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


def _prepare_environment(builtin_index: bool, allow_code_execution: bool) -> None:
    if not builtin_index:
        # Our tasks read local JSON files; never let datasets/hub reach for the network.
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # lm-eval logs every context it builds at INFO; one line per stage from the loop is what users read.
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    if allow_code_execution:
        os.environ["HF_ALLOW_CODE_EVAL"] = "1"  # HF evaluate's code_eval refuses to run code without it


def _language_model(
    model: Any,
    tokenizer: Any,
    backend: str,
    batch_size: int,
    auto_batch_size: bool,
    max_length: int | None,
    seed: int,
    vllm_gpu_memory: float,
    vllm_snapshot: Path | None,
    decoder: str = "hf",
) -> Any:
    """lm-eval's model object: HFLM on the live model (its greedy generation on harness.decoding when
    `decoder` is static and the model allows it), or vLLM on the stage's snapshot."""
    context = _context_length(model, max_length)
    device = next(model.parameters()).device
    if backend == "vllm":
        if vllm_snapshot is None:
            raise ValueError(
                "eval.backend=vllm evaluates a snapshot of the stage's weights: pass vllm_snapshot "
                "(a folder written by harness.eval.lmeval.write_snapshot)"
            )
        return _vllm_lm(Path(vllm_snapshot), seed, vllm_gpu_memory, context, device)
    from lm_eval.models.huggingface import HFLM

    hf_batch = "auto" if auto_batch_size and device.type == "cuda" else batch_size
    model_class = static_hflm_class() if pick(model, decoder)[0] == "static" else HFLM
    return model_class(
        pretrained=model,
        tokenizer=tokenizer,
        batch_size=hf_batch,
        max_length=context,
        **_hflm_precision(model_class, model),
    )


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


def stream_eval_names(specs: list[TaskSpec]) -> list[str]:
    return [name for spec in specs for name in spec.eval_tasks]
