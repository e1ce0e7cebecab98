"""SFT with label smoothing: each demonstration token's target is (1 - epsilon) on the token and epsilon spread
evenly over the vocabulary (Szegedy et al. 2016). The model is pulled less hard towards certainty on the new
task's tokens, a cheap regulariser to set beside SFT in a forgetting comparison.

Per token: (1 - epsilon) * -log p(y) + epsilon * mean over the vocabulary of -log p(v); the same token mean
over the step's batch as SFT (harness.methods.sft).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from harness.config import TrainerConfig
from harness.methods import MethodSpec
from harness.methods.base import StageContext, TrainStats
from harness.methods.sft import (
    SUPERVISED_READS,
    SupervisedSettings,
    settings_with_options,
    train_supervised,
)
from harness.tasks.spec import Item, TaskSpec


@dataclass(frozen=True)
class SmoothingSettings(SupervisedSettings):
    epsilon: float = (
        0.1  # option: probability mass moved from the demonstration token to the uniform distribution
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon < 1.0:
            raise ValueError(f"epsilon={self.epsilon}: must be in [0, 1)")


METHOD = MethodSpec(
    name="sft_ls",
    settings=settings_with_options,
    reads=SUPERVISED_READS,
    options=SmoothingSettings,
    display="SFT + label smoothing",
)


def smoothed_nll(epsilon: float):
    """The per-token loss for SupervisedStep: (logits [n, V], targets [n]) -> [n], accumulated in float32."""

    def token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits.float(), dim=-1)
        nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return (1.0 - epsilon) * nll - epsilon * logp.mean(dim=-1)

    return token_loss


def train(
    model: Any,
    tokenizer: Any,
    items: list[Item],
    spec: TaskSpec | None,
    settings: SmoothingSettings,
    trainer: TrainerConfig,
    ctx: StageContext,
) -> TrainStats:
    token_loss = smoothed_nll(settings.epsilon)
    return train_supervised(model, tokenizer, items, settings, trainer, ctx, token_loss, "sft_ls")
