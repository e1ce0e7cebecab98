"""Joint (multi-task) training: the upper-bound reference of continual learning, as a method.

At stage k the model is reset to the weights the run started from (the base model) and trained with SFT on
the union of the first k tasks' train items, shuffled together, for as many optimizer steps as sequential
SFT spends on those k stages together (each task's `num_steps` under the same trainer settings). So the
last stage's row of the accuracy matrix is the joint model of the whole stream with the same total steps
as a sequential run; earlier rows are the joint models of the prefixes (a joint run costs about
(T + 1) / 2 times the training of a sequential one). The report draws its final accuracy as the
upper-bound reference line of the Pareto view (harness/report/pareto.py).

The base weights are kept on the model object (attribute `joint_base`, one more copy of the weights) from
the first stage on. A run resumed after stage 1 has lost them (a checkpoint holds the last joint model, not
the base): such a resume is refused with one line; start the run afresh.
"""

from __future__ import annotations

from typing import Any

import torch

from harness.config import TrainerConfig
from harness.methods import Held, MethodSpec, StudentSize
from harness.methods.base import (
    StageContext,
    TrainStats,
    epoch_batches,
    limit_items,
    num_steps,
    run_stage,
    stage_generator,
)
from harness.methods.sft import SUPERVISED_READS, SupervisedSettings, SupervisedStep, supervised_settings
from harness.parallel import sharding
from harness.tasks.spec import Item, TaskSpec


def joint_held(settings: SupervisedSettings, student: StudentSize) -> tuple[Held, ...]:
    return (Held("joint base weights", student.trainable),)  # a clone of what trains, for the whole run


METHOD = MethodSpec(
    name="joint",
    settings=supervised_settings,
    reads=SUPERVISED_READS,
    supports_fsdp=False,  # the base weights are a whole copy kept outside the sharded root
    held=joint_held,
)


def tasks_of(items: list[Item]) -> list[list[Item]]:
    """Consecutive items from one train file form one task (`source` is "file:line")."""
    out: list[list[Item]] = []
    last = None
    for item in items:
        path = item.source.rsplit(":", 1)[0]
        if path != last or not out:
            out.append([])
            last = path
        out[-1].append(item)
    return out


def joint_plan(
    earlier: list[Item], items: list[Item], trainer: TrainerConfig, ctx: StageContext
) -> list[list[Item]]:
    """The stage's optimizer steps over the union of every task so far: as many as sequential SFT takes."""
    tasks = [limit_items(t, trainer) for t in tasks_of(earlier)] + [limit_items(items, trainer)]
    union = [item for task in tasks for item in task]
    steps = sum(num_steps(len(task), trainer) for task in tasks)
    order = epoch_batches(len(union), trainer.batch_size, steps, stage_generator(ctx))
    return [[union[i] for i in idx] for idx in order]


def reset_to_base(model: torch.nn.Module, ctx: StageContext) -> None:
    base = getattr(model, "joint_base", None)
    if base is None:
        if ctx.stage > 1:
            raise ValueError(
                f"method joint cannot resume at stage {ctx.stage}: it retrains from the base weights at "
                "every stage and a resumed run no longer has them; start the run afresh"
            )
        # what trains (everything, or the LoRA adapters alone); frozen weights never change
        model.joint_base = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        return
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in base:
                p.copy_(base[name])


def train(
    model: Any,
    tokenizer: Any,
    items: list[Item],
    spec: TaskSpec | None,
    settings: SupervisedSettings,
    trainer: TrainerConfig,
    ctx: StageContext,
) -> TrainStats:
    if sharding.is_sharded(model):
        raise ValueError("method joint does not support FSDP (it keeps a whole copy of the base weights)")
    reset_to_base(model, ctx)
    batches = joint_plan(ctx.replay_items, items, trainer, ctx)
    step = SupervisedStep(model, tokenizer, settings.loss_chunk_size, ctx.max_length)
    stats = run_stage(model, trainer, ctx, batches, step, desc="joint")
    stats.summary["joint_tasks"] = float(len(tasks_of(ctx.replay_items)) + 1)
    return stats
