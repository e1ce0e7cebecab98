"""SFT with a confidence penalty (Pereyra et al. 2017): cross-entropy on the demonstration minus `beta` times
the entropy of the model's next-token distribution at each demonstration position.

Low-entropy (over-confident) output distributions are penalised, so the new task is learned without driving
every prediction to certainty; a cheap regulariser to set beside SFT and label smoothing in a forgetting
comparison. Per token: -log p(y) - beta * H(p), H(p) = -sum_v p(v) log p(v); the same token mean over the
step's batch as SFT (harness.methods.sft).
"""

from __future__ import annotations

from collections.abc import Callable
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
class ConfidencePenaltySettings(SupervisedSettings):
    beta: float = 0.1  # option: weight of the entropy bonus (0 = plain SFT)

    def __post_init__(self) -> None:
        if self.beta < 0:
            raise ValueError(f"method.options.beta={self.beta}: must be >= 0")


METHOD = MethodSpec(
    name="sft_cp", settings=settings_with_options, reads=SUPERVISED_READS, options=ConfidencePenaltySettings
)


def penalised_nll(beta: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The per-token loss for SupervisedStep: (logits [n, V], targets [n]) -> [n], in float32."""

    def token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits.float(), dim=-1)
        nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        entropy = -(logp.exp() * logp).sum(dim=-1)
        return nll - beta * entropy

    return token_loss


def train(
    model: Any,
    tokenizer: Any,
    items: list[Item],
    spec: TaskSpec | None,
    settings: ConfidencePenaltySettings,
    trainer: TrainerConfig,
    ctx: StageContext,
) -> TrainStats:
    token_loss = penalised_nll(settings.beta)
    return train_supervised(model, tokenizer, items, settings, trainer, ctx, token_loss, "sft_cp")
