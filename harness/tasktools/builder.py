"""`harness tasks new NAME --from SOURCE`: build a complete task folder from a user's data set.

A source is a local JSON / JSONL / CSV / TSV / parquet file, a folder written by `datasets.save_to_disk`,
or a Hugging Face dataset id (`datasets.load_dataset`, needs a network). Every source is read through
`datasets`, so a local file and a hub data set take the same path. Columns are mapped to the task
fields (`prompt`, `demonstration`, `answer`, `privileged`), each by a column name or a small template such
as "{question}\n{choices:letters}". Train and eval items come from existing splits or a seeded split.

The folder gets train.jsonl, eval.jsonl, task.yaml, an lm-eval YAML, a utils.py whose `score` comes from
harness.scorers, and a README with the source, the mapping, the command that rebuilt it, and the
calibration: `harness tasks validate`'s verdict and, on request (`--calibrate N`, loads a model), the base
and in-context greedy scores.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness import scorers
from harness.config import ModelConfig
from harness.tasks.spec import TEACHER_TEMPLATES, builtin_task_names, resolve_task
from harness.tasktools.sources import BuildError, Selection
from harness.tasktools.validate import validate_task

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
CATEGORIES = ("skill", "knowledge")
DEFAULT_UNTIL = ["<|im_end|>"]  # end of turn for ChatML models; generation also stops at the EOS token

# --- writing the folder ----------------------------------------------------------------------------------

UTILS_TEMPLATE = '''r"""Scoring of `{name}`: {scorer} (harness.scorers) against each eval line's `answer`.

{doc}
Written by `harness tasks new`; edit freely (score(response, doc) -> float is the contract).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.scorers import make_scorer

HERE = Path(__file__).resolve().parent
score = make_scorer({scorer!r}, **{options!r})


def load_split(data_files: str = "eval.jsonl", **_: Any):
    """lm-eval `custom_dataset`: the JSONL beside this file, whatever the working directory is."""
    import datasets

    lines = (HERE / data_files).read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return datasets.DatasetDict({{"test": datasets.Dataset.from_list(rows)}})


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    return {{"exact_match": score(results[0], doc)}}
'''


@dataclass
class TaskSettings:
    name: str
    category: str = "skill"
    description: str = ""
    scorer: str = "exact"
    scorer_options: dict[str, Any] = field(default_factory=dict)
    teacher_template: str | None = "plain"
    skip_tokens: int | None = None
    max_new_tokens: int | None = None
    eval_max_gen_toks: int | None = None
    until: list[str] = field(default_factory=lambda: list(DEFAULT_UNTIL))


def check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise BuildError(f"task name {name!r}: use letters, digits and _ (it becomes the lm-eval task name)")
    if name in builtin_task_names():
        raise BuildError(
            f"task name {name!r} is a built-in task's; lm-eval task names must be unique: "
            f"choose another (built-in: {', '.join(builtin_task_names())})"
        )


def generation_lengths(demos: list[str], tokenizer: Any | None) -> tuple[int, int]:
    """Rollout and eval lengths that cover the longest demonstration (+16 / +24 tokens, multiple of 8)."""
    if tokenizer is not None:
        longest = max(len(tokenizer(d, add_special_tokens=False)["input_ids"]) for d in demos)
    else:
        longest = max(math.ceil(len(d) / 3) for d in demos)  # ~3+ characters per token in English BPE text
    rollout = min(2048, 8 * math.ceil((longest + 16) / 8))
    return rollout, rollout + 8


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def check_scorer_options(scorer: str, options: dict[str, Any]) -> None:
    """The scorer exists and takes these options with these types (harness.scorers.check_options)."""
    if scorer not in scorers.SCORERS:
        raise BuildError(f"unknown scorer {scorer!r}; valid: {', '.join(scorers.SCORERS)}")
    try:
        scorers.check_options(scorer, options)
    except ValueError as err:
        raise BuildError(f"--scorer-option {err}") from None


def write_folder(
    folder: Path,
    settings: TaskSettings,
    selection: Selection,
    source_lines: list[str],
    command: str | None,
    tokenizer: Any | None = None,
) -> None:
    """The five files and a README (calibration filled in later by `finish_readme`)."""
    check_scorer_options(settings.scorer, settings.scorer_options)  # before anything is written
    if (
        settings.teacher_template
        and settings.teacher_template not in TEACHER_TEMPLATES
        and "{demonstration}" not in settings.teacher_template
    ):
        raise BuildError(
            f"--teacher-template {settings.teacher_template!r}: a name ({', '.join(TEACHER_TEMPLATES)}) "
            "or a format string containing {demonstration}"
        )
    name = settings.name
    for split, rows in (("train", selection.train), ("eval", selection.eval)):
        for i, row in enumerate(rows):
            row.setdefault("id", f"{name}-{split}-{i}")
    rollout, eval_len = generation_lengths([r["demonstration"] for r in selection.train], tokenizer)
    settings.max_new_tokens = settings.max_new_tokens or rollout
    settings.eval_max_gen_toks = settings.eval_max_gen_toks or max(eval_len, settings.max_new_tokens)
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "train.jsonl", selection.train)
    write_jsonl(folder / "eval.jsonl", selection.eval)
    _write_task_yaml(folder, settings)
    _write_lm_eval_yaml(folder, settings)
    (folder / "utils.py").write_text(
        UTILS_TEMPLATE.format(
            name=name,
            scorer=settings.scorer,
            options=settings.scorer_options,
            doc=_wrap(scorers.describe(settings.scorer)),
        )
    )
    (folder / "README.md").write_text(
        _readme(settings, selection, source_lines, command, calibration=["(pending)"])
    )


def _write_task_yaml(folder: Path, settings: TaskSettings) -> None:
    """task.yaml: the fields of harness.tasks.spec.TaskSpec (null ones left out)."""
    name = settings.name
    meta = {
        "name": name,
        "category": settings.category,
        "description": settings.description or "Built by `harness tasks new`.",
        "eval_tasks": [name],
        "metric": "exact_match",
        "teacher_template": settings.teacher_template,
        "skip_tokens": settings.skip_tokens,
        "max_new_tokens": settings.max_new_tokens,
        "eval_max_gen_toks": settings.eval_max_gen_toks,
    }
    (folder / "task.yaml").write_text(
        yaml.safe_dump({k: v for k, v in meta.items() if v is not None}, sort_keys=False, allow_unicode=True)
    )


def _write_lm_eval_yaml(folder: Path, settings: TaskSettings) -> None:
    """The lm-eval task YAML: the local eval.jsonl, greedy generation, the folder's own scorer."""
    name = settings.name
    lm_eval = {
        "task": name,
        "dataset_path": "json",
        "custom_dataset": "!function utils.load_split",
        "dataset_kwargs": {"data_files": "eval.jsonl"},
        "test_split": "test",
        "output_type": "generate_until",
        "doc_to_text": "prompt",
        "doc_to_target": "demonstration",
        "process_results": "!function utils.process_results",
        "generation_kwargs": {
            "until": settings.until,
            "do_sample": False,
            "max_gen_toks": settings.eval_max_gen_toks,
        },
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }
    text = yaml.safe_dump(lm_eval, sort_keys=False, allow_unicode=True)
    # lm-eval's `!function` tag must stay a bare tag, which safe_dump would quote
    text = re.sub(r"'(!function [\w.]+)'", r"\1", text)
    (folder / f"{name}.yaml").write_text(f"# lm-eval task written by harness tasks new: {name}\n{text}")


def _wrap(text: str, width: int = 110) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def _readme(
    settings: TaskSettings,
    selection: Selection,
    source_lines: list[str],
    command: str | None,
    calibration: list[str],
) -> str:
    example = selection.eval[0]
    options = f" with options {settings.scorer_options}" if settings.scorer_options else ""
    lines = [
        f"# {settings.name}",
        "",
        settings.description or "A task built from a user's data set.",
        "",
        "**Source and column mapping**",
        "",
        *[f"- {s}" for s in source_lines],
        *[f"- {n}" for n in selection.notes],
        "",
        f"**Files:** `train.jsonl` {len(selection.train)} items, `eval.jsonl` {len(selection.eval)} held-out items "
        "(no prompt in common).",
        "",
        f"**Metric:** `exact_match` (lm-eval task `{settings.name}`) = scorer `{settings.scorer}`{options} of "
        f"harness.scorers against each eval line's `answer`: {scorers.describe(settings.scorer)}",
        "",
        f"**Settings** (task.yaml): teacher template `{settings.teacher_template}`, rollout length "
        f"{settings.max_new_tokens} tokens, evaluation length {settings.eval_max_gen_toks} tokens.",
        "",
    ]
    if command:
        lines += ["**Rebuild:**", "", f"    {command}", ""]
    lines += [
        "## Calibration",
        "",
        *calibration,
        "",
        "## Example (first eval item)",
        "",
        "    " + "\n    ".join(str(example["prompt"]).splitlines()),
        "",
        "    -> " + "\n       ".join(example["demonstration"].splitlines()),
        "",
    ]
    return "\n".join(lines)


def finish_readme(
    folder: Path,
    settings: TaskSettings,
    selection: Selection,
    source_lines: list[str],
    command: str | None,
    calibration: list[str],
) -> None:
    (folder / "README.md").write_text(_readme(settings, selection, source_lines, command, calibration))


def calibrate(folder: Path, n: int, model_name: str, template: str | None = None) -> tuple[float, float, int]:
    """Mean greedy base and in-context scores on the first n eval items (loads the model: slow)."""
    from harness.eval.scoring import greedy_scores  # lazy: loads torch only when needed
    from harness.models import load_model  # lazy: loads torch only when needed

    spec = resolve_task(str(folder))
    docs = [
        json.loads(line) for line in spec.eval_file.read_text(encoding="utf-8").splitlines() if line.strip()
    ][:n]
    model, tok = load_model(ModelConfig(name=model_name))
    base = greedy_scores(model, tok, spec, docs, "base")
    in_context = greedy_scores(model, tok, spec, docs, "in_context", template)
    return sum(base) / len(base), sum(in_context) / len(in_context), len(docs)


def build(
    folder: Path,
    settings: TaskSettings,
    selection: Selection,
    source_lines: list[str],
    command: str | None = None,
    tokenizer: Any | None = None,
    calibrate_n: int = 0,
    model_name: str = "smollm2-135m-instruct",
    force: bool = False,
) -> list[str]:
    """Write the folder, validate it, optionally calibrate; returns validate's problems (empty = valid)."""

    check_name(settings.name)
    if folder.exists() and any(folder.iterdir()) and not force:
        raise BuildError(
            f"{folder} exists and is not empty; pass --force to overwrite it or choose another --out"
        )
    write_folder(folder, settings, selection, source_lines, command, tokenizer)
    problems = validate_task(str(folder))
    if problems:
        calibration = [
            f"`harness tasks validate` found {len(problems)} problem(s); the first ones:",
            "",
            *[f"- {p}" for p in problems[:10]],
        ]
    else:
        calibration = [
            "`harness tasks validate`: valid (schema, no train/eval overlap, every eval item's "
            "demonstration scores 1.0 with the scorer, the lm-eval YAML loads offline)."
        ]
    if calibrate_n and not problems:
        base, in_context, n = calibrate(folder, calibrate_n, model_name)
        calibration += [
            "",
            f"Greedy scores of `{model_name}` on the first {n} eval items (harness.eval.scoring): "
            f"base (prompt alone) {base:.2f}, in-context (teacher prompt with the item's demonstration: "
            f"the SDFT teacher's ceiling) {in_context:.2f}.",
        ]
    elif not calibrate_n:
        calibration += [
            "",
            "Base and in-context scores not measured (`--calibrate N` loads the model and "
            "measures them on N eval items).",
        ]
    finish_readme(folder, settings, selection, source_lines, command, calibration)
    return problems
