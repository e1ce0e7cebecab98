"""`harness bench parallel`: 1 process vs N processes (DDP replicas, FSDP shards) on the same global batch.

Every run trains one stage of the same task with the same global batch cut into the same micro-batches
(the single process accumulates N of them, the N processes one each), so their losses must agree and only
time and memory differ. CPU threads are split fairly: the single process gets all `--threads`, each of the
N processes `--threads // N`. Figures, read back from MLflow: the median optimizer-step time over the steps
after the first (warm-up, `train_step/step_s`); for the most loaded process, the exact size of the
student's weights, gradients and AdamW state (`train/state_mib`) and its peak memory (`train/peak_mem_mib`:
the CUDA allocator's peak on a GPU, the peak resident set size on the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.arguments import OneLineParser, at_least

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_CONFIGS = {
    "ddp": ROOT / "conf" / "accelerate" / "ddp.yaml",
    "fsdp": ROOT / "conf" / "accelerate" / "fsdp.yaml",
}
EXPERIMENT = "bench_parallel"


def _overrides(args: argparse.Namespace, results: Path, accum: int) -> list[str]:
    return [
        f"experiment_name={EXPERIMENT}",
        f"results_dir={results}",
        f"method={args.method}",
        f"model={args.model}",
        "stream.name=bench",
        f"stream.tasks=[{args.task}]",
        "suite=none",
        "eval.limit=2",
        "eval.in_context_items=0",
        f"trainer.max_steps={args.steps}",
        f"trainer.batch_size={args.batch}",
        f"trainer.grad_accum={accum}",
        "trainer.warmup_steps=0",
        f"method.distill.max_new_tokens={args.new_tokens}",
        "checkpoints=none",
    ]


def _launch(args: argparse.Namespace, results: Path, mode: str) -> None:
    processes = 1 if mode == "single" else args.processes
    threads = max(1, args.threads // processes)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    if mode == "single":
        cmd = [sys.executable, "-m", "harness.cli", "run", *_overrides(args, results, args.processes)]
    else:
        cmd = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(LAUNCH_CONFIGS[mode]),
            "--num_processes",
            str(processes),
            "-m",
            "harness.cli",
            "run",
            *_overrides(args, results, 1),
        ]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{mode}: {' '.join(cmd[:6])} ... failed:\n{done.stderr[-3000:]}")


def _stage_figures(results: Path) -> tuple[dict[str, float], dict[str, list[float]]]:
    """The trained stage's summary metrics and its per-step series of step time and loss, from MLflow."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{results}/mlflow.db")
    exp = client.get_experiment_by_name(EXPERIMENT)
    (stage,) = client.search_runs([exp.experiment_id], "tags.stage = '1'")
    series = {}
    for key in ("train_step/step_s", "train_step/loss"):
        history = sorted(client.get_metric_history(stage.info.run_id, key), key=lambda m: m.step)
        series[key] = [m.value for m in history]
    return stage.data.metrics, series


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = OneLineParser(prog="harness bench parallel", description=__doc__)
    parser.add_argument("--processes", type=at_least(1), default=2)
    parser.add_argument("--modes", default="ddp,fsdp", help="comma-separated multi-process modes: ddp, fsdp")
    parser.add_argument(
        "--threads", type=at_least(1), default=os.cpu_count() or 1, help="CPU threads shared out"
    )
    parser.add_argument("--method", default="sdft")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--task", default="tooluse")
    # the first step is warm-up and not timed
    parser.add_argument("--steps", type=at_least(2), default=4)
    parser.add_argument(
        "--batch", type=at_least(1), default=4, help="global batch (prompts per optimizer step)"
    )
    parser.add_argument("--new-tokens", type=at_least(1), default=48)
    parser.add_argument("--out", default=str(ROOT / "results" / "bench"))
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in args.modes if m not in LAUNCH_CONFIGS]
    if unknown:
        raise ValueError(f"--modes: unknown {unknown}; valid: {', '.join(LAUNCH_CONFIGS)}")
    return args


def main(argv: list[str]) -> int:
    args = _arguments(argv)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-parallel-") as tmp:
        for mode in ["single", *args.modes]:
            results = Path(tmp) / mode
            _launch(args, results, mode)
            metrics, series = _stage_figures(results)
            processes = 1 if mode == "single" else args.processes
            rows[mode] = {
                "mode": mode,
                "processes": processes,
                "threads_per_process": max(1, args.threads // processes),
                "median_step_s": statistics.median(series["train_step/step_s"][1:]),
                "peak_mem_mib": metrics.get("train/peak_mem_mib", float("nan")),
                "state_mib": metrics.get("train/state_mib", float("nan")),
                "losses": series["train_step/loss"],
            }
    single = rows["single"]
    for row in rows.values():
        row["speedup"] = single["median_step_s"] / row["median_step_s"]
        row["state_ratio"] = row["state_mib"] / single["state_mib"]
        row["max_loss_gap"] = max(abs(a - b) for a, b in zip(single["losses"], row["losses"], strict=True))
    summary = {
        "method": args.method,
        "model": args.model,
        "task": args.task,
        "global_batch": args.batch,
        "steps": args.steps,
        "new_tokens": args.new_tokens,
        "threads": args.threads,
        "runs": list(rows.values()),
    }
    lines = _markdown(args, list(rows.values()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "parallel.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "parallel.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print("\n".join(lines))
    return 0


def _markdown(args: argparse.Namespace, rows: list[dict]) -> list[str]:
    return [
        f"# Multi-process training: 1 process vs {args.processes} (DDP replicas, FSDP shards)",
        "",
        f"{args.method} on {args.model}, task {args.task}, global batch {args.batch}, {args.new_tokens}-token "
        f"rollouts, {args.threads} CPU threads shared out; median step time of steps 2..{args.steps}.",
        "",
        "| mode | processes | threads each | median step (s) | speed-up | training state MiB | state ratio "
        "| peak MiB | max loss gap |",
        "|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {r['mode']} | {r['processes']} | {r['threads_per_process']} | {r['median_step_s']:.2f} | "
            f"{r['speedup']:.2f}x | {r['state_mib']:.0f} | {r['state_ratio']:.2f} | {r['peak_mem_mib']:.0f} | "
            f"{r['max_loss_gap']:.1e} |"
            for r in rows
        ),
        "",
        "Training state: what the most loaded process stores for the student's weights, gradients and AdamW",
        "state (counted exactly; an EMA teacher adds one more weights' worth, sharded alike under FSDP). Peak:",
        "that process's peak memory (CUDA allocator peak on a GPU; on the CPU the peak resident set size, which",
        "also counts loading the model, freed buffers malloc keeps, and under FSDP the layers held whole during",
        "rollouts). Loss gap: largest per-step difference from the single process (same micro-batches and",
        "seeds, so ~0).",
    ]
