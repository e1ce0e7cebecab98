"""Calibrate the built-in tasks with the embedded model: base score, in-context score, chance level.

    python tasks/calibrate.py [--tasks tooluse science ...] [--n 60] [--template NAME] [--show 2]
    python tasks/calibrate.py --lm-eval 10      # every eval task through lm-eval's simple_evaluate instead

Generative tasks: greedy answers scored by the task's utils.score (harness.eval.scoring.greedy_scores), the
first --n items of each eval file. Multiple-choice tasks (general_mc): lm-eval's loglikelihood accuracy.
Prints one Markdown table row per eval file, scores with 95% Wilson intervals (the tables in tasks/README.md
came from this script).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from harness.config import ModelConfig
from harness.eval.scoring import greedy_responses, load_scorer
from harness.models import load_model
from harness.tasks.spec import builtin_task_names, resolve_task


def chance(name: str) -> str:
    """The task's declared chance level (task.yaml `chance`: its best constant answer on the whole eval set)."""
    spec = resolve_task(name.removesuffix("_ood"))
    return "n/a" if spec.chance is None or name.endswith("_ood") else f"{spec.chance:.3f}"


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of a proportion k/n (k may be fractional for partial-credit scorers)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def with_interval(scores: list[float]) -> str:
    lo, hi = wilson(sum(scores), len(scores))
    return f"{sum(scores) / len(scores):.2f} [{lo:.2f}, {hi:.2f}]"


def read_docs(path, n, start=0):
    docs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return docs[start : start + n]


def lm_eval_results(model, tok, folders: list[str], names: list[str], n: int) -> dict:
    """simple_evaluate as the harness calls it: our folders only, offline, chat template, greedy."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=folders, include_defaults=False)
    res = simple_evaluate(
        HFLM(pretrained=model, tokenizer=tok, batch_size=16),
        tasks=names,
        task_manager=tm,
        apply_chat_template=True,
        limit=n,
    )
    return res["results"]


def mc_accuracy(model, tok, task: str, n: int) -> float:
    return lm_eval_results(model, tok, [str(resolve_task(task).path)], [task], n)[task]["acc,none"]


def lm_eval_table(model, tok, task_names: list[str], n: int) -> None:
    specs = [resolve_task(t) for t in task_names]
    names = [e for s in specs for e in s.eval_tasks]
    results = lm_eval_results(model, tok, [str(s.path) for s in specs], names, n)
    print("| lm-eval task | metric | value | n |\n|---|---|---|---|")
    for spec in specs:
        for name in spec.eval_tasks:
            print(f"| {name} | {spec.metric} | {results[name][spec.metric + ',none']:.2f} | {n} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", nargs="*", default=None)
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument(
        "--start", type=int, default=0, help="skip this many eval items (e.g. 120: the new ones)"
    )
    parser.add_argument("--template", default=None)
    parser.add_argument("--show", type=int, default=0)
    parser.add_argument(
        "--lm-eval", type=int, default=0, help="run simple_evaluate on this many items per task"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, tok = load_model(ModelConfig())
    if args.lm_eval:
        lm_eval_table(model, tok, args.tasks or builtin_task_names(), args.lm_eval)
        return
    print("| task | eval file | n | base | in-context | chance | template |")
    print("|---|---|---|---|---|---|---|")
    for name in args.tasks or builtin_task_names():
        spec = resolve_task(name)
        if spec.category == "general" and name == "general_mc":
            t = time.time()
            acc = mc_accuracy(model, tok, name, args.n)
            print(
                f"| {name} | eval.jsonl | {args.n} | {acc:.2f} | n/a | {chance(name)} | n/a |  ({time.time() - t:.0f}s)"
            )
            continue
        scorer = load_scorer(spec)
        for eval_file in sorted(spec.path.glob("eval*.jsonl")):
            docs = read_docs(eval_file, args.n, args.start)
            label = name if eval_file.name == "eval.jsonl" else f"{name}_ood"
            t = time.time()
            row = {}
            modes = ["base"] if spec.category == "general" else ["base", "in_context"]
            for mode in modes:
                resp = greedy_responses(model, tok, spec, docs, mode, template=args.template)
                scores = [scorer(r, d) for r, d in zip(resp, docs, strict=True)]
                row[mode] = with_interval(scores)
                for r, d, s in list(zip(resp, docs, scores, strict=True))[: args.show]:
                    print(f"   [{mode} {s}] {d['prompt'][-60:]!r} -> {r!r}")
            template = args.template or spec.teacher_template or "paper"
            ic = row.get("in_context", "n/a")
            print(
                f"| {label} | {eval_file.name} | {len(docs)} | {row['base']} | {ic} | "
                f"{chance(label)} | {template if 'in_context' in row else 'n/a'} |  "
                f"({time.time() - t:.0f}s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
