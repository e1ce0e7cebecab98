"""A decoder with a preallocated KV cache and a fixed amount of Python work per token (no torch.compile).

Hugging Face `generate` spends most of a CPU decode step outside the matmuls: it grows a DynamicCache by
concatenation (a copy of every layer's keys and values per token), rebuilds the attention mask, runs its
logits-processor and stopping-criteria objects and the module hooks of every layer. This decoder prefills
with the model's own forward (so the prompt's cache is exactly `generate`'s), copies that cache into one
buffer sized for the whole decode, and then runs each token through the layers' own weights and norms with
the same operations as the Llama attention (rotary embedding, SDPA with the grouped query heads packed as
`transformers` does for one query token), writing keys and values in place. Per token the Python work is
a loop over the layers, whatever the length so far. On the CPU the projections run on weights packed once
for oneDNN, q/k/v and gate/up fused (harness.decoding.packed): a decode step is bound by streaming the
weights, and the packed kernels stream them 2-4x faster than `F.linear`.

Rows that emit an end-of-turn token (or complete a stop string) stop costing: once a quarter of the rows
still decoding have ended, the live rows are gathered into a smaller cache; the loop ends when every row
has. Identical prompts (several rollouts of one prompt) are prefilled once and their cache copied to
their rows.

Only decoder-only Llama-family models whose attention is plain q/k/v/o projections with rotary embeddings
are run here (`unsupported` says why a model is not); harness.decoding.choose falls back to `generate`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from harness.batching import _output_cache, position_ids
from harness.decoding.packed import layer_products
from harness.decoding.warpers import Sampling, StopStrings, next_tokens

# model_type values whose decoder layers are input norm -> q/k/v/o attention with rotary -> norm -> MLP
SUPPORTED = ("llama", "qwen2")


def unsupported(model: Any) -> str | None:
    """Why this model cannot use the static decoder (one line), or None when it can."""
    config = getattr(model, "config", None)
    kind = getattr(config, "model_type", None)
    if kind not in SUPPORTED:
        return f"model_type {kind!r} (static decoder knows {', '.join(SUPPORTED)})"
    if getattr(config, "use_sliding_window", False):
        return "sliding-window attention"
    base = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    layers = getattr(base, "layers", None)
    if layers is None or not hasattr(base, "rotary_emb") or not hasattr(model, "lm_head"):
        return "no decoder layers / rotary embedding / LM head where a Llama-family model has them"
    attn = layers[0].self_attn
    if any(hasattr(attn, n) for n in ("q_norm", "k_norm")) or not hasattr(attn, "q_proj"):
        return "attention with query/key norms or fused projections"
    return None


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


class StaticDecoder:
    """One decode of a left-padded batch: prefill, then `step` per token on a preallocated cache."""

    def __init__(
        self,
        model: Any,
        prompt_ids: torch.Tensor,
        prompt_mask: torch.Tensor,
        max_new: int,
        share: bool = True,
    ):
        self.model = model
        self.base = getattr(model, model.base_model_prefix)
        config = model.config
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        device = next(model.parameters()).device
        rows, width = prompt_ids.shape
        self.length = width  # columns of the cache filled so far
        total = width + max_new
        # rotary tables for every position this decode can reach, from the model's own rotary module
        # in the dtype of the token embeddings, as the model's forward builds them (bf16 weights: bf16 tables)
        dtype = self.base.embed_tokens.weight.dtype
        hidden = torch.zeros(1, 1, config.hidden_size, device=device, dtype=dtype)
        cos, sin = self.base.rotary_emb(hidden, position_ids=torch.arange(total, device=device)[None])
        self.cos, self.sin = cos[0], sin[0]  # [total, head_dim]
        self.mask = torch.zeros(rows, total, dtype=torch.bool, device=device)
        self.mask[:, :width] = prompt_mask.bool()
        # transformers passes no mask when no row is padded: SDPA then groups the heads itself
        self.padded = not bool(prompt_mask.bool().all())
        self.position = prompt_mask.long().sum(-1).to(device)  # the next token's position per row
        self.first_logits = self._prefill(prompt_ids.to(device), prompt_mask.to(device), total, share)
        # the projections of each layer and the LM head, on weights packed once where the model allows it
        self.layers, self.head = layer_products(model, rows)

    def _prefill(self, ids: torch.Tensor, mask: torch.Tensor, total: int, share: bool) -> torch.Tensor:
        """The prompt through the model's own forward (distinct prompts once when `share`); its cache into
        the buffers."""
        distinct, row_of = torch.unique(torch.cat([ids, mask], 1), dim=0, return_inverse=True)
        if share and distinct.shape[0] < ids.shape[0]:
            width = ids.shape[1]
            ids, mask = distinct[:, :width], distinct[:, width:]
        else:
            row_of = None
        out = self.base(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=True)
        cache = _output_cache(out)
        keys = [layer.keys for layer in cache.layers]
        values = [layer.values for layer in cache.layers]
        rows, width = self.mask.shape[0], ids.shape[1]
        shape = (len(keys), rows, self.kv_heads, total, self.head_dim)
        self.k = torch.zeros(shape, dtype=keys[0].dtype, device=ids.device)
        self.v = torch.zeros(shape, dtype=values[0].dtype, device=ids.device)
        for i, (k, v) in enumerate(zip(keys, values, strict=True)):
            self.k[i, :, :, :width] = k if row_of is None else k[row_of]
            self.v[i, :, :, :width] = v if row_of is None else v[row_of]
        logits = self.model.lm_head(out.last_hidden_state[:, -1:])[:, -1].float()
        return logits if row_of is None else logits[row_of]

    def keep(self, rows: torch.Tensor) -> None:
        """Drop every row not in `rows` (indices into the current rows) from the cache and the masks."""
        t = self.length
        for name in ("k", "v"):
            old = getattr(self, name)
            new = torch.empty((old.shape[0], len(rows), *old.shape[2:]), dtype=old.dtype, device=old.device)
            new[:, :, :, :t] = old[:, rows, :, :t]
            setattr(self, name, new)
        self.mask = self.mask[rows]
        self.position = self.position[rows]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """[b] tokens (one per live row) -> [b, V] float32 next-token logits; the cache grows by one column."""
        b, t = tokens.shape[0], self.length
        self.mask[:, t] = True
        mask = self.mask[:, None, None, : t + 1] if self.padded else None
        cos = self.cos[self.position][:, None, None]  # [b, 1, 1, head_dim]
        sin = self.sin[self.position][:, None, None]
        rep = self.heads // self.kv_heads
        h = self.base.embed_tokens(tokens[:, None])
        for i, (layer, products) in enumerate(zip(self.base.layers, self.layers, strict=True)):
            x = layer.input_layernorm(h)
            q, k, v = products.qkv(x)
            q = _rotate(q.view(b, 1, self.heads, self.head_dim).transpose(1, 2), cos, sin)
            k = _rotate(k.view(b, 1, self.kv_heads, self.head_dim).transpose(1, 2), cos, sin)
            v = v.view(b, 1, self.kv_heads, self.head_dim).transpose(1, 2)
            self.k[i, :, :, t] = k[:, :, 0]
            self.v[i, :, :, t] = v[:, :, 0]
            keys, values = self.k[i, :, :, : t + 1], self.v[i, :, :, : t + 1]
            scale = layer.self_attn.scaling
            if mask is None:
                out = F.scaled_dot_product_attention(q, keys, values, scale=scale, enable_gqa=rep > 1)
            else:  # one query token: the grouped heads become query rows of their key/value head
                out = F.scaled_dot_product_attention(
                    q.reshape(b, self.kv_heads, rep, self.head_dim), keys, values, attn_mask=mask, scale=scale
                )
            out = out.reshape(b, self.heads, 1, self.head_dim).transpose(1, 2).reshape(b, 1, -1)
            h = h + products.o(out)
            h = h + products.mlp(layer.post_attention_layernorm(h))
        self.length = t + 1
        self.position = self.position + 1
        return self.head(self.base.norm(h))[:, -1].float()


@torch.no_grad()
def decode(
    model: Any,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    eos: list[int],
    pad_id: int,
    sampling: Sampling | None = None,
    stop_strings: StopStrings | None = None,
    min_new_tokens: int = 0,
    share_prefill: bool = True,
) -> torch.Tensor:
    """[B, C <= max_new_tokens] new tokens of each left-padded prompt, `pad_id` after a row's end.

    A row ends at its first token in `eos` (kept) or when its text completes a stop string; the output has
    as many columns as the longest row took. `min_new_tokens`: `eos` cannot be drawn before that many
    tokens (generate's min_new_tokens; the benchmark forces fixed-length rollouts with it). `share_prefill`:
    identical prompts are prefilled once. Run it inside the caller's no-grad / autocast context.
    """
    rows = prompt_ids.shape[0]
    device = next(model.parameters()).device
    dec = StaticDecoder(model, prompt_ids, prompt_mask, max_new_tokens, share_prefill)
    out = torch.full((rows, max_new_tokens), pad_id, dtype=torch.long, device=device)
    in_cache = torch.arange(rows, device=device)  # the output row of each cache row
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    stop_ids = torch.tensor(eos, device=device)
    logits = dec.first_logits
    for t in range(max_new_tokens):
        # every cache row draws, ended ones too, as `generate` does: until the first gather the random
        # stream is consumed exactly as there
        if t < min_new_tokens:
            logits[:, stop_ids] = float("-inf")
        token = next_tokens(logits, sampling).masked_fill(done, pad_id)
        out[in_cache, t] = token
        ended = torch.isin(token, stop_ids)
        if stop_strings:
            ended |= stop_strings.hits(out[in_cache, max(0, t + 1 - stop_strings.window) : t + 1]).to(device)
        done |= ended
        if bool(done.all()) or t + 1 == max_new_tokens:
            return out[:, : t + 1]
        # gathering copies the cache, so it waits until a quarter of the computed rows have ended
        if 4 * int(done.sum()) >= done.shape[0]:
            keep = (~done).nonzero().squeeze(1)
            dec.keep(keep)
            in_cache, done, token = in_cache[keep], done[keep], token[keep]
        logits = dec.step(token)
    return out[:, :0]  # max_new_tokens == 0
