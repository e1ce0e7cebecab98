"""Greedy base or in-context scores of a slice of a task's eval items, one JSON file per slice, so that a
calibration can be spread over several processes on a crowded CPU (tasks/calibrate.py does it in one).

    PYTHONPATH=$PWD nice -n 19 python results/regime/calibrate_slice.py --task caps --mode base --start 0 --stop 6
    python results/regime/calibrate_slice.py --summary   # pools every slice file per (task, mode)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "calibration"


def run_slice(task: str, mode: str, start: int, stop: int) -> None:
    import torch

    from harness.config import ModelConfig
    from harness.eval.scoring import greedy_responses, load_scorer
    from harness.models import load_model
    from harness.tasks.spec import resolve_task

    torch.set_num_threads(1)
    spec = resolve_task(task)
    lines = spec.eval_file.read_text(encoding="utf-8").splitlines()
    docs = [json.loads(line) for line in lines if line.strip()][start:stop]
    model, tok = load_model(ModelConfig())
    cpu0 = time.process_time()
    responses = greedy_responses(model, tok, spec, docs, mode, batch_size=len(docs))
    scorer = load_scorer(spec)
    scores = [float(scorer(r, d)) for r, d in zip(responses, docs, strict=True)]
    OUT.mkdir(exist_ok=True)
    row = {
        "task": task,
        "mode": mode,
        "start": start,
        "stop": stop,
        "scores": scores,
        "responses": responses,
        "cpu_s": round(time.process_time() - cpu0, 1),
    }
    (OUT / f"{task}_{mode}_{start}_{stop}.json").write_text(json.dumps(row, indent=1), encoding="utf-8")


def summary() -> None:
    pooled: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], float] = {}
    for path in sorted(OUT.glob("*.json")):
        row = json.loads(path.read_text(encoding="utf-8"))
        key = (row["task"], row["mode"])
        pooled.setdefault(key, []).extend(row["scores"])
        cpu[key] = cpu.get(key, 0.0) + row["cpu_s"]
    for (task, mode), scores in sorted(pooled.items()):
        n = len(scores)
        print(f"{task} {mode}: {sum(scores)}/{n} = {sum(scores) / n:.3f} (CPU {cpu[(task, mode)]:.0f} s)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="caps")
    ap.add_argument("--mode", choices=["base", "in_context"], default="base")
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--stop", type=int, default=6)
    ap.add_argument("--summary", action="store_true")
    args = ap.parse_args()
    if args.summary:
        summary()
    else:
        run_slice(args.task, args.mode, args.start, args.stop)


if __name__ == "__main__":
    main()
