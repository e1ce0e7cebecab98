"""Smoke runs of the self-distillation family on the real embedded model (SmolLM2-135M-Instruct): a couple
of optimizer steps of each member on the `tooluse` task, with wall times. Not a measurement of quality.

    PYTHONPATH=$PWD nice -n 19 python results/family/smoke.py [steps]

OPD's teacher is the model after a few SFT steps on the task, saved as a stage checkpoint (the natural
CPU teacher). Prints one line per run: method, wall seconds, and the first step's loss, KL and reward.
"""

from __future__ import annotations

import copy
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


def run(model, tok, items, spec, overrides: list[str]) -> None:
    cfg = compose([*overrides, *COMMON])
    torch.manual_seed(0)
    start = time.perf_counter()
    stats = train_stage(copy.deepcopy(model), tok, items, spec, cfg, StageContext())
    wall = time.perf_counter() - start
    first = stats.steps[0]
    shown = {k: round(first[k], 4) for k in ("loss", "kl", "reward", "feedback_solution_frac") if k in first}
    print(f"{' '.join(overrides)}: {wall:.1f} s for {len(stats.steps)} steps; step 1 {shown}", flush=True)


def main() -> None:
    torch.set_num_threads(2)
    model, tok = load_model(ModelConfig())
    spec = resolve_task("tooluse")
    items = load_train_items(spec, 8)
    with tempfile.TemporaryDirectory() as folder:
        teacher = copy.deepcopy(model)
        sft = compose(["method=sft", "trainer.max_steps=4", "trainer.batch_size=2", "trainer.lr=1e-4"])
        train_stage(teacher, tok, items, spec, sft, StageContext())
        from safetensors.torch import save_model

        save_model(teacher, str(Path(folder) / "stage_1.safetensors"))
        del teacher
        run(model, tok, items, spec, ["method=opd", f"method.options.teacher_model={folder}"])
    run(model, tok, items, spec, ["method=sdfb", "method.distill.num_rollouts=2"])
    run(model, tok, items, spec, ["method=pbsd", "method.distill.num_rollouts=2"])
    run(model, tok, items, spec, ["method=sdft", "method.distill.credit_k=2", "method.distill.credit_weight=0.5"])
    run(model, tok, items, spec, ["method=sdfb", "method.distill.num_rollouts=2", "method.distill.credit_k=1"])


if __name__ == "__main__":
    main()
