"""A results folder alone, without its MLflow store: `harness power FOLDER` and `harness report --folder FOLDER`.

A report folder holds `runs.csv` (one row per run: run key, stream, method, seed, order, tasks, group label and
override string) and `items.csv.gz` (every evaluated item of every stage); that is enough to rebuild each run's
accuracy matrices, so the statistics of any past study can be recomputed and its report rewritten (new labels,
a new interval method) after the store is gone. `details.csv` adds what the matrices cannot give: the
per-step curves, the teacher's in-context scores, the self-distillation diagnostics and the few settings the
report prints. Folders written before these files existed name runs by `run_id` and hold no `details.csv`
or `overrides` column (the group column was the override string); both forms are read. Tasks in the items
that are neither stream tasks nor a stream task's further eval tasks (e.g. `knowledge_ood`) are the general
suite.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.report.render import md_table
from harness.report.runs import Group, RunResult
from harness.tasks.spec import resolve_task
from harness.tracking.keys import is_result_key

DETAILS = "details.csv"
# the run-level columns of items.csv.gz (the rest are the stage runs' own columns: stage, task, doc_id, ...)
_RUN_COLUMNS = ("stream", "method", "seed", "order", "run_key", "run_id")


def parse_overrides(text: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """`"sdft (method.distill.sft_weight=1.0, trainer.lr=0.0002)"` -> ("sdft", (("method.distill...", "1.0"), ...)),
    the inverse of how `group_runs` names a group (values hold no ", ")."""
    match = re.fullmatch(r"\s*([^\s(]+)\s*(?:\((.*)\))?\s*", str(text))
    if not match:
        raise ValueError(f"cannot read the override string {text!r}: expected 'method (key=value, ...)'")
    pairs = []
    for part in filter(None, (match.group(2) or "").split(", ")):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"cannot read {part!r} in the override string {text!r}: expected key=value")
        pairs.append((key.strip(), value.strip()))
    return match.group(1), tuple(pairs)


def _key_column(frame: pd.DataFrame, name: str) -> str:
    for column in ("run_key", "run_id"):
        if column in frame.columns:
            return column
    raise ValueError(f"{name} names no run: it has neither a run_key nor a run_id column")


def load_folder(folder: Path) -> list[Group]:
    """Groups of runs rebuilt from `runs.csv`, `items.csv.gz` and, when present, `details.csv` (one line error
    when either of the first two is missing). Each group keeps the label runs.csv gives it.

    With details.csv, a run's matrices are the logged ones (as the MLflow path reads them; the items are then
    used only where their means reproduce them) and a run without item-level data is kept; without it (an
    older folder), the matrices are the item means, and a run with no items is an error, not a silent gap."""
    missing = [n for n in ("runs.csv", "items.csv.gz") if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder}: no {' or '.join(missing)}; point at a folder written by `harness report`"
        )
    keys = {"run_key": str, "run_id": str, "seed": str, "order": str}
    runs = pd.read_csv(folder / "runs.csv", dtype=keys)
    # as the MLflow path reads a stage's items: answers such as "None" or "NA" stay text
    text = {"task": str, "generation": str, "target": str, "prompt": str}
    items = pd.read_csv(folder / "items.csv.gz", dtype={**keys, **text}, keep_default_na=False)
    items["score"] = pd.to_numeric(items["score"], errors="coerce")
    run_key, item_key = _key_column(runs, f"{folder}/runs.csv"), _key_column(items, f"{folder}/items.csv.gz")
    details = _read_details(folder)
    per_run = dict(tuple(details.groupby("run_key", sort=False))) if details is not None else {}
    without_items = []
    groups: dict[tuple[str, str], Group] = {}
    for row in runs.to_dict("records"):
        key = str(row[run_key])
        mine = items[items[item_key] == key]
        found = _Details()
        if key in per_run:
            _apply_details(found, per_run[key])
        if mine.empty and not found.matrices:
            without_items.append(key)
            continue
        overrides = str(row.get("overrides", row["group"]))
        split = tuple(found.split) if details is not None else parse_overrides(overrides)[1]
        run = _run_result(row, key, mine, found, split)
        group = groups.setdefault(
            (run.stream, overrides),
            Group(run.stream, run.method, str(row["group"]), overrides=overrides, split=split),
        )
        group.runs.append(run)
    if without_items:
        raise ValueError(
            f"{folder}: runs.csv names {len(without_items)} run(s) with no rows in items.csv.gz and no "
            f"{DETAILS} to rebuild them from ({', '.join(without_items[:5])}); their scores are not in this folder"
        )
    return list(groups.values())


def _run_result(row: dict, key: str, mine: pd.DataFrame, found: _Details, split: tuple) -> RunResult:
    """One run: its logged matrices when details.csv has them, else the means of its items."""
    tasks = [t.strip() for t in str(row["tasks"]).split("->")]
    params = {k: v for k, v in split if v != "-"}  # "-": the run lacks a param its group is split by
    params.update(found.params)
    stages = pd.Index(range(len(tasks) + 1), name="stage")
    if found.matrices:
        R, G, extra = (_matrix(found.matrices.get(name, {}), stages) for name in ("R", "G", "extra"))
        R = R.reindex(columns=tasks)
    else:
        extras = sorted((set(mine["task"]) - set(tasks)) & _extras(tasks))
        suite = sorted(
            set(mine["task"]) - set(tasks) - set(extras)
        )  # a folder without details: no logged order
        means = mine.groupby(["stage", "task"])["score"].mean().unstack("task")
        R, G, extra = (means.reindex(index=stages, columns=c).astype(float) for c in (tasks, suite, extras))
    items = None if mine.empty else mine.drop(columns=[c for c in _RUN_COLUMNS if c in mine.columns])
    return RunResult(
        run_id=key,
        method=str(row["method"]),
        stream=str(row["stream"]),
        seed=str(row["seed"]),
        model=str(row["model"]),
        params=params,
        R=R,
        G=G,
        extra=extra,
        order=str(row["order"]),
        items=None if items is None else items.reset_index(drop=True),
        eval_sizes=found.eval_sizes or mine[mine["stage"] == 0].groupby("task").size().astype(int).to_dict(),
        curves=found.curves,
        in_context=found.in_context,
        train=found.train,
        pass_k=found.pass_k,
        key=key,
    )


def _matrix(columns: dict[str, dict[int, float]], stages: pd.Index) -> pd.DataFrame:
    """A stage x name frame from {name: {stage: value}} in the order the names were logged."""
    frame = pd.DataFrame(
        {name: [v.get(s, math.nan) for s in stages] for name, v in columns.items()}, index=stages
    )
    return frame.astype(float) if len(frame.columns) else pd.DataFrame(index=stages, dtype=float)


def _extras(tasks: list[str]) -> set[str]:
    out: set[str] = set()
    for t in tasks:
        try:
            out |= set(resolve_task(t).eval_tasks[1:])
        except (ValueError, OSError):
            continue  # a task folder that is not here any more: its further eval tasks stay in the suite
    return out


# ---- details.csv: what the matrices cannot give ------------------------------------------------------------
def details_frame(runs: list[tuple[RunResult, tuple]], train_keys: list[str]) -> pd.DataFrame:
    """One row per value (run_key, stage, kind, key, step, value) of each (run, its group's split): `split`
    (the params that set its group apart, in order), `matrix` (the logged R, G and extra scores: `R/<task>`,
    step = the column's position), `eval_size`, `param` (the run's result-relevant settings),
    `curve` (per-step curves), `in_context`, `train` (the stage's `train_keys` only: diagnostics, not timings,
    so a rerun of the same experiment rewrites the same bytes) and `pass_k`."""
    rows: list[tuple] = []
    for r, split in runs:
        rows += [(r.key, -1, "split", k, i, str(v)) for i, (k, v) in enumerate(split)]
        for name, frame in (("R", r.R), ("G", r.G), ("extra", r.extra)):
            rows += [
                (r.key, int(stage), "matrix", f"{name}/{column}", i, frame.loc[stage, column])
                for i, column in enumerate(frame.columns)
                for stage in frame.index
            ]
        rows += [(r.key, 0, "eval_size", t, -1, n) for t, n in sorted(r.eval_sizes.items())]
        params = sorted((k, v) for k, v in r.params.items() if is_result_key(k))
        rows += [(r.key, -1, "param", k, -1, str(v)) for k, v in params]
        for stage, curves in sorted(r.curves.items()):
            for name, points in sorted(curves.items()):
                rows += [(r.key, stage, "curve", name, step, v) for step, v in sorted(points.items())]
        rows += [(r.key, s, "in_context", "score", -1, v) for s, v in sorted(r.in_context.items())]
        for stage, stats in sorted(r.train.items()):
            rows += [(r.key, stage, "train", k, -1, stats[k]) for k in train_keys if k in stats]
        for stage, values in sorted(r.pass_k.items()):
            rows += [(r.key, stage, "pass_k", k, -1, v) for k, v in sorted(values.items())]
    frame = pd.DataFrame(rows, columns=["run_key", "stage", "kind", "key", "step", "value"])
    numeric = ~frame["kind"].isin(["param", "split"])
    frame["value"] = frame["value"].astype(object)
    frame.loc[numeric, "value"] = [_number(v) for v in frame.loc[numeric, "value"]]
    return frame


def _number(value: object) -> str:
    v = float(value)  # type: ignore[arg-type]
    return "nan" if math.isnan(v) else repr(round(v, 10))


def _read_details(folder: Path) -> pd.DataFrame | None:
    path = folder / DETAILS
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path, dtype={"run_key": str, "key": str, "value": str}, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise ValueError(
            f"{path} is empty; delete it to rebuild from runs.csv and items.csv.gz alone"
        ) from None
    expected = {"run_key", "stage", "kind", "key", "step", "value"}
    if not expected <= set(frame.columns):
        raise ValueError(f"{path}: expected the columns {sorted(expected)}, found {list(frame.columns)}")
    return frame


@dataclass
class _Details:
    """What details.csv holds for one run (the RunResult fields of the same names)."""

    params: dict[str, str] = field(default_factory=dict)
    split: list[tuple[str, str]] = field(default_factory=list)
    matrices: dict[str, dict[str, dict[int, float]]] = field(
        default_factory=dict
    )  # R/G/extra -> name -> stage
    eval_sizes: dict[str, int] = field(default_factory=dict)
    curves: dict[int, dict[str, dict[int, float]]] = field(default_factory=dict)
    in_context: dict[int, float] = field(default_factory=dict)
    train: dict[int, dict[str, float]] = field(default_factory=dict)
    pass_k: dict[int, dict[str, float]] = field(default_factory=dict)


def _apply_details(run: _Details, rows: pd.DataFrame) -> None:
    for row in rows.itertuples(index=False):
        stage, key, value = int(row.stage), str(row.key), str(row.value)
        if row.kind == "param":
            run.params[key] = value
        elif row.kind == "split":
            run.split.append((key, value))
        elif row.kind == "matrix":
            frame, _, name = key.partition("/")
            run.matrices.setdefault(frame, {}).setdefault(name, {})[stage] = float(value)
        elif row.kind == "eval_size":
            run.eval_sizes[key] = int(float(value))
        elif row.kind == "curve":
            run.curves.setdefault(stage, {}).setdefault(key, {})[int(row.step)] = float(value)
        elif row.kind == "in_context":
            run.in_context[stage] = float(value)
        elif row.kind == "train":
            run.train.setdefault(stage, {})[key] = float(value)
        elif row.kind == "pass_k":
            run.pass_k.setdefault(stage, {})[key] = float(value)


def power_text(folder: Path) -> str:
    """Markdown of the base/chance and power sections of every stream in the folder."""
    from harness.report.baseline_table import baseline_section  # lazy: these import this module's users
    from harness.report.power import power_section  # lazy: as above
    from harness.report.streams import StreamStats  # lazy: as above

    groups = load_folder(folder)
    if not groups:
        raise ValueError(f"{folder}: runs.csv names no run that has items in items.csv.gz")
    out = []
    for stream in dict.fromkeys(g.stream for g in groups):
        members = [g for g in groups if g.stream == stream]
        ss = StreamStats(stream, members, [r for g in members for r in g.runs])
        for sec in (baseline_section(ss), power_section(ss)):
            out.append(f"## {sec.title}\n\n" + "\n\n".join(sec.text))
            out += [md_table(t) for t in sec.tables]
    return "\n\n".join(out) + "\n"
