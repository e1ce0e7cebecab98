"""SFT with an L2 anchor: cross-entropy on the demonstration plus (weight / 2) * ||theta - theta_stage||^2.

theta_stage is the student as it was when the stage began, so every stage is pulled back towards what the
previous stages left, not towards the original model: the simplest regularisation baseline of continual
learning (L2-SP; EWC with a uniform Fisher). Costs one extra copy of the weights for the stage, and the
penalty's float32 (theta - theta_stage) that autograd keeps until the micro-batch's backward (`l2_held`).

The penalty of one optimizer step is spread over its micro-batches in proportion to their share of the
batch, so gradient accumulation and data-parallel gradient sums add up to exactly one penalty per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from harness.config import TrainerConfig
from harness.methods import Held, MethodSpec, StudentSize
from harness.methods.base import StageContext, TrainStats, limit_items, run_stage, shuffled_batches
from harness.methods.sft import (
    SUPERVISED_READS,
    SupervisedSettings,
    SupervisedStep,
    settings_with_options,
)
from harness.parallel import sharding
from harness.tasks.spec import Item, TaskSpec


@dataclass(frozen=True)
class L2Settings(SupervisedSettings):
    weight: float = 0.01  # option: strength of the pull towards the stage's starting weights


def l2_held(settings: L2Settings, student: StudentSize) -> tuple[Held, ...]:
    return (
        Held("L2 anchor", student.trainable),  # a clone of what trains, in its dtype
        Held("L2 penalty graph", student.trainable, 4),  # saved for the square's backward, float32
    )


METHOD = MethodSpec(
    name="sft_l2",
    settings=settings_with_options,
    reads=SUPERVISED_READS,
    options=L2Settings,
    supports_fsdp=False,  # the anchor is a whole copy of the weights
    display="SFT + L2 anchor",
    held=l2_held,
)


def l2_penalty(model: torch.nn.Module, anchor: dict[str, torch.Tensor]) -> torch.Tensor:
    """sum over trainable weights of ||theta - anchor||^2, accumulated in float32."""
    terms = [
        (p.float() - anchor[name].float()).pow(2).sum()
        for name, p in model.named_parameters()
        if p.requires_grad
    ]
    return torch.stack(terms).sum()


class AnchoredStep(SupervisedStep):
    """SFT's micro-step plus this micro-batch's share of the anchor penalty."""

    def __init__(self, model: Any, tokenizer: Any, chunk_size: int, max_length: int, weight: float) -> None:
        super().__init__(model, tokenizer, chunk_size, max_length)
        self.weight = weight
        self.anchor = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}

    def __call__(self, micro: list[Item], batch: list[Item]) -> tuple[torch.Tensor, dict[str, float]]:
        loss, stats = super().__call__(micro, batch)
        penalty = l2_penalty(self.model, self.anchor)
        share = len(micro) / len(batch)
        stats = {**stats, "l2_distance": float(penalty.detach().sqrt())}
        return loss + share * 0.5 * self.weight * penalty, stats


def train(
    model: Any,
    tokenizer: Any,
    items: list[Item],
    spec: TaskSpec | None,
    settings: L2Settings,
    trainer: TrainerConfig,
    ctx: StageContext,
) -> TrainStats:
    if sharding.is_sharded(model):
        raise ValueError(
            "method sft_l2 does not support FSDP (its anchor is a whole copy); use DDP or one process"
        )
    batches = shuffled_batches(limit_items(items, trainer), trainer, ctx)
    # the anchor: the weights as the stage begins
    step = AnchoredStep(model, tokenizer, settings.loss_chunk_size, ctx.max_length, settings.weight)
    return run_stage(model, trainer, ctx, batches, step, desc="sft_l2")
