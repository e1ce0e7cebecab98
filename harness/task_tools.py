"""`harness tasks list | show | validate`: inspect and check task folders (built-in or a user's)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.tasks import (
    TaskSpec,
    _is_prompt,
    builtin_task_names,
    read_jsonl,
    resolve_task,
    resolve_template,
    student_messages,
    teacher_messages,
)

# General-suite folders are evaluated only; every other category trains and needs train.jsonl.
EVAL_ONLY_CATEGORIES = ("general",)
MAX_REPORTED = 20  # problems of one kind printed per file before "... and N more"


def eval_files(spec: TaskSpec) -> list[Path]:
    """eval.jsonl and any further eval_*.jsonl (e.g. knowledge's eval_ood.jsonl), all held out."""
    return sorted(spec.path.glob("eval*.jsonl"))


def _count_lines(path: Path) -> int:
    if not path.is_file():
        return 0
    with path.open(encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())


def cmd_list() -> int:
    print(f"{'name':<16} {'category':<10} {'train':>6}  {'eval':<24} {'metric':<12} eval tasks")
    for name in builtin_task_names():
        spec = resolve_task(name)
        evals = ", ".join(f"{f.stem}={_count_lines(f)}" for f in eval_files(spec))
        print(
            f"{name:<16} {spec.category:<10} {_count_lines(spec.train_file):>6}  {evals:<24} {spec.metric:<12} "
            f"{', '.join(spec.eval_tasks)}"
        )
    return 0


def cmd_show(name: str, n: int = 2) -> int:
    from harness.models import load_tokenizer

    spec = resolve_task(name)
    source = spec.train_file if spec.train_file.is_file() else spec.eval_file
    items = read_jsonl(source)[:n]
    tok = load_tokenizer()
    template = resolve_template(None, spec)
    print(
        f"task {spec.name} ({spec.category}) from {spec.path}; teacher template: "
        f"{spec.teacher_template or 'paper (default)'}; skip_tokens={spec.skip_tokens}; "
        f"max_new_tokens={spec.max_new_tokens}; eval_max_gen_toks={spec.eval_max_gen_toks}"
    )
    for item in items:
        print(f"\n===== {item.source} =====")
        print("--- student prompt ---")
        print(tok.apply_chat_template(student_messages(item), tokenize=False, add_generation_prompt=True))
        print("--- demonstration (the SFT target) ---")
        print(item.demonstration)
        print("--- teacher prompt ---")
        print(
            tok.apply_chat_template(
                teacher_messages(item, template), tokenize=False, add_generation_prompt=True
            )
        )
    return 0


# --- validation ------------------------------------------------------------------------------------------


def check_jsonl(
    path: Path, require: tuple[str, ...] = ("prompt", "demonstration")
) -> tuple[list[dict], list[str]]:
    """Every line's schema, all problems (not only the first) as 'file:line: what'. Returns (rows, problems)."""
    rows: list[dict] = []
    problems: list[str] = []
    if not path.is_file():
        return rows, [f"{path}: file not found"]
    with path.open("rb") as fh:  # bytes: a line that is not UTF-8 is reported with its file:line
        for lineno, raw in enumerate(fh, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                problems.append(f"{where}: not UTF-8 text (byte {err.start} of the line)")
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                problems.append(f"{where}: malformed JSON: {err.msg} (column {err.colno})")
                continue
            if not isinstance(obj, dict):
                problems.append(f"{where}: each line must be a JSON object, got {type(obj).__name__}")
                continue
            missing = [k for k in require if k not in obj]
            if missing:
                problems.append(f"{where}: missing field(s) {missing}; required: {list(require)}")
                continue
            if not _is_prompt(obj["prompt"]):
                problems.append(
                    f"{where}: 'prompt' must be a non-empty string or a list of chat messages "
                    "ending with a user message"
                )
                continue
            if not isinstance(obj["demonstration"], str) or not obj["demonstration"].strip():
                problems.append(f"{where}: 'demonstration' must be a non-empty string")
                continue
            if obj.get("privileged") is not None and not isinstance(obj["privileged"], str):
                problems.append(f"{where}: 'privileged' must be a string when present")
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
    """The task's scorer gives 1.0 to every item's own demonstration."""
    from harness.scoring import load_scorer

    try:
        scorer = load_scorer(spec)
    except Exception as err:
        return [f"{spec.path / 'utils.py'}: cannot load score(): {type(err).__name__}: {err}"]
    problems = []
    for rows in files.values():
        for row in rows:
            doc = {k: v for k, v in row.items() if k != "_where"}
            try:
                value = scorer(row["demonstration"], doc)
            except Exception as err:
                problems.append(
                    f"{row['_where']}: score(demonstration, doc) raised {type(err).__name__}: {err}"
                )
                continue
            if value != 1.0:
                problems.append(f"{row['_where']}: score(demonstration, doc) = {value}, expected 1.0")
    return problems


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
    problems += check_lm_eval(spec)
    return problems


def _print_problems(problems: list[str]) -> Iterator[str]:
    by_file: dict[str, int] = {}
    for problem in problems:
        key = problem.split(":", 1)[0]
        by_file[key] = by_file.get(key, 0) + 1
        if by_file[key] <= MAX_REPORTED:
            yield problem
    for key, count in by_file.items():
        if count > MAX_REPORTED:
            yield f"{key}: ... and {count - MAX_REPORTED} more problems"


def cmd_validate(paths: list[str] | None = None) -> int:
    targets = list(paths) if paths else builtin_task_names()
    failed = 0
    for target in targets:
        problems = validate_task(target)
        if problems:
            failed += 1
            print(f"FAIL {target}: {len(problems)} problem(s)")
            for line in _print_problems(problems):
                print(f"  {line}")
        else:
            print(f"ok   {target}")
    print(f"{len(targets) - failed}/{len(targets)} task(s) valid")
    return 1 if failed else 0


# --- teacher-template probe --------------------------------------------------------------------------------


def cmd_probe(
    name: str, templates: list[str] | None = None, n: int = 6, model: Any = None, tokenizer: Any = None
) -> int:
    """Rank teacher templates for a task by (demonstration minus template) log-probability per token under
    teacher forcing on its first `n` train items (harness.probe); prints a table, best first."""
    import time

    from harness.probe import rank_templates
    from harness.tasks import TEACHER_TEMPLATES

    spec = resolve_task(name)
    if not spec.train_file.is_file():
        print(f"task {spec.name} has no train.jsonl (category {spec.category}): nothing to probe")
        return 1
    chosen = templates or [t for t in TEACHER_TEMPLATES if t != "solution"]  # `solution` is OPSD's
    named = {t: resolve_template(t, spec) for t in chosen}
    items = read_jsonl(spec.train_file)[:n]
    started = time.perf_counter()
    if model is None:
        from harness.config import ModelConfig
        from harness.models import load_model

        model, tokenizer = load_model(ModelConfig())
    ranked = rank_templates(model, tokenizer, items, named)
    print(
        f"task {spec.name}: {len(items)} train items, teacher forcing; mean log-prob per token (sum over the "
        f"text in brackets); task's template: {spec.teacher_template or 'paper (default)'}"
    )
    print(
        f"{'template':<12} {'margin':>7} {'teacher demo':>18} {'teacher template':>18} {'student demo':>18} "
        f"{'p_T-p_S first':>13} {'tmpl>demo':>9}"
    )
    for label, r in ranked:
        shown = label if len(label) <= 12 else label[:9] + "..."
        print(
            f"{shown:<12} {r.margin:>7.2f} {r.teacher_demo_lp:>7.2f} ({r.teacher_demo_sum:>8.1f}) "
            f"{r.teacher_template_lp:>7.2f} ({r.teacher_template_sum:>8.1f}) "
            f"{r.student_demo_lp:>7.2f} ({r.student_demo_sum:>8.1f}) {r.first_gap:>13.3f} "
            f"{r.template_more_likely:>9.0%}"
        )
    print(
        f"margin = teacher demo - teacher template per token: larger is harder to recite. "
        f"{time.perf_counter() - started:.1f} s"
    )
    return 0


# --- building a task from a data set -----------------------------------------------------------------------


def cmd_new(args: Any, argv: list[str] | None = None) -> int:
    """`harness tasks new`: see harness.task_builder (reads, maps, splits, writes, validates)."""
    from harness.task_new import cmd_new as build_new

    return build_new(args, argv)
