"""Checks of one task folder: every JSONL line against the schema (file:line), train/eval overlap, the
lm-eval YAML loads, the scorer runs on the eval demonstrations. `harness tasks validate` prints them;
`harness tasks new` runs them on the folder it wrote."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from harness.config import ModelConfig
from harness.tasks.checks import check_names, check_task
from harness.tasks.spec import (
    TaskSpec,
    jsonl_records,
    read_jsonl,
    resolve_task,
)

# General-suite folders are evaluated only; every other category trains and needs train.jsonl.
EVAL_ONLY_CATEGORIES = ("general",)


def eval_files(spec: TaskSpec) -> list[Path]:
    """eval.jsonl and any further eval_*.jsonl (e.g. knowledge's eval_ood.jsonl), all held out."""
    return sorted(spec.path.glob("eval*.jsonl"))


def check_jsonl(
    path: Path, require: tuple[str, ...] = ("prompt", "demonstration")
) -> tuple[list[dict], list[str]]:
    """Every line's schema, all problems (not only the first) as 'file:line: what'. Returns (rows, problems)."""
    rows: list[dict] = []
    problems: list[str] = []
    if not path.is_file():
        return rows, [f"{path}: file not found"]
    for where, obj, problem in jsonl_records(path, require):
        if obj is None:
            problems.append(f"{where}: {problem}")
            continue
        obj["_where"] = where
        rows.append(obj)
    if not rows and not problems:
        problems.append(f"{path}: no items (the file is empty)")
    return rows, problems


def prompt_key(prompt: Any) -> str:
    """Prompts compared for overlap: case and whitespace do not make an item new."""
    text = prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)
    return " ".join(text.lower().split())


def check_overlap(train: list[dict], evals: list[dict]) -> list[str]:
    seen = {prompt_key(r["prompt"]): r["_where"] for r in train}
    return [
        f"{r['_where']}: eval prompt also in train ({seen[prompt_key(r['prompt'])]})"
        for r in evals
        if prompt_key(r["prompt"]) in seen
    ]


def check_lm_eval(spec: TaskSpec) -> list[str]:
    """The folder's lm-eval YAMLs load offline, restricted to this folder, and give documents."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lm_eval.tasks import TaskManager

    problems = []
    try:
        tm = TaskManager(include_path=[str(spec.path)], include_defaults=False)
    except Exception as err:  # lm-eval raises many types; any of them means the folder does not load
        return [f"{spec.path}: lm-eval cannot index the folder: {type(err).__name__}: {err}"]
    for task in spec.eval_tasks:
        if task not in tm.all_tasks:
            problems.append(
                f"{spec.path}: no lm-eval YAML defines task {task!r} (task.yaml eval_tasks); "
                f"found: {tm.all_tasks}"
            )
            continue
        try:
            loaded = tm.load([task])["tasks"][task]
            if not loaded.eval_docs:
                problems.append(f"{spec.path}: lm-eval task {task!r} has no documents")
        except Exception as err:
            problems.append(
                f"{spec.path}: lm-eval task {task!r} does not load offline: {type(err).__name__}: {err}"
            )
    return problems


def check_scorer(spec: TaskSpec, files: dict[Path, list[dict]]) -> list[str]:
    """The task's scorer gives 1.0 to every item's own demonstration (the check `harness run` makes too)."""
    from harness.eval.scoring import scorer_problems  # lazy: loads torch only when needed

    return scorer_problems(spec, [row for rows in files.values() for row in rows])


def validate_task(name_or_path: str) -> list[str]:
    """Every problem found in one task folder (empty list: the task is valid)."""
    try:
        spec = resolve_task(name_or_path)
    except (ValueError, OSError) as err:
        return [str(err)]
    problems: list[str] = []
    if not spec.eval_tasks:
        problems.append(f"{spec.path / 'task.yaml'}: eval_tasks is empty")
    train: list[dict] = []
    if spec.train_file.is_file() or spec.category not in EVAL_ONLY_CATEGORIES:
        train, found = check_jsonl(spec.train_file)
        problems += found
        if not found:
            read_jsonl(spec.train_file)  # the loader the training code uses must agree
    evals = {path: check_jsonl(path) for path in eval_files(spec)}
    if not evals:
        problems.append(f"{spec.path}: no eval.jsonl")
    for rows, found in evals.values():
        problems += found
        problems += check_overlap(train, rows)
    scored = {p: rows for p, (rows, _) in evals.items()}
    if train and scored:
        # train lines are scored too when they carry the fields the scorer reads (built-in tasks do)
        needed = set().union(*(r.keys() for rows in scored.values() for r in rows[:1])) - {"id"}
        if needed <= set(train[0]):
            scored[spec.train_file] = train
    problems += check_scorer(spec, scored)
    if train and not any(p.startswith(str(spec.train_file)) for p in problems):
        problems += check_lengths(spec)
    problems += check_lm_eval(spec)
    return problems + [p for p in run_checks(spec) if p not in problems]


def run_checks(spec: TaskSpec) -> list[str]:
    """The checks `harness run` makes of a stream task, in run's words (each stops at its first problem):
    files, `!function` helpers, eval task names defined, a name shared with a built-in task."""
    problems: list[str] = []
    trains = spec.train_file.is_file() or spec.category not in EVAL_ONLY_CATEGORIES
    for check in (check_task if trains else lambda s: None, lambda s: check_names([s])):
        try:
            check(spec)
        except ValueError as err:
            problems.append(str(err))
    return problems


def check_lengths(spec: TaskSpec) -> list[str]:
    """Train items against the default model's context (`model.max_length`), with its tokenizer: the check
    `harness run` makes with the configured model."""
    from harness.run.preflight import tokenizer_of  # lazy: loads transformers for the tokenizer
    from harness.run.task_inputs import length_problems  # lazy: loads torch only when needed

    model = ModelConfig()
    try:
        tokenizer = tokenizer_of(model)
    except ValueError as err:
        return [str(err)]
    return length_problems(tokenizer, read_jsonl(spec.train_file), model.max_length)
