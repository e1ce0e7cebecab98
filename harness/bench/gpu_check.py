"""`python -m harness.bench.gpu_check`: every CUDA path of the harness once, in minutes, on a machine with no
network. `scripts/gpu_check.sh` runs it there (docs/gpu.md).

A small randomly initialised model is built from a config folder (config.json and tokenizer files only, no
weights: `--model`). On it: one SFT and one SDFT stage (bf16 compute over float32 master weights where the
device has bf16), fused AdamW, the EMA teacher moving, the memory estimate against what CUDA reserved, a
1-process FSDP2 stage over NCCL, synchronised phase timings, greedy evaluation through lm-eval's HF backend
with batch size `auto`, the start-up line, one step-benchmark row and the decode floor. Each check is one
line of the summary table (pass / fail / skip and its figure), printed and written to `--out`. A check that
raises is a fail line; the others still run.

With `--expect cpu` (the tests' dry run, CUDA hidden) the same script runs on the CPU and checks the CPU
path: float32 or the CPU's own bf16, the fused AdamW's CPU kernel, gloo instead of NCCL; the CUDA-only figures
(reserved memory) are skipped.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.bench.decode import decode_floor
from harness.bench.fixed_batch import PROMPTS
from harness.bench.fixed_batch import items as _items
from harness.bench.step import _cfg, run_ours
from harness.config import ModelConfig
from harness.console import quiet_console
from harness.distill import teacher as teacher_module
from harness.methods import StageContext, train_stage
from harness.methods.optim import implementation
from harness.models import load_model, precision_summary
from harness.parallel import sharding
from harness.parallel.distributed import Replicas
from harness.run import memory_estimate, readiness

TASKS_DIR = Path(__file__).resolve().parents[2] / "tasks"


@dataclass
class Line:
    name: str
    status: str  # pass | fail | skip
    figure: str


def _ok(condition: bool) -> str:
    return "pass" if condition else "fail"


class Check:
    """The shared state of one check run: the model, the device, what the stages measured."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        cfg = ModelConfig(
            name=str(args.model),
            random_init=True,
            random_init_layers=args.layers,
            random_init_hidden=args.hidden,
            max_length=args.max_length,
        )
        self.model, self.tok = load_model(cfg)
        self.device = next(self.model.parameters()).device
        self.cuda = self.device.type == "cuda"
        self.stats: dict[str, Any] = {}

    def cfg(self, method: str) -> Any:
        cfg = _cfg(method, self.args.steps, self.args.new_tokens)
        cfg.model.max_length = self.args.max_length
        cfg.trainer.batch_size = 4
        return cfg

    def stage(self, method: str, ctx: StageContext | None = None) -> Any:
        """One stage of `method` on the fixed items; peak reserved memory recorded on CUDA."""
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        stats = train_stage(self.model, self.tok, _items()[:4], None, self.cfg(method), ctx or StageContext())
        if self.cuda:
            stats.summary["reserved_bytes"] = torch.cuda.max_memory_reserved(self.device)
        return stats


def check_startup(c: Check) -> Line:
    line = readiness.device_line(c.device, next(c.model.parameters()).dtype, 1, False)
    expected = c.args.expect
    return Line("start-up line", _ok(c.device.type == expected), line)


def check_precision(c: Check) -> Line:
    p = precision_summary(c.model)
    masters = {str(q.dtype).removeprefix("torch.") for q in c.model.parameters()}
    want = "bfloat16" if c.cuda else p["precision/compute"]  # a CPU: whatever it runs natively
    good = masters == {"float32"} and p["precision/compute"] == want
    return Line(
        "bf16 compute, fp32 masters", _ok(good), f"compute {p['precision/compute']}, weights {masters}"
    )


def check_sft(c: Check) -> Line:
    stats = c.stage("sft")
    c.stats["sft"] = stats
    losses = [s["loss"] for s in stats.steps]
    good = len(losses) == c.args.steps and all(math.isfinite(x) for x in losses)
    return Line("SFT stage", _ok(good), f"{len(losses)} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}")


def check_fused(c: Check) -> Line:
    """Fused on CUDA and on the CPU alike (harness.methods.optim.implementation), on the device the run
    asked for: weights left on the CPU in a GPU run fail here."""
    params = list(c.model.parameters())
    fused = bool(implementation(params).get("fused"))
    on_device = all((p.device.type == "cuda") == c.cuda for p in params)
    where = "cuda" if c.cuda else "cpu"
    figure = ("fused" if fused else "per-tensor loop") + f", weights on {where}: {on_device}"
    return Line("fused AdamW", _ok(fused and on_device), figure)


def check_sdft_ema(c: Check) -> Line:
    """The SDFT stage, and its EMA teacher moving: every update is observed (wrapped, not changed) and must
    move the teacher's first weights."""
    moved: list[float] = []
    original = teacher_module.Teacher.update

    def update(self) -> None:
        before = [p.detach().clone() for p in self._teacher_params[:2]]
        original(self)
        moved.append(
            max(float((p - b).abs().max()) for p, b in zip(self._teacher_params, before, strict=False))
        )

    teacher_module.Teacher.update = update
    try:
        stats = c.stage("sdft")
    finally:
        teacher_module.Teacher.update = original
    c.stats["sdft"] = stats
    good = len(moved) == c.args.steps and all(m > 0 for m in moved)
    return Line(
        "SDFT stage, EMA teacher moves",
        _ok(good),
        f"{len(moved)} updates, max change {max(moved or [0]):.2e}",
    )


def check_memory(c: Check) -> Line:
    if not c.cuda:
        return Line("memory estimate vs reserved", "skip", "CUDA only")
    cfg = c.cfg("sdft")
    setting = readiness.memory_setting(cfg, 1, False, True, c.device)
    est = memory_estimate.estimate(memory_estimate.shape_of(c.model.config), setting)
    reserved = c.stats["sdft"].summary["reserved_bytes"]
    ratio = reserved / est.peak
    figure = f"reserved {reserved / 2**20:.0f} MiB / estimated {est.peak / 2**20:.0f} MiB = {ratio:.2f}"
    return Line("memory estimate vs reserved", _ok(ratio <= 1.25), figure)


def check_timings(c: Check) -> Line:
    steps = c.stats["sdft"].steps
    step_s = statistics.median(s["step_s"] for s in steps)
    backward = statistics.median(s.get("backward_s", 0.0) for s in steps)
    good = 0 < backward < step_s
    return Line(
        "synchronised timings", _ok(good), f"step {1e3 * step_s:.1f} ms, backward {1e3 * backward:.1f} ms"
    )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_fsdp(c: Check) -> Line:
    """A 1-process FSDP2 SDFT stage (student and teacher copy sharded) over NCCL (gloo on the CPU)."""
    import torch.distributed as tdist

    backend = "nccl" if c.cuda else "gloo"
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    if c.cuda:
        torch.cuda.set_device(c.device)
    tdist.init_process_group(backend, rank=0, world_size=1)
    try:
        model, tok = load_model(
            ModelConfig(
                name=str(c.args.model),
                random_init=True,
                random_init_layers=c.args.layers,
                random_init_hidden=c.args.hidden,
                max_length=c.args.max_length,
            )
        )
        sharding.shard(model, with_teacher=True)
        ctx = StageContext(replicas=Replicas(sharded=True))
        stats = train_stage(model, tok, _items()[:4], None, c.cfg("sdft"), ctx)
        losses = [s["loss"] for s in stats.steps]
        good = (
            sharding.is_sharded(model)
            and all(math.isfinite(x) for x in losses)
            and len(losses) == c.args.steps
        )
        return Line("FSDP2, 1 process", _ok(good), f"{backend}, {len(losses)} steps, loss {losses[-1]:.3f}")
    finally:
        tdist.destroy_process_group()


def check_eval(c: Check) -> Line:
    """lm-eval through both decoders: the run default (static, our HFLM subclass) and lm-eval's own HFLM
    (`generate`); every item scored, and the same answers and scores from both."""
    from harness.eval.lmeval import evaluate  # lazy: lm-eval loads only for this check

    def scores(decoder: str) -> tuple[Any, float]:
        t0 = time.perf_counter()
        result = evaluate(
            c.model,
            c.tok,
            ["tooluse"],
            [str(TASKS_DIR)],
            limit=c.args.eval_items,
            batch_size=8,
            max_gen_toks=16,
            max_length=c.args.max_length,
            auto_batch_size=True,
            decoder=decoder,
        )
        return result, time.perf_counter() - t0

    (static, seconds), (hf, _) = scores("static"), scores("hf")
    scored = static.n_items.get("tooluse", 0)
    same = [(i["doc_id"], i["generation"], i["scores"]) for i in static.items] == [
        (i["doc_id"], i["generation"], i["scores"]) for i in hf.items
    ]
    batch = "auto" if c.cuda else "8 (auto is CUDA only)"
    figure = f"{scored} items greedy in {seconds:.1f} s (static decoder), batch {batch}; same answers as generate: {same}"
    return Line("lm-eval HF backend, greedy", _ok(scored == c.args.eval_items and same), figure)


def check_bench(c: Check) -> Line:
    """One `harness bench step` row (our SDFT, compute dtype of the model) and the decode floor."""
    compute = torch.bfloat16 if c.cuda else torch.float32
    row = run_ours("sdft", c.model, c.tok, max(2, c.args.steps), c.args.new_tokens, c.device, compute)
    step_ms = 1e3 * statistics.median(s["step_s"] for s in row["steps"][1:])
    floor = decode_floor(
        c.model, c.tok, PROMPTS, compute, "static", new_tokens=max(2, c.args.new_tokens), reps=2
    )
    figure = (
        f"SDFT step {step_ms:.1f} ms, peak {row['peak_mib']:.0f} MiB; decode {floor['decode_ms']:.2f} ms "
        f"vs floor {floor['floor_ms']:.3f} ms ({floor['bandwidth_gbs']:.0f} GB/s)"
    )
    return Line("bench step row + decode floor", _ok(step_ms > 0 and floor["decode_ms"] > 0), figure)


CHECKS: list[tuple[str, Callable[[Check], Line]]] = [
    ("start-up line", check_startup),
    ("bf16 compute, fp32 masters", check_precision),
    ("SFT stage", check_sft),
    ("fused AdamW", check_fused),
    ("SDFT stage, EMA teacher moves", check_sdft_ema),
    ("memory estimate vs reserved", check_memory),
    ("synchronised timings", check_timings),
    ("lm-eval HF backend, greedy", check_eval),
    ("bench step row + decode floor", check_bench),
    ("FSDP2, 1 process", check_fsdp),
]


def table(lines: list[Line], header: str) -> str:
    rows = [f"| {line.name} | {line.status} | {line.figure} |" for line in lines]
    return "\n".join([header, "", "| check | result | figure |", "|---|---|---|", *rows]) + "\n"


def _run_one(fn: Callable[[Check], Line], state: Check | None, name: str) -> Line:
    if state is None:
        return Line(name, "fail", "the model could not be built (see above)")
    try:
        line = fn(state)
        line.name = name  # one name per check, whether it passed or raised
        return line
    except Exception as err:  # noqa: BLE001 (a failed check is a line of the table; the others still run)
        first = str(err).splitlines()[0][:160] if str(err) else ""
        return Line(name, "fail", f"{type(err).__name__}: {first}")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m harness.bench.gpu_check", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True, help="folder with config.json and tokenizer files")
    p.add_argument("--out", type=Path, default=Path("results/gpu/check.md"))
    p.add_argument("--expect", choices=("cuda", "cpu"), default="cuda", help="the device the check must find")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--eval-items", type=int, default=16)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # third-party log lines go to check.log beside the table (it travels back with it)
    with quiet_console(args.out.with_suffix(".log")):
        try:
            state: Check | None = Check(args)
        except Exception as err:  # noqa: BLE001 (reported as every line failing, with the reason printed)
            print(f"gpu check: the model could not be built: {type(err).__name__}: {err}", file=sys.stderr)
            state = None
        lines = [_run_one(fn, state, name) for name, fn in CHECKS]
    gpu = torch.cuda.get_device_name() if state is not None and state.cuda else "no CUDA"
    passed = sum(line.status == "pass" for line in lines)
    header = (
        f"GPU check on {state.device if state else '?'} ({gpu}; torch {torch.__version__}): {passed} of "
        f"{len(lines)} passed, {sum(line.status == 'skip' for line in lines)} skipped, in "
        f"{time.perf_counter() - started:.0f} s"
    )
    text = table(lines, header)
    args.out.write_text(text)
    print(text, flush=True)
    return 0 if all(line.status != "fail" for line in lines) else 1


if __name__ == "__main__":
    sys.exit(main())
