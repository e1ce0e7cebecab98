"""Where SDFT's student pass spends its time, against an SFT step on the same prompts (issue #24, item 3).

The step benchmark as it was measured under a pinned allocator (`../floor/step.md`) put the student pass (forward, fused LM head + divergence,
backward) at 4.5x its matmul floor and an SFT step at 3.4x. This script splits both into phases on the step
benchmark's batch of 8 (float32, 64 forced rollout tokens, full-vocabulary forward KL):
- decoder forward (no LM head), the fused head + loss (its own backward folded in), the decoder's backward,
  the optimizer step; medians of `--reps` steps after one warm-up;
- the torch profiler's op table for one SFT and one SDFT step (self CPU time, `--ops`);
- `--pin-malloc`: the same under the allocator setting the step benchmark used to measure memory with.
Run on an idle machine: `python results/bench/profile/student_profile.py [--reps 3] [--ops] [--pin-malloc]`.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import time
from collections import defaultdict
from contextlib import contextmanager

import torch
from torch.profiler import ProfilerActivity, profile

import harness.distill.fused_head as fused_head
import harness.methods.base as base
from harness.bench.fixed_batch import items
from harness.bench.step import _cfg
from harness.config import ModelConfig
from harness.methods import StageContext, train_stage
from harness.models import load_model

PHASES: dict[str, list[float]] = defaultdict(list)


def pin_malloc() -> None:
    """What `harness bench step` did before 2026-12-03 to measure peak memory: glibc's mmap threshold
    pinned at 64 KiB, so every larger buffer is its own mapping (page faults on each new one)."""
    ctypes.CDLL("libc.so.6").mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD


@contextmanager
def _timed(name: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        PHASES[name].append(time.perf_counter() - start)


def _instrument() -> None:
    """Wrap the phases of a step in timers: the fused head (forward with its backward folded in), the
    whole-model backward (run_stage's loss.backward) and the optimizer step."""
    real_apply = fused_head._FusedHeadLoss.apply

    def head_apply(*args):
        with _timed("head+loss"):
            return real_apply(*args)

    fused_head._FusedHeadLoss.apply = head_apply
    real_backward = torch.Tensor.backward

    def backward(self, *args, **kwargs):
        with _timed("backward"):
            return real_backward(self, *args, **kwargs)

    torch.Tensor.backward = backward
    real_build = base.build_optimizer

    def build(model, tcfg):
        opt = real_build(model, tcfg)
        started: list[float] = []
        opt.register_step_pre_hook(lambda *_: started.append(time.perf_counter()))
        opt.register_step_post_hook(
            lambda *_: PHASES["optimizer"].append(time.perf_counter() - started.pop())
        )
        return opt

    base.build_optimizer = build


def _run(method: str, model_source, steps: int) -> list[dict]:
    import copy

    model = copy.deepcopy(model_source)
    model.generation_config.min_new_tokens = 64
    cfg = _cfg(method, steps, 64)
    return train_stage(model, tok, items(), None, cfg, StageContext()).steps


def _phase_table(method: str, steps: list[dict], reps: int) -> None:
    keys = ("step_s", "gen_s", "teacher_s", "student_s", "backward_s")
    print(f"\n{method}: medians of {reps} steps after 1 warm-up (seconds)")
    for key in keys:
        values = [s[key] for s in steps[1:] if key in s]
        if values:
            print(f"  {key:12s} {statistics.median(values):7.2f}")
    for name, values in PHASES.items():
        print(f"  {name:12s} {statistics.median(values[-reps:]):7.2f}  (instrumented)")
    PHASES.clear()


def _op_table(method: str, model_source) -> None:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _run(method, model_source, 1)
    print(f"\n{method}, one step under the profiler (self CPU time, top 25 ops)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--ops", action="store_true", help="also print the profiler's op tables")
    parser.add_argument(
        "--pin-malloc", action="store_true", help="pin glibc's mmap threshold at 64 KiB (the old bench)"
    )
    args = parser.parse_args()
    if args.pin_malloc:
        pin_malloc()
    print(f"glibc mmap threshold pinned at 64 KiB: {args.pin_malloc}")
    torch.manual_seed(0)
    model_source, tok = load_model(ModelConfig())
    _instrument()
    for method in ("sft", "sdft"):
        _phase_table(method, _run(method, model_source, args.reps + 1), args.reps)
    if args.ops:
        for method in ("sft", "sdft"):
            _op_table(method, model_source)
