"""What the loop evaluates around a stage: the teacher's in-context score before it, the within-stage
curve while it trains (`StageHook`), every eval task after it (stage 0 reused from the cache), the
item-level artifact and the one-line summary.

Every process that holds whole weights evaluates a contiguous share (harness.parallel.shares): of the eval
tasks for lm-eval, of the greedy batches for the in-context score and the within-stage curve; rank 0 merges
the parts into what one process would have computed. Replicas (one process, DDP) always do; under FSDP each
rank gathers a whole copy when the start-up memory plan allows (`Replicas.eval_everywhere`), else rank 0
gathers the one copy and evaluates everything while the others wait. pass@k samples (random numbers drawn
in sequence) and the checkpoint stay on rank 0."""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from harness.config import Config, results_path
from harness.console import third_party_output
from harness.eval.lmeval import evaluate, stream_eval_names, write_snapshot
from harness.eval.passk import pass_k_metrics
from harness.eval.results import EvalResult, item_frame, merge_results, primary_metric
from harness.eval.scoring import greedy_scores_share
from harness.methods import needs_teacher_copy
from harness.models import precision_of, precision_summary, resolve_device, set_precision
from harness.parallel import sharding, shares
from harness.parallel.distributed import Replicas
from harness.parallel.shares import merge_indexed
from harness.run import base_eval_cache, readiness
from harness.run.checkpoints import save_checkpoint
from harness.run.memory_estimate import SHARED
from harness.run.stream_plan import StreamPlan, extra_eval_tasks
from harness.tasks.spec import TaskSpec


def evaluation_sharing(cfg: Config, dist: Replicas) -> tuple[Replicas, str]:
    """Under FSDP, the start-up memory plan's choice of who evaluates (every rank on its own gathered copy,
    or rank 0 alone), taken from rank 0 so that every process takes the same path through the gathers; and
    the line that says which. Unchanged otherwise (replicas always share the evaluation)."""
    if not dist.sharded:
        return dist, ""
    plan = readiness.evaluation_plan(
        cfg,
        dist.world,
        dist.sharded,
        needs_teacher_copy(asdict(cfg.method)),
        resolve_device(cfg.model.device),
    )
    mode, line = dist.broadcast((plan.mode, plan.describe()))
    return replace(dist, eval_everywhere=mode == SHARED), line


def _in_context_score(model, tokenizer, spec: TaskSpec, cfg: Config, dist: Replicas) -> float | None:
    """The SDFT teacher's ceiling on this task: greedy accuracy with the demonstration in context."""
    lines = spec.eval_file.read_text(encoding="utf-8").splitlines()
    docs = [json.loads(line) for line in lines if line.strip()][: cfg.eval.in_context_items]
    return _shared_greedy_mean(model, tokenizer, spec, docs, cfg, dist, "in_context")


def _evaluators(dist: Replicas) -> tuple[int, int] | None:
    """(rank, world) of this process's share of the evaluation, or None: it holds no whole weights."""
    if dist.eval_everywhere:
        return dist.rank, dist.world
    return (0, 1) if dist.is_main else None


def _shared_greedy_mean(
    model, tokenizer, spec: TaskSpec, docs: list[dict], cfg: Config, dist: Replicas, mode: str
) -> float | None:
    """Mean greedy score over `docs`, each evaluating process scoring its block of the batches; rank 0
    gets the merged mean (None elsewhere). `model` has whole weights wherever `_evaluators` gives a share."""
    share = _evaluators(dist)
    part: dict[int, float] = {}
    if share is not None:
        part = greedy_scores_share(
            model,
            tokenizer,
            spec,
            docs,
            mode=mode,
            template=cfg.method.distill.template if mode == "in_context" else None,
            batch_size=cfg.eval.batch_size,
            decoder=cfg.eval.decoder,
            share=share,
        )
    parts = dist.gather(part) if dist.eval_everywhere else [part]
    if not dist.is_main:
        return None
    scores = merge_indexed(parts, len(docs))
    return sum(scores) / max(len(scores), 1)


@contextmanager
def _whole_model(model: torch.nn.Module, dist: Replicas):
    """The student with whole weights, for evaluation and checkpoints: the model itself, or under FSDP a
    gathered copy on every rank (`eval_everywhere`) or on rank 0 alone (None on the other processes),
    freed on exit. Every process must enter it."""
    if not dist.sharded:
        yield model
        return
    whole = sharding.gathered_copy(model, dist.is_main, everywhere=dist.eval_everywhere)
    if whole is not None:  # the copy evaluates in the student's precision too
        set_precision(whole, precision_of(model))
    yield whole


def stage_ceiling(model, tokenizer, spec: TaskSpec, cfg: Config, dist: Replicas) -> float | None:
    """The in-context score before a stage, on rank 0 (None elsewhere), from every evaluating process."""
    if cfg.eval.in_context_items <= 0:
        return None
    with _whole_model(model, dist) as whole:
        return _in_context_score(whole, tokenizer, spec, cfg, dist)


def evaluate_and_checkpoint(
    model, tokenizer, plan: StreamPlan, cfg: Config, dist: Replicas, ckpt_dir: Path, stage: int
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


def _base_cache_key(model, plan: StreamPlan, cfg: Config, dist: Replicas) -> str | None:
    """The stage-0 reuse key (harness/run/base_eval_cache.py); None where stage 0 is evaluated afresh: turned off,
    several processes (each evaluates a share of the tasks), or the vLLM backend (a snapshot per run)."""
    if not cfg.eval.reuse_base or dist.active or cfg.eval.backend != "hf":
        return None
    return base_eval_cache.cache_key(
        asdict(cfg.model),
        asdict(cfg.eval),
        precision_summary(model)["precision/compute"],
        stream_eval_names(plan.specs) + plan.suite_tasks,
        plan.include_paths,
        cfg.suite.builtin_index,
    )


def limit_groups(
    names: list[str], suite_tasks: list[str], limit: int | None, suite_limit: int | None
) -> list[tuple[int | None, list[str]]]:
    """The eval tasks cut into runs of lm-eval that share an item limit, in the tasks' order: the stream's
    tasks at `limit`, the general suite's at `suite_limit` (None: `limit` too, one run). Always one group
    at least (an empty task list still makes one call, whose empty result the merge expects)."""
    suite_limit = limit if suite_limit is None else suite_limit
    groups: list[tuple[int | None, list[str]]] = []
    for name in names:
        wanted = suite_limit if name in suite_tasks else limit
        if groups and groups[-1][0] == wanted:
            groups[-1][1].append(name)
        else:
            groups.append((wanted, [name]))
    return groups or [(limit, [])]


def _evaluate_tasks(
    model,
    tokenizer,
    names: list[str],
    limit: int | None,
    plan: StreamPlan,
    cfg: Config,
    snapshot: Path | None,
) -> EvalResult:
    """One lm-eval run over `names` at `limit` items per task, with the run's eval settings."""
    return evaluate(
        model,
        tokenizer,
        names,
        plan.include_paths,
        builtin_index=cfg.suite.builtin_index,
        limit=limit,
        batch_size=cfg.eval.batch_size,
        max_gen_toks=cfg.eval.max_gen_toks,
        log_samples=cfg.eval.log_samples,
        seed=cfg.seed,
        backend=cfg.eval.backend,
        vllm_gpu_memory=cfg.eval.vllm_gpu_memory,
        vllm_snapshot=snapshot,
        max_length=cfg.model.max_length,
        allow_code_execution=cfg.eval.allow_code_execution,
        auto_batch_size=cfg.eval.auto_batch_size,
        decoder=cfg.eval.decoder,
    )


def _evaluate_stage(
    model, tokenizer, plan: StreamPlan, cfg: Config, dist: Replicas, snapshot: Path | None = None
) -> tuple[dict[str, float], Any] | tuple[None, None]:
    """Every eval task once, each evaluating process taking a contiguous block of the task list (identical
    whole weights, greedy decoding: the same scores as one process); rank 0 concatenates the blocks in rank
    order, which is one process's order. Returns (None, None) off rank 0."""
    names = stream_eval_names(plan.specs) + plan.suite_tasks
    share = _evaluators(dist)
    mine = shares.share(names, *share) if share is not None else []
    with third_party_output():  # lm-eval's own request bars: into the log file of a quiet console
        runs = [
            _evaluate_tasks(model, tokenizer, group, limit, plan, cfg, snapshot)
            for limit, group in limit_groups(mine, plan.suite_tasks, cfg.eval.limit, cfg.eval.suite_limit)
        ]
    result = merge_results(runs)
    parts = dist.gather(result) if dist.eval_everywhere else [result]
    if not dist.is_main:
        return None, None
    result = merge_results(parts)
    from harness.tracking.store import lm_eval_metrics  # lazy: loads mlflow only when needed

    metrics = lm_eval_metrics(result.metrics)  # `<task>/<metric>`, scores and stderr, bookkeeping dropped
    for spec in plan.specs:
        metrics[f"score/{spec.name}"] = primary_metric(result.metrics[spec.eval_tasks[0]], spec.metric)
    for task, metric in extra_eval_tasks(plan):
        metrics[f"extra/{task}"] = primary_metric(result.metrics[task], metric)
    general = [primary_metric(result.metrics[t]) for t in plan.suite_tasks]
    for task, value in zip(plan.suite_tasks, general, strict=True):
        metrics[f"general/{task}"] = value
    if general:
        metrics["general/avg"] = sum(general) / len(general)
    for task, n in result.n_items.items():
        metrics[f"n_items/{task}"] = float(n)
    metrics["eval/processes"] = float(sum(1 for part in parts if part.metrics))  # who really evaluated
    metrics.update(pass_k_metrics(model, tokenizer, plan.specs, cfg.eval, cfg.seed))  # rank 0, whole weights
    return metrics, result


def _subset_score(
    model, tokenizer, spec: TaskSpec, docs: list[dict], cfg: Config, dist: Replicas
) -> float | None:
    """Greedy score of the student on `docs` on rank 0 (None elsewhere); every process enters (the gather)."""
    with _whole_model(model, dist) as whole:
        return _shared_greedy_mean(whole, tokenizer, spec, docs, cfg, dist, "base")


class StageHook:
    """What the loop does while a stage trains (`StageContext.on_step`): each optimizer step's stats go to
    the stage's MLflow run as they happen (`train_step/<stat>`), and every `eval.every_steps` steps the task
    being trained is scored on its first `eval.every_steps_items` eval items (`step_eval/score`)."""

    def __init__(self, model, tokenizer, spec: TaskSpec, cfg: Config, dist: Replicas, tracker, run_id):
        self.model, self.tokenizer, self.spec, self.cfg, self.dist = model, tokenizer, spec, cfg, dist
        self.tracker, self.run_id = tracker, run_id
        self.every = cfg.eval.every_steps
        self.docs: list[dict] = []
        if self.every > 0:
            lines = spec.eval_file.read_text(encoding="utf-8").splitlines()
            self.docs = [json.loads(line) for line in lines if line.strip()][: cfg.eval.every_steps_items]
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


def items_csv(plan: StreamPlan, result: Any, parent: str, stage: int) -> bytes:
    """Every evaluated item of the stage (gzip CSV): run, stage, task, doc_id, item_id, metric, score,
    generation, target, prompt; `score` is the metric that enters R (stream tasks) or G (suite)."""
    import gzip

    preferred = {name: spec.metric for spec in plan.specs for name in spec.eval_tasks}
    frame = item_frame(result, preferred)
    frame.insert(0, "stage", stage)
    frame.insert(0, "run", parent)
    return gzip.compress(frame.to_csv(index=False).encode("utf-8"), mtime=0)


def summary_line(
    stage: int, label: str, metrics: dict[str, float], base: dict[str, float] | None, seconds: float
) -> str:
    scores = " ".join(f"{k.split('/', 1)[1]}={v:.3f}" for k, v in metrics.items() if k.startswith("score/"))
    line = f"[stage {stage}: {label}] {scores}"
    if "general/avg" in metrics:
        line += f" | general={metrics['general/avg']:.3f}"
        if base and "general/avg" in base:
            line += f" (delta {metrics['general/avg'] - base['general/avg']:+.3f})"
    return line + f" | {seconds:.0f}s"
