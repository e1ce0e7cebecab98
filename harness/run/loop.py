"""The continual-learning loop: stage 0 evaluates the untouched model, then train task i -> evaluate everything.

Data parallelism (harness.parallel.distributed, `accelerate launch`): every process trains its share of each step
and evaluates its share of the eval tasks; only rank 0 talks to MLflow, writes checkpoints and prints.
Under FSDP (harness.parallel.sharding) the weights are sharded: each rank evaluates its share on a gathered copy
where the start-up memory plan allows (else rank 0 evaluates alone); rank 0 checkpoints from its copy.

Resume: a stage is done when its MLflow child run is FINISHED. Rerunning the same command reuses the done
stages' results, reloads the weights from the last done stage's checkpoint (or, with `checkpoints=none`,
retrains the done stages deterministically without evaluating or logging them) and continues.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from harness.config import Config, ensure_writable, results_path, to_yaml, tracking_uri
from harness.decoding.choose import pick
from harness.eval.lmeval import stream_eval_names
from harness.eval.metrics import all_metrics
from harness.methods import check_shardable, needs_teacher_copy, result_relevant, train_stage
from harness.methods.base import NonFiniteLossError, StageContext
from harness.models import load_model, precision_summary
from harness.parallel import sharding
from harness.parallel.distributed import Replicas, micro_batches, replicas
from harness.run import progress, readiness, stage_eval
from harness.run.checkpoints import checkpoint_dir, load_checkpoint
from harness.run.preflight import USER_ERRORS, check_run
from harness.run.signals import signal_name
from harness.run.stage_eval import StageHook, evaluate_and_checkpoint, items_csv, stage_ceiling, summary_line
from harness.run.stream_plan import StreamPlan, check_lengths, matrices, order_label, plan_stream
from harness.run.validate import typed
from harness.tracking.health import server_gone
from harness.tracking.store import ITEMS_ARTIFACT, Tracker, flatten_config, run_key

log = logging.getLogger(__name__)


class StageFailedError(RuntimeError):
    """A stage stopped (e.g. a non-finite loss); the message names the stage, task and step."""


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


def _load_model(cfg: Config, dist: Replicas):
    """Rank 0 first (it may write the embedded model's safetensors cache), then the others from that cache."""

    if not dist.is_main:
        dist.barrier()
    try:
        return load_model(cfg.model)
    except (OSError, ValueError) as err:  # transformers: not on the hub, no tokenizer, a bad config
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


def _train_stage(run: ExperimentRun, stage: int, on_step=None):

    plan, cfg = run.plan, run.cfg
    replay = [item for items in plan.train_items[: stage - 1] for item in items]
    ctx = StageContext(
        stage=stage,
        seed=cfg.seed,
        replay_items=replay,
        on_step=on_step,
        replicas=run.dist,
    )
    _seed_everything(cfg.seed * 1000 + stage)
    return train_stage(run.model, run.tokenizer, plan.train_items[stage - 1], plan.specs[stage - 1], cfg, ctx)


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


def run_experiment(cfg: DictConfig | Config) -> dict[str, Any]:
    """Run (or resume) one (method, stream, seed) experiment; returns R, G and the CL metrics.

    Any failure once the parent run is open (an error, Ctrl-C) marks it FAILED with the error as its
    `harness.error` tag, and the exception leaves with `parent_run_id` set, so that callers can tell a run
    that failed on the way from one that never started (the latter leaves no run behind)."""
    opened: dict[str, Any] = {}  # filled by _run_experiment once the parent run exists
    try:
        return _run_experiment(cfg, opened)
    except BaseException as err:
        if not opened:
            raise
        gone = server_gone(opened["tracker"].tracking_uri)  # a server that is away cannot be marked
        if gone is None:
            _mark_failed(opened["tracker"], opened["parent"], err)
        with suppress(AttributeError):  # an exception type that takes no attributes
            (gone or err).parent_run_id = opened["parent"]  # type: ignore[union-attr]
        raise (gone or err) from (None if gone else err.__cause__)


def _mark_failed(tracker: Any, parent: str, err: BaseException) -> None:
    """Mark the parent run FAILED with the error (the user's own words for known errors, the type for the
    rest); never masks the error itself, e.g. when the tracking server is what failed."""

    status = "FAILED"
    # Ctrl-C, SIGTERM (harness.run.signals), submitit's exit after requeueing a preempted job: stopped, not broken
    if isinstance(err, (KeyboardInterrupt, SystemExit)):
        message, status = f"stopped by {signal_name(err)}; rerun the same command to resume", "KILLED"
    elif isinstance(err, (*USER_ERRORS, StageFailedError)):
        message = str(err)
    else:
        message = f"{type(err).__name__}: {err}"
    try:
        tracker.mark_failed(parent, message, status)
    except Exception as failure:  # noqa: BLE001 (the original error is what the user must see)
        log.warning("could not mark run %s FAILED: %s", parent, failure)


@dataclass
class ExperimentRun:
    """The state of one (method, stream, seed) run as it goes through the phases of `_run_experiment`:
    what was resolved (plan, model), where results go (tracker and parent run on rank 0, run key,
    checkpoint folder) and what is done (metrics per stage)."""

    cfg: Config  # typed (harness.run.validate.typed): the schema's dataclasses, validated
    dist: Replicas  # this process's place among the data-parallel processes (and whether it is sharded)
    plan: StreamPlan
    model: Any
    tokenizer: Any
    tracker: Any = None  # rank 0 only
    parent: str | None = None
    key: str = ""
    ckpt_dir: Path = Path()
    stage_metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    progress: Any = None  # the run's progress line (harness.run.progress.RunProgress), while stages run

    @property
    def stages(self) -> int:
        return len(self.plan.specs)


def _run_experiment(cfg: DictConfig | Config, opened: dict[str, Any]) -> dict[str, Any]:
    run = _prepare(cfg)
    _open_parent(run, opened)
    resume_from = _resume(run)
    _announce(run, resume_from)
    run.progress = progress.for_run(run.cfg, run.plan, enabled=run.dist.is_main)
    try:
        for stage in range(resume_from + 1, run.stages + 1):
            run.progress.stage(stage, _stage_label(run, stage))
            _run_stage(run, stage)
            run.progress.stage_done()
    finally:
        run.progress.close()  # before the closing matrix is printed
    return _finish(run)


def _prepare(composed: DictConfig | Config) -> ExperimentRun:
    """Every check that needs no MLflow run, then the model: a run that cannot start leaves nothing behind."""

    check_run(composed)  # the whole config and every task, before the model loads or MLflow is touched
    cfg = typed(composed)  # from here on the schema's dataclasses, with their declared types
    dist = replicas()
    check_shardable(cfg.method.name, dist.sharded)
    if dist.sharded:
        check_fsdp_batch(cfg.trainer.batch_size, cfg.trainer.grad_accum, dist.world)
    plan = plan_stream(cfg)  # bad task data fails here, before the model loads
    # eval tasks resolvable, device usable, memory sufficient: checked before any weights load
    notes = readiness.before_loading(
        cfg,
        stream_eval_names(plan.specs) + plan.suite_tasks,
        plan.include_paths,
        dist.world,
        dist.sharded,
        needs_teacher_copy(asdict(cfg.method)),
    )
    dist, sharing_line = stage_eval.evaluation_sharing(cfg, dist)  # who evaluates under FSDP
    ensure_writable(results_path(cfg))
    _seed_everything(cfg.seed)
    # The model and the item lengths are checked before the parent run exists: a bad model name or an
    # over-long item leaves no empty RUNNING run behind.
    model, tokenizer = _load_model(cfg, dist)
    if dist.is_main:
        param = next(model.parameters())
        precision = precision_summary(model)
        print(
            readiness.device_line(param.device, param.dtype, dist.world, dist.sharded),
            *[f"\nwarning: {note}" for note in notes],
            f"\nprecision: {precision['precision/compute']} compute, {precision['precision/weights']} weights "
            f"({precision['precision/reason']})",
            f"\ndecoder: rollouts {pick(model, cfg.method.distill.decoder)[1]}; "
            f"greedy evaluation {pick(model, cfg.eval.decoder)[1]}",
            *([f"\n{sharing_line}"] if sharing_line else []),
            flush=True,
        )
    dist.check_in_sync(model, "after loading the model")
    check_lengths(tokenizer, plan, cfg.model.max_length)
    return ExperimentRun(cfg, dist, plan, model, tokenizer)


def _open_parent(run: ExperimentRun, opened: dict[str, Any]) -> None:
    """The run key, the checkpoint folder and (rank 0) the MLflow parent run with the stages already done."""

    cfg, dist, plan = run.cfg, run.dist, run.plan
    precision = precision_summary(run.model)
    # only the method settings it reads, and the compute precision `model.dtype` resolved to on this machine
    # (`auto` is bf16 on one CPU and float32 on another: not the same run)
    run.key = run_key({**result_relevant(asdict(cfg)), "resolved_compute": precision["precision/compute"]})
    run.ckpt_dir = checkpoint_dir(cfg, run.key)
    if not dist.is_main:
        return
    results = results_path(cfg)
    with _store_lock(results, tracking_uri(cfg)):  # after the model: a run that cannot start leaves no store
        run.tracker = Tracker(tracking_uri(cfg), cfg.experiment_name, results / "mlartifacts")
    tags = {
        "method": cfg.method.name,
        "stream": cfg.stream.name,
        "seed": str(cfg.seed),
        "order": order_label(cfg.stream.order),
        "tasks": " -> ".join(s.name for s in plan.specs),
        "model": cfg.model.name,
        "run_key": run.key,
        "precision": precision["precision/compute"],
    }
    params = flatten_config(asdict(cfg))
    params["stream_tasks"] = json.dumps([s.name for s in plan.specs])
    params["suite_tasks"] = json.dumps(plan.suite_tasks)
    params["world_size"] = str(dist.world)
    params["parallelism"] = "fsdp" if dist.sharded else "ddp" if dist.active else "single"
    params.update(precision)  # what model.dtype resolved to here, and why
    run.parent = run.tracker.open_parent(run.key, tags, params)
    opened.update(tracker=run.tracker, parent=run.parent)
    run.stage_metrics = dict(run.tracker.completed_stages(run.parent))


def _resume(run: ExperimentRun) -> int:
    """The last stage of an unbroken prefix of done stages (-1: none), with the weights brought there: from
    its checkpoint (into whole weights, before sharding), else by retraining the done stages after it."""
    done = run.stage_metrics
    resume_from = run.dist.broadcast(
        max((i for i in range(run.stages + 1) if all(j in done for j in range(i + 1))), default=-1)
    )
    loaded = resume_from > 0 and load_checkpoint(run.model, run.ckpt_dir, resume_from)
    if run.dist.sharded:
        sharding.shard(run.model, with_teacher=needs_teacher_copy(asdict(run.cfg.method)))
    if resume_from > 0 and loaded:
        log.info("resuming after stage %d from %s", resume_from, run.ckpt_dir)
    elif resume_from > 0:
        log.info(
            "no checkpoint for stage %d: retraining stages 1..%d without evaluation", resume_from, resume_from
        )
        for stage in range(1, resume_from + 1):
            _train_stage(run, stage)
    return resume_from


def _announce(run: ExperimentRun, resume_from: int) -> None:
    cfg, dist = run.cfg, run.dist
    if not dist.is_main:
        return
    if dist.sharded:
        print(
            f"fully sharded (FSDP): {dist.world} processes share each global batch of {cfg.trainer.batch_size}; "
            f"this process stores {sharding.local_fraction(run.model):.1%} of the student's weights",
            flush=True,
        )
    elif dist.active:
        print(
            f"data parallel: {dist.world} processes share each global batch of {cfg.trainer.batch_size} "
            f"({cfg.trainer.grad_accum} micro-batch(es) per process per step) and the eval tasks",
            flush=True,
        )
    if resume_from >= 0:
        print(
            f"resuming {cfg.method.name}/{cfg.stream.name}/seed {cfg.seed}: stages 0..{resume_from} already done"
        )


def _stage_label(run: ExperimentRun, stage: int) -> str:
    return "base" if stage == 0 else run.plan.specs[stage - 1].name


def _run_stage(run: ExperimentRun, stage: int) -> None:
    """Train stage `stage` (none for stage 0), then evaluate, checkpoint and log it."""
    started = time.time()
    label = _stage_label(run, stage)
    # the stage's run exists (RUNNING) while it trains, so its step metrics are visible live
    child = run.tracker.start_stage(run.parent, stage, label) if run.tracker is not None else None
    train_metrics = _train_with_hooks(run, stage, child) if stage > 0 else {}
    train_s = time.time() - started
    eval_started = time.time()
    # Weights first, then the FINISHED child run: a stage marked done always has its checkpoint.
    metrics, result = evaluate_and_checkpoint(
        run.model, run.tokenizer, run.plan, run.cfg, run.dist, run.ckpt_dir, stage
    )
    if run.dist.is_main:
        metrics.update(train_metrics)
        metrics["time/train_s"] = train_s
        metrics["time/eval_s"] = time.time() - eval_started
        artifacts = {
            "lm_eval_results.json": result.raw,
            "samples.csv": pd.DataFrame(result.samples),
            ITEMS_ARTIFACT: items_csv(run.plan, result, run.parent, stage),
        }
        # step stats were logged live by StageHook
        run.tracker.log_stage(run.parent, stage, label, metrics, None, artifacts, run_id=child)
        run.stage_metrics[stage] = metrics
        base = run.stage_metrics.get(0)
        run.progress.write(summary_line(stage, label, metrics, base, time.time() - started))
    run.dist.barrier()  # the other processes wait for rank 0's logging and checkpoint before the next stage


def _train_with_hooks(run: ExperimentRun, stage: int, child: str | None) -> dict[str, float]:
    """The teacher's in-context score, then the stage's training with live step metrics and the
    within-stage curve; returns the stage's `train/*` metrics. A non-finite loss fails the stage (and the
    parent run) with the stages before it kept."""

    cfg, dist = run.cfg, run.dist
    spec = run.plan.specs[stage - 1]
    train_metrics: dict[str, float] = {}
    ceiling = stage_ceiling(run.model, run.tokenizer, spec, cfg, dist)
    if ceiling is not None:
        train_metrics["train/teacher_in_context_acc"] = ceiling
    hook = StageHook(run.model, run.tokenizer, spec, cfg, dist, run.tracker, child)
    hook.score(0)
    try:
        stats = _train_stage(run, stage, on_step=run.progress.on_step(hook))
    except NonFiniteLossError as err:
        message = f"stage {stage} ({spec.name}): {err}; stages 0..{stage - 1} are logged and kept"
        if run.tracker is not None:
            run.tracker.client.set_terminated(child, "FAILED")
            run.tracker.mark_failed(run.parent, message)
        raise StageFailedError(message) from err
    hook.score(len(stats.steps))  # the curve ends where the stage does
    train_metrics.update({f"train/{k}": float(v) for k, v in stats.summary.items()})
    train_metrics["train/processes"] = float(dist.world)
    return train_metrics


def _finish(run: ExperimentRun) -> dict[str, Any]:
    """Rank 0: the matrices and the continual-learning metrics on the parent run, which is then complete."""

    if not run.dist.is_main:
        return {"rank": run.dist.rank}
    R, G, X = matrices(run.plan, run.stage_metrics)
    final = all_metrics(R.to_numpy(), G.to_numpy())
    run.tracker.finish_parent(
        run.parent,
        R,
        G,
        final,
        extra=X if X.shape[1] else None,
        config_yaml=to_yaml(run.cfg),
    )
    print("accuracy matrix (rows: after stage i; 0 = base):")
    print(R.round(3).to_string())
    print("final: " + ", ".join(f"{k}={v:.3f}" for k, v in final.items() if isinstance(v, float)))
    return {"R": R, "G": G, "metrics": final, "parent_run_id": run.parent}
