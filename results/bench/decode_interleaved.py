"""Decode ms per token, static (packed weights) vs static on F.linear vs hf, interleaved in one process (batch 8, rows forced to the full length).

Usage: PYTHONPATH=. python results/bench/decode_interleaved.py THREADS NEW_TOKENS REPS
Per rep and decoder: (time of NEW_TOKENS tokens - time of 1 token) / (NEW_TOKENS - 1), so the prefill and
the first token cancel out. The decoders alternate so that a change in the machine's load hits both.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import torch

from harness.batching import chat_prompt_ids
from harness.bench.step import PROMPTS
from harness.config import ModelConfig
from harness.decoding.packed import unpacked
from harness.distill.rollout import sample
from harness.models import load_model


def main(threads: int, new_tokens: int, reps: int) -> None:
    torch.set_num_threads(threads)
    model, tok = load_model(ModelConfig())
    model.eval()
    ids = [chat_prompt_ids(tok, [{"role": "user", "content": p}]) for p in PROMPTS]

    def timed(decoder: str, n: int) -> float:
        model.generation_config.min_new_tokens = n  # every decoder runs every row to the full length
        torch.manual_seed(0)
        t0 = time.perf_counter()
        if decoder == "static-unpacked":
            with unpacked():
                sample(model, tok, ids, max_new_tokens=n, decoder="static")
        else:
            sample(model, tok, ids, max_new_tokens=n, decoder=decoder)
        return time.perf_counter() - t0

    per_token: dict[str, list[float]] = {"static": [], "static-unpacked": [], "hf": []}
    for decoder in per_token:  # warm-up
        timed(decoder, 2)
    for rep in range(reps):
        for decoder in per_token:
            one, full = timed(decoder, 1), timed(decoder, new_tokens)
            per_token[decoder].append((full - one) / (new_tokens - 1) * 1e3)
            print(
                rep,
                decoder,
                f"{per_token[decoder][-1]:.1f} ms/token, load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    medians = {d: statistics.median(v) for d, v in per_token.items()}
    print("median ms/token", medians)
    print("static-unpacked/static", medians["static-unpacked"] / medians["static"])
    print("hf/static", medians["hf"] / medians["static"])


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
