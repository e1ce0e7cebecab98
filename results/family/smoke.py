"""Smoke runs of the self-distillation family on the real embedded model (SmolLM2-135M-Instruct): a couple
of optimizer steps of each member on the `tooluse` task, with wall times. Not a measurement of quality.

    PYTHONPATH=$PWD nice -n 19 python results/family/smoke.py [steps] [opd,sdfb,pbsd,credit,sdfb_credit]

OPD's teacher is the model after two SFT steps on the task, saved as a stage checkpoint (the natural
CPU teacher). Prints one line per run: method, wall seconds, and the first step's loss, KL and reward.
"""

from __future__ import annotations

import copy
import faulthandler
import sys
import tempfile
import time
from pathlib import Path

import torch

from harness.cli import compose
from harness.config import ModelConfig
from harness.methods import StageContext, train_stage
from harness.models import load_model
from harness.tasks.spec import load_train_items, resolve_task

STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 2
COMMON = [f"trainer.max_steps={STEPS}", "trainer.batch_size=2", "trainer.warmup_steps=0", "trainer.lr=1e-5"]
# the scored members with one prompt per step (two rollouts) and shorter rollouts: on a loaded, shared CPU a
# step of two prompts x two rollouts x 72 tokens took a quarter of an hour
EXTRA = ["trainer.batch_size=1", "method.distill.max_new_tokens=32"]
EXTRA_FULL = ["trainer.batch_size=1"]  # `*_full`: the task's own rollout length (72), so answers can be right


def run(model, tok, items, spec, overrides: list[str]) -> None:
    cfg = compose([*overrides, *COMMON])
    torch.manual_seed(0)
    start = time.perf_counter()
    stats = train_stage(copy.deepcopy(model), tok, items, spec, cfg, StageContext(progress=True))
    wall = time.perf_counter() - start
    first = stats.steps[0]
    shown = {k: round(first[k], 4) for k in ("loss", "kl", "reward", "feedback_solution_frac") if k in first}
    print(f"{' '.join(overrides)}: {wall:.1f} s for {len(stats.steps)} steps; step 1 {shown}", flush=True)


RUNS = {
    "sdfb": ["method=sdfb", "method.distill.num_rollouts=2"],
    "pbsd": ["method=pbsd", "method.distill.num_rollouts=2"],
    "credit": ["method=sdft", "method.distill.credit_k=2", "method.distill.credit_weight=0.5"],
    "sdfb_credit": ["method=sdfb", "method.distill.num_rollouts=2", "method.distill.credit_k=1"],
}


def main() -> None:
    torch.set_num_threads(2)
    faulthandler.dump_traceback_later(300, repeat=True)  # where a slow run spends its time, every 5 minutes
    model, tok = load_model(ModelConfig())
    spec = resolve_task("tooluse")
    items = load_train_items(spec, 8)
    chosen = sys.argv[2].split(",") if len(sys.argv) > 2 else ["opd", *RUNS]
    if "opd" in chosen:
        with tempfile.TemporaryDirectory() as folder:
            teacher = copy.deepcopy(model)
            sft = compose(["method=sft", "trainer.max_steps=2", "trainer.batch_size=2", "trainer.lr=1e-4"])
            start = time.perf_counter()
            train_stage(teacher, tok, items, spec, sft, StageContext(progress=True))
            print(f"teacher: 2 SFT steps in {time.perf_counter() - start:.1f} s", flush=True)
            from safetensors.torch import save_model

            save_model(teacher, str(Path(folder) / "stage_1.safetensors"))
            del teacher
            run(model, tok, items, spec, ["method=opd", f"method.options.teacher_model={folder}"])
    for name in chosen:
        if name != "opd":
            base = name.removesuffix("_full")
            run(model, tok, items, spec, [*RUNS[base], *(EXTRA_FULL if name.endswith("_full") else EXTRA)])


if __name__ == "__main__":
    main()
