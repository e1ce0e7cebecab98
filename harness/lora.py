"""LoRA as an axis of every method: low-rank adapters injected into the model in place (peft).

`add_adapters(model, cfg.model.lora)` replaces the named linear layers by peft's LoRA layers *inside* the
transformers model (peft's `inject_adapter_in_model`), so the model keeps its class: generation, lm-eval,
`completion_hidden`, the fused LM head and checkpoints see the same object as without adapters. Only the
adapter weights (`lora_A`, `lora_B`) require gradients afterwards, so every method trains adapters alone
(the optimizer, the L2/EWC anchors and clipping read `requires_grad` parameters), and an SDFT/LwF teacher
copy shares the frozen base weights with the student (harness.distill.teacher): its EMA is of the adapters.

Stage to stage: one adapter is trained on through the whole stream and never merged; the base weights stay
frozen for the run. A stage checkpoint holds base + adapter tensors (safetensors of the whole module), and
a resumed run loads it into a freshly loaded model with the same adapters, so resuming restores both.
Adapters are initialised from a fixed seed (B = 0: the model starts as the base model), independent of
the global RNG, so every run of a sweep starts from the same adapter.
"""

from __future__ import annotations

from typing import Any

import torch

ADAPTER_MARK = "lora_"
INIT_SEED = 0


def add_adapters(model: torch.nn.Module, lora: Any) -> torch.nn.Module:
    """Inject LoRA adapters (in place) when `lora.r > 0` and freeze everything else; returns the model."""
    if lora is None or lora.r == 0:
        return model
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        try:
            inject_adapter_in_model(config, model)
        except ValueError as err:  # peft: "Target modules {...} not found in the base model"
            raise ValueError(
                f"model.lora.target_modules={list(lora.target_modules)}: {str(err).splitlines()[0]}"
            ) from None
    for name, p in model.named_parameters():
        p.requires_grad_(ADAPTER_MARK in name)
    model.enable_input_require_grads()  # gradient checkpointing needs a grad-requiring input to the layers
    return model


def has_adapters(model: torch.nn.Module) -> bool:
    return any(ADAPTER_MARK in name for name, _ in model.named_parameters())


def adapter_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if ADAPTER_MARK in name}


def set_merged(model: torch.nn.Module, merged: bool) -> None:
    """Fold the adapters into the base weights (merged) or take them out again, layer by layer (peft's own
    merge/unmerge): the same function either way, which tests/test_lora.py checks."""
    from peft.tuners.lora import LoraLayer

    for module in model.modules():
        if isinstance(module, LoraLayer):
            if merged and not module.merged:
                module.merge()
            elif not merged and module.merged:
                module.unmerge()
