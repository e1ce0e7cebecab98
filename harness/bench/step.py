"""`harness bench step`: step time and peak memory of SFT, our SDFT and TRL's SDFTTrainer, side by side.

One process, the embedded model (CPU unless CUDA is present), one fixed batch of 8 prompts, rollouts forced
to exactly `--new-tokens` tokens on both sides (min_new_tokens = max_new_tokens, so no side wins by stopping
early), matched settings: full vocabulary, forward KL, EMA teacher at 0.01, 3 skipped tokens, no gradient
checkpointing, no importance-sampling clip, `--rollouts` completions per prompt (TRL: num_generations, with
its batch counted in completions, 8 x rollouts). Matched precision: each `--precisions` entry runs every
method in it (ours: model.dtype = that compute dtype, float32 master weights; TRL: its `bf16` trainer flag,
autocast over float32 weights, the same scheme). Each method runs `--warmup + --reps` optimizer steps on a
fresh copy of the model; the median of the timed steps is reported.

Decode floor: one decode step has to stream every weight once (the LM head included); at the machine's
memory bandwidth (measured: a large tensor copy, bytes read + written) that takes weight bytes / bandwidth.
The measured decode step (batch 8, our rollout path, compute dtype) is reported against it.

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
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from harness.arguments import OneLineParser, at_least, counts
from harness.batching import chat_prompt_ids
from harness.bench.fixed_batch import PROMPTS, TEMPLATE, items
from harness.bench.lora_step import lora_label, lora_ratios, with_adapters
from harness.bench.measure import PeakMemory, memory_bandwidth, pin_malloc
from harness.bench.trl_step import run_trl
from harness.config import DTYPE_NAMES, Config, ModelConfig
from harness.distill.rollout import sample
from harness.methods import StageContext, train_stage
from harness.models import Precision, load_model, precision_of, set_precision


def _cfg(method: str, steps: int, new_tokens: int, rollouts: int = 1):
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(Config)
    cfg.method.name = method
    cfg.method.distill.update(
        {
            "teacher": "ema",
            "ema_rate": 0.01,
            "divergence": "forward",
            "support": "full",
            "num_rollouts": rollouts,
            "temperature": 1.0,
            "skip_tokens": 3,
            "max_new_tokens": new_tokens,
            "template": TEMPLATE,
        }
    )
    cfg.trainer.update(
        {
            "batch_size": 8,
            "grad_accum": 1,
            "epochs": 1000.0,
            "max_steps": steps,
            "warmup_steps": 0,
            "lr": 1e-5,
            "gradient_checkpointing": False,
        }
    )
    return cfg


def _with_precision(base_model, compute: torch.dtype):

    model = copy.deepcopy(base_model)
    set_precision(model, Precision(torch.float32, compute, "bench"))
    return model


def run_ours(
    method: str,
    base_model,
    tok,
    steps: int,
    new_tokens: int,
    device,
    compute: torch.dtype = torch.float32,
    rollouts: int = 1,
    lora_r: int = 0,
) -> dict[str, Any]:

    model = _with_precision(base_model, compute)
    if lora_r:
        model = with_adapters(model, lora_r)
    model.generation_config.min_new_tokens = new_tokens  # fixed-length rollouts (see module docstring)
    cfg = _cfg(method, steps, new_tokens, rollouts)
    with PeakMemory(device) as mem:
        stats = train_stage(model, tok, items(), None, cfg, StageContext())
    del model
    return {"steps": stats.steps, "peak_mib": mem.mib}


def decode_floor(
    base_model, tok, device, compute: torch.dtype, new_tokens: int = 32, reps: int = 3
) -> dict[str, float]:
    """Measured decode ms/step (batch 8, our rollout path) against streaming the weights once per step."""

    model = _with_precision(base_model, compute)
    prompts = [chat_prompt_ids(tok, [{"role": "user", "content": p}]) for p in PROMPTS]

    def timed(n: int) -> float:
        model.generation_config.min_new_tokens = n
        torch.manual_seed(0)
        t0 = time.perf_counter()
        sample(model, tok, prompts, max_new_tokens=n)
        return time.perf_counter() - t0

    timed(2)  # warm-up
    one = min(timed(1) for _ in range(reps))
    full = min(timed(new_tokens) for _ in range(reps))
    step_s = (full - one) / (new_tokens - 1)  # the prefill and its first token cancel out
    # weights each step reads: every parameter once (a tied head counts once: parameters() de-duplicates),
    # in the compute dtype (autocast's cached copies)
    weight_bytes = sum(p.numel() for p in model.parameters()) * torch.tensor([], dtype=compute).element_size()
    bandwidth = memory_bandwidth(device)
    floor_s = weight_bytes / bandwidth
    return {
        "decode_ms": 1e3 * step_s,
        "weight_mib": weight_bytes / 2**20,
        "bandwidth_gbs": bandwidth / 1e9,
        "floor_ms": 1e3 * floor_s,
        "decode_over_floor": step_s / floor_s,
    }


def _median(steps: list[dict[str, float]], key: str, warmup: int) -> float:
    vals = [s[key] for s in steps[warmup:] if key in s]
    return float(statistics.median(vals)) if vals else float("nan")


# the canonical compute dtypes of harness.config's one table of precision names
PRECISION_NAMES = {name: getattr(torch, name) for name in dict.fromkeys(DTYPE_NAMES.values())}


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="harness bench step", description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=at_least(1), default=5, help="timed optimizer steps per method")
    parser.add_argument("--warmup", type=at_least(0), default=1, help="untimed steps first")
    parser.add_argument("--new-tokens", type=at_least(1), default=64)
    parser.add_argument("--threads", type=at_least(1), default=2, help="torch intra-op threads (CPU)")
    parser.add_argument("--methods", default="sft,sdft,trl")
    parser.add_argument(
        "--precisions",
        default="float32,bfloat16",
        help="compute dtypes to run every method in: float32, bfloat16 (comma-separated)",
    )
    parser.add_argument(
        "--rollouts",
        type=counts(1),
        default=[1, 4],
        help="completions per prompt for SDFT and TRL (e.g. 1,4)",
    )
    parser.add_argument("--no-decode-floor", action="store_true", help="skip the decode-floor measurement")
    parser.add_argument(
        "--lora-r", type=at_least(0), default=0, help="also SFT and SDFT with LoRA of this rank"
    )
    parser.add_argument("--out", default="results/bench")
    args = parser.parse_args(argv)
    args.precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    unknown = [p for p in args.precisions if p not in PRECISION_NAMES]
    if unknown:
        parser.error(f"--precisions: {unknown} not known; valid: {', '.join(PRECISION_NAMES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    pin_malloc()
    torch.set_num_threads(args.threads)

    model, tok = load_model(ModelConfig())
    device = next(model.parameters()).device
    default = precision_of(model)  # what model.dtype=auto chose here: the headline ratios use it
    default_name = str(default.compute).removeprefix("torch.")
    rows: list[dict[str, Any]] = []
    floors: dict[str, dict[str, float]] = {}
    for prec in args.precisions:
        compute = PRECISION_NAMES[prec]
        if not args.no_decode_floor:
            floors[prec] = decode_floor(model, tok, device, compute)
            print(prec, "decode", json.dumps(floors[prec]), flush=True)
        lora = [f"{m}+lora" for m in ("sft", "sdft") if args.lora_r and m in args.methods.split(",")]
        for name in args.methods.split(",") + lora:
            for n in args.rollouts if name not in ("sft", "sft+lora", "sdft+lora") else [1]:
                rows.append(_measure(args, name, prec, n, model, tok, device))
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "all_step_s"}), flush=True)
                gc.collect()

    table = ratios(rows, args.precisions, args.rollouts)
    headline = table.get(f"{default_name}/r1", {})
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs visible, torch {torch.__version__}, "
        f"{args.threads} threads, device {device}, load average {os.getloadavg()[0]:.2f} at start"
    )
    command = "harness bench step " + " ".join(argv if argv is not None else sys.argv[1:])
    payload = {
        "command": command.strip(),
        "machine": machine,
        "batch": 8,
        "new_tokens": args.new_tokens,
        "warmup": args.warmup,
        "reps": args.reps,
        "default_precision": default_name,
        "default_precision_reason": default.reason,
        **headline,
        "ratios": table,
        "lora_r": args.lora_r,
        "lora_ratios": lora_ratios(rows, args.lora_r) if args.lora_r else {},
        "decode_floor": floors,
        "results": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "step.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / "step.md").write_text(_markdown(payload))
    print(json.dumps({"default": default_name, **headline, "ratios": table}, indent=2))
    return 0


def _measure(
    args: argparse.Namespace, name: str, prec: str, n: int, model: Any, tok: Any, device: Any
) -> dict[str, Any]:
    """One method at one precision and rollout count: median step time, peak memory and phase times."""
    compute, steps = PRECISION_NAMES[prec], args.warmup + args.reps
    torch.manual_seed(0)
    t0 = time.perf_counter()
    if name == "trl":
        res = run_trl(model, tok, steps, args.new_tokens, device, compute, n)
    else:
        base, _, with_lora = name.partition("+")
        r = args.lora_r if with_lora else 0
        res = run_ours(base, model, tok, steps, args.new_tokens, device, compute, n, r)
    row = {
        "method": lora_label(name.split("+")[0], args.lora_r) if "+" in name else name,
        "precision": prec,
        "rollouts": n,
        "step_s": _median(res["steps"], "step_s", args.warmup),
        "peak_mib": res["peak_mib"],
        "wall_s": time.perf_counter() - t0,
    }
    for s in res["steps"]:  # the student's forward (method) and backward (run_stage) together
        if "student_s" in s:
            s["student_s"] += s.get("backward_s", 0.0)
    for key in ("gen_s", "teacher_s", "student_s", "completion_len", "tokens_per_s"):
        if any(key in s for s in res["steps"]):
            row[key] = _median(res["steps"], key, args.warmup)
    row["all_step_s"] = [s["step_s"] for s in res["steps"]]
    return row


def ratios(
    rows: list[dict[str, Any]], precisions: list[str], rollouts: list[int]
) -> dict[str, dict[str, float]]:
    """Per precision and rollout count: SDFT over TRL (time, peak memory), SDFT over SFT (time); per precision:
    generation time of the most rollouts over that of one (`gen_<n>_over_1`)."""

    def find(method: str, prec: str, n: int) -> dict[str, Any] | None:
        return next(
            (r for r in rows if r["method"] == method and r["precision"] == prec and r["rollouts"] == n), None
        )

    table: dict[str, dict[str, float]] = {}
    for prec in precisions:
        for n in rollouts:
            sdft, trl, sft = find("sdft", prec, n), find("trl", prec, n), find("sft", prec, 1)
            entry: dict[str, float] = {}
            if sdft and trl:
                entry["sdft_over_trl_time"] = sdft["step_s"] / trl["step_s"]
                entry["sdft_over_trl_peak_mem"] = sdft["peak_mib"] / trl["peak_mib"]
            if sdft and sft:
                entry["sdft_over_sft_time"] = sdft["step_s"] / sft["step_s"]
            one = find("sdft", prec, 1)
            if sdft and one and n > 1:
                for key in ("gen_s", "teacher_s", "student_s", "step_s"):
                    if key in sdft and key in one:
                        entry[f"{key.removesuffix('_s')}_{n}_over_1"] = sdft[key] / one[key]
            if entry:
                table[f"{prec}/r{n}"] = entry
    return table


def _markdown(p: dict[str, Any]) -> str:
    lines = [
        "# Step benchmark: SFT vs our SDFT vs TRL's SDFTTrainer",
        "",
        f"Command: `{p['command']}`  ",
        f"Machine: {p['machine']}  ",
        f"Batch: {p['batch']} prompts x rollouts, {p['new_tokens']} new tokens (forced), "
        f"{p['warmup']} warm-up + {p['reps']} timed steps, medians. Peak memory: above the loaded student "
        "(see harness/bench/step.py).  ",
        f"Default precision here (model.dtype=auto): {p['default_precision']} ({p['default_precision_reason']})",
        "",
        "| method | precision | rollouts | step s | generate s | teacher s | student s | peak MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in p["results"]:
        cells = [f"{r[k]:.2f}" if k in r else "-" for k in ("gen_s", "teacher_s", "student_s")]
        lines.append(
            f"| {r['method']} | {r['precision']} | {r['rollouts']} | {r['step_s']:.2f} | {' | '.join(cells)} "
            f"| {r['peak_mib']:.0f} |"
        )
    lines += ["", f"Headline ({p['default_precision']}, 1 rollout):", ""]
    for key in ("sdft_over_sft_time", "sdft_over_trl_time", "sdft_over_trl_peak_mem"):
        if key in p:
            lines.append(f"- {key}: {p[key]:.2f}")
    lines += ["", "| precision / rollouts | ratio | value |", "|---|---|---|"]
    for setting, entry in p["ratios"].items():
        for key, value in entry.items():
            lines.append(f"| {setting} | {key} | {value:.2f} |")
    for prec, entry in p.get("lora_ratios", {}).items():  # --lora-r: adapters vs full fine-tuning
        lines += [f"| {prec} (LoRA r={p['lora_r']}) | {key} | {value:.2f} |" for key, value in entry.items()]
    if p["decode_floor"]:
        lines += [
            "",
            "Decode floor (batch 8): weights streamed once per step at the measured copy bandwidth.",
            "",
            "| precision | decode ms/step | weights MiB | bandwidth GB/s | floor ms | decode / floor |",
            "|---|---|---|---|---|---|",
        ]
        for prec, f in p["decode_floor"].items():
            lines.append(
                f"| {prec} | {f['decode_ms']:.1f} | {f['weight_mib']:.0f} | {f['bandwidth_gbs']:.1f} | "
                f"{f['floor_ms']:.1f} | {f['decode_over_floor']:.2f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
