"""`harness bench ddp`: one process vs N data-parallel processes on the same global batch, side by side.

Both runs train one stage of the same task with the same global batch and the same micro-batches (the
single process accumulates N micro-batches, the N processes one each), so their losses must agree and
only the wall time differs. CPU threads are split fairly: the single process gets all `--threads`, each of
the N processes `--threads // N`. The figure is the median optimizer-step time over the steps after the
first (warm-up), read back from MLflow (`train_step/step_s`), and the ratio between the two runs.
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

ROOT = Path(__file__).resolve().parent.parent
DDP_CONFIG = ROOT / "conf" / "accelerate" / "ddp.yaml"


def _overrides(args: argparse.Namespace, results: Path, accum: int) -> list[str]:
    return [
        "experiment_name=bench_ddp", f"results_dir={results}", f"method={args.method}", f"model={args.model}",
        "stream.name=bench", f"stream.tasks=[{args.task}]", "suite=none", "eval.limit=2", "eval.in_context_items=0",
        f"trainer.max_steps={args.steps}", f"trainer.batch_size={args.batch}", f"trainer.grad_accum={accum}",
        "trainer.warmup_steps=0", f"method.distill.max_new_tokens={args.new_tokens}", "checkpoints=none",
    ]


def _launch(args: argparse.Namespace, results: Path, processes: int) -> None:
    threads = max(1, args.threads // processes)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    if processes == 1:
        cmd = [sys.executable, "-m", "harness.cli", "run", *_overrides(args, results, args.processes)]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(DDP_CONFIG),
               "--num_processes", str(processes), "-m", "harness.cli", "run", *_overrides(args, results, 1)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... failed:\n{done.stderr[-3000:]}")


def _step_series(results: Path, key: str) -> list[float]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{results}/mlflow.db")
    exp = client.get_experiment_by_name("bench_ddp")
    (stage,) = client.search_runs([exp.experiment_id], "tags.stage = '1'")
    history = sorted(client.get_metric_history(stage.info.run_id, key), key=lambda m: m.step)
    return [m.value for m in history]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="harness bench ddp", description=__doc__)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads shared out")
    parser.add_argument("--method", default="sdft")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--task", default="tooluse")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4, help="global batch (prompts per optimizer step)")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--out", default=str(ROOT / "results" / "bench"))
    args = parser.parse_args(argv)
    if args.steps < 2:
        raise ValueError("--steps must be at least 2: the first step is warm-up and not timed")

    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        for processes in (1, args.processes):
            results = Path(tmp) / f"p{processes}"
            _launch(args, results, processes)
            times = _step_series(results, "train_step/step_s")
            rows[processes] = {
                "processes": processes,
                "threads_per_process": max(1, args.threads // processes),
                "median_step_s": statistics.median(times[1:]),
                "losses": _step_series(results, "train_step/loss"),
            }
    single, multi = rows[1], rows[args.processes]
    max_loss_gap = max(abs(a - b) for a, b in zip(single["losses"], multi["losses"], strict=True))
    speedup = single["median_step_s"] / multi["median_step_s"]
    summary = {"method": args.method, "model": args.model, "task": args.task, "global_batch": args.batch,
               "steps": args.steps, "new_tokens": args.new_tokens, "threads": args.threads,
               "runs": list(rows.values()), "speedup": speedup, "max_loss_gap": max_loss_gap}
    lines = [
        f"# Data-parallel step time: 1 vs {args.processes} processes",
        "",
        f"{args.method} on {args.model}, task {args.task}, global batch {args.batch}, {args.new_tokens}-token "
        f"rollouts, {args.threads} CPU threads shared out; median of steps 2..{args.steps}.",
        "",
        "| processes | threads each | median step (s) |",
        "|---|---|---|",
        *(f"| {r['processes']} | {r['threads_per_process']} | {r['median_step_s']:.2f} |" for r in rows.values()),
        "",
        f"Speed-up: {speedup:.2f}x. Largest per-step loss difference between the runs: {max_loss_gap:.2e} "
        "(same micro-batches and seeds, so it should be ~0).",
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ddp.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "ddp.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print("\n".join(lines))
    return 0
