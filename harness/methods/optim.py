"""AdamW with a linear-warmup cosine schedule (docs/design.md §4: weight decay 0, clip 1.0 by default)."""

from __future__ import annotations

import math
from typing import Any

import torch


def build_optimizer(model: torch.nn.Module, trainer_cfg: Any) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(
        params,
        lr=trainer_cfg.lr,
        betas=(trainer_cfg.adam_beta1, trainer_cfg.adam_beta2),
        weight_decay=trainer_cfg.weight_decay,
        **implementation(params),
    )


def implementation(params: list[torch.Tensor]) -> dict[str, bool | None]:
    """Which AdamW kernels: the fused one (one pass over each tensor, no temporaries) on CUDA and the CPU.

    On CUDA torch's default, foreach, would hold a model-sized temporary (~15 GB for a 7B model in bf16).
    On the CPU the default is the per-tensor loop, which launches a dozen elementwise ops per tensor: on
    the embedded 135M model one step took 0.69 s against 0.09 s fused (idle 2-core machine, medians of 5;
    results/bench/README.md), a tenth of an SFT step. FSDP's sharded (DTensor) parameters take the same
    kernel, shard by shard, so a sharded run and a one-process run update their weights alike.
    """
    if params and all(p.device.type in ("cuda", "cpu") for p in params):
        return {"fused": True, "foreach": None}
    return {"foreach": None}


def cosine_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier for optimizer step `step` (0-based).

    Warm-up reaches the full rate at step `warmup_steps - 1`, starting at 1/warmup (not 0, so no step is
    wasted at a zero rate, which matters for short stages); then a half cosine towards 0 at `total_steps`.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_factor(step, int(warmup_steps), int(total_steps))
    )
