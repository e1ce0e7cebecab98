"""`harness bench step --lora-r R`: SFT and SDFT steps with LoRA adapters of rank R, beside full fine-tuning.

The rows use the same fixed batch, precision and forced rollout length as the full fine-tuning rows of
harness/bench/step.py (its `run_ours`), on a copy of the loaded model with adapters injected
(harness/lora.py); the ratios compare each LoRA row with the full row of the same method measured in the
same run. Peak memory is above the loaded model, as for the other rows: with LoRA the gradients, AdamW
moments and the SDFT teacher's copy are the adapters' size, which is what the ratio shows.
"""

from __future__ import annotations

from typing import Any

import torch

from harness.config import LoraConfig
from harness.lora import add_adapters


def with_adapters(model: torch.nn.Module, r: int) -> torch.nn.Module:
    """A LoRA copy for the benchmark: adapters of rank r (alpha = 2r) on the attention projections."""
    return add_adapters(model, LoraConfig(r=r, alpha=2.0 * r))


def lora_label(method: str, r: int) -> str:
    return f"{method}+lora{r}"


def lora_ratios(rows: list[dict[str, Any]], r: int) -> dict[str, dict[str, float]]:
    """Per precision: LoRA over full fine-tuning, step time and peak memory, for SFT and SDFT (1 rollout)."""
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        for method in ("sft", "sdft"):
            if row["method"] != lora_label(method, r) or row["rollouts"] != 1:
                continue
            full = next(
                (
                    x
                    for x in rows
                    if x["method"] == method and x["precision"] == row["precision"] and x["rollouts"] == 1
                ),
                None,
            )
            if full is None:
                continue
            entry = out.setdefault(row["precision"], {})
            entry[f"{method}_lora_over_full_time"] = row["step_s"] / full["step_s"]
            if full["peak_mib"] > 0:
                entry[f"{method}_lora_over_full_peak_mem"] = row["peak_mib"] / full["peak_mib"]
    return out
