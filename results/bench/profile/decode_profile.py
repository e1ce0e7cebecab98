"""Where a static-decoder step spends its time (issue #24: decode against its weight-streaming floor).

Prints (1) the torch profiler's op table for 48 sampled tokens of the step benchmark's batch of 8 on the
embedded model, float32, and (2) the bandwidth the CPU's matmul kernels reach at batch 8 on weights of the
model's shapes, cold in cache (enough distinct copies to exceed the last-level cache, as 30 layers do),
for `F.linear` (what the decoder and `generate` call) and for the transposed product `W @ x.T`.
Run on an idle machine: `python results/bench/profile/decode_profile.py`.
"""

from __future__ import annotations

import time

import torch
from torch.profiler import ProfilerActivity, profile

from harness.batching import chat_prompt_ids
from harness.bench.fixed_batch import PROMPTS
from harness.config import ModelConfig
from harness.distill.rollout import sample
from harness.models import load_model


def _median_s(fn, reps: int = 20) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[reps // 2]


def decode_ops(tokens: int = 48) -> None:
    model, tok = load_model(ModelConfig())
    ids = [chat_prompt_ids(tok, [{"role": "user", "content": p}]) for p in PROMPTS]
    model.generation_config.min_new_tokens = tokens  # every row decodes the full length
    sample(model, tok, ids, max_new_tokens=8, decoder="static")  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        sample(model, tok, ids, max_new_tokens=tokens, decoder="static")
        print(f"{tokens} tokens, batch 8, profiled: {time.perf_counter() - start:.2f} s")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=48))


def gemv_bandwidth() -> None:
    linear = torch.nn.functional.linear
    for out_dim, in_dim in [(49152, 576), (1536, 576), (576, 1536), (576, 576)]:
        copies = [torch.randn(out_dim, in_dim) for _ in range(max(2, 60_000_000 // (out_dim * in_dim)))]
        x = torch.randn(8, in_dim)
        nbytes = sum(w.numel() for w in copies) * 4
        as_linear = _median_s(lambda: [linear(x, w) for w in copies])  # noqa: B023
        transposed = _median_s(lambda: [w @ x.t() for w in copies])  # noqa: B023
        print(
            f"W[{out_dim},{in_dim}] x{len(copies)} at batch 8: F.linear {nbytes / as_linear / 1e9:.1f} GB/s, "
            f"W @ x.T {nbytes / transposed / 1e9:.1f} GB/s"
        )
    big, into = torch.randn(60_000_000), torch.empty(60_000_000)  # preallocated: no page faults timed
    copy_s = _median_s(lambda: into.copy_(big), reps=10)
    print(f"copy bandwidth (read + write): {2 * big.numel() * 4 / copy_s / 1e9:.1f} GB/s")


if __name__ == "__main__":
    decode_ops()
    gemv_bandwidth()
