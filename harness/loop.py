"""The continual-learning loop: stage 0 evaluates the untouched model, then train task i -> evaluate everything.

Data parallelism (harness.distributed, `accelerate launch`): every process trains its share of each step
and evaluates its share of the eval tasks; only rank 0 talks to MLflow, writes checkpoints and prints.
Under FSDP (harness.sharding) the weights are sharded: rank 0 evaluates and checkpoints a gathered copy.

Resume: a stage is done when its MLflow child run is FINISHED. Rerunning the same command reuses the done
stages' results, reloads the weights from the last done stage's checkpoint (or, with `checkpoints=none`,
retrains the done stages deterministically without evaluating or logging them) and continues.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from harness import base_eval_cache, readiness, sharding
from harness.config import ensure_writable, results_path, to_container, tracking_uri
from harness.distributed import Replicas, micro_batches, replicas
from harness.evaluation import evaluate, merge_results, primary_metric, stream_eval_names, write_snapshot
from harness.models import precision_of, precision_summary, set_precision
from harness.tasks import TASKS_ROOT, Item, TaskSpec, load_train_items, resolve_task
from harness.tracking import ITEMS_ARTIFACT

log = logging.getLogger(__name__)


class StageFailedError(RuntimeError):
    """A stage stopped (e.g. a non-finite loss); the message names the stage, task and step."""


@dataclass
class StreamPlan:
    specs: list[TaskSpec]
    train_items: list[list[Item]]
    suite_tasks: list[str]
    include_paths: list[str]


MAX_ENUMERATED_TASKS = 8  # up to 8! = 40320 permutations are listed; beyond, order k is a seeded shuffle


def ordered_tasks(tasks: list[str], order: Any) -> list[str]:
    """The stream's tasks in training order `order`: None or 0 = as listed, "reverse", or k >= 1 = the k-th
    of the other permutations in a shuffle with a fixed seed. Order k is the same in every run and seed (so
    runs of one order aggregate), and orders 0..T!-1 are T! distinct permutations."""
    import itertools

    import numpy as np

    if order is None or (isinstance(order, int) and not isinstance(order, bool) and order == 0):
        return list(tasks)
    if order == "reverse":
        return list(reversed(tasks))
    if not isinstance(order, int) or isinstance(order, bool) or order < 0:
        raise ValueError(
            f"stream.order={order!r} is not known; valid values: null, reverse, or an integer k >= 0 "
            "(0 = as listed, k = the k-th seeded permutation)"
        )
    if len(tasks) > MAX_ENUMERATED_TASKS:
        perm = np.random.default_rng([order, len(tasks)]).permutation(len(tasks))
        return [tasks[i] for i in perm]
    others = list(itertools.permutations(range(len(tasks))))[1:]  # lexicographic; [0] is the identity
    if order > len(others):
        raise ValueError(
            f"stream.order={order}: {len(tasks)} tasks have {len(others) + 1} orders, "
            f"so valid integers are 0..{len(others)}"
        )
    np.random.default_rng(len(tasks)).shuffle(others)  # fixed: order k means the same permutation everywhere
    return [tasks[i] for i in others[order - 1]]


def order_label(order: Any) -> str:
    """The `order` tag of a parent run: "0" for the stream as listed (null or 0), else the option as given."""
    return "0" if order is None else str(order)


def plan_stream(cfg: DictConfig) -> StreamPlan:
    """Resolve tasks and read all training data up front, so bad input fails before any training."""
    names = ordered_tasks(list(cfg.stream.tasks), cfg.stream.get("order"))
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(
            f"stream '{cfg.stream.name}' repeats task(s) {repeated}: a task may appear once per stream "
            "(the accuracy matrix has one column per task); copy the folder under another name to revisit it"
        )
    specs = [resolve_task(n) for n in names]
    limit = cfg.trainer.max_train_items
    train_items = [load_train_items(spec, limit) for spec in specs]
    # lm-eval indexes include paths recursively: the built-in root covers built-in tasks; only a user's
    # folders elsewhere are added (adding both would register each built-in task twice).
    user_dirs = {str(s.path) for s in specs if TASKS_ROOT not in s.path.parents}
    include = {str(TASKS_ROOT)} | user_dirs | {str(Path(p).resolve()) for p in cfg.suite.include_paths}
    return StreamPlan(specs, train_items, list(cfg.suite.tasks), sorted(include))


def check_lengths(tokenizer: Any, plan: StreamPlan, max_length: int) -> None:
    """Every training item's prompt + demonstration must fit the context, checked before any training.

    Otherwise SFT would silently cut the demonstration (and its end-of-turn token) and a teacher context
    would lose part of it; the error names the item (file:line) so the user can shorten or drop it.
    (Teacher templates add a few more tokens: the distillation methods check those themselves.)
    """
    from harness.batching import chat_prompt_ids, completion_ids, item_name
    from harness.tasks import student_messages

    for items in plan.train_items:
        for item in items:
            n = len(chat_prompt_ids(tokenizer, student_messages(item))) + len(
                completion_ids(tokenizer, item.demonstration)
            )
            if n > max_length:
                raise ValueError(
                    f"item {item_name(item)}: prompt + demonstration have {n} tokens, more than "
                    f"model.max_length={max_length}; shorten or remove the item, or raise model.max_length"
                )


@contextmanager
def _store_lock(results: Path, uri: str):
    """Serialise opening a local SQLite store: parallel sweep jobs (submitit, SLURM) that create it at once
    race in MLflow's schema migration and one of them fails."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    with open(results / ".mlflow.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _load_model(cfg: DictConfig, dist: Replicas):
    """Rank 0 first (it may write the embedded model's safetensors cache), then the others from that cache."""
    from harness.models import load_model

    if not dist.is_main:
        dist.barrier()
    try:
        return load_model(cfg.model)
    except (
        OSError,
        ValueError,
    ) as err:  # transformers: not on the hub, no tokenizer, a config it cannot read
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise ValueError(
            f"model.name={cfg.model.name!r} could not be loaded: {first} "
            "Use the embedded default (model=smollm2), a local model directory, or a hub id that is cached "
            "or reachable (model=hf model.name=ORG/NAME)."
        ) from None
    finally:
        if dist.is_main:
            dist.barrier()


def _seed_everything(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed)


def _checkpoint_dir(cfg: DictConfig, key: str) -> Path:
    return results_path(cfg) / "checkpoints" / cfg.experiment_name / key


def save_checkpoint(model: torch.nn.Module, directory: Path, stage: int, policy: str) -> Path | None:
    """Write stage weights atomically and durably (temp file, fsync, rename, fsync the folder); apply the
    keep policy afterwards."""
    if policy == "none":
        return None
    from safetensors.torch import save_model

    from harness.durable import replace_durably

    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"stage_{stage}.safetensors"
    tmp = directory / f".stage_{stage}.safetensors.tmp"
    save_model(model, str(tmp))
    # atomic (a reader sees the old file or the new one, never half of one) and durable: the data and the
    # rename are on disk before the stage's run is marked FINISHED, even across a power loss
    replace_durably(tmp, final)
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


def _train_stage(
    model, tokenizer, plan: StreamPlan, cfg: DictConfig, stage: int, progress: bool, on_step=None
):
    from harness.methods import get_method
    from harness.methods.base import StageContext

    train = get_method(cfg.method.name)
    replay = [item for items in plan.train_items[: stage - 1] for item in items]
    ctx = StageContext(
        stage=stage, seed=int(cfg.seed), replay_items=replay, progress=progress, on_step=on_step
    )
    _seed_everything(int(cfg.seed) * 1000 + stage)
    return train(model, tokenizer, plan.train_items[stage - 1], plan.specs[stage - 1], cfg, ctx)


def check_fsdp_batch(batch_size: int, accum: int, world: int) -> None:
    """Under FSDP every process must run the same number of forward passes (each gathers the others'
    shards), so none of the step's `world x accum` micro-batches may be empty; unequal sizes are fine."""
    empty = sum(1 for micro in micro_batches(list(range(batch_size)), accum, world) if not micro)
    if empty:
        raise ValueError(
            f"FSDP: trainer.batch_size={batch_size} cut into processes x grad_accum = {world} x {accum} "
            f"micro-batches leaves {empty} of them empty, and a process with an empty one would stall the "
            f"others; use a batch_size that is a multiple of {world * accum}"
        )


def needs_teacher_copy(cfg: DictConfig) -> bool:
    """Whether the method distils from a second set of weights (an EMA or frozen teacher)."""
    from harness.methods import needs_teacher_copy as declared

    return declared(to_container(cfg.method))


def _in_context_score(model, tokenizer, spec: TaskSpec, cfg: DictConfig) -> float | None:
    """The SDFT teacher's ceiling on this task: greedy accuracy with the demonstration in context."""
    n = int(cfg.eval.in_context_items)
    if n <= 0:
        return None
    from harness.scoring import greedy_scores

    lines = spec.eval_file.read_text(encoding="utf-8").splitlines()
    docs = [json.loads(line) for line in lines if line.strip()][:n]
    scores = greedy_scores(
        model,
        tokenizer,
        spec,
        docs,
        mode="in_context",
        template=cfg.method.distill.template,
        batch_size=int(cfg.eval.batch_size),
    )
    return sum(scores) / max(len(scores), 1)


@contextmanager
def _whole_model(model: torch.nn.Module, dist: Replicas):
    """The student with whole weights, for evaluation and checkpoints: the model itself, or under FSDP a
    gathered copy on rank 0 (None on the other processes), freed on exit. Every process must enter it."""
    if not dist.sharded:
        yield model
        return
    whole = sharding.gathered_copy(model, dist.is_main)
    if whole is not None:  # the copy evaluates in the student's precision too
        set_precision(whole, precision_of(model))
    yield whole


def _stage_ceiling(model, tokenizer, spec: TaskSpec, cfg: DictConfig, dist: Replicas) -> float | None:
    """The in-context score before a stage, on rank 0 (on a gathered copy under FSDP)."""
    if int(cfg.eval.in_context_items) <= 0:
        return None
    with _whole_model(model, dist) as whole:
        return _in_context_score(whole, tokenizer, spec, cfg) if dist.is_main else None


def _evaluate_and_checkpoint(
    model, tokenizer, plan: StreamPlan, cfg: DictConfig, dist: Replicas, ckpt_dir: Path, stage: int
):
    """Evaluate the stage and write its checkpoint (rank 0), from whole weights; the copy dies on return."""
    with _whole_model(model, dist) as whole:
        snapshot = None
        if cfg.eval.backend == "vllm":  # rank 0 writes the stage's weights once; every process reads them
            snapshot = (
                results_path(cfg) / "vllm_snapshots" / cfg.experiment_name / ckpt_dir.name / f"stage_{stage}"
            )
            if dist.is_main:
                write_snapshot(whole, tokenizer, snapshot)
            dist.barrier()
        cache = _base_cache_key(whole, plan, cfg, dist) if stage == 0 else None
        cached = base_eval_cache.load(results_path(cfg), cache) if cache else None
        if cached is not None:
            metrics, result = cached
            metrics = {**metrics, "base_eval_reused": 1.0}
        else:
            metrics, result = _evaluate_stage(whole, tokenizer, plan, cfg, dist, snapshot)
            if cache:
                base_eval_cache.store(results_path(cfg), cache, metrics, result)
        if dist.is_main:
            save_checkpoint(whole, ckpt_dir, stage, cfg.checkpoints)
    return metrics, result


def _base_cache_key(model, plan: StreamPlan, cfg: DictConfig, dist: Replicas) -> str | None:
    """The stage-0 reuse key (harness/base_eval_cache.py); None where stage 0 is evaluated afresh: turned off,
    several processes (each evaluates a share of the tasks), or the vLLM backend (a snapshot per run)."""
    if not cfg.eval.reuse_base or dist.active or cfg.eval.backend != "hf":
        return None
    return base_eval_cache.cache_key(
        to_container(cfg.model),
        to_container(cfg.eval),
        precision_summary(model)["precision/compute"],
        stream_eval_names(plan.specs) + plan.suite_tasks,
        plan.include_paths,
        bool(cfg.suite.builtin_index),
    )


def _evaluate_stage(
    model, tokenizer, plan: StreamPlan, cfg: DictConfig, dist: Replicas, snapshot: Path | None = None
) -> tuple[dict[str, float], Any] | tuple[None, None]:
    """Every eval task once; under data parallelism the tasks are dealt out round-robin to the processes
    (identical replicas, greedy decoding: the same scores as one process) and rank 0 gathers the results.
    Under FSDP only rank 0 holds whole weights (`_whole_model`), so it evaluates every task itself."""
    names = stream_eval_names(plan.specs) + plan.suite_tasks
    if dist.sharded and not dist.is_main:
        return None, None
    mine = names if dist.sharded else names[dist.rank :: dist.world]
    result = evaluate(
        model,
        tokenizer,
        mine,
        plan.include_paths,
        builtin_index=bool(cfg.suite.builtin_index),
        limit=cfg.eval.limit,
        batch_size=int(cfg.eval.batch_size),
        max_gen_toks=cfg.eval.max_gen_toks,
        log_samples=int(cfg.eval.log_samples),
        seed=int(cfg.seed),
        backend=str(cfg.eval.backend),
        vllm_gpu_memory=float(cfg.eval.vllm_gpu_memory),
        vllm_snapshot=snapshot,
        max_length=int(cfg.model.max_length),
        allow_code_execution=bool(cfg.eval.allow_code_execution),
        auto_batch_size=bool(cfg.eval.auto_batch_size),
    )
    if dist.active and not dist.sharded:
        parts = dist.gather(result)
        if not dist.is_main:
            return None, None
        result = merge_results(parts)
    from harness.tracking import lm_eval_metrics

    metrics = lm_eval_metrics(result.metrics)  # `<task>/<metric>`, scores and stderr, bookkeeping dropped
    for spec in plan.specs:
        metrics[f"score/{spec.name}"] = primary_metric(result.metrics[spec.eval_tasks[0]], spec.metric)
    for task, metric in _extra_eval_tasks(plan):
        metrics[f"extra/{task}"] = primary_metric(result.metrics[task], metric)
    general = [primary_metric(result.metrics[t]) for t in plan.suite_tasks]
    for task, value in zip(plan.suite_tasks, general, strict=True):
        metrics[f"general/{task}"] = value
    if general:
        metrics["general/avg"] = sum(general) / len(general)
    for task, n in result.n_items.items():
        metrics[f"n_items/{task}"] = float(n)
    return metrics, result


def _subset_score(
    model, tokenizer, spec: TaskSpec, docs: list[dict], cfg: DictConfig, dist: Replicas
) -> float | None:
    """Greedy score of the student on `docs` (rank 0; a gathered copy under FSDP, so every process enters)."""
    from harness.scoring import greedy_scores

    with _whole_model(model, dist) as whole:
        if not dist.is_main:
            return None
        scores = greedy_scores(whole, tokenizer, spec, docs, mode="base", batch_size=int(cfg.eval.batch_size))
    return sum(scores) / max(len(scores), 1)


class StageHook:
    """What the loop does while a stage trains (`StageContext.on_step`): each optimizer step's stats go to
    the stage's MLflow run as they happen (`train_step/<stat>`), and every `eval.every_steps` steps the task
    being trained is scored on its first `eval.every_steps_items` eval items (`step_eval/score`)."""

    def __init__(self, model, tokenizer, spec: TaskSpec, cfg: DictConfig, dist: Replicas, tracker, run_id):
        self.model, self.tokenizer, self.spec, self.cfg, self.dist = model, tokenizer, spec, cfg, dist
        self.tracker, self.run_id = tracker, run_id
        self.every = int(cfg.eval.every_steps)
        self.docs: list[dict] = []
        if self.every > 0:
            lines = spec.eval_file.read_text(encoding="utf-8").splitlines()
            self.docs = [json.loads(line) for line in lines if line.strip()][
                : int(cfg.eval.every_steps_items)
            ]
        self.last_scored = -1

    def score(self, step: int) -> None:
        """Score the subset now and log it at `step` (0 = before the first optimizer step)."""
        if self.every <= 0 or step == self.last_scored:
            return
        value = _subset_score(self.model, self.tokenizer, self.spec, self.docs, self.cfg, self.dist)
        self.last_scored = step
        if self.tracker is not None and value is not None:
            self.tracker.log_steps(
                self.run_id, [{"step": step, "score": value, "n_items": len(self.docs)}], prefix="step_eval"
            )

    def __call__(self, step: int, record: dict[str, float]) -> None:
        if self.tracker is not None:
            self.tracker.log_steps(self.run_id, [{**record, "step": step}])
        if self.every > 0 and step % self.every == 0:
            self.score(step)


def _items_csv(plan: StreamPlan, result: Any, parent: str, stage: int) -> bytes:
    """Every evaluated item of the stage (gzip CSV): run, stage, task, doc_id, item_id, metric, score,
    generation, target, prompt; `score` is the metric that enters R (stream tasks) or G (suite)."""
    import gzip

    from harness.evaluation import item_frame

    preferred = {name: spec.metric for spec in plan.specs for name in spec.eval_tasks}
    frame = item_frame(result, preferred)
    frame.insert(0, "stage", stage)
    frame.insert(0, "run", parent)
    return gzip.compress(frame.to_csv(index=False).encode("utf-8"), mtime=0)


def _summary_line(
    stage: int, label: str, metrics: dict[str, float], base: dict[str, float] | None, seconds: float
) -> str:
    scores = " ".join(f"{k.split('/', 1)[1]}={v:.3f}" for k, v in metrics.items() if k.startswith("score/"))
    line = f"[stage {stage}: {label}] {scores}"
    if "general/avg" in metrics:
        line += f" | general={metrics['general/avg']:.3f}"
        if base and "general/avg" in base:
            line += f" (delta {metrics['general/avg'] - base['general/avg']:+.3f})"
    return line + f" | {seconds:.0f}s"


def _extra_eval_tasks(plan: StreamPlan) -> list[tuple[str, str]]:
    """(eval task, metric key) for every eval task beyond each stream task's first, e.g. knowledge_ood."""
    return [(name, spec.metric) for spec in plan.specs for name in spec.eval_tasks[1:]]


def _frame(stage_metrics: dict[int, dict[str, float]], keys: list[str], columns: list[str]) -> pd.DataFrame:
    stages = sorted(stage_metrics)
    rows = [[stage_metrics[i].get(k, float("nan")) for k in keys] for i in stages]
    return pd.DataFrame(rows, index=pd.Index(stages, name="stage"), columns=columns)


def _matrices(plan: StreamPlan, stage_metrics: dict[int, dict[str, float]]):
    names = [s.name for s in plan.specs]
    R = _frame(stage_metrics, [f"score/{n}" for n in names], names)
    G = _frame(stage_metrics, [f"general/{t}" for t in plan.suite_tasks], plan.suite_tasks)
    extra = _extra_eval_tasks(plan)
    X = _frame(stage_metrics, [f"extra/{t}" for t, _ in extra], [t for t, _ in extra])
    return R, G, X


def run_experiment(cfg: DictConfig) -> dict[str, Any]:
    """Run (or resume) one (method, stream, seed) experiment; returns R, G and the CL metrics.

    Any failure once the parent run is open (an error, Ctrl-C) marks it FAILED with the error as its
    `harness.error` tag, and the exception leaves with `parent_run_id` set, so that callers can tell a run
    that failed on the way from one that never started (the latter leaves no run behind)."""
    opened: dict[str, Any] = {}  # filled by _run_experiment once the parent run exists
    try:
        return _run_experiment(cfg, opened)
    except BaseException as err:
        if opened:
            _mark_failed(opened["tracker"], opened["parent"], err)
            try:
                err.parent_run_id = opened["parent"]  # type: ignore[attr-defined]
            except AttributeError:  # an exception type that takes no attributes
                pass
        raise
    finally:
        sharding.release()  # a sweep's next job (same process) starts unsharded


def _mark_failed(tracker: Any, parent: str, err: BaseException) -> None:
    """Mark the parent run FAILED with the error (the user's own words for known errors, the type for the
    rest); never masks the error itself, e.g. when the tracking server is what failed."""
    from harness.preflight import USER_ERRORS

    if isinstance(err, KeyboardInterrupt):
        message = "interrupted (KeyboardInterrupt)"
    elif isinstance(err, (*USER_ERRORS, StageFailedError)):
        message = str(err)
    else:
        message = f"{type(err).__name__}: {err}"
    try:
        tracker.mark_failed(parent, message)
    except Exception as failure:  # noqa: BLE001 (the original error is what the user must see)
        log.warning("could not mark run %s FAILED: %s", parent, failure)


def _run_experiment(cfg: DictConfig, opened: dict[str, Any]) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from harness.methods import result_relevant
    from harness.metrics import all_metrics
    from harness.preflight import check_run
    from harness.tracking import Tracker, flatten_config, run_key

    check_run(cfg)  # the whole config and every task, before the model loads or MLflow is touched
    dist = replicas()
    if dist.sharded:
        check_fsdp_batch(int(cfg.trainer.batch_size), int(cfg.trainer.grad_accum), dist.world)
    plan = plan_stream(cfg)  # bad task data fails here, before the model loads
    # eval tasks resolvable, device usable, memory sufficient: checked before any weights load
    notes = readiness.before_loading(
        cfg,
        stream_eval_names(plan.specs) + plan.suite_tasks,
        plan.include_paths,
        dist.world,
        dist.sharded,
        needs_teacher_copy(cfg),
    )
    results = results_path(cfg)
    ensure_writable(results)
    _seed_everything(int(cfg.seed))
    # The model and the item lengths are checked before the parent run exists: a bad model name or an
    # over-long item leaves no empty RUNNING run behind.
    model, tokenizer = _load_model(cfg, dist)
    if dist.is_main:
        print(
            readiness.device_line(
                next(model.parameters()).device, next(model.parameters()).dtype, dist.world, dist.sharded
            ),
            *[f"\nwarning: {note}" for note in notes],
            flush=True,
        )
        precision = precision_summary(model)
        print(
            f"precision: {precision['precision/compute']} compute, {precision['precision/weights']} weights "
            f"({precision['precision/reason']})",
            flush=True,
        )
    dist.check_in_sync(model, "after loading the model")
    check_lengths(tokenizer, plan, int(cfg.model.max_length))
    tracker = None
    if (
        dist.is_main
    ):  # after the model: a run that cannot start leaves no store behind (check_run pinged servers)
        with _store_lock(results, tracking_uri(cfg)):
            tracker = Tracker(tracking_uri(cfg), cfg.experiment_name, results / "mlartifacts")
    # only the method settings it reads, and the compute precision `model.dtype` resolved to on this machine
    # (`auto` is bf16 on one CPU and float32 on another: not the same run)
    key = run_key(
        {
            **result_relevant(to_container(cfg)),
            "resolved_compute": precision_summary(model)["precision/compute"],
        }
    )
    ckpt_dir = _checkpoint_dir(cfg, key)
    T = len(plan.specs)
    parent, done = None, {}
    if tracker is not None:
        tags = {
            "method": cfg.method.name,
            "stream": cfg.stream.name,
            "seed": str(cfg.seed),
            "order": order_label(cfg.stream.get("order")),
            "tasks": " -> ".join(s.name for s in plan.specs),
            "model": cfg.model.name,
            "run_key": key,
        }
        params = flatten_config(to_container(cfg))
        params["stream_tasks"] = json.dumps([s.name for s in plan.specs])
        params["suite_tasks"] = json.dumps(plan.suite_tasks)
        params["world_size"] = str(dist.world)
        params["parallelism"] = "fsdp" if dist.sharded else "ddp" if dist.active else "single"
        params.update(precision_summary(model))  # what model.dtype resolved to here, and why
        tags["precision"] = params["precision/compute"]
        parent = tracker.open_parent(key, tags, params)
        opened.update(tracker=tracker, parent=parent)
        done = tracker.completed_stages(parent)

    stage_metrics: dict[int, dict[str, float]] = dict(done)
    resume_from = dist.broadcast(
        max((i for i in range(T + 1) if all(j in done for j in range(i + 1))), default=-1)
    )
    # A checkpoint loads into whole weights, before sharding; retraining (no checkpoint) runs after it.
    loaded = resume_from > 0 and load_checkpoint(model, ckpt_dir, resume_from)
    if dist.sharded:
        sharding.shard(model, with_teacher=needs_teacher_copy(cfg))
    if resume_from > 0:
        if loaded:
            log.info("resuming after stage %d from %s", resume_from, ckpt_dir)
        else:
            log.info(
                "no checkpoint for stage %d: retraining stages 1..%d without evaluation",
                resume_from,
                resume_from,
            )
            for stage in range(1, resume_from + 1):
                _train_stage(model, tokenizer, plan, cfg, stage, progress=False)
    if dist.sharded and dist.is_main:
        print(
            f"fully sharded (FSDP): {dist.world} processes share each global batch of {cfg.trainer.batch_size}; "
            f"this process stores {sharding.local_fraction(model):.1%} of the student's weights",
            flush=True,
        )
    elif dist.active and dist.is_main:
        print(
            f"data parallel: {dist.world} processes share each global batch of {cfg.trainer.batch_size} "
            f"({cfg.trainer.grad_accum} micro-batch(es) per process per step) and the eval tasks",
            flush=True,
        )
    if resume_from >= 0 and dist.is_main:
        print(
            f"resuming {cfg.method.name}/{cfg.stream.name}/seed {cfg.seed}: stages 0..{resume_from} already done"
        )

    bar = tqdm(
        range(T + 1), desc=f"{cfg.method.name} stages", unit="stage", disable=None if dist.is_main else True
    )
    for stage in bar:
        if stage <= resume_from:
            continue
        started = time.time()
        label = "base" if stage == 0 else plan.specs[stage - 1].name
        bar.set_postfix_str(label)
        train_metrics: dict[str, float] = {}
        # the stage's run exists (RUNNING) while it trains, so its step metrics are visible live
        child = tracker.start_stage(parent, stage, label) if tracker is not None else None
        if stage > 0:
            spec = plan.specs[stage - 1]
            ceiling = _stage_ceiling(model, tokenizer, spec, cfg, dist)
            if ceiling is not None:
                train_metrics["train/teacher_in_context_acc"] = ceiling
            from harness.methods.base import NonFiniteLossError

            hook = StageHook(model, tokenizer, spec, cfg, dist, tracker, child)
            hook.score(0)
            try:
                stats = _train_stage(model, tokenizer, plan, cfg, stage, progress=True, on_step=hook)
            except NonFiniteLossError as err:
                message = f"stage {stage} ({spec.name}): {err}; stages 0..{stage - 1} are logged and kept"
                if tracker is not None:
                    tracker.client.set_terminated(child, "FAILED")
                    tracker.mark_failed(parent, message)
                raise StageFailedError(message) from err
            hook.score(len(stats.steps))  # the curve ends where the stage does
            train_metrics.update({f"train/{k}": float(v) for k, v in stats.summary.items()})
            train_metrics["train/processes"] = float(dist.world)
        train_s = time.time() - started
        eval_started = time.time()
        # Weights first, then the FINISHED child run: a stage marked done always has its checkpoint.
        metrics, result = _evaluate_and_checkpoint(model, tokenizer, plan, cfg, dist, ckpt_dir, stage)
        if dist.is_main:
            metrics.update(train_metrics)
            metrics["time/train_s"] = train_s
            metrics["time/eval_s"] = time.time() - eval_started
            artifacts = {
                "lm_eval_results.json": result.raw,
                "samples.csv": pd.DataFrame(result.samples),
                ITEMS_ARTIFACT: _items_csv(plan, result, parent, stage),
            }
            # step stats were logged live by StageHook
            tracker.log_stage(parent, stage, label, metrics, None, artifacts, run_id=child)
            stage_metrics[stage] = metrics
            print(
                _summary_line(stage, label, metrics, stage_metrics.get(0), time.time() - started), flush=True
            )
        dist.barrier()  # the other processes wait for rank 0's logging and checkpoint before the next stage

    if not dist.is_main:
        return {"rank": dist.rank}
    R, G, X = _matrices(plan, stage_metrics)
    final = all_metrics(R.to_numpy(), G.to_numpy())
    tracker.finish_parent(
        parent, R, G, final, extra=X if X.shape[1] else None, config_yaml=OmegaConf.to_yaml(cfg, resolve=True)
    )
    print("accuracy matrix (rows: after stage i; 0 = base):")
    print(R.round(3).to_string())
    print("final: " + ", ".join(f"{k}={v:.3f}" for k, v in final.items() if isinstance(v, float)))
    return {"R": R, "G": G, "metrics": final, "parent_run_id": parent}
