"""The report's "why SDFT learned or did not" section: the self-distillation diagnostics of each stage.

What the stage runs logged (harness.distill.probe at the start of a stage, harness.distill.diagnostics per step,
averaged over the stage as `train/mean_*`), shown per method and stage next to one figure the report
computes itself from the item-level results: the share of evaluation answers that recite the teacher
template's own text (a template that leaked into ordinary answers). Methods without a teacher template
(SFT) get that figure too, measured against the same template, as the control: how often ordinary answers
share a 4-word phrase with the template by chance. Values are means over a group's runs (diagnostics, not
results: no intervals).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd

from harness.eval.recitation import recitation_rate
from harness.report.render import Section, Table
from harness.report.runs import Group, RunResult
from harness.tasks.spec import DEFAULT_TEMPLATE, resolve_task, resolve_template

# (logged key under train/, column header, how to print it): what each stage of a distillation run logged
TRAIN_COLUMNS: list[tuple[str, str, str]] = [
    ("probe_margin", "probe: demo − template lp", "num"),
    ("probe_template_more_likely", "probe: template likelier %", "pct"),
    ("probe_first_gap", "probe: first-token p gap (t − s)", "num"),
    ("mean_clipped_frac", "rollouts clipped %", "pct"),
    ("mean_recite_frac", "rollouts reciting %", "pct"),
    ("mean_repeat3", "repeated trigrams %", "pct"),
    ("mean_completion_len", "rollout tokens", "num"),
    ("mean_kl_first", "KL first 3", "num"),
    ("mean_kl_rest", "KL rest", "num"),
    ("mean_loss_share_first", "loss share first 3 %", "pct"),
]


def has_distillation_stats(run: RunResult) -> bool:
    return any("mean_kl_first" in stats for stats in run.train.values())


def task_template(run: RunResult, task: str, spec_template: Callable[[str], str | None]) -> str:
    """The teacher template text a run used for `task`: the method's `distill.template`, else the task's,
    else the paper's (the resolution harness.methods.sdft applies)."""
    chosen = run.params.get("method.distill.template")
    if chosen in (None, "None", "null", ""):
        chosen = spec_template(task) or DEFAULT_TEMPLATE
    try:
        return resolve_template(chosen)
    except ValueError:
        return resolve_template(DEFAULT_TEMPLATE)


def builtin_template(task: str) -> str | None:
    """A built-in task's own teacher template name (None for a task the harness cannot load here)."""

    try:
        return resolve_task(task).teacher_template
    except Exception:  # a user task folder that moved since the run: fall back to the paper's template
        return None


def eval_recitation(run: RunResult, stage: int, tasks: list[str], template_of: Callable[[str], str]) -> float:
    """Share of the stage's evaluation answers on `tasks` that recite their task's teacher template (NaN
    without item-level results)."""
    if run.items is None:
        return math.nan
    at = run.items[(run.items["stage"] == stage) & run.items["task"].isin(tasks)]
    if at.empty:
        return math.nan
    hits = [
        recitation_rate(list(rows["generation"].fillna("").astype(str)), template_of(task)) * len(rows)
        for task, rows in at.groupby("task")
    ]
    return sum(hits) / len(at)


def _templates(run: RunResult, spec_template: Callable[[str], str | None]) -> Callable[[str], str]:
    return lambda task: task_template(run, task, spec_template)


def _fmt(value: float, kind: str) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{100 * value:.0f}" if kind == "pct" else f"{value:.2f}"


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def diagnostics_rows(groups: list[Group], spec_template: Callable[[str], str | None] = builtin_template):
    """One row per group and stage: method, stage and task trained, the logged diagnostics, and the
    recitation rate of the stage's evaluation answers on the stream tasks and on the general suite."""
    frame_rows: list[dict] = []
    for g in groups:
        first = g.runs[0]
        # the template a distillation group used; non-distillation groups are measured against the same one
        reference = next((r for gg in groups for r in gg.runs if has_distillation_stats(r)), first)
        for stage in range(1, len(first.tasks) + 1):
            row: dict = {"method": g.label, "stage": stage, "task": first.tasks[stage - 1]}
            for key, _, _ in TRAIN_COLUMNS:
                row[key] = _mean([r.train.get(stage, {}).get(key, math.nan) for r in g.runs])
            for name, attr in (("eval_recite_stream", "R"), ("eval_recite_general", "G")):
                rates = []
                for r in g.runs:
                    source = r if has_distillation_stats(r) else reference
                    tasks = list(getattr(r, attr).columns)
                    rates.append(eval_recitation(r, stage, tasks, _templates(source, spec_template)))
                row[name] = _mean(rates)
            frame_rows.append(row)
    return pd.DataFrame(frame_rows)


def diagnostics_section(stream: str, groups: list[Group]) -> Section | None:
    """The diagnostics table of one stream; None when no group ran a self-distillation method."""
    if not any(has_distillation_stats(r) for g in groups for r in g.runs):
        return None
    frame = diagnostics_rows(groups)
    header = (
        ["Method", "stage (task)"]
        + [h for _, h, _ in TRAIN_COLUMNS]
        + ["eval answers reciting %: stream / general"]
    )
    rows = []
    for _, row in frame.iterrows():
        cells = [row["method"], f"{row['stage']} ({row['task']})"]
        cells += [_fmt(row[key], kind) for key, _, kind in TRAIN_COLUMNS]
        cells.append(f"{_fmt(row['eval_recite_stream'], 'pct')} / {_fmt(row['eval_recite_general'], 'pct')}")
        rows.append(cells)
    return Section(
        f"Self-distillation diagnostics: stream `{stream}`",
        level=3,
        text=[
            "Why a self-distillation method learned or did not, per stage (means over runs). Probe, at the "
            "start of the stage on a few train items: the teacher's mean log-probability per token of the "
            "demonstration minus that of the template's own likeliest sentence (negative = the teacher "
            "prefers reciting the template), the share of items where the template is likelier, and the "
            "teacher-minus-student probability of the demonstration's first tokens (the push where a short "
            "answer's format is decided). Rollouts, averaged over the stage's steps: cut at the length cap, "
            "reciting a template 4-gram, repeated trigrams, length. KL (teacher to student) on the first 3 "
            "completion tokens and on the rest, and the share of the loss in the first 3. Last column: "
            "evaluation answers after the stage that recite the teacher template (a method without one is "
            "measured against the same template, as the chance level)."
        ],
        tables=[Table(header, rows)],
    )


__all__ = ["diagnostics_rows", "diagnostics_section", "eval_recitation", "task_template"]
