"""What every method shares: the stage context, the returned stats, and the optimizer-step loop.

A method supplies `micro_step(micro, batch) -> (loss, stats)`: the forward of the micro-batch `micro` (a
slice of the step's `batch`), returning its differentiable loss already scaled so that the micro-batches of
one step add up to the loss of the whole batch (the normaliser may depend on the whole batch, e.g. its
token count). The loop owns backward (so that under FSDP it runs outside the sharded root's forward, see
harness.parallel.sharding), shuffling, step counting, the optimizer and schedule, clipping, the NaN check, and the
per-step stats; methods never talk to MLflow.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.config import TrainerConfig
from harness.methods.optim import build_optimizer, build_scheduler
from harness.models import autocast
from harness.parallel import sharding
from harness.parallel.distributed import Replicas, micro_batches, replicas
from harness.tasks.spec import Item
from harness.timing import synchronized_clock


@dataclass
class StageContext:
    stage: int = 1
    seed: int = 0
    replay_items: list[Item] = field(default_factory=list)  # earlier tasks' train items (sft_replay)
    progress: bool = False  # a tqdm bar over optimizer steps
    # called on every process after each optimizer step with (step counted from 1, that step's stats): the
    # loop logs the stats live and scores the task every `eval.every_steps` (harness.run.stage_eval.StageHook)
    on_step: Callable[[int, dict[str, float]], None] | None = None
    max_length: int = 2048  # model.max_length: the context the harness allows itself (prompt + completion)
    # this process's place among the data-parallel processes (the loop passes the experiment's own)
    replicas: Replicas = field(default_factory=replicas)


@dataclass
class TrainStats:
    steps: list[dict[str, float]]  # one dict per optimizer step
    summary: dict[str, float]


class NonFiniteLossError(RuntimeError):
    def __init__(self, step: int, value: float) -> None:
        super().__init__(
            f"non-finite training loss {value} at optimizer step {step}; the step was not applied"
        )
        self.step, self.value = step, value


def stage_generator(ctx: StageContext) -> torch.Generator:
    """One RNG per (seed, stage): shuffling and sampling are reproducible and differ between stages.

    seed * 1_000_003 + stage rather than seed + stage, so (seed 0, stage 1) and (seed 1, stage 0) differ.
    """
    return torch.Generator().manual_seed(ctx.seed * 1_000_003 + ctx.stage)


def num_steps(n_items: int, trainer: TrainerConfig) -> int:
    steps = math.ceil(trainer.epochs * n_items / trainer.batch_size)
    if trainer.max_steps is not None:
        steps = min(steps, trainer.max_steps)
    return max(steps, 0)


def epoch_batches(n_items: int, batch_size: int, steps: int, gen: torch.Generator) -> list[list[int]]:
    """`steps` batches of indices: consecutive slices of one fresh permutation per epoch."""
    order: list[int] = []
    while len(order) < steps * batch_size:
        order.extend(torch.randperm(n_items, generator=gen).tolist())
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(steps)]


def micro_seed(ctx: StageContext, step: int, micro: int) -> int:
    """Seed of the global RNG before micro-batch `micro` (counted over the whole global batch) of `step`.

    Sampling then depends only on (seed, stage, step, micro-batch), not on which process runs it: a
    2-process run draws the same rollouts as a 1-process run with twice the accumulation.
    """
    return (ctx.seed * 1_000_003 + ctx.stage) * 1_000_003 + step * 1009 + micro


def limit_items(items: list[Item], trainer: TrainerConfig) -> list[Item]:
    limit = trainer.max_train_items
    return list(items[:limit]) if limit else list(items)


def shuffled_batches(items: list[Item], trainer: TrainerConfig, ctx: StageContext) -> list[list[Item]]:
    """The stage's optimizer steps as lists of items: `num_steps` batches of `trainer.batch_size`, one
    fresh permutation per epoch, drawn from the stage's own generator."""
    steps = num_steps(len(items), trainer)
    order = epoch_batches(len(items), trainer.batch_size, steps, stage_generator(ctx))
    return [[items[i] for i in idx] for idx in order]


MicroStep = Callable[[list[Item], list[Item]], tuple[torch.Tensor, dict[str, float]]]


def run_stage(
    model: torch.nn.Module,
    trainer: TrainerConfig,
    ctx: StageContext,
    batches: list[list[Item]],
    micro_step: MicroStep,
    after_step: Callable[[], None] | None = None,
    desc: str = "train",
) -> TrainStats:
    """Optimizer steps over `batches` (one list of items per step), split into `grad_accum` micro-batches
    per process; under data parallelism (harness.parallel.distributed) each process runs its own share of them."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    optimizer = build_optimizer(model, trainer)
    scheduler = build_scheduler(optimizer, trainer.warmup_steps, len(batches))
    if trainer.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    steps: list[dict[str, float]] = []
    state_mib = 0.0
    bar = _progress_bar(ctx, len(batches), desc)
    clock = synchronized_clock(device)  # an asynchronous device's phases are timed after it caught up
    start = clock()
    try:
        for step, batch in enumerate(batches):
            t0 = clock()
            lr = optimizer.param_groups[0]["lr"]
            optimizer.zero_grad(set_to_none=True)
            loss, merged = _forward_backward(model, trainer, ctx, step, batch, micro_step, clock)
            grad_norm = sharding.to_float(
                torch.nn.utils.clip_grad_norm_(model.parameters(), trainer.max_grad_norm)
            )
            optimizer.step()
            scheduler.step()
            if after_step is not None:
                after_step()
            if step == 0:  # gradients and optimizer state both exist now
                state_mib = training_state_mib(model, optimizer)
            record = _step_record(loss, lr, float(grad_norm), merged, clock() - t0)
            if ctx.on_step is not None:
                ctx.on_step(step + 1, record)
            steps.append(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
    finally:
        if bar is not None:
            bar.close()
        optimizer.zero_grad(set_to_none=True)
        if trainer.gradient_checkpointing:
            model.gradient_checkpointing_disable()
        model.eval()
    return _stage_stats(model, ctx, steps, time.perf_counter() - start, device, state_mib)


def _progress_bar(ctx: StageContext, total: int, desc: str) -> Any:
    if not (ctx.progress and ctx.replicas.is_main):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"stage {ctx.stage} {desc}", unit="step")


def _forward_backward(
    model: torch.nn.Module,
    trainer: TrainerConfig,
    ctx: StageContext,
    step: int,
    batch: list[Item],
    micro_step: MicroStep,
    clock: Callable[[], float],
) -> tuple[float, dict[str, list[float]]]:
    """This process's micro-batches of one step: forward, backward, and the step's loss and stats gathered
    from every process (each needs the same loss for the NaN check, and the same summed gradients)."""
    dist, accum = ctx.replicas, trainer.grad_accum
    losses: list[float] = []
    merged: dict[str, list[float]] = {}
    mine = range(dist.rank * accum, (dist.rank + 1) * accum)
    for index, micro in enumerate(micro_batches(batch, accum, dist.world)):
        if index not in mine or not micro:
            continue
        torch.manual_seed(micro_seed(ctx, step, index))
        # forward in the compute dtype (rollouts, teacher, student); backward below runs outside
        # autocast and reuses its dtypes, gradients land in the float32 master weights
        with autocast(model):
            micro_loss, stats = sharding.run(model, micro_step, micro, batch)
        t_back = clock()
        (micro_loss * sharding.gradient_scale(model)).backward()
        stats = {**stats, "backward_s": clock() - t_back}
        losses.append(micro_loss.item())
        for key, value in stats.items():
            merged.setdefault(key, []).append(value)
    if dist.active:
        losses, merged = _gather_stats(dist.gather((losses, merged)))
        dist.sum_gradients(model)
    loss = float(sum(losses))
    if not math.isfinite(loss):
        raise NonFiniteLossError(step, loss)
    return loss, merged


def _step_record(
    loss: float, lr: float, grad_norm: float, merged: dict[str, list[float]], step_s: float
) -> dict[str, float]:
    record = {"loss": loss, "lr": lr, "grad_norm": grad_norm}
    record.update(_merge(merged))
    record["step_s"] = step_s
    if "completion_tokens" in record:
        record["tokens_per_s"] = record["completion_tokens"] / record["step_s"]
    return record


def _stage_stats(
    model: torch.nn.Module,
    ctx: StageContext,
    steps: list[dict[str, float]],
    seconds: float,
    device: torch.device,
    state_mib: float,
) -> TrainStats:
    """The replicas checked equal, then the stage's summary with the most loaded process's memory."""
    dist = ctx.replicas
    dist.check_in_sync(model, f"stage {ctx.stage}")
    summary = summarize(steps, seconds)
    per_process = dist.gather((peak_memory_mib(device), state_mib))
    summary["peak_mem_mib"] = max(peak for peak, _ in per_process)
    summary["state_mib"] = max(state for _, state in per_process)
    return TrainStats(steps, summary)


def training_state_mib(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> float:
    """MiB this process stores for the student's weights, gradients and optimizer state: exact (counted, not
    sampled), about 1/N under FSDP. A teacher copy adds one more weights' worth, sharded alike."""
    tensors = {id(p): p for p in model.parameters()}
    tensors.update({id(p.grad): p.grad for p in model.parameters() if p.grad is not None})
    for state in optimizer.state.values():
        tensors.update({id(v): v for v in state.values() if torch.is_tensor(v) and v.dim() > 0})
    shards = [sharding.local(t) for t in tensors.values()]
    return sum(t.numel() * t.element_size() for t in shards) / 2**20


def peak_memory_mib(device: torch.device) -> float:
    """This process's peak memory, in MiB. On a GPU: the caching allocator's peak *reserved* memory during
    the stage (run_stage resets the peak at its start). On the CPU there is no per-stage figure: the peak
    resident set size of the process since it started (Linux reports KiB), loading and evaluation included."""
    if device.type == "cuda":  # reserved: what the process holds, cache included (what runs out first)
        return torch.cuda.max_memory_reserved(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _gather_stats(per_rank: list[tuple[list[float], dict[str, list[float]]]]):
    """Concatenate every process's micro-batch losses and stats, in rank (= micro-batch) order."""
    losses: list[float] = []
    merged: dict[str, list[float]] = {}
    for rank_losses, rank_stats in per_rank:
        losses.extend(rank_losses)
        for key, values in rank_stats.items():
            merged.setdefault(key, []).extend(values)
    return losses, merged


def _merge(values: dict[str, list[float]]) -> dict[str, float]:
    """Micro-batch stats -> step stats: counts and times add up, everything else is averaged."""
    out = {}
    for key, vals in values.items():
        additive = key.endswith("_s") or key.endswith("_tokens")
        out[key] = float(sum(vals)) if additive else float(sum(vals) / len(vals))
    return out


def summarize(steps: list[dict[str, float]], train_s: float) -> dict[str, float]:
    summary: dict[str, float] = {"steps": float(len(steps)), "train_s": train_s}
    if not steps:
        return summary
    for key in steps[0]:
        vals = [s[key] for s in steps if key in s]
        summary[f"mean_{key}"] = float(sum(vals) / len(vals))
    summary["first_loss"] = steps[0]["loss"]
    summary["last_loss"] = steps[-1]["loss"]
    return summary
