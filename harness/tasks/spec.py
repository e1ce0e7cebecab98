"""Task specs: where a task lives, its training items, and how prompts are shown to student and teacher.

A task is a folder (docs/design.md §3): `train.jsonl`, `eval.jsonl`, lm-eval YAML(s), `task.yaml` with
per-task settings. Built-in tasks live in the repository's `tasks/`; a stream may also name a path.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TASKS_ROOT = Path(__file__).resolve().parents[2] / "tasks"

# Teacher-context templates. {prompt}: the student's last user message; {demonstration}: the expert answer;
# {privileged}: the teacher-only context followed by a blank line, or "" when the item has none.
TEACHER_TEMPLATES: dict[str, str] = {
    # as published with SDFT (arXiv 2601.19897)
    "paper": (
        "{privileged}{prompt}\n\nThis is an example for a response to the question:\n{demonstration}\n\n"
        "Now answer with a response of your own, including the thinking process."
    ),
    # the paper's template without "including the thinking process": a 135M model otherwise starts
    # explaining instead of answering in the task's format (docs/design.md §11)
    "plain": (
        "{privileged}{prompt}\n\nThis is an example for a response to the question:\n{demonstration}\n\n"
        "Now answer with a response of your own."
    ),
    # OPSD: the teacher sees a verified solution and is asked to solve the problem itself
    "solution": (
        "{privileged}{prompt}\n\nHere is a verified solution to this problem:\n{demonstration}\n\n"
        "Now solve the problem yourself and give your answer."
    ),
    # Templates meant to be hard to recite: a teacher that samples the template's own sentence instead of
    # an answer teaches the student to say it (the paper's sentence is a likely continuation for a small
    # model). `harness tasks probe` ranks them per task by how much likelier the demonstration is than the
    # template's text under teacher forcing.
    # the demonstration introduced by a short label, no instruction sentence to continue
    "label": "{privileged}{prompt}\n\nCorrect answer:\n{demonstration}",
    # the demonstration first, then the question: the turn ends on the question, as the student's does
    "demo_first": "{privileged}Example of a correct answer:\n{demonstration}\n\nQuestion:\n{prompt}",
    # the demonstration in a system message (text before <<user>> goes there): the user turn is the student's
    "system": "<<system>>Reference answer for the next question:\n{demonstration}<<user>>{privileged}{prompt}",
}
# A template that starts with SYSTEM_MARK puts the text up to USER_MARK into the system message (prepended
# to the item's own system message, if any) and the rest into the last user message.
SYSTEM_MARK, USER_MARK = "<<system>>", "<<user>>"
DEFAULT_TEMPLATE = "paper"
DEFAULT_SKIP_TOKENS = 3
DEFAULT_MAX_NEW_TOKENS = 256

Messages = list[dict[str, str]]


class TaskDataError(ValueError):
    """A problem in a task's files; the message names the file and line."""


@dataclass
class Item:
    prompt: str | Messages
    demonstration: str
    privileged: str | None = None
    id: str | None = None
    source: str = ""  # "file:line", for error messages


@dataclass
class TaskSpec:
    name: str
    path: Path
    category: str = "skill"
    description: str = ""
    eval_tasks: list[str] = field(default_factory=list)  # lm-eval task names defined in this folder
    metric: str = "exact_match"  # lm-eval metric of eval_tasks[0] that fills the accuracy matrix
    teacher_template: str | None = None
    skip_tokens: int | None = None
    max_new_tokens: int | None = None
    eval_max_gen_toks: int | None = None
    # the score of the best constant, well-formatted answer on the eval set (`harness.eval.chance`), and that
    # answer; the report calls a task learned only above max(base model, chance)
    chance: float | None = None
    chance_answer: str | None = None

    @property
    def train_file(self) -> Path:
        return self.path / "train.jsonl"

    @property
    def eval_file(self) -> Path:
        return self.path / "eval.jsonl"


def builtin_task_names() -> list[str]:
    return sorted(p.parent.name for p in TASKS_ROOT.glob("*/task.yaml"))


def resolve_task(name_or_path: str) -> TaskSpec:
    """A built-in task by name, or a user's folder by path. Unknown names list the valid ones."""
    candidate = Path(name_or_path).expanduser()
    if (candidate / "task.yaml").is_file() or (candidate / "train.jsonl").is_file():
        folder = candidate.resolve()
    elif (TASKS_ROOT / name_or_path / "task.yaml").is_file():
        folder = TASKS_ROOT / name_or_path
    else:
        raise ValueError(
            f"unknown task {name_or_path!r}: built-in tasks are {', '.join(builtin_task_names())}; "
            "or give the path of a folder with train.jsonl, eval.jsonl, task.yaml and an lm-eval YAML"
        )
    meta: dict[str, Any] = {}
    if (folder / "task.yaml").is_file():
        meta = _read_task_yaml(folder / "task.yaml")
    known = set(TaskSpec.__dataclass_fields__) - {"path"}
    unknown = set(meta) - known
    if unknown:
        raise TaskDataError(
            f"{folder / 'task.yaml'}: unknown keys {sorted(unknown)}; valid keys: {sorted(known)}"
        )
    if meta:
        check_task_meta(folder / "task.yaml", meta)
    meta.setdefault("name", folder.name)
    meta.setdefault("eval_tasks", [meta["name"]])
    return TaskSpec(path=folder, **meta)


TASK_CATEGORIES = ("skill", "knowledge", "general")  # general: evaluated only (a suite task)
TEMPLATE_FIELDS = ("prompt", "demonstration", "privileged")
# task.yaml's integer settings and their smallest value (None = the method's or the model's default)
_COUNTS = {"skip_tokens": 0, "max_new_tokens": 1, "eval_max_gen_toks": 1}


def _key_lines(path: Path) -> dict[str, int]:
    """task.yaml key -> its line, so that a bad value is reported as file:line."""
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(k.value): k.start_mark.line + 1 for k, _ in node.value}


def template_problem(template: str) -> str | None:
    """Why a teacher template (a name or a format string) cannot be used; None when it can."""
    if template in TEACHER_TEMPLATES:
        return None
    if "{demonstration}" not in template:
        return (
            f"teacher template {template!r} is neither a known name ({', '.join(TEACHER_TEMPLATES)}) "
            "nor a format string containing {demonstration}"
        )
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:  # an unmatched brace
        return f"teacher template {template!r} is not a valid format string ({err})"
    unknown = sorted({f for f in fields if f not in TEMPLATE_FIELDS})
    if unknown:
        return (
            f"teacher template {template!r} uses unknown field(s) {unknown}; valid: "
            + ", ".join(f"{{{f}}}" for f in TEMPLATE_FIELDS)
            + " (double a literal brace: {{ }})"
        )
    return None


def _meta_problem(key: str, value: Any) -> str | None:
    """Why one task.yaml value does not fit the TaskSpec schema (type, range, name); None when it fits."""
    if key in _COUNTS:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < _COUNTS[key]:
            return f"{key}: {value!r} must be an integer >= {_COUNTS[key]}"
    elif key == "category" and value not in TASK_CATEGORIES:
        return f"category: {value!r} is not known; valid: {', '.join(TASK_CATEGORIES)}"
    elif key == "eval_tasks":
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            return f"eval_tasks: {value!r} must be a list of lm-eval task names, e.g. [mytask]"
    elif key == "teacher_template" and value is not None:
        if not isinstance(value, str):
            return f"teacher_template: {value!r} must be a template name or a format string"
        problem = template_problem(value)
        return f"teacher_template: {problem}" if problem else None
    elif key in ("name", "metric") and (not isinstance(value, str) or not value.strip()):
        return f"{key}: {value!r} must be a non-empty string"
    elif key == "description" and not isinstance(value, str):
        return f"description: {value!r} must be text"
    return None


def check_task_meta(path: Path, meta: dict[str, Any]) -> None:
    """task.yaml against the TaskSpec schema: types, ranges, category and teacher template names. The first
    problem is raised as `file:line: key: what`, before anything else reads the value."""
    for key, value in meta.items():
        problem = _meta_problem(key, value)
        if problem:
            line = _key_lines(path).get(key)
            raise TaskDataError(f"{path}:{line}: {problem}" if line else f"{path}: {problem}")


def _read_task_yaml(path: Path) -> dict[str, Any]:
    """task.yaml as a mapping; a syntax error names file:line (yaml's own message spans several lines)."""
    try:
        meta = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise TaskDataError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise TaskDataError(f"{where}: YAML syntax error: {getattr(err, 'problem', None) or err}") from None
    if not isinstance(meta, dict):
        raise TaskDataError(
            f"{path}: must be a mapping of settings (name: ..., eval_tasks: [...]), got {type(meta).__name__}"
        )
    return meta


def jsonl_records(path: Path, require: tuple[str, ...]) -> Iterator[tuple[str, dict | None, str | None]]:
    """The one reader of task JSONL files: for each non-blank line `(file:line, record, None)` when the line
    passes the item schema, else `(file:line, None, what is wrong)`. Callers decide whether the first problem
    stops them (read_jsonl) or all are listed (harness tasks validate)."""
    with path.open("rb") as fh:  # bytes: a line that is not UTF-8 is reported with its file:line
        for lineno, raw in enumerate(fh, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield where, None, f"not UTF-8 text (byte {err.start} of the line); save the file as UTF-8"
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                yield where, None, f"malformed JSON: {err.msg} (column {err.colno})"
                continue
            problem = _record_problem(obj, require)
            yield (where, None, problem) if problem else (where, obj, None)


def _record_problem(obj: Any, require: tuple[str, ...]) -> str | None:
    if not isinstance(obj, dict):
        return f"each line must be a JSON object, got {type(obj).__name__}"
    missing = [k for k in require if k not in obj]
    if missing:
        return f"missing field(s) {missing}; required: {list(require)}"
    if not _is_prompt(obj.get("prompt")):
        return "'prompt' must be a non-empty string or a list of chat messages ending with a user message"
    demo = obj.get("demonstration", "")
    if "demonstration" in require and (not isinstance(demo, str) or not demo.strip()):
        return "'demonstration' must be a non-empty string"
    if obj.get("privileged") is not None and not isinstance(obj["privileged"], str):
        return "'privileged' must be a string when present"
    return None


def read_jsonl(path: Path, require: tuple[str, ...] = ("prompt", "demonstration")) -> list[Item]:
    """Parse and check every line; the first error says file:line and what is wrong."""
    if not path.is_file():
        raise TaskDataError(f"{path}: file not found")
    items: list[Item] = []
    for where, obj, problem in jsonl_records(path, require):
        if obj is None:
            raise TaskDataError(f"{where}: {problem}")
        item_id = None if obj.get("id") is None else str(obj["id"])
        items.append(Item(obj["prompt"], obj.get("demonstration", ""), obj.get("privileged"), item_id, where))
    if not items:
        raise TaskDataError(f"{path}: no items (the file is empty)")
    return items


def _is_prompt(prompt: Any) -> bool:
    if isinstance(prompt, str):
        return bool(prompt.strip())
    if isinstance(prompt, list) and prompt:
        return (
            all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in prompt
            )
            and prompt[-1]["role"] == "user"
        )
    return False


def check_unique_tasks(stream: str, names: list[str]) -> None:
    """A task may appear once per stream: the accuracy matrix has one column per task."""
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(
            f"stream '{stream}' repeats task(s) {repeated}: a task may appear once per stream "
            "(the accuracy matrix has one column per task); copy the folder under another name to revisit it"
        )


def load_train_items(spec: TaskSpec, limit: int | None = None) -> list[Item]:
    items = read_jsonl(spec.train_file)
    return items[:limit] if limit else items


# --- chat formatting -------------------------------------------------------------------------------------


def student_messages(item: Item) -> Messages:
    """The student sees the prompt alone."""
    if isinstance(item.prompt, str):
        return [{"role": "user", "content": item.prompt}]
    return [dict(m) for m in item.prompt]


def resolve_template(template: str | None, spec: TaskSpec | None = None) -> str:
    """A template name or literal string; None falls back to the task's setting, then the paper's."""
    chosen = template or (spec.teacher_template if spec else None) or DEFAULT_TEMPLATE
    problem = template_problem(chosen)
    if problem:
        raise ValueError(problem)
    return TEACHER_TEMPLATES.get(chosen, chosen)


def teacher_messages(item: Item, template: str) -> Messages:
    """The teacher sees the prompt rewritten to show the demonstration (and the privileged context).

    System messages and earlier turns stay; only the last user message is rewritten.
    """
    messages = student_messages(item)
    privileged = f"{item.privileged.strip()}\n\n" if item.privileged else ""
    system = None
    if template.startswith(SYSTEM_MARK):
        system, _, template = template[len(SYSTEM_MARK) :].partition(USER_MARK)
    fill = {"prompt": messages[-1]["content"], "demonstration": item.demonstration, "privileged": privileged}
    messages[-1] = {"role": "user", "content": template.format(**fill)}
    if system is not None:
        text = system.format(**fill)
        if messages[0]["role"] == "system":
            messages[0] = {"role": "system", "content": f"{text}\n\n{messages[0]['content']}"}
        else:
            messages.insert(0, {"role": "system", "content": text})
    return messages


def effective_setting(method_value: Any, task_value: Any, default: Any) -> Any:
    """A method setting wins only where the user set it; else the task's; else the default."""
    if method_value is not None:
        return method_value
    if task_value is not None:
        return task_value
    return default
