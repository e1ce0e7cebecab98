"""`harness power FOLDER`: the report's base/chance and power tables from a results folder alone.

A report folder holds `runs.csv` (run id, stream, method, seed, order, tasks, group) and `items.csv.gz`
(every evaluated item of every stage); that is enough to rebuild each run's accuracy matrices, so the power
of any past study can be read without its MLflow store. Tasks in the items that are neither stream tasks
nor a stream task's further eval tasks (e.g. `knowledge_ood`) are the general suite.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.report.render import md_table
from harness.report.runs import Group, RunResult
from harness.tasks.spec import resolve_task


def load_folder(folder: Path) -> list[Group]:
    """Groups of runs rebuilt from `runs.csv` and `items.csv.gz` (one line error when either is missing)."""
    missing = [n for n in ("runs.csv", "items.csv.gz") if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder}: no {' or '.join(missing)}; point at a folder written by `harness report`"
        )
    runs = pd.read_csv(folder / "runs.csv", dtype={"seed": str, "order": str})
    items = pd.read_csv(folder / "items.csv.gz", dtype={"seed": str, "order": str})
    groups: dict[tuple[str, str], Group] = {}
    for row in runs.itertuples():
        mine = items[items["run_id"] == row.run_id]
        if mine.empty:
            continue
        tasks = [t.strip() for t in str(row.tasks).split("->")]
        extras = _extras(tasks)
        suite = sorted(set(mine["task"]) - set(tasks) - extras)
        means = mine.groupby(["stage", "task"])["score"].mean().unstack("task")
        stages = pd.Index(range(len(tasks) + 1), name="stage")
        run = RunResult(
            run_id=row.run_id,
            method=row.method,
            stream=row.stream,
            seed=str(row.seed),
            model=str(row.model),
            params={},
            R=means.reindex(index=stages, columns=tasks).astype(float),
            G=means.reindex(index=stages, columns=suite).astype(float),
            extra=pd.DataFrame(index=stages),
            order=str(row.order),
            items=mine[["stage", "task", "doc_id", "score"]].reset_index(drop=True),
            eval_sizes=mine[mine["stage"] == 0].groupby("task").size().astype(int).to_dict(),
        )
        key = (row.stream, row.group)
        groups.setdefault(key, Group(row.stream, row.method, row.group)).runs.append(run)
    return list(groups.values())


def _extras(tasks: list[str]) -> set[str]:
    out: set[str] = set()
    for t in tasks:
        try:
            out |= set(resolve_task(t).eval_tasks[1:])
        except (ValueError, OSError):
            continue  # a task folder that is not here any more: its further eval tasks stay in the suite
    return out


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
