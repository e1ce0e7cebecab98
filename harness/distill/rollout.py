"""On-policy rollouts: batched, KV-cached sampling from the student context with left padding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from harness import sharding
from harness.batching import pad


@dataclass
class Rollouts:
    prompt_ids: torch.Tensor  # [B, P], left-padded
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor  # [B, C], right-padded with the pad token after the first EOS
    completion_mask: torch.Tensor  # 1 up to and including the first EOS
    truncated: torch.Tensor  # [B] bool: no EOS within max_new_tokens

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(-1)


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token that ends a turn: the tokenizer's EOS and whatever the model's generation config lists."""
    declared = model.generation_config.eos_token_id
    declared = [] if declared is None else [declared] if isinstance(declared, int) else list(declared)
    return list(dict.fromkeys([tokenizer.eos_token_id, *declared]))


@torch.no_grad()
def sample(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> Rollouts:
    """One completion per prompt (repeat prompts for several rollouts). Stops when every row has ended."""
    device = next(model.parameters()).device
    prompt_ids, prompt_mask = pad(prompts, tokenizer.pad_token_id, "left")
    stops = eos_ids(model, tokenizer)
    was_training = model.training
    model.eval()
    try:
        with sharding.whole_during_generation(model):
            out = model.generate(
                input_ids=prompt_ids.to(device),
                attention_mask=prompt_mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                top_k=0,  # the paper samples from the full distribution; HF's default would be top-50
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id,
                use_cache=True,
                # FSDP: every process must run as many forward passes as the others (each gathers the layers'
                # shards), so a process whose rows have all ended keeps stepping until every process is done
                synced_gpus=sharding.active(),
            )
    finally:
        model.train(was_training)
    completion = out[:, prompt_ids.shape[1]:].cpu()
    is_eos = torch.isin(completion, torch.tensor(stops))
    has_eos = is_eos.any(-1)
    first = torch.where(has_eos, is_eos.int().argmax(-1), torch.full_like(has_eos, completion.shape[1], dtype=torch.long))
    mask = (torch.arange(completion.shape[1]).unsqueeze(0) <= first.unsqueeze(1)).long()
    completion = completion.masked_fill(mask == 0, tokenizer.pad_token_id)
    return Rollouts(prompt_ids, prompt_mask, completion, mask, ~has_eos)
