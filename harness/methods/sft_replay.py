"""SFT with replay: a share `method.options.replay_fraction` of every batch is drawn from earlier tasks' items.

Same number of steps and batch size as SFT on the stage's task (so the compute matches SFT's); the
stage's own items fill the rest of each batch, reshuffled every epoch. With no earlier items (stage 1) it
is plain SFT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from harness.config import TrainerConfig
from harness.methods import MethodSpec
from harness.methods.base import (
    StageContext,
    TrainStats,
    epoch_batches,
    limit_items,
    num_steps,
    run_stage,
    stage_generator,
)
from harness.methods.sft import (
    SUPERVISED_READS,
    SupervisedSettings,
    SupervisedStep,
    settings_with_options,
)
from harness.tasks.spec import Item, TaskSpec


@dataclass(frozen=True)
class ReplaySettings(SupervisedSettings):
    replay_fraction: float = 0.25  # option: share of each batch drawn from earlier tasks' items

    def __post_init__(self) -> None:
        if not 0.0 <= self.replay_fraction < 1.0:  # at least one item of the stage's own task per batch
            raise ValueError(f"method.options.replay_fraction={self.replay_fraction}: must be in [0, 1)")


METHOD = MethodSpec(
    name="sft_replay",
    settings=settings_with_options,
    reads=SUPERVISED_READS,
    options=ReplaySettings,
    display="SFT + replay",
)


def train(
    model: Any,
    tokenizer: Any,
    items: list[Item],
    spec: TaskSpec | None,
    settings: ReplaySettings,
    trainer: TrainerConfig,
    ctx: StageContext,
) -> TrainStats:
    items = limit_items(items, trainer)
    batch_size = trainer.batch_size
    n_replay = min(batch_size - 1, round(settings.replay_fraction * batch_size)) if ctx.replay_items else 0
    gen = stage_generator(ctx)
    steps = num_steps(len(items), trainer)
    own = epoch_batches(len(items), batch_size - n_replay, steps, gen)
    batches = []
    for idx in own:
        batch = [items[i] for i in idx]
        if n_replay:
            pick = torch.randint(len(ctx.replay_items), (n_replay,), generator=gen).tolist()
            batch += [ctx.replay_items[i] for i in pick]
        batches.append(batch)
    step = SupervisedStep(model, tokenizer, settings.loss_chunk_size, ctx.max_length)
    stats = run_stage(model, trainer, ctx, batches, step, desc="sft_replay")
    stats.summary["replay_per_batch"] = float(n_replay)
    stats.summary["replay_share"] = n_replay / batch_size if batch_size else math.nan
    return stats
