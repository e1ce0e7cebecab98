"""The per-task input checks that need the task's own code or the tokenizer, made before any weights load:
the scorer on the task's eval demonstrations, and prompt + demonstration lengths against `model.max_length`
(the tokenizer alone loads in well under a second). `harness run` (harness.run.preflight) and
`harness tasks validate` / `tasks new` (harness.tasktools.validate) call the same functions, so the two
agree on every folder."""

from __future__ import annotations

import json
from typing import Any

from harness.batching import chat_prompt_ids, completion_ids, item_name
from harness.eval.scoring import scorer_problems
from harness.tasks.spec import Item, TaskDataError, TaskSpec, read_jsonl, student_messages


def eval_rows(spec: TaskSpec) -> list[dict]:
    """Every line of the folder's eval*.jsonl files as a dict with its `_where` (file:line); lines that are
    not JSON objects are left to the file checks, which name them."""
    rows = []
    for path in sorted(spec.path.glob("eval*.jsonl")):
        with path.open("rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                try:
                    obj = json.loads(raw)
                except (ValueError, UnicodeDecodeError):
                    continue
                if isinstance(obj, dict):
                    rows.append({**obj, "_where": f"{path}:{lineno}"})
    return rows


def length_problems(tokenizer: Any, items: list[Item], max_length: int) -> list[str]:
    """Training items whose prompt + demonstration (with the chat template and the end-of-turn token) do
    not fit `max_length` tokens: SFT would silently cut the demonstration, a teacher context would lose
    part of it."""
    problems = []
    for item in items:
        n = len(chat_prompt_ids(tokenizer, student_messages(item))) + len(
            completion_ids(tokenizer, item.demonstration)
        )
        if n > max_length:
            problems.append(
                f"item {item_name(item)}: prompt + demonstration have {n} tokens, more than "
                f"model.max_length={max_length}; shorten or remove the item, or raise model.max_length"
            )
    return problems


def task_problems(spec: TaskSpec, tokenizer: Any, max_length: int, limit: int | None = None) -> list[str]:
    """Every problem of the two checks for one task (empty: fine). `limit`: only the first train items are
    checked for length, as only those train (trainer.max_train_items)."""
    problems = scorer_problems(spec, eval_rows(spec))
    if tokenizer is not None and spec.train_file.is_file():
        items = read_jsonl(spec.train_file)
        problems += length_problems(tokenizer, items[:limit] if limit else items, max_length)
    return problems


def check_tasks(specs: list[TaskSpec], tokenizer: Any, max_length: int, limit: int | None = None) -> None:
    """The first problem of any stream task as one line (pointing at `harness tasks validate` for the rest)."""
    for spec in specs:
        problems = task_problems(spec, tokenizer, max_length, limit)
        if problems:
            more = (
                f" (and {len(problems) - 1} more: harness tasks validate {spec.path})"
                if len(problems) > 1
                else ""
            )
            raise TaskDataError(problems[0] + more)
