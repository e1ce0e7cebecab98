"""`harness bench step`: step time and peak memory of SFT, our SDFT and TRL's SDFTTrainer, side by side.

One process, the embedded model (CPU unless CUDA is present), one fixed batch of 8 prompts, rollouts forced
to exactly `--new-tokens` tokens on both sides (min_new_tokens = max_new_tokens, so no side wins by stopping
early), matched settings: full vocabulary, forward KL, EMA teacher at 0.01, 3 skipped tokens, no gradient
checkpointing, no importance-sampling clip, `--rollouts` completions per prompt (TRL: num_generations, with
its batch counted in completions, 8 x rollouts). Matched precision: each `--precisions` entry runs every
method in it (ours: model.dtype = that compute dtype, float32 master weights; TRL: its `bf16` trainer flag,
autocast over float32 weights, the same scheme). Each method runs `--warmup + --reps` optimizer steps on a
fresh copy of the model; the median of the timed steps is reported.

Decoders: SDFT runs once per `--decoders` entry (harness.decoding: static KV cache, `static-unpacked` the
same loop on `F.linear` instead of the packed oneDNN products, or Hugging Face `generate`); the headline
ratios use the first. The decode step against its weight-streaming floor and
greedy evaluation items per second are measured per decoder (harness/bench/decode.py).

Compute floors: each SFT and SDFT row's teacher and student phases (and the whole step) against their
matmul FLOPs, counted from the model's config and the batch's token counts, over the matmul throughput
measured here at each precision (harness/bench/compute_floor.py, harness/bench/step_floor.py).

Peak memory on CPU: before each method runs, free heap memory is returned to the OS (malloc_trim) and the
kernel's high-water mark (VmHWM) is reset (/proc/self/clear_refs); the figure is VmHWM after the run minus
the resident set before it: everything the method adds on top of the loaded student (teacher copy,
optimizer state, activations, logits, framework state, the allocator's slack). The allocator itself is
left as the `harness` command sets it (harness.allocator): pinning its mmap threshold made the timed steps pay page faults (harness.bench.measure). On CUDA:
torch.cuda.max_memory_allocated above the same baseline.
"""

from __future__ import annotations

import argparse
import contextlib
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
from harness.bench.decode import decode_floor, eval_rate
from harness.bench.fixed_batch import PROMPTS, TEMPLATE, items
from harness.bench.lora_step import lora_label, lora_ratios, with_adapters
from harness.bench.measure import PeakMemory
from harness.bench.step_floor import add_floors, matmul_rates
from harness.bench.step_report import markdown, ratios
from harness.bench.trl_step import run_trl
from harness.config import DTYPE_NAMES, Config, ModelConfig
from harness.decoding.packed import unpacked
from harness.methods import StageContext, train_stage
from harness.models import Precision, load_model, precision_of, set_precision


def _cfg(method: str, steps: int, new_tokens: int, rollouts: int = 1, decoder: str = "static"):
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
            "decoder": decoder,
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
    decoder: str = "static",
    lora_r: int = 0,
) -> dict[str, Any]:

    model = _with_precision(base_model, compute)
    if lora_r:
        model = with_adapters(model, lora_r)
    model.generation_config.min_new_tokens = new_tokens  # fixed-length rollouts (see module docstring)
    cfg = _cfg(method, steps, new_tokens, rollouts, decoder)
    with PeakMemory(device) as mem:
        stats = train_stage(model, tok, items(), None, cfg, StageContext())
    del model
    return {"steps": stats.steps, "peak_mib": mem.mib}


def _median(steps: list[dict[str, float]], key: str, warmup: int) -> float:
    vals = [s[key] for s in steps[warmup:] if key in s]
    return float(statistics.median(vals)) if vals else float("nan")


# the canonical compute dtypes of harness.config's one table of precision names
PRECISION_NAMES = {name: getattr(torch, name) for name in dict.fromkeys(DTYPE_NAMES.values())}


def _parse(argv: list[str] | None) -> argparse.Namespace:
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
    parser.add_argument(
        "--lora-r", type=at_least(0), default=0, help="also SFT and SDFT with LoRA of this rank"
    )
    parser.add_argument(
        "--decoders", default="static,hf", help="rollout/eval decoders; the first is headline"
    )
    parser.add_argument("--no-decode-floor", action="store_true", help="skip the decode-floor measurement")
    parser.add_argument(
        "--no-compute-floor",
        action="store_true",
        help="skip the teacher/student compute floors (matmul FLOPs)",
    )
    parser.add_argument("--eval-task", default="tooluse", help="task whose eval items time greedy evaluation")
    parser.add_argument("--eval-items", type=at_least(0), default=32, help="0 skips the evaluation timing")
    parser.add_argument("--out", default="results/bench")
    args = parser.parse_args(argv)
    args.precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    unknown = [p for p in args.precisions if p not in PRECISION_NAMES]
    if unknown:
        parser.error(f"--precisions: {unknown} not known; valid: {', '.join(PRECISION_NAMES)}")
    args.decoders = [d.strip() for d in args.decoders.split(",") if d.strip()]
    if not args.decoders or set(args.decoders) - set(BENCH_DECODERS):
        parser.error(f"--decoders: {args.decoders} not known; valid: {', '.join(BENCH_DECODERS)}")
    return args


BENCH_DECODERS = ("static", "static-unpacked", "hf")


def _decoding(name: str) -> tuple[str, contextlib.AbstractContextManager]:
    """A benchmark decoder name -> (the run's decoder setting, the context it runs in)."""
    if name == "static-unpacked":
        return "static", unpacked()
    return name, contextlib.nullcontext()


def _method_row(name: str, prec: str, n: int, decoder: str, model, tok, args, device) -> dict[str, Any]:
    """One method's steps at one precision, rollout count and decoder: medians of the timed steps."""
    compute, steps = PRECISION_NAMES[prec], args.warmup + args.reps
    torch.manual_seed(0)
    t0 = time.perf_counter()
    base, with_lora = name, ""
    if name == "trl":
        res = run_trl(model, tok, steps, args.new_tokens, device, compute, n)
    else:
        base, _, with_lora = name.partition("+")
        r = args.lora_r if with_lora else 0
        setting, context = _decoding(decoder)
        with context:
            res = run_ours(base, model, tok, steps, args.new_tokens, device, compute, n, setting, r)
    row = {
        "method": lora_label(base, args.lora_r) if with_lora else name,
        "precision": prec,
        "rollouts": n,
        "decoder": decoder,
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
    print(json.dumps({k: v for k, v in row.items() if k != "all_step_s"}), flush=True)
    gc.collect()
    return row


def _measure_precision(
    args: argparse.Namespace,
    prec: str,
    is_default: bool,
    model: Any,
    tok: Any,
    device: Any,
    rows: list[dict[str, Any]],
    floors: dict[str, dict[str, dict[str, float]]],
    rates: dict[str, dict[str, float]],
) -> dict[str, dict[str, Any]]:
    """Every measurement at one precision: the decode floor per decoder, the matmul throughput the compute
    floors divide by (`rates`), greedy evaluation speed (default precision only; returned), and each method's
    step rows (appended to `rows`)."""
    rollouts, decoders, compute = args.rollouts, args.decoders, PRECISION_NAMES[prec]
    evals: dict[str, dict[str, Any]] = {}
    if not args.no_decode_floor:
        timed = _with_precision(model, compute)
        for d in decoders:
            setting, context = _decoding(d)
            with context:
                floors.setdefault(prec, {})[d] = decode_floor(timed, tok, PROMPTS, compute, setting)
        print(prec, "decode", json.dumps(floors[prec]), flush=True)
        del timed
    if not args.no_compute_floor:  # before the rows: a quiet machine, no training state in memory
        rates[prec] = matmul_rates(model, tok, compute, args.new_tokens)
        print(prec, "matmul GFLOP/s", json.dumps({k: v / 1e9 for k, v in rates[prec].items()}), flush=True)
    if is_default and args.eval_items:
        for d in decoders:  # warm-up: the first decode of a process pays for allocations and page faults
            setting, context = _decoding(d)
            with context:
                eval_rate(model, tok, args.eval_task, 1, setting)
        for d in decoders:
            setting, context = _decoding(d)
            with context:
                evals[d] = eval_rate(model, tok, args.eval_task, args.eval_items, setting)
        print("eval", json.dumps({d: e["items_per_s"] for d, e in evals.items()}), flush=True)
    lora = [f"{m}+lora" for m in ("sft", "sdft") if args.lora_r and m in args.methods.split(",")]
    for name in args.methods.split(",") + lora:
        for n in rollouts if name in ("sdft", "trl") else [1]:
            for decoder in decoders if name.startswith("sdft") else ["-"]:
                rows.append(_method_row(name, prec, n, decoder, model, tok, args, device))
    return evals


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    precisions, rollouts, decoders = args.precisions, args.rollouts, args.decoders
    torch.set_num_threads(args.threads)

    model, tok = load_model(ModelConfig())
    device = next(model.parameters()).device
    default = precision_of(model)  # what model.dtype=auto chose here: the headline ratios use it
    default_name = {torch.float32: "float32", torch.bfloat16: "bfloat16"}[default.compute]
    rows: list[dict[str, Any]] = []
    floors: dict[str, dict[str, dict[str, float]]] = {}
    evals: dict[str, dict[str, Any]] = {}
    rates: dict[str, dict[str, float]] = {}
    for prec in precisions:
        is_default = prec == default_name
        evals = _measure_precision(args, prec, is_default, model, tok, device, rows, floors, rates) or evals
    add_floors(rows, model, tok, rates)
    table = ratios(rows, precisions, rollouts, decoders)
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
        "matmul_flops_per_s": rates,
        "eval": evals,
        "results": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "step.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / "step.md").write_text(markdown(payload))
    print(json.dumps({"default": default_name, **headline, "ratios": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
