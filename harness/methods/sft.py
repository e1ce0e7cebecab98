"""SFT: cross-entropy on the demonstration tokens only (chat template applied, prompt masked).

The loss is the mean over all demonstration tokens of the optimizer step's batch (what a transformers
`labels=` forward computes), whatever the gradient-accumulation split. Logits are computed for the
demonstration positions only, chunked (harness.distill.fused_head).
"""

from __future__ import annotations

from typing import Any

import torch

from harness.batching import collate, completion_hidden, encode_demonstration
from harness.distill.fused_head import fused_head_loss
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
from harness.tasks import Item, TaskSpec

METHOD = MethodSpec(name="sft", reads=("distill.loss_chunk_size",))


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def token_dft(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """DFT: the token's NLL weighted by its own probability, detached (a gradient-rescaled SFT)."""
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return -logp.detach().exp() * logp


class SupervisedStep:
    """Forward of one micro-batch of (prompt, demonstration) pairs: (loss, stats); run_stage calls backward."""

    def __init__(self, model: Any, tokenizer: Any, cfg: Any, token_loss=token_nll) -> None:
        self.model, self.tokenizer, self.token_loss = model, tokenizer, token_loss
        self.max_length = int(cfg.model.max_length)
        self.chunk = int(cfg.method.distill.loss_chunk_size)
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
    cfg: Any,
    ctx: StageContext,
    token_loss=token_nll,
    desc: str = "sft",
) -> TrainStats:
    items = limit_items(items, cfg)
    gen = stage_generator(ctx)
    steps = num_steps(len(items), cfg.trainer)
    batches = [
        [items[i] for i in idx] for idx in epoch_batches(len(items), int(cfg.trainer.batch_size), steps, gen)
    ]
    return run_stage(model, cfg, ctx, batches, SupervisedStep(model, tokenizer, cfg, token_loss), desc=desc)


def train(
    model: Any, tokenizer: Any, items: list[Item], spec: TaskSpec | None, cfg: Any, ctx: StageContext
) -> TrainStats:
    return train_supervised(model, tokenizer, items, cfg, ctx, token_nll, "sft")
