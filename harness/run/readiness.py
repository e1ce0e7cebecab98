"""GPU-readiness checks at start-up, for what would otherwise fail hours into a run on a large machine.

Each check passes silently, returns a warning for the start-up banner, or raises a ValueError that says
what is wrong and the setting that fixes it. They run before any weights load (harness.run.loop), after
harness.run.preflight has checked the config's names and values.

- the eval suite resolves the way lm-eval will at the first evaluation: code-executing tasks
  (`unsafe_code: true` in their YAML, e.g. HumanEval) need the opt-in `eval.allow_code_execution=true`,
  and every `!function` helper module imports (lm-eval's IFEval needs its `ifeval` extra, which the
  harness's `paper` extra installs);
- `model.device=auto` on a CUDA build of torch without a usable GPU is refused (harness.models.resolve_device);
- the training state fits the GPU (harness.run.memory_estimate), and micro-batches are not needlessly small.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.config import Config
from harness.methods import Held, StudentSize, held_state, method_spec, rollouts_per_prompt
from harness.run import vllm_compat
from harness.run.memory_estimate import (
    GIB,
    RANK0,
    REPLICAS,
    SHARED,
    EvalSharing,
    Setting,
    Shape,
    adapter_parameters,
    check,
    estimate,
    eval_sharing,
    shape_of,
)

CODE_EXECUTION_ENV = "HF_ALLOW_CODE_EVAL"  # what HF `evaluate`'s code_eval metric demands before running code
PAPER_EXTRA = "pip install -e '.[paper]'"


def _leaf_entries(index: dict[str, Any], name: str, seen: set[str] | None = None) -> list[Any]:
    """The index entries of the tasks that `name` (a task, group or tag) expands to."""
    from lm_eval.tasks._index import Kind

    seen = set() if seen is None else seen
    if name in seen or name not in index:
        return []
    seen.add(name)
    entry = index[name]
    if entry.kind in (Kind.TASK, Kind.PY_TASK):
        return [entry]
    if entry.kind == Kind.TAG:  # a tag's entry lists its member tasks
        members = sorted(entry.tags)
    else:
        members = [m if isinstance(m, str) else m.get("task") for m in (entry.cfg or {}).get("task", [])]
    return [leaf for m in members if isinstance(m, str) for leaf in _leaf_entries(index, m, seen)]


def check_suite(
    task_names: list[str], include_paths: list[str], builtin_index: bool, allow_code_execution: bool
) -> list[str]:
    """Resolve every eval task offline; raise one ValueError listing every problem found. Returns the
    leaf task names that were checked."""
    from lm_eval.tasks._yaml_loader import load_yaml

    from harness.eval.lmeval import make_task_manager  # lazy: loads torch only when needed

    manager = make_task_manager(include_paths, builtin_index)
    index = manager.task_index
    unknown = [n for n in task_names if n not in index]
    if unknown:
        where = "lm-eval's own index and " if builtin_index else ""
        raise ValueError(
            f"eval task(s) {unknown} not found in {where}{include_paths}; check the suite's `tasks` "
            "(a built-in lm-eval task needs suite.builtin_index=true)"
        )
    leaves = {e.name: e for n in task_names for e in _leaf_entries(index, n)}
    unsafe = sorted(
        name
        for name, e in leaves.items()
        if e.yaml_path is not None and load_yaml(e.yaml_path, resolve_func=False).get("unsafe_code")
    )
    if unsafe and not allow_code_execution:
        raise ValueError(
            f"eval task(s) {unsafe} execute the model's generated code on this machine (lm-eval marks them "
            "unsafe_code); opt in with eval.allow_code_execution=true (preferably inside a sandbox), or drop them "
            "from the suite"
        )
    if unsafe:
        os.environ[CODE_EXECUTION_ENV] = "1"  # before their helper modules import: HumanEval's runs code then
    problems = []
    for name, entry in sorted(leaves.items()):
        if entry.yaml_path is None:
            continue
        try:
            load_yaml(entry.yaml_path, resolve_func=True)  # imports the `!function` modules as lm-eval will
        except Exception as err:  # noqa: BLE001 - any import-time failure is reported, with its cause
            problems.append(_import_problem(name, entry.yaml_path, err))
    if problems:
        raise ValueError("eval suite cannot load: " + "; ".join(dict.fromkeys(problems)))
    return sorted(leaves)


def _import_problem(task: str, yaml_path: Path, err: Exception) -> str:
    cause = err
    while cause.__cause__ is not None:
        cause = cause.__cause__
    missing = getattr(cause, "name", None) if isinstance(cause, ImportError) else None
    if missing:
        return (
            f"task {task} ({yaml_path.parent.name}/) needs the Python package `{missing}`: "
            f"{PAPER_EXTRA} installs lm-eval's extras for the paper suite"
        )
    first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    return (
        f"task {task} ({yaml_path.parent.name}/) failed to load its helpers: {type(cause).__name__}: "
        f"{first} (lm-eval's IFEval and HumanEval fetch data/metrics from the hub the first time: run once "
        "with network access)"
    )


def micro_batch_warning(batch_size: int, grad_accum: int, world: int) -> str | None:
    """A warning when gradient accumulation leaves micro-batches of a single prompt across several processes
    (e.g. trainer=paper's batch 32 x grad_accum 4 on 8 GPUs): each GPU then runs four one-prompt passes
    per step where one pass of four would do the same work several times faster."""
    per_micro = -(-batch_size // (world * grad_accum))
    if grad_accum > 1 and per_micro <= 1 and world > 1:
        fewer = max(1, batch_size // world)
        return (
            f"trainer.grad_accum={grad_accum} on {world} processes cuts each step's {batch_size} prompts into "
            f"micro-batches of {per_micro}: slow; trainer.grad_accum=1 gives micro-batches of {fewer} "
            "(keep the accumulation only if memory needs it)"
        )
    return None


def device_line(device: Any, weights_dtype: Any, processes: int, sharded: bool) -> str:
    """The start-up statement of where and in what precision the run trains (a silent CPU fallback or an
    unintended float32 run is then visible in the first line of the log)."""
    import torch

    where = str(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        where += f" ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    layout = (
        f"{processes} processes, FSDP"
        if sharded
        else f"{processes} processes"
        if processes > 1
        else "1 process"
    )
    return f"device: {where}; weights {str(weights_dtype).removeprefix('torch.')}; {layout}"


def memory_setting(cfg: Config, processes: int, sharded: bool, teacher_copy: bool, device: Any) -> Any:
    """The memory_estimate.Setting of a run: stored weights in model.dtype (resolved for the device),
    the teacher's copy alike, one micro-batch of this process at the full model.max_length."""
    import torch

    from harness.models import resolve_precision  # lazy: loads torch only when needed

    # model.dtype is the compute dtype; weights (student and teacher copy) are float32 masters
    precision = resolve_precision(cfg.model.dtype, device)
    size = torch.tensor([], dtype=precision.weights).element_size()
    compute = torch.tensor([], dtype=precision.compute).element_size()
    rollouts = rollouts_per_prompt(cfg.method)  # a live teacher rolls out as many as an EMA one
    rows = -(-cfg.trainer.batch_size // (processes * cfg.trainer.grad_accum)) * rollouts
    return Setting(
        weight_bytes=size,
        compute_bytes=compute,
        teacher_bytes=size if teacher_copy else 0,
        processes=processes,
        sharded=sharded,
        gradient_checkpointing=cfg.trainer.gradient_checkpointing,
        rows=rows,
        max_length=cfg.model.max_length,
    )


def check_memory(
    cfg: Config,
    processes: int,
    sharded: bool,
    teacher_copy: bool,
    device: Any,
    device_bytes: float | None = None,
) -> str | None:
    """Refuse a run whose training state cannot fit the GPU (ValueError naming the shortfall and what would
    fit); return a warning when the activations may not, or when a held model had to be sized by the
    student's (its config not on disk). The model's config only is read, no weights.
    Runs on CUDA (or when `device_bytes` is given); random-init test models are small by construction."""
    import torch

    if cfg.model.random_init:
        return None
    if device_bytes is None:
        if device.type != "cuda":
            return None
        device_bytes = torch.cuda.get_device_properties(device).total_memory
    shape, setting, notes = memory_plan(cfg, processes, sharded, teacher_copy, device)
    try:
        _, warning = check(shape, setting, device_bytes)
    except ValueError as err:
        if notes:  # the shortfall rests on a guessed size: say which
            raise ValueError(f"{err} ({'; '.join(notes)})") from None
        raise
    return "; ".join(n for n in (warning, *notes) if n) or None


def memory_plan(
    cfg: Config, processes: int, sharded: bool, teacher_copy: bool, device: Any
) -> tuple[Shape, Setting, list[str]]:
    """The student's Shape, the run's full Setting (LoRA adapters and what the method declares it holds,
    `MethodSpec.held`, included) and a note for each held model sized by the fallback."""
    from harness.models import model_config  # lazy: loads torch only when needed

    config = model_config(cfg.model)  # random_init: the cut-down architecture that will be built
    shape = shape_of(config)
    setting = memory_setting(cfg, processes, sharded, teacher_copy, device)
    adapters = 0
    if cfg.model.lora.r > 0:  # adapters train; the teacher copy is the adapters alone
        lora = cfg.model.lora
        adapters = adapter_parameters(config, lora.r, list(lora.target_modules))
        setting = replace(setting, trainable=adapters)
    student = StudentSize(params=shape.params + adapters, trainable=adapters or shape.params)
    held, notes = held_bytes(held_state(cfg.method, student), setting.weight_bytes)
    shardable = method_spec(cfg.method.name).supports_fsdp
    return shape, replace(setting, held=held, shardable=shardable), notes


def evaluation_plan(
    cfg: Config,
    processes: int,
    sharded: bool,
    teacher_copy: bool,
    device: Any,
    budget_bytes: float | None = None,
) -> EvalSharing:
    """Under FSDP, whether every rank may gather a whole copy and evaluate its share (shared) or only rank 0
    (harness.run.memory_estimate.eval_sharing). The budget is the GPU's memory, one process each; on the CPU
    (or MPS) the host's physical memory, which all of this node's processes share. Rank 0's answer is the
    one to use (`Replicas.broadcast`): every rank must take the same path through the gathers."""
    if not sharded:
        return EvalSharing(REPLICAS, 0, 0.0)
    forced = str(cfg.eval.fsdp_sharing)
    if forced == "rank0":
        return EvalSharing(RANK0, 1, float("nan"), "eval.fsdp_sharing=rank0")
    if forced == "every_rank":
        return EvalSharing(SHARED, processes, float("nan"))
    try:
        shape, setting, _ = memory_plan(cfg, processes, sharded, teacher_copy, device)
    except (OSError, ValueError) as err:  # no config to size the model by: the cautious mode
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        return EvalSharing(RANK0, 1, float("nan"), f"the model could not be sized ({first})")
    if device.type != "cuda":
        setting = replace(setting, per_budget=int(os.environ.get("LOCAL_WORLD_SIZE", processes)))
    if budget_bytes is None:
        budget_bytes = _memory_budget(device)
    return eval_sharing(estimate(shape, setting), setting, budget_bytes)


def _memory_budget(device: Any) -> float:
    """The memory one budget holds: the GPU's, or the host's physical memory."""
    import torch

    if device.type == "cuda":
        return float(torch.cuda.get_device_properties(device).total_memory)
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def held_bytes(
    pieces: tuple[Held, ...], weight_bytes: int
) -> tuple[tuple[tuple[str, float], ...], list[str]]:
    """((what, bytes), ...) of a method's held pieces, and a note for each model that fell back to its
    declared count because its config could not be read from disk."""
    sized, notes = [], []
    for piece in pieces:
        values = piece.values
        if piece.model is not None:
            try:
                values = model_parameters(piece.model)
            except (OSError, ValueError, KeyError) as err:  # not on disk, or an architecture unknown here
                first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
                notes.append(
                    f"memory: {piece.what}: its config could not be read from disk ({first}); counted at the "
                    f"student's size, {values * (piece.value_bytes or weight_bytes) / GIB:.1f} GiB (download "
                    "its config.json for an exact estimate)"
                )
        sized.append((piece.what, float(values * (piece.value_bytes or weight_bytes))))
    return tuple(sized), notes


def model_parameters(name: str) -> int:
    """The parameter count of the model `name` (hub id or local folder) from its config alone: offline,
    reading only what is already on disk (raises OSError when the config is not there)."""
    from transformers import AutoConfig

    from harness.models import locate_weights  # lazy: loads torch only when needed

    return shape_of(AutoConfig.from_pretrained(locate_weights(name), local_files_only=True)).params


def before_loading(
    cfg: Config,
    eval_names: list[str],
    include_paths: list[str],
    processes: int,
    sharded: bool,
    teacher_copy: bool,
) -> list[str]:
    """Every start-up check that needs no weights; raises on what cannot work, returns warnings to print."""
    from harness.models import resolve_device  # lazy: loads torch only when needed

    check_suite(eval_names, include_paths, cfg.suite.builtin_index, cfg.eval.allow_code_execution)
    device = resolve_device(cfg.model.device)  # refuses a CUDA build without a usable GPU
    notes = [
        micro_batch_warning(cfg.trainer.batch_size, cfg.trainer.grad_accum, processes),
        check_memory(cfg, processes, sharded, teacher_copy, device),
    ]
    if cfg.eval.backend == "vllm":  # the versions, before any weights load (a warning when out of range)
        found = vllm_compat.check_installed()
        if found is not None and os.environ.get("RANK", "0") == "0":
            print(found[0], flush=True)
            notes.append(None if found[1] else f"{found[0]}; expect failures at the first vLLM generation")
    return [n for n in notes if n]
