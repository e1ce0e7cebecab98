"""The compute floor of a training step's passes: their matmul FLOPs over the machine's matmul throughput.

FLOPs are counted from the model's config (a Llama-family decoder: attention projections with grouped KV
heads, a gated MLP of three matrices, an LM head), 2 per multiply-add, matmuls only: norms, activations,
softmax, rotary embeddings, the embedding lookup and the optimizer are elementwise or gathers, a rounding
error beside the matmuls and bound by memory, not arithmetic. The passes are counted the way the harness
runs them (harness.batching.completion_hidden, harness.distill.fused_head):

- the decoder feeds each distinct prompt once, then each row's completion but its last token (the hidden
  state at prompt token P-1+t predicts completion token t; the last token predicts nothing);
- attention is causal: query t attends to keys 0..t. `causal=False` counts the full query x key rectangle
  each call computes instead (what a masked SDPA kernel, or eager attention, actually multiplies);
- the LM head runs only on completion positions (every real completion token: skipped tokens run the head
  too, with zero weight), chunked. The fused head takes the gradients of its logits inside its forward:
  logits, grad of the hidden states, grad of the head weight, three head matmuls per completion position,
  and nothing is recomputed in backward. The SDFT teacher's head runs once per position inside the student's
  loss (so its FLOPs are the student phase's, not the teacher phase's), no-grad;
- backward of a trained matmul is twice its forward (the input's gradient and the weight's); the first
  layer's input gradient counts too, since the (tied) embedding trains.

Padding is not counted: the floor is the work the real tokens need. Where the harness does more, the excess
is part of the measured time, not of the floor: rows without a repeated prompt (1 rollout) run unshared,
over the whole left-padded prompt + right-padded completion rectangle, last completion token included;
attention kernels multiply the masked-out half of the rectangle too; decoding attends over every row's
padded cache. The ratio measured / floor therefore includes padding, non-matmul work, framework
overhead and a matmul kernel below its best.

The SDFT heads run in float32 even under bf16 compute (harness.distill.loss._teacher_logits), so a pass's
FLOPs are kept in two parts, decoder and head, each divided by the throughput of the dtype it runs in.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PretrainedConfig


@dataclass(frozen=True)
class LMShape:
    """The dimensions of a causal LM that set its matmul FLOPs."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    # A tied head shares the embedding's weight: the same head matmul runs, and its weight gradient is added
    # into the embedding's, an addition, so FLOPs do not change; kept so a report says which model it counted.
    tied_head: bool

    @classmethod
    def of(cls, config: PretrainedConfig) -> LMShape:
        """From a transformers config (Llama, Qwen2, Mistral, SmolLM: gated MLP, grouped KV heads)."""
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(
            layers=config.num_hidden_layers,
            hidden=config.hidden_size,
            intermediate=config.intermediate_size,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            vocab=config.vocab_size,
            tied_head=bool(getattr(config, "tie_word_embeddings", False)),
        )

    def token_flops(self) -> int:
        """Forward FLOPs per token of one layer's weight matmuls: q, k, v, o projections and the gated MLP."""
        q = o = self.hidden * self.heads * self.head_dim
        kv = 2 * self.hidden * self.kv_heads * self.head_dim
        mlp = 3 * self.hidden * self.intermediate  # gate, up, down
        return 2 * (q + kv + o + mlp)

    def pair_flops(self) -> int:
        """Forward FLOPs per (query, key) pair of one layer: scores q.k and the weighted sum of v, every
        query head (grouped KV heads are shared by several query heads, each still multiplies)."""
        return 2 * 2 * self.heads * self.head_dim


@dataclass(frozen=True)
class Segment:
    """One run of tokens through the decoder: `tokens` new ones after `context` already in the KV cache."""

    context: int
    tokens: int

    def pairs(self, causal: bool = True) -> int:
        """(query, key) pairs attention multiplies for these tokens."""
        if causal:
            return self.tokens * self.context + self.tokens * (self.tokens + 1) // 2
        return self.tokens * (self.context + self.tokens)


def decoder_flops(shape: LMShape, segments: Sequence[Segment], causal: bool = True) -> int:
    """Forward FLOPs of the decoder (no LM head) over `segments`."""
    tokens = sum(s.tokens for s in segments)
    pairs = sum(s.pairs(causal) for s in segments)
    return shape.layers * (tokens * shape.token_flops() + pairs * shape.pair_flops())


def head_flops(shape: LMShape, positions: int) -> int:
    """Forward FLOPs of the LM head on `positions` positions."""
    return 2 * shape.hidden * shape.vocab * positions


def prompt_completion_segments(prompts: Sequence[int], completions: Sequence[Sequence[int]]) -> list[Segment]:
    """The decoder's runs for distinct prompts of lengths `prompts` and, for prompt i, completions of lengths
    `completions[i]` (its rollouts): each prompt once, each completion but its last token on top of it."""
    out = []
    for prompt, lengths in zip(prompts, completions, strict=True):
        out.append(Segment(0, prompt))
        out += [Segment(prompt, n - 1) for n in lengths if n > 1]
    return out


@dataclass(frozen=True)
class PassFlops:
    """One phase's FLOPs, split by where they run: the decoder (compute dtype) and the LM heads."""

    decoder: int
    head: int

    @property
    def total(self) -> int:
        return self.decoder + self.head

    def seconds(self, decoder_rate: float, head_rate: float) -> float:
        """The floor: each part at the matmul throughput (FLOP/s) of the dtype it runs in."""
        return self.decoder / decoder_rate + self.head / head_rate


@dataclass(frozen=True)
class StepTokens:
    """Token counts of one step's batch, per distinct prompt: the student's prompt length, the teacher's
    (SDFT's teacher context; SFT has none) and the lengths of its completions (rollouts, or the
    demonstration)."""

    prompts: tuple[int, ...]
    completions: tuple[tuple[int, ...], ...]
    teacher_prompts: tuple[int, ...] = ()

    @property
    def completion_positions(self) -> int:
        return sum(sum(c) for c in self.completions)


def supervised_flops(shape: LMShape, tokens: StepTokens, causal: bool = True) -> PassFlops:
    """SFT's forward + backward: the decoder 3x (forward, then backward at 2x), the fused head 3x."""
    segments = prompt_completion_segments(tokens.prompts, tokens.completions)
    return PassFlops(
        3 * decoder_flops(shape, segments, causal), 3 * head_flops(shape, tokens.completion_positions)
    )


def sdft_flops(shape: LMShape, tokens: StepTokens, causal: bool = True) -> dict[str, PassFlops]:
    """SDFT's three phases, as harness.methods.sdft times them:

    - generate: the prompt's prefill and one decoder step per generated token but the last, the head on
      the last position of each (one logit row per generated token);
    - teacher: the teacher's decoder over its own prompts and the completions, no grad, no head (its head
      runs inside the loss);
    - student: the student's forward + backward (decoder 3x, fused head 3x) and the teacher's head (1x).
    """
    student = supervised_flops(shape, tokens, causal)
    positions = tokens.completion_positions
    teacher = prompt_completion_segments(tokens.teacher_prompts, tokens.completions)
    generate = prompt_completion_segments(tokens.prompts, tokens.completions)
    return {
        "generate": PassFlops(decoder_flops(shape, generate, causal), head_flops(shape, positions)),
        "teacher": PassFlops(decoder_flops(shape, teacher, causal), 0),
        "student": PassFlops(student.decoder, student.head + head_flops(shape, positions)),
    }


def matmul_throughput(
    rows: int, inner: int, cols: int, dtype: torch.dtype, device: torch.device, reps: int = 5
) -> float:
    """FLOP/s of a [rows x inner] @ [inner x cols] matmul in `dtype`, median of `reps` after a warm-up.

    The median, not the best: the floor should be what the kernel sustains on this machine, not its luckiest
    run. Each rep times enough back-to-back calls to last ~0.2 s (a single ~10 ms call measured 114-182
    GFLOP/s between runs on an idle CPU), after as long a warm-up that wakes the threads and settles the
    clock. The output buffer is preallocated so the timing is the multiply alone."""
    a = torch.randn(rows, inner, dtype=dtype, device=device)
    b = torch.randn(inner, cols, dtype=dtype, device=device)
    out = torch.empty(rows, cols, dtype=dtype, device=device)

    def timed(calls: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(calls):
            torch.mm(a, b, out=out)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    calls = max(1, round(0.2 / max(timed(1), 1e-6)))  # the first call also pays for kernel selection
    timed(calls)  # warm-up
    times = [timed(calls) / calls for _ in range(reps)]
    return 2 * rows * inner * cols / statistics.median(times)
