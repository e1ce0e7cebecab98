"""`harness bench step`: step time and peak memory of SFT, our SDFT and TRL's SDFTTrainer, side by side.

One process, the embedded model (float32, CPU unless CUDA is present), one fixed batch of 8 prompts,
rollouts forced to exactly `--new-tokens` tokens on both sides (min_new_tokens = max_new_tokens, so no side
wins by stopping early), matched settings: full vocabulary, forward KL, EMA teacher at 0.01, one rollout,
3 skipped tokens, no gradient checkpointing, no importance-sampling clip. Each method runs
`--warmup + --reps` optimizer steps on a fresh copy of the model; the median of the timed steps is reported.

Peak memory on CPU: glibc's mmap threshold is pinned at 64 KiB (mallopt), so every tensor buffer is its
own mapping, returned to the OS when freed, and the resident set follows live tensors. The kernel's
high-water mark (VmHWM) is reset (/proc/self/clear_refs) after the model is loaded; the figure is
VmHWM after the run minus the resident set before it: everything the method adds on top of the loaded
student (teacher copy, optimizer state, activations, logits, framework state). On CUDA:
torch.cuda.max_memory_allocated above the same baseline.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

PROMPTS = [
    "Explain why the sky is blue.", "Write a short poem about autumn leaves.",
    "What are the main causes of inflation?", "Describe how a bicycle works.",
    "Give three tips for learning a new language.", "Summarise the plot of a detective story you invent.",
    "How do vaccines train the immune system?", "Compare cats and dogs as pets.",
]
DEMOS = [
    "Sunlight scatters off air molecules; blue light scatters most, so the sky looks blue.",
    "Red and gold they fall, / whispering down the garden wall.",
    "Demand outpacing supply, rising costs, and growth of the money supply.",
    "Pedals turn a chain that drives the rear wheel; gears trade force for speed.",
    "Practise daily, speak with natives, and learn words in context.",
    "A detective traces a stolen violin to the orchestra's own conductor.",
    "They show the body a harmless piece of a pathogen so it learns to fight it.",
    "Cats are independent and low-maintenance; dogs are social and need walks.",
]
TEMPLATE = "paper"


def _pin_malloc() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD; also disables its dynamic growth
    except OSError:
        pass


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


class PeakMemory:
    """Peak memory (MiB) above the level at entry (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")
            self.base = _rss_kib() * 1024
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = _hwm_kib() * 1024
        self.mib = (peak - self.base) / 2**20


def _items():
    from harness.tasks import Item

    return [Item(prompt=p, demonstration=d, id=str(i), source=f"bench:{i}")
            for i, (p, d) in enumerate(zip(PROMPTS, DEMOS, strict=True))]


def _cfg(method: str, steps: int, new_tokens: int):
    from omegaconf import OmegaConf

    from harness.config import Config

    cfg = OmegaConf.structured(Config)
    cfg.method.name = method
    cfg.method.distill.update({"teacher": "ema", "ema_rate": 0.01, "divergence": "forward", "support": "full",
                               "num_rollouts": 1, "temperature": 1.0, "skip_tokens": 3,
                               "max_new_tokens": new_tokens, "template": TEMPLATE})
    cfg.trainer.update({"batch_size": 8, "grad_accum": 1, "epochs": 1000.0, "max_steps": steps,
                        "warmup_steps": 0, "lr": 1e-5, "gradient_checkpointing": False})
    return cfg


def run_ours(method: str, base_model, tok, steps: int, new_tokens: int, device) -> dict[str, Any]:
    from harness.methods import StageContext, get_method

    model = copy.deepcopy(base_model)
    model.generation_config.min_new_tokens = new_tokens  # fixed-length rollouts (see module docstring)
    with PeakMemory(device) as mem:
        stats = get_method(method)(model, tok, _items(), None, _cfg(method, steps, new_tokens), StageContext())
    del model
    return {"steps": stats.steps, "peak_mib": mem.mib}


def run_trl(base_model, tok, steps: int, new_tokens: int, device) -> dict[str, Any]:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl.experimental.sdft import SDFTConfig, SDFTTrainer

    from harness.tasks import TEACHER_TEMPLATES

    # our paper template, with TRL's {privileged_context} standing for the demonstration (no passage here)
    template = TEACHER_TEMPLATES[TEMPLATE].replace("{privileged}", "").replace("{demonstration}",
                                                                              "{privileged_context}")
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": p}], "privileged_context": d}
                              for p, d in zip(PROMPTS, DEMOS, strict=True)])
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

    model = copy.deepcopy(base_model)
    with tempfile.TemporaryDirectory() as out, PeakMemory(device) as mem:
        args = SDFTConfig(
            output_dir=out, per_device_train_batch_size=8, gradient_accumulation_steps=1, max_steps=steps,
            learning_rate=1e-5, lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
            num_generations=1, max_completion_length=new_tokens, temperature=1.0, top_p=1.0, top_k=0,
            generation_kwargs={"min_new_tokens": new_tokens},
            teacher_model_kind="ema", teacher_update_rate=0.01, distillation_mode="full_logits",
            distillation_alpha=0.0, num_loss_tokens_to_skip=3, distillation_is_clip=None,
            teacher_prompt_template=template, gradient_checkpointing=False, bf16=False, fp16=False,
            use_cpu=device.type == "cpu", report_to=[], save_strategy="no", logging_steps=10**6,
            disable_tqdm=True, dataloader_num_workers=0, seed=0,
        )
        trainer = SDFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok, callbacks=[Timer()])
        trainer.train()
        del trainer
    del model
    return {"steps": [{"step_s": t} for t in times], "peak_mib": mem.mib}


def _median(steps: list[dict[str, float]], key: str, warmup: int) -> float:
    vals = [s[key] for s in steps[warmup:] if key in s]
    return float(statistics.median(vals)) if vals else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="harness bench step", description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="timed optimizer steps per method")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (CPU)")
    parser.add_argument("--methods", default="sft,sdft,trl")
    parser.add_argument("--out", default="results/bench")
    args = parser.parse_args(argv)

    _pin_malloc()
    torch.set_num_threads(args.threads)
    from harness.config import ModelConfig
    from harness.models import load_model

    model, tok = load_model(ModelConfig())
    device = next(model.parameters()).device
    steps = args.warmup + args.reps
    results: dict[str, dict[str, Any]] = {}
    for name in args.methods.split(","):
        torch.manual_seed(0)
        t0 = time.perf_counter()
        if name == "trl":
            res = run_trl(model, tok, steps, args.new_tokens, device)
        else:
            res = run_ours(name, model, tok, steps, args.new_tokens, device)
        row = {"step_s": _median(res["steps"], "step_s", args.warmup), "peak_mib": res["peak_mib"],
               "wall_s": time.perf_counter() - t0}
        for s in res["steps"]:  # the student's forward (method) and backward (run_stage) together
            if "student_s" in s:
                s["student_s"] += s.get("backward_s", 0.0)
        for key in ("gen_s", "teacher_s", "student_s", "completion_len", "tokens_per_s"):
            if any(key in s for s in res["steps"]):
                row[key] = _median(res["steps"], key, args.warmup)
        row["all_step_s"] = [s["step_s"] for s in res["steps"]]
        results[name] = row
        print(name, json.dumps({k: v for k, v in row.items() if k != "all_step_s"}), flush=True)
        gc.collect()

    ratios = {}
    if "sdft" in results and "sft" in results:
        ratios["sdft_over_sft_time"] = results["sdft"]["step_s"] / results["sft"]["step_s"]
    if "sdft" in results and "trl" in results:
        ratios["sdft_over_trl_time"] = results["sdft"]["step_s"] / results["trl"]["step_s"]
        ratios["sdft_over_trl_peak_mem"] = results["sdft"]["peak_mib"] / results["trl"]["peak_mib"]
    machine = (f"{platform.machine()}, {os.cpu_count()} CPUs visible, torch {torch.__version__}, "
               f"{args.threads} threads, device {device}")
    command = "harness bench step " + " ".join(argv if argv is not None else sys.argv[1:])
    payload = {"command": command.strip(), "machine": machine, "batch": 8, "new_tokens": args.new_tokens,
               "warmup": args.warmup, "reps": args.reps, "results": results, **ratios}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "step.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / "step.md").write_text(_markdown(payload))
    print(json.dumps(ratios, indent=2))
    return 0


def _markdown(p: dict[str, Any]) -> str:
    lines = [
        "# Step benchmark: SFT vs our SDFT vs TRL's SDFTTrainer", "",
        f"Command: `{p['command']}`  ", f"Machine: {p['machine']}  ",
        f"Batch: {p['batch']} prompts, {p['new_tokens']} new tokens (forced), "
        f"{p['warmup']} warm-up + {p['reps']} timed steps, medians. Peak memory: above the loaded student "
        "(see harness/bench_step.py).", "",
        "| method | step s | generate s | teacher s | student s | peak MiB |", "|---|---|---|---|---|---|",
    ]
    for name, r in p["results"].items():
        cells = [f"{r[k]:.2f}" if k in r else "-" for k in ("gen_s", "teacher_s", "student_s")]
        lines.append(f"| {name} | {r['step_s']:.2f} | {' | '.join(cells)} | {r['peak_mib']:.0f} |")
    lines.append("")
    for key in ("sdft_over_sft_time", "sdft_over_trl_time", "sdft_over_trl_peak_mem"):
        if key in p:
            lines.append(f"- {key}: {p[key]:.2f}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
