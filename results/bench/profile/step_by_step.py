"""SDFT's phases step by step on the step benchmark's batch: when does a step reach its steady state?

Runs `--steps` SDFT steps (float32, batch 8, 64 forced rollout tokens) on a fresh copy of the embedded model
and prints each step's phases, with glibc's allocator as it comes or, with `--keep-freed`, as the harness
sets it (harness.allocator). Run on an idle machine:
`python results/bench/profile/step_by_step.py [--steps 7] [--keep-freed]`.
"""

from __future__ import annotations

import argparse

from harness.allocator import keep_freed_memory
from harness.bench.fixed_batch import items
from harness.bench.step import _cfg
from harness.config import ModelConfig
from harness.methods import StageContext, train_stage
from harness.models import load_model

PHASES = ("step_s", "gen_s", "teacher_s", "student_s", "backward_s")

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--keep-freed", action="store_true", help="keep freed memory (harness.allocator)")
    args = parser.parse_args()
    kept = keep_freed_memory() if args.keep_freed else False
    print(f"freed memory kept in the process: {kept}")
    model, tok = load_model(ModelConfig())
    model.generation_config.min_new_tokens = 64
    steps = train_stage(model, tok, items(), None, _cfg("sdft", args.steps, 64), StageContext()).steps
    print("step  " + "  ".join(f"{p:>10s}" for p in PHASES))
    for i, s in enumerate(steps, 1):
        print(f"{i:4d}  " + "  ".join(f"{s[p]:10.2f}" for p in PHASES))
