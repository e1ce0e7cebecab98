"""SFT: cross-entropy on the demonstration tokens only (chat template applied, prompt masked).

The loss is the mean over all demonstration tokens of the optimizer step's batch (what a transformers
`labels=` forward computes), whatever the gradient-accumulation split. Logits are computed for the
demonstration positions only, chunked (harness.distill.fused_head).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from harness.batching import collate, completion_hidden, encode_demonstration
from harness.config import MethodConfig, TrainerConfig
from harness.distill.fused_head import fused_head_loss
from harness.methods import MethodSpec, method_options
from harness.methods.base import StageContext, TrainStats, limit_items, run_stage, shuffled_batches
from harness.tasks.spec import Item, TaskSpec


@dataclass(frozen=True)
class SupervisedSettings:
    """What SFT-like methods read from `method:`: how many positions the chunked LM head covers at once
    (`method.sft.loss_chunk_size`; memory, not results: losses agree across chunk sizes to float rounding).
    A variant with knobs of its own subclasses this with those fields and declares it as its
    `MethodSpec.options`: the one place each default is written."""

    loss_chunk_size: int = 128


def supervised_settings(method: MethodConfig) -> SupervisedSettings:
    return SupervisedSettings(loss_chunk_size=method.sft.loss_chunk_size)


def settings_with_options(method: MethodConfig) -> Any:
    """`MethodSpec.settings` of an SFT variant whose options dataclass subclasses SupervisedSettings: its
    `method.options`, typed, with the family's chunk size filled in."""
    return replace(method_options(method.name, method.options), loss_chunk_size=method.sft.loss_chunk_size)


SUPERVISED_READS = ("sft",)  # the family's shared section (harness.config.SupervisedConfig)


METHOD = MethodSpec(name="sft", settings=supervised_settings, reads=SUPERVISED_READS)


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def token_dft(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """DFT: the token's NLL weighted by its own probability, detached (a gradient-rescaled SFT)."""
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return -logp.detach().exp() * logp


class SupervisedStep:
    """Forward of one micro-batch of (prompt, demonstration) pairs: (loss, stats); run_stage calls backward."""

    def __init__(
        self, model: Any, tokenizer: Any, chunk_size: int, max_length: int, token_loss=token_nll
    ) -> None:
        self.model, self.tokenizer, self.token_loss = model, tokenizer, token_loss
        self.max_length, self.chunk = max_length, chunk_size
        self._cache: dict[int, tuple[list[int], list[int]]] = {}

    def encode(self, item: Item) -> tuple[list[int], list[int]]:
        key = id(item)
        if key not in self._cache:
            self._cache[key] = encode_demonstration(self.tokenizer, item, self.max_length)
        return self._cache[key]

    def __call__(self, micro: list[Item], batch: list[Item]) -> tuple[torch.Tensor, dict[str, float]]:
        total_tokens = sum(len(self.encode(it)[1]) for it in batch)
        pairs = [self.encode(it) for it in micro]
        device = next(self.model.parameters()).device
        data = collate([p for p, _ in pairs], [c for _, c in pairs], self.tokenizer.pad_token_id).to(device)
        hidden = completion_hidden(self.model, data)
        mask = data.completion_mask.bool()
        targets = data.completion_ids[mask]
        weights = torch.full((targets.numel(),), 1.0 / total_tokens, device=device)
        loss = fused_head_loss(
            hidden[mask],
            self.model.get_output_embeddings(),
            weights,
            lambda logits, s, e: self.token_loss(logits, targets[s:e]),
            self.chunk,
        )
        return loss, {"train_tokens": float(targets.numel())}


def train_supervised(
    model: Any,
    tokenizer: Any,
    items: list[Item],
    settings: SupervisedSettings,
    trainer: TrainerConfig,
    ctx: StageContext,
    token_loss=token_nll,
    desc: str = "sft",
) -> TrainStats:
    batches = shuffled_batches(limit_items(items, trainer), trainer, ctx)
    step = SupervisedStep(model, tokenizer, settings.loss_chunk_size, ctx.max_length, token_loss)
    return run_stage(model, trainer, ctx, batches, step, desc=desc)


def train(
    model: Any,
    tokenizer: Any,
    items: list[Item],
    spec: TaskSpec | None,
    settings: SupervisedSettings,
    trainer: TrainerConfig,
    ctx: StageContext,
) -> TrainStats:
    return train_supervised(model, tokenizer, items, settings, trainer, ctx, token_nll, "sft")
