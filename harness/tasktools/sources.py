"""Reading a user's data for `harness tasks new` (harness.tasktools.builder): sources (files, saved datasets, hub
ids, all through `datasets`), column mapping by name or small template, the selection of train and eval
items (usable rows, duplicates, seeded split, limits), and the generic columns adapter."""

from __future__ import annotations

import argparse
import json
import math
import random
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.tasktools.validate import prompt_key as key

FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}
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
        if not path.read_bytes()[:4096].strip() and path.stat().st_size <= 4096:
            raise BuildError(f"{path}: empty file (no rows to build a task from)")
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


def _unescape(template: str | None) -> str | None:
    """Shell-typed "\\n" and "\\t" in templates mean a newline and a tab."""
    return template.replace("\\n", "\n").replace("\\t", "\t") if template else template


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
