"""CREDIT's contrastive baseline for the distillation methods: the teacher's hidden states for each row's
completion under K other items' contexts (the loss turns them into the baseline, harness.distill.credit).

The K other items are drawn for every row, with replacement, among the stage's other train items, from the
global RNG (run_stage seeds it per micro-batch, so the draw does not depend on the process layout). Which
context an item contributes is the step's `baseline_prompt(other, row)`: SDFT/OPSD use the other item's
whole teacher context (its question, demonstration and the template), OPD its prompt, SDFB the other
item's question with this row's attempt and feedback.
"""

from __future__ import annotations

from typing import Any

import torch

from harness.batching import item_name
from harness.config import DistillConfig
from harness.distill.rollout import Rollouts
from harness.tasks.spec import Item


def check_credit(d: DistillConfig, items: list[Item]) -> None:
    """CREDIT needs other items to contrast with: refuse a stage with one item before any compute."""
    if d.credit_k and len(items) < 2:
        raise ValueError(
            f"method.distill.credit_k={d.credit_k} needs at least 2 train items (other items' contexts "
            f"form the baseline); this stage has {len(items)}"
        )


def other_items(pool: list[Item], rows: list[Item], k: int) -> list[list[Item]]:
    """For each row, k items of `pool` other than the row's own, drawn with replacement."""
    index = {id(it): i for i, it in enumerate(pool)}
    draws = torch.randint(len(pool) - 1, (len(rows), k))
    out = []
    for row, item in zip(rows, draws.tolist(), strict=True):
        own = index.get(id(row), len(pool) - 1)  # an item outside the pool may contrast with any but the last
        out.append([pool[j + 1 if j >= own else j] for j in item])
    return out


def credit_baselines(step: Any, rows: list[Item], out: Rollouts, device: torch.device) -> list[torch.Tensor]:
    """K tensors [B, C, H]: the teacher's hidden states of each row's completion under the k-th other context."""
    chosen = other_items(step.pool, rows, step.credit_k)
    hidden = []
    for k in range(step.credit_k):
        prompts = [step.baseline_prompt(chosen[r][k], r) for r in range(len(rows))]
        for r, (prompt, n) in enumerate(zip(prompts, out.lengths.tolist(), strict=True)):
            if len(prompt) + n > step.max_length:
                raise ValueError(
                    f"item {item_name(chosen[r][k])}: as CREDIT's baseline context ({len(prompt)} tokens) "
                    f"+ completion ({n} tokens) it exceeds model.max_length={step.max_length}"
                )
        hidden.append(step.teacher_hidden(prompts, out, device))
    return hidden
