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

import argparse
import json
import math
import random
import re
import shlex
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness import scorers
from harness.tasks import TEACHER_TEMPLATES, builtin_task_names

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
CATEGORIES = ("skill", "knowledge")
DEFAULT_UNTIL = ["<|im_end|>"]  # end of turn for ChatML models; generation also stops at the EOS token
LETTERS = "ABCDEFGHIJ"


class BuildError(ValueError):
    """A user mistake in `tasks new` (bad source, column, option): one line naming what and the valid values."""


# --- reading sources -------------------------------------------------------------------------------------


def _to_rows(data: Any) -> dict[str, list[dict]]:
    import datasets

    if isinstance(data, datasets.DatasetDict):
        return {name: split.to_list() for name, split in data.items()}
    return {"train": data.to_list()}


def load_source(source: str, config: str | None = None, split: str | None = None) -> dict[str, list[dict]]:
    """Rows per split of a local file, a save_to_disk folder, or a hub id. Nothing is read at import time."""
    import datasets

    path = Path(source).expanduser()
    if path.is_dir():
        if not any((path / f).is_file() for f in ("dataset_dict.json", "dataset_info.json", "state.json")):
            raise BuildError(
                f"{path}: a folder source must be written by datasets.save_to_disk "
                "(dataset_dict.json or state.json); for plain files pass the file itself"
            )
        rows = _to_rows(datasets.load_from_disk(str(path)))
    elif path.is_file():
        builder = FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise BuildError(f"{path}: unknown file type {path.suffix!r}; valid: {', '.join(FILE_BUILDERS)}")
        kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
        try:
            rows = _to_rows(datasets.load_dataset(builder, data_files=str(path.resolve()), **kwargs))
        except Exception as err:  # datasets raises many types on a malformed file
            raise BuildError(f"{path}: cannot read as {builder}: {type(err).__name__}: {err}") from None
    elif source.startswith((".", "/", "~")) or Path(source).suffix.lower() in FILE_BUILDERS:
        raise BuildError(f"{source}: no such file or folder")
    else:
        try:
            data = datasets.load_dataset(source, config, split=split)
        except Exception as err:
            raise BuildError(
                f"cannot load hub data set {source!r} (config {config!r}, split {split!r}): "
                f"{type(err).__name__}: {err}"
            ) from None
        return {split: data.to_list()} if split else _to_rows(data)
    if split is not None:
        if split not in rows:
            raise BuildError(f"{source}: no split {split!r}; available: {', '.join(rows)}")
        return {split: rows[split]}
    return rows


def pick_split(rows: dict[str, list[dict]], wanted: str | None, source: str) -> tuple[str, list[dict]]:
    """The named split, else `train`, else the only one."""
    if wanted:
        if wanted not in rows:
            raise BuildError(f"{source}: no split {wanted!r}; available: {', '.join(rows)}")
        return wanted, rows[wanted]
    if "train" in rows:
        return "train", rows["train"]
    if len(rows) == 1:
        return next(iter(rows.items()))
    raise BuildError(f"{source}: several splits ({', '.join(rows)}); choose one with --split")


# --- column mapping --------------------------------------------------------------------------------------


def as_text(value: Any) -> str:
    """A cell as text: lists one item per line, mappings as JSON, None as ""."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "\n".join(as_text(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def lettered(value: Any) -> str:
    """Options as "A. first\\nB. second": a list, or a {"label": [...], "text": [...]} mapping."""
    if isinstance(value, dict) and "text" in value:
        labels = value.get("label") or list(LETTERS[: len(value["text"])])
        return "\n".join(f"{lab}. {as_text(t)}" for lab, t in zip(labels, value["text"], strict=False))
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    return "\n".join(f"{LETTERS[i]}. {as_text(v)}" for i, v in enumerate(items))


class _Formatter(string.Formatter):
    """str.format over a row: cells become text; `{col:letters}` letters a list of options."""

    def format_field(self, value: Any, format_spec: str) -> str:
        if format_spec == "letters":
            return lettered(value)
        return format(as_text(value), format_spec)


def render(spec: str, row: dict, what: str) -> Any:
    """A field from a column name (value kept, e.g. chat messages) or a template over the row's columns."""
    if spec in row:
        return row[spec]
    if "{" in spec:
        try:
            return _Formatter().vformat(spec, (), row)
        except KeyError as err:
            raise BuildError(
                f"--{what} template {spec!r} names column {err.args[0]!r}; columns: {', '.join(row)}"
            ) from None
        except (ValueError, IndexError) as err:
            raise BuildError(f"--{what} template {spec!r} is not a valid template ({err})") from None
    raise BuildError(
        f"--{what} {spec!r} is neither a column nor a template with {{column}}; columns: {', '.join(row)}"
    )


def flatten_prompt(prompt: Any) -> str:
    """Chat messages as one user text (system text first): lm-eval's `doc_to_text` needs a string."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(m, dict) and "content" in m for m in prompt):
        roles = [m.get("role") for m in prompt]
        if roles.count("user") != 1 or "assistant" in roles:
            raise BuildError(
                f"prompt with roles {roles}: only one user turn (optionally after a system "
                "message) can be flattened; map a text column instead"
            )
        return "\n\n".join(as_text(m["content"]) for m in prompt)
    return as_text(prompt)


def answer_value(value: Any) -> Any:
    """What `answer` stores: text, a flat list of texts (accepted variants), or JSON text for structures."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    return json.dumps(value, ensure_ascii=False)


@dataclass
class Mapping:
    prompt: str = "prompt"
    demonstration: str = "demonstration"
    answer: str | None = None  # None = the demonstration itself
    privileged: str | None = None

    def apply(self, row: dict) -> dict:
        item = {
            "prompt": flatten_prompt(render(self.prompt, row, "prompt")),
            "demonstration": as_text(render(self.demonstration, row, "demonstration")).strip(),
        }
        item["answer"] = (
            answer_value(render(self.answer, row, "answer")) if self.answer else item["demonstration"]
        )
        if self.privileged:
            privileged = as_text(render(self.privileged, row, "privileged")).strip()
            if privileged:
                item["privileged"] = privileged
        return item


# --- selecting items -------------------------------------------------------------------------------------


def prompt_key(prompt: Any) -> str:
    from harness.task_tools import prompt_key as key

    return key(prompt)


@dataclass
class Selection:
    train: list[dict]
    eval: list[dict]
    notes: list[str] = field(default_factory=list)  # what was dropped and why, for the README


def _usable(items: list[dict], where: str, notes: list[str]) -> list[dict]:
    kept = [
        it
        for it in items
        if str(it["prompt"]).strip() and it["demonstration"] and it.get("answer", "-") not in ("", [])
    ]
    if len(kept) < len(items):
        notes.append(
            f"{len(items) - len(kept)} {where} row(s) dropped: empty prompt, demonstration or answer"
        )
    return kept


def _dedupe(items: list[dict], where: str, notes: list[str]) -> list[dict]:
    seen: set[str] = set()
    kept = []
    for it in items:
        key = prompt_key(it["prompt"])
        if key not in seen:
            seen.add(key)
            kept.append(it)
    if len(kept) < len(items):
        notes.append(f"{len(items) - len(kept)} duplicate {where} prompt(s) dropped (--dedupe)")
    return kept


def select(
    train: list[dict],
    evals: list[dict] | None,
    eval_fraction: float,
    seed: int,
    limit: int | None,
    eval_limit: int | None,
    dedupe: bool,
) -> Selection:
    """Train and eval items: given eval items, or a seeded split of `train`; never an eval prompt in train."""
    notes: list[str] = []
    train = _usable(train, "train", notes)
    if dedupe:
        train = _dedupe(train, "train", notes)
    if evals is None:
        if not 0.0 < eval_fraction < 1.0:
            raise BuildError(
                f"--eval-fraction {eval_fraction}: must be in (0, 1) when no eval split is given"
            )
        order = list(range(len(train)))
        random.Random(seed).shuffle(order)
        n_eval = max(1, round(eval_fraction * len(train)))
        evals = [train[i] for i in order[:n_eval]]
        train = [train[i] for i in sorted(order[n_eval:])]
        notes.append(f"eval = a seeded random {eval_fraction:.0%} of the rows (seed {seed})")
    else:
        evals = _usable(evals, "eval", notes)
        if dedupe:
            evals = _dedupe(evals, "eval", notes)
    if limit:
        train = train[:limit]
    if eval_limit:
        evals = evals[:eval_limit]
    seen = {prompt_key(it["prompt"]) for it in train}
    overlap = [it for it in evals if prompt_key(it["prompt"]) in seen]
    if overlap:
        evals = [it for it in evals if prompt_key(it["prompt"]) not in seen]
        notes.append(f"{len(overlap)} eval item(s) dropped: their prompt is also a train prompt")
    if not train or not evals:
        raise BuildError(
            f"no items left: {len(train)} train, {len(evals)} eval ({'; '.join(notes) or 'empty source'})"
        )
    return Selection(train, evals, notes)


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


def write_folder(
    folder: Path,
    settings: TaskSettings,
    selection: Selection,
    source_lines: list[str],
    command: str | None,
    tokenizer: Any | None = None,
) -> None:
    """The five files and a README (calibration filled in later by `finish_readme`)."""
    scorers.get_scorer(settings.scorer)  # unknown names fail before anything is written
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
    from harness.config import ModelConfig
    from harness.models import load_model
    from harness.scoring import greedy_scores
    from harness.tasks import resolve_task

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
    from harness.task_tools import validate_task

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
            f"Greedy scores of `{model_name}` on the first {n} eval items (harness.scoring): "
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


# --- command line ----------------------------------------------------------------------------------------


def _option_value(text: str) -> Any:
    """Scorer option values: integers, floats and true/false are typed; anything else stays text."""
    if re.fullmatch(r"[-+]?\d+", text):
        return int(text)
    if re.fullmatch(r"[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?", text):
        return float(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def parse_options(pairs: list[str]) -> dict[str, Any]:
    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise BuildError(
                f"--scorer-option {pair!r}: expected KEY=VALUE, e.g. rel_tol=0.01 or pattern='Answer: (.+)'"
            )
        key, value = pair.split("=", 1)
        options[key.strip()] = _option_value(value)
    return options


def _unescape(template: str | None) -> str | None:
    """Shell-typed "\\n" and "\\t" in templates mean a newline and a tab."""
    return template.replace("\\n", "\n").replace("\\t", "\t") if template else template


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from harness.paper_data import ADAPTERS

    parser.add_argument("name", help="task name (also its lm-eval task name): letters, digits, _")
    src = parser.add_argument_group("source")
    src.add_argument(
        "--from", dest="source", help="JSON/JSONL/CSV/TSV/parquet file, save_to_disk folder, or hub id"
    )
    src.add_argument("--config", help="hub data set configuration")
    src.add_argument(
        "--split", help="split of --from that gives the train items (default: train, or the only one)"
    )
    src.add_argument("--eval-from", dest="eval_source", help="a second source for the eval items")
    src.add_argument("--eval-config", help="configuration of --eval-from")
    src.add_argument(
        "--eval-split", help="existing split for the eval items (of --eval-from if given, else --from)"
    )
    src.add_argument(
        "--eval-fraction",
        type=float,
        default=0.2,
        help="without an eval split: this seeded random share of the rows is held out (default 0.2)",
    )
    src.add_argument("--seed", type=int, default=0)
    src.add_argument("--limit", type=int, help="at most N train items")
    src.add_argument("--eval-limit", type=int, help="at most N eval items")
    src.add_argument(
        "--dedupe", action="store_true", help="drop rows whose prompt repeats (case/space-insensitive)"
    )
    src.add_argument(
        "--adapter",
        default="columns",
        choices=["columns", *ADAPTERS],
        help="columns: map columns below; others: the SDFT paper's data sets (harness.paper_data)",
    )
    cols = parser.add_argument_group(
        "column mapping (a column name, or a template like '{question}\\n{choices:letters}')"
    )
    cols.add_argument("--prompt", default="prompt")
    cols.add_argument("--demonstration", default="demonstration")
    cols.add_argument(
        "--answer", default=None, help="what the scorer compares with (default: the demonstration)"
    )
    cols.add_argument("--privileged", default=None, help="teacher-only context (optional)")
    task = parser.add_argument_group("task")
    task.add_argument("--scorer", default=None, help=f"one of {', '.join(scorers.SCORERS)} (default: exact)")
    task.add_argument(
        "--scorer-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="e.g. rel_tol=0.01, pattern='Answer: (.+)', letters=ABCD (repeatable)",
    )
    task.add_argument("--category", default="skill", choices=CATEGORIES)
    task.add_argument("--description", default="")
    task.add_argument(
        "--teacher-template", default=None, help=f"{', '.join(TEACHER_TEMPLATES)} or a format string"
    )
    task.add_argument("--skip-tokens", type=int, default=None)
    task.add_argument(
        "--max-new-tokens", type=int, default=None, help="rollout length (default: from the demonstrations)"
    )
    task.add_argument("--eval-max-gen-toks", type=int, default=None)
    task.add_argument(
        "--until", action="append", default=None, help="stop string for evaluation (repeatable)"
    )
    out = parser.add_argument_group("output")
    out.add_argument("--out", default=None, help="folder to write (default: ./NAME)")
    out.add_argument("--force", action="store_true", help="overwrite a non-empty --out folder")
    out.add_argument(
        "--calibrate",
        type=int,
        default=0,
        metavar="N",
        help="also measure base and in-context greedy scores on N eval items (loads --model: slow)",
    )
    out.add_argument(
        "--model", default="smollm2-135m-instruct", help="model for --calibrate and token lengths"
    )


def cmd_new(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """`harness tasks new`: read, map, split, write, validate (and calibrate); 0 when the folder is valid."""
    from harness.paper_data import ADAPTERS

    check_name(args.name)
    folder = Path(args.out or args.name).expanduser().resolve()
    if args.adapter != "columns":
        built = ADAPTERS[args.adapter](args)
    else:
        if not args.source:
            raise BuildError("--from SOURCE is required (a file, a save_to_disk folder or a hub id)")
        built = columns_adapter(args)
    settings = TaskSettings(
        name=args.name,
        category=args.category,
        description=args.description or built.description,
        scorer=args.scorer or built.scorer,
        scorer_options={**built.scorer_options, **parse_options(args.scorer_option)},
        teacher_template=args.teacher_template or built.teacher_template,
        skip_tokens=args.skip_tokens,
        max_new_tokens=args.max_new_tokens,
        eval_max_gen_toks=args.eval_max_gen_toks,
        until=args.until or list(DEFAULT_UNTIL),
    )
    selection = select(
        built.train, built.eval, args.eval_fraction, args.seed, args.limit, args.eval_limit, args.dedupe
    )
    tokenizer = _tokenizer(args.model)
    command = "harness tasks new " + " ".join(shlex.quote(a) for a in argv) if argv else None
    problems = build(
        folder,
        settings,
        selection,
        built.source_lines,
        command,
        tokenizer,
        args.calibrate,
        args.model,
        args.force,
    )
    print(
        f"wrote {folder}: {len(selection.train)} train, {len(selection.eval)} eval items; scorer {settings.scorer}"
    )
    for note in selection.notes:
        print(f"  note: {note}")
    if problems:
        print(f"FAIL {folder}: {len(problems)} problem(s) (also in its README):", file=sys.stderr)
        for p in problems[:20]:
            print(f"  {p}", file=sys.stderr)
        return 1
    print(f"ok   {folder} is valid; run it with: harness run stream.tasks=[{folder}]")
    return 0


def _tokenizer(model: str) -> Any | None:
    """The model's tokenizer for generation lengths; a character estimate when it cannot be loaded."""
    try:
        from harness.models import load_tokenizer

        return load_tokenizer(model)
    except Exception as err:  # offline hub id, missing files: lengths fall back to an estimate
        print(
            f"  note: tokenizer of {model!r} not available ({type(err).__name__}); lengths estimated from "
            "characters",
            file=sys.stderr,
        )
        return None


@dataclass
class Built:
    """What an adapter hands the builder: mapped rows and the defaults that suit them."""

    train: list[dict]
    eval: list[dict] | None  # None: split train with --eval-fraction
    source_lines: list[str]
    scorer: str = "exact"
    scorer_options: dict[str, Any] = field(default_factory=dict)
    teacher_template: str = "plain"
    description: str = ""


def columns_adapter(args: argparse.Namespace) -> Built:
    """The generic path: --from (and --eval-from / --eval-split) mapped with --prompt/--demonstration/..."""
    mapping = Mapping(
        prompt=_unescape(args.prompt),
        demonstration=_unescape(args.demonstration),
        answer=_unescape(args.answer),
        privileged=_unescape(args.privileged),
    )
    rows = load_source(
        args.source, args.config, args.split if not args.eval_split or args.eval_source else None
    )
    train_split, train_rows = pick_split(rows, args.split, args.source)
    eval_rows = None
    where = f"{args.source} (config {args.config})" if args.config else args.source
    lines = [f"source: `{where}`, split `{train_split}` ({len(train_rows)} rows)"]
    if args.eval_source:
        erows = load_source(args.eval_source, args.eval_config, args.eval_split)
        esplit, eval_rows = pick_split(erows, args.eval_split, args.eval_source)
        lines.append(f"eval source: `{args.eval_source}`, split `{esplit}` ({len(eval_rows)} rows)")
    elif args.eval_split:
        if args.eval_split == train_split:
            raise BuildError(f"--eval-split {args.eval_split!r} is also the train split; choose another")
        _, eval_rows = pick_split(rows, args.eval_split, args.source)
        lines.append(f"eval: split `{args.eval_split}` ({len(eval_rows)} rows)")
    answer = f"`{mapping.answer!r}`" if mapping.answer else "the demonstration"
    lines.append(
        f"mapping: prompt <- `{mapping.prompt!r}`, demonstration <- `{mapping.demonstration!r}`, answer <- "
        f"{answer}" + (f", privileged <- `{mapping.privileged!r}`" if mapping.privileged else "")
    )
    return Built(
        train=[mapping.apply(r) for r in train_rows],
        eval=None if eval_rows is None else [mapping.apply(r) for r in eval_rows],
        source_lines=lines,
        scorer="exact",
        description=f"Built by `harness tasks new` from {where}.",
    )
