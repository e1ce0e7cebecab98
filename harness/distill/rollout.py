"""On-policy rollouts: batched, KV-cached sampling from the student context with left padding."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

from harness.batching import _output_cache, pad, position_ids
from harness.decoding.choose import pick
from harness.decoding.static import decode
from harness.decoding.warpers import Sampling
from harness.models import autocast
from harness.parallel import sharding


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


def shared_prefill(model: Any, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[Any, int] | None:
    """The KV cache of every distinct prompt's first P-1 tokens, prefilled once and expanded to the rows.

    With several rollouts per prompt (rows repeat), the prompt is the bulk of the compute of a short rollout;
    rows sharing a prompt get copies of one cache instead of each recomputing it. The last prompt token is
    left to `generate`, whose first step then yields every row's first-token distribution (it must see at
    least one new token). Returns (cache, distinct prompts), or None when no prompt repeats or P < 2.
    """
    if prompt_ids.shape[1] < 2:
        return None
    distinct, row_to_distinct = torch.unique(
        torch.cat([prompt_ids, prompt_mask], 1), dim=0, return_inverse=True
    )
    if distinct.shape[0] == prompt_ids.shape[0]:
        return None
    first_row = torch.zeros(distinct.shape[0], dtype=torch.long)
    first_row[row_to_distinct.flip(0)] = torch.arange(
        prompt_ids.shape[0] - 1, -1, -1
    )  # any row of each prompt
    device = next(model.parameters()).device
    ids, mask = prompt_ids[first_row, :-1].to(device), prompt_mask[first_row, :-1].to(device)
    decoder = getattr(model, model.base_model_prefix)  # no LM head: only the cache is wanted
    out = decoder(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=True)
    cache = _output_cache(out)
    cache.batch_select_indices(row_to_distinct.to(device))
    return cache, int(distinct.shape[0])


def _cache_kwarg(model: Any) -> str:
    """transformers renamed generate's `past_key_values` to `cache` (5.2x); older 5.x know only the former."""
    return (
        "cache"
        if "cache" in inspect.signature(model.prepare_inputs_for_generation).parameters
        else "past_key_values"
    )


@torch.no_grad()
def sample(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    min_p: float = 0.0,
    share_prefill: bool = True,
    decoder: str = "hf",
) -> Rollouts:
    """One completion per prompt (repeat a prompt for several rollouts: with `share_prefill` it is
    prefilled once for all its rows). Each row stops at its end-of-turn token, the batch when every row has.

    Runs in the model's compute dtype (harness.models.autocast): the weights are cast once per call.
    `decoder`: "static" (harness.decoding.static, falling back to `generate` where it cannot run) or "hf".
    """
    prompt_ids, prompt_mask = pad(prompts, tokenizer.pad_token_id, "left")
    stops = eos_ids(model, tokenizer)
    was_training = model.training
    model.eval()
    try:
        with sharding.whole_during_generation(model), autocast(model):
            if pick(model, decoder)[0] == "static":
                how = Sampling(temperature, top_p, top_k, min_p)
                completion = decode(
                    model,
                    prompt_ids,
                    prompt_mask,
                    max_new_tokens=max_new_tokens,
                    eos=stops,
                    pad_id=tokenizer.pad_token_id,
                    sampling=how,
                    # generate reads min_new_tokens from the model's generation config (the benchmark
                    # sets it to force fixed-length rollouts); so does this decoder
                    min_new_tokens=model.generation_config.min_new_tokens or 0,
                    share_prefill=share_prefill,
                )
            else:
                completion = _generate(
                    model,
                    tokenizer,
                    prompt_ids,
                    prompt_mask,
                    max_new_tokens,
                    stops,
                    {"temperature": temperature, "top_p": top_p, "top_k": top_k, "min_p": min_p},
                    share_prefill,
                )
    finally:
        model.train(was_training)
    return _cut_at_eos(prompt_ids, prompt_mask, completion.cpu(), stops, tokenizer.pad_token_id)


def _generate(
    model: Any,
    tokenizer: Any,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    max_new_tokens: int,
    stops: list[int],
    warpers: dict[str, Any],
    share_prefill: bool,
) -> torch.Tensor:
    """[B, C] new tokens from Hugging Face `generate` (decoder "hf", and the fallback of "static")."""
    device = next(model.parameters()).device
    # FSDP: every process must run the same forwards, so the shared prefill (one decoder forward,
    # whatever the rows) is skipped there rather than run by some processes only
    shared = (
        shared_prefill(model, prompt_ids, prompt_mask)
        if share_prefill and not sharding.is_sharded(model)
        else None
    )
    extra = {_cache_kwarg(model): shared[0]} if shared is not None else {}
    out = model.generate(
        input_ids=prompt_ids.to(device),
        attention_mask=prompt_mask.to(device),
        max_new_tokens=max_new_tokens,
        do_sample=True,
        temperature=warpers["temperature"],
        top_p=warpers["top_p"],
        top_k=warpers[
            "top_k"
        ],  # 0 by default: the paper samples from the full distribution; HF's default is 50
        min_p=warpers["min_p"] or None,
        eos_token_id=stops,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
        # FSDP: every process must run as many forward passes as the others (each gathers the layers'
        # shards), so a process whose rows have all ended keeps stepping until every process is done
        synced_gpus=sharding.is_sharded(model),
        **extra,
    )
    return out[:, prompt_ids.shape[1] :]


def _cut_at_eos(
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion: torch.Tensor,
    stops: list[int],
    pad_id: int,
) -> Rollouts:
    """Each row up to and including its first end-of-turn token (padding after it); a row without one was
    cut at the length cap (`truncated`)."""
    is_eos = torch.isin(completion, torch.tensor(stops))
    has_eos = is_eos.any(-1)
    first = torch.where(
        has_eos, is_eos.int().argmax(-1), torch.full_like(has_eos, completion.shape[1], dtype=torch.long)
    )
    mask = (torch.arange(completion.shape[1]).unsqueeze(0) <= first.unsqueeze(1)).long()
    completion = completion.masked_fill(mask == 0, pad_id)
    return Rollouts(prompt_ids, prompt_mask, completion, mask, ~has_eos)
