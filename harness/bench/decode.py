"""The decoding half of `harness bench step`: a decode step against its weight-streaming floor, and greedy
evaluation items per second, for each decoder (harness.decoding: `static`, `hf`) side by side.

Decode floor: one decode step has to stream every weight once (the LM head included); at the machine's
memory bandwidth (measured: a large tensor copy, bytes read + written) that takes weight bytes / bandwidth.
The measured step (batch 8, the rollout path, rows forced to the full length) is reported against it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch

from harness.batching import chat_prompt_ids
from harness.bench.measure import memory_bandwidth
from harness.distill.rollout import sample
from harness.eval.scoring import greedy_scores
from harness.tasks.spec import resolve_task


def decode_floor(
    model: Any,
    tok: Any,
    prompts: list[str],
    compute: torch.dtype,
    decoder: str,
    new_tokens: int = 32,
    reps: int = 3,
) -> dict[str, float]:
    """Measured decode ms/step of `decoder` (the prefill and first token cancel out) against the floor."""
    ids = [chat_prompt_ids(tok, [{"role": "user", "content": p}]) for p in prompts]

    def timed(n: int) -> float:
        model.generation_config.min_new_tokens = n  # every row runs the full length on either decoder
        torch.manual_seed(0)
        t0 = time.perf_counter()
        sample(model, tok, ids, max_new_tokens=n, decoder=decoder)
        return time.perf_counter() - t0

    timed(2)  # warm-up
    one = min(timed(1) for _ in range(reps))
    full = min(timed(new_tokens) for _ in range(reps))
    model.generation_config.min_new_tokens = None
    step_s = (full - one) / (new_tokens - 1)
    # weights each step reads: every parameter once (a tied head counts once: parameters() de-duplicates),
    # in the compute dtype (autocast's cached copies)
    weight_bytes = sum(p.numel() for p in model.parameters()) * torch.tensor([], dtype=compute).element_size()
    bandwidth = memory_bandwidth(next(model.parameters()).device)
    floor_s = weight_bytes / bandwidth
    return {
        "decode_ms": 1e3 * step_s,
        "weight_mib": weight_bytes / 2**20,
        "bandwidth_gbs": bandwidth / 1e9,
        "floor_ms": 1e3 * floor_s,
        "decode_over_floor": step_s / floor_s,
    }


def eval_rate(
    model: Any, tok: Any, task: str, items: int, decoder: str, batch_size: int = 16
) -> dict[str, Any]:
    """Greedy evaluation (the in-context scorer's path: the task's own stop strings and scorer) of the
    task's first `items` eval items: items per second, and the scores (to check both decoders agree)."""
    spec = resolve_task(task)
    lines = spec.eval_file.read_text(encoding="utf-8").splitlines()
    docs = [json.loads(line) for line in lines if line.strip()][:items]
    t0 = time.perf_counter()
    scores = greedy_scores(model, tok, spec, docs, "base", batch_size=batch_size, decoder=decoder)
    seconds = time.perf_counter() - t0
    return {"items": len(docs), "seconds": seconds, "items_per_s": len(docs) / seconds, "scores": scores}


def decode_markdown(
    floors: dict[str, dict[str, dict[str, float]]], evals: dict[str, dict[str, Any]]
) -> list[str]:
    """The report's decode-floor and evaluation tables (lines of Markdown)."""
    lines: list[str] = []
    if floors:
        lines += [
            "",
            "Decode floor (batch 8): weights streamed once per step at the measured copy bandwidth.",
            "",
            "| precision | decoder | decode ms/step | weights MiB | bandwidth GB/s | floor ms | decode / floor |",
            "|---|---|---|---|---|---|---|",
        ]
        for prec, by_decoder in floors.items():
            for decoder, f in by_decoder.items():
                lines.append(
                    f"| {prec} | {decoder} | {f['decode_ms']:.1f} | {f['weight_mib']:.0f} | "
                    f"{f['bandwidth_gbs']:.1f} | {f['floor_ms']:.1f} | {f['decode_over_floor']:.2f} |"
                )
    if evals:
        lines += ["", "Greedy evaluation (in-context scorer path), default precision:", ""]
        lines += ["| decoder | items | seconds | items/s | mean score |", "|---|---|---|---|---|"]
        for decoder, e in evals.items():
            mean = sum(e["scores"]) / max(len(e["scores"]), 1)
            lines.append(
                f"| {decoder} | {e['items']} | {e['seconds']:.1f} | {e['items_per_s']:.2f} | {mean:.3f} |"
            )
        if {"static", "hf"} <= set(evals):
            same = evals["static"]["scores"] == evals["hf"]["scores"]
            speed = evals["static"]["items_per_s"] / evals["hf"]["items_per_s"]
            lines += ["", f"static / hf items per second: {speed:.2f}; item scores identical: {same}"]
    return lines
