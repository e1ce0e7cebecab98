"""Weight-streaming rate of one decode-step product: `F.linear` against oneDNN on a weight packed once.

Usage: PYTHONPATH=. python results/bench/profile/packed_linear.py [ROWS ...]   (default rows: 1 8 32)
For each of the embedded model's weight shapes (fused q/k/v and gate/up as harness.decoding.packed runs
them), times the product of ROWS input rows with the weight, the two kernels side by side in one process,
and prints GB/s of weight read (weight bytes / time). A microbenchmark: one weight is reused call after
call, so small weights partly stay in the caches; the decode-step figures (results/bench/README.md) are
the ones that count.
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

# the embedded model (SmolLM2-135M): hidden 576, 9 query heads and 3 key/value heads of 64, MLP 1536,
# vocabulary 49152
SHAPES = {
    "q/k/v fused": (576 + 2 * 192, 576),
    "o": (576, 576),
    "gate/up fused": (2 * 1536, 576),
    "down": (576, 1536),
    "LM head": (49152, 576),
}


def seconds_per_call(fn, seconds: float = 0.5) -> float:
    """Mean seconds per call over about `seconds` of calls, after 3 warm-up calls."""
    for _ in range(3):
        fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls


def main(rows_list: list[int]) -> None:
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32")
    print("| weight | rows | F.linear GB/s | packed GB/s | packed / F.linear | max abs diff |")
    print("|---|---|---|---|---|---|")
    for name, (out_features, in_features) in SHAPES.items():
        weight = torch.randn(out_features, in_features) / in_features**0.5
        gigabytes = weight.numel() * weight.element_size() / 1e9
        for rows in rows_list:
            x = torch.randn(rows, in_features)
            packed = torch.ops.mkldnn._reorder_linear_weight(weight, rows)
            plain_s = seconds_per_call(lambda: F.linear(x, weight))
            packed_s = seconds_per_call(
                lambda: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
            )
            diff = (torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "") - F.linear(x, weight))
            print(
                f"| {name} {out_features}x{in_features} | {rows} | {gigabytes / plain_s:.1f} | "
                f"{gigabytes / packed_s:.1f} | {plain_s / packed_s:.2f} | {float(diff.abs().max()):.1e} |",
                flush=True,
            )


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1, 8, 32])
