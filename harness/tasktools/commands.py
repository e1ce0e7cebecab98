"""`harness tasks list | show | validate`: inspect and check task folders (built-in or a user's)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.config import ModelConfig
from harness.tasks.spec import (
    TEACHER_TEMPLATES,
    builtin_task_names,
    read_jsonl,
    resolve_task,
    resolve_template,
    student_messages,
    teacher_messages,
)
from harness.tasktools.validate import eval_files, validate_task

MAX_REPORTED = 20  # problems of one kind printed per file before "... and N more"


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
    from harness.models import load_tokenizer  # lazy: loads torch only when needed

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
    teacher forcing on its first `n` train items (harness.distill.probe); prints a table, best first."""
    import time

    from harness.distill.probe import rank_templates  # lazy: loads torch only when needed

    spec = resolve_task(name)
    if not spec.train_file.is_file():
        print(f"task {spec.name} has no train.jsonl (category {spec.category}): nothing to probe")
        return 1
    chosen = templates or [t for t in TEACHER_TEMPLATES if t != "solution"]  # `solution` is OPSD's
    named = {t: resolve_template(t, spec) for t in chosen}
    items = read_jsonl(spec.train_file)[:n]
    started = time.perf_counter()
    if model is None:
        from harness.models import load_model  # lazy: loads torch only when needed

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
