"""Tokenization and collation shared by every method.

One layout serves training, teacher scoring and generation: prompts left-padded to a common length P,
completions (demonstrations or rollouts) right-padded to C, concatenated. The hidden state at column P-1+t
predicts completion token t for every row, so the completion positions are one slice, no gather, and the
LM head runs on those positions only. Position ids are derived from the attention mask, so padding never
shifts a sequence's positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from harness.parallel import sharding
from harness.tasks.spec import Item, Messages, student_messages


def chat_prompt_ids(tokenizer: Any, messages: Messages) -> list[int]:
    """The chat template with the assistant turn opened (what the model continues from)."""
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if hasattr(encoded, "keys"):  # transformers 5 returns a BatchEncoding
        encoded = encoded["input_ids"]
    return list(encoded)


def completion_ids(tokenizer: Any, text: str) -> list[int]:
    """A demonstration as the model would generate it: its tokens, then the end-of-turn token.

    The EOS ends a generated turn too (generation stops on it), so SFT and SDFT train on the same shape.
    """
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]


def encode_demonstration(tokenizer: Any, item: Item, max_length: int) -> tuple[list[int], list[int]]:
    """(prompt ids, demonstration ids) for SFT; a demonstration too long for `max_length` is cut at the end."""
    prompt = chat_prompt_ids(tokenizer, student_messages(item))
    demo = completion_ids(tokenizer, item.demonstration)
    if len(prompt) >= max_length:
        raise ValueError(
            f"item {item_name(item)}: the prompt alone has {len(prompt)} tokens, model.max_length={max_length}"
        )
    return prompt, demo[: max_length - len(prompt)]


def item_name(item: Item) -> str:
    parts = [p for p in (item.source, f"id={item.id}" if item.id is not None else "") if p]
    return " ".join(parts) or repr(str(item.prompt)[:60])


def pad(seqs: Sequence[Sequence[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) [B, max_len]; `side` is where the padding goes."""
    width = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        if not seq:
            continue
        if side == "left":
            ids[row, width - len(seq) :] = torch.as_tensor(seq)
            mask[row, width - len(seq) :] = 1
        else:
            ids[row, : len(seq)] = torch.as_tensor(seq)
            mask[row, : len(seq)] = 1
    return ids, mask


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@dataclass
class PromptCompletionBatch:
    input_ids: torch.Tensor  # [B, P + C]
    attention_mask: torch.Tensor  # [B, P + C]
    prompt_len: int  # P: column P-1+t predicts completion token t
    completion_ids: torch.Tensor  # [B, C], right-padded
    completion_mask: torch.Tensor  # [B, C]

    @property
    def position_ids(self) -> torch.Tensor:
        return position_ids(self.attention_mask)

    def to(self, device: torch.device) -> PromptCompletionBatch:
        return PromptCompletionBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.prompt_len,
            self.completion_ids.to(device),
            self.completion_mask.to(device),
        )


def join(
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion: torch.Tensor,
    completion_mask: torch.Tensor,
) -> PromptCompletionBatch:
    """Left-padded prompts [B, P] + right-padded completions [B, C] -> one batch."""
    return PromptCompletionBatch(
        torch.cat([prompt_ids, completion], dim=1),
        torch.cat([prompt_mask, completion_mask], dim=1),
        prompt_ids.shape[1],
        completion,
        completion_mask,
    )


def collate(
    prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int
) -> PromptCompletionBatch:
    p_ids, p_mask = pad(prompts, pad_id, "left")
    c_ids, c_mask = pad(completions, pad_id, "right")
    return join(p_ids, p_mask, c_ids, c_mask)


def completion_hidden(model: Any, batch: PromptCompletionBatch, share_prompts: bool = True) -> torch.Tensor:
    """Final hidden states [B, C, H] at the positions that predict the completion tokens.

    Runs the decoder without its LM head: the head is applied later, chunked, to these positions only.
    Rows that repeat a prompt (several rollouts of one prompt) run it once (`share_prompts`): the prompt's
    forward is computed per distinct prompt, its KV cache (and the hidden state that predicts the first
    completion token) are indexed out to the rows, and the completions run on top. The same function of the
    weights, so gradients are the same too (indexing sums the rows' gradients into the shared prompt); it
    saves (rollouts - 1) / rollouts of the prompt's compute and saved activations. Not under FSDP (layers would
    run two forwards per step) or gradient checkpointing (which refuses a cache while training).
    """
    decoder = getattr(model, model.base_model_prefix)
    p, c = batch.prompt_len, batch.completion_ids.shape[1]
    shared = _repeated_prompts(batch) if share_prompts and p > 0 and c > 0 and _may_share(model) else None
    if shared is None:
        out = decoder(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
        )
        return out.last_hidden_state[:, p - 1 : p - 1 + c]
    first_row, row_of = shared
    positions = batch.position_ids
    prompt = decoder(
        input_ids=batch.input_ids[first_row, :p],
        attention_mask=batch.attention_mask[first_row, :p],
        position_ids=positions[first_row, :p],
        use_cache=True,
    )
    first = prompt.last_hidden_state[row_of, p - 1 : p]  # predicts completion token 0, for every row
    if c == 1:
        return first
    cache = _output_cache(prompt)
    cache.batch_select_indices(
        row_of
    )  # differentiable indexing: each row's gradient flows back to its prompt
    rest = decoder(
        input_ids=batch.input_ids[:, p : p + c - 1],
        attention_mask=batch.attention_mask[:, : p + c - 1],
        position_ids=positions[:, p : p + c - 1],
        use_cache=True,
        **{_cache_arg(decoder): cache},
    )
    return torch.cat([first, rest.last_hidden_state], dim=1)


def _may_share(model: Any) -> bool:

    checkpointing = getattr(
        model, "is_activation_checkpointing", None
    )  # transformers >= 5.2x; older name below
    if checkpointing is None:
        checkpointing = getattr(model, "is_gradient_checkpointing", False)
    return not sharding.is_sharded(model) and not checkpointing


def _repeated_prompts(batch: PromptCompletionBatch) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(one row index per distinct prompt, each row's distinct prompt) when some prompt repeats, else None."""
    p = batch.prompt_len
    key = torch.cat([batch.input_ids[:, :p], batch.attention_mask[:, :p].to(batch.input_ids.dtype)], dim=1)
    distinct, row_of = torch.unique(key, dim=0, return_inverse=True)
    if distinct.shape[0] == key.shape[0]:
        return None
    first_row = torch.empty(distinct.shape[0], dtype=torch.long, device=key.device)
    first_row[row_of] = torch.arange(key.shape[0], device=key.device)  # any row of each prompt will do
    return first_row, row_of


def _output_cache(out: Any) -> Any:
    """The KV cache a decoder returned (`cache` in recent transformers 5.x, `past_key_values` before)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _cache_arg(decoder: Any) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
