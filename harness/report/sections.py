"""The report built once: for every stream, the sections (tables, sentences, figures) that `harness.report.render`
writes as Markdown, LaTeX and HTML. Every number comes from `harness.report.stats` on the loaded runs.

Rules that keep the words honest:
- a task counts as *learned* by a group when the 95% interval of its gain over the higher of the base model
  and the task's chance level, R[j, j] - max(R[0, j], chance), lies above 0 (`harness.report.baselines`);
  Forgetting and BWT average over learned tasks only, and read "n/a (not learned)" when there are none
  (a method that learned nothing has nothing to forget, which is not "lower forgetting");
- two groups are compared by their *paired* difference (same items, same seeds); when its interval covers
  0 the sentence says "not distinguishable", never "as much as"; it adds "equivalent within +-m points"
  only when the whole interval lies inside the stated margin m (`EQUIVALENCE_MARGIN`);
- normalized scores are drawn only for tasks where the best group beat the base by more than one eval item
  and more than the half-width of its own interval.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from harness.eval import metrics as clm
from harness.report import plots
from harness.report import stats as st
from harness.report.baseline_table import baseline_section
from harness.report.diagnostics import diagnostics_section
from harness.report.pareto import pareto_section
from harness.report.passk import passk_section
from harness.report.power import power_section
from harness.report.render import Section, Table, interval_text, md_table
from harness.report.runs import BASE_LABEL, Group, RunResult, seed_order, slug
from harness.report.samples import generations_html
from harness.report.streams import StreamStats

# summary columns after the per-task ones: (csv name, display name, higher is better)
METRIC_COLUMNS = (
    ("acc", "ACC", True),
    ("new_task_acc", "New-task acc.", True),
    ("bwt", "BWT", True),
    ("fwt", "FWT", True),
    ("forgetting", "Forgetting", False),
    ("general_delta", "General $\\Delta$", True),
)
LEARNED_ONLY = ("bwt", "forgetting")
NOT_LEARNED = "n/a (not learned)"
EQUIVALENCE_MARGIN = 0.05  # a difference is called equivalent only when its interval lies inside +-5 points

STATS_NOTE = (
    "Scores in %; `m [lo, hi]` = mean over runs and its 95% interval from the crossed seed x item model "
    "(seed, item and seed-by-item variance estimated by moments from the item-level scores, t reference "
    "with Satterthwaite degrees of freedom: it holds its 95% at 3 seeds, results/stats/coverage.md); "
    "`(single run)` = one run and no item-level data, `(no spread)` = no variance at all (e.g. all items 0). "
    "n = independent runs (the base model: distinct stage-0 evaluations; with n = 1 the interval covers the "
    "items only). Per task: score right after learning it / general-suite average at that point. BWT and "
    "Forgetting (Chaudhry) average over the tasks a method learned (gain over max(base model, chance level) "
    "above 0 at 95%); `n/a (not learned)` when it learned none. "
    "Forgetting: lower is better; the rest: higher (definitions: docs/design.md)."
)


# ---- the summary table and its sentence ---------------------------------------------------------------
def summary_rows(ss: StreamStats) -> tuple[list[dict], list[list]]:
    """csv rows (mean, _lo, _hi per column) and table rows (cells) of one stream: base model, then groups."""
    csv, cells = [], []
    T = len(ss.tasks)
    entries = [(BASE_LABEL, [r for g in ss.groups for r in g.runs], True)] + [
        (g.label, g.runs, False) for g in ss.groups
    ]
    for label, runs, base in entries:
        row = {
            "stream": ss.stream,
            "method": label,
            "n": ss.base_n if base else len(runs),
            "seeds": " ".join(sorted({r.seed for r in runs}, key=seed_order)),
        }
        table_row: list = [label, str(row["n"])]
        for t in ss.tasks:
            new = ss.boot.interval(label, st.base_score(t) if base else st.new_score(t))
            gen = ss.boot.interval(label, st.general_avg(0) if base else st.general_avg_after(t))
            _put(row, f"{t}/new", new)
            _put(row, f"{t}/general", gen)
            table_row.append((new, gen))
        learned = [] if base else ss.forgettable(label)
        row["learned"] = "" if base else " ".join(ss.learned_tasks(label))
        for name, _, _ in METRIC_COLUMNS:
            if base:
                _put(row, name, st.NAN_INTERVAL)
                table_row.append("—")
                continue
            if name in LEARNED_ONLY and T > 1 and not learned:
                _put(row, name, st.NAN_INTERVAL)
                table_row.append(NOT_LEARNED)
                continue
            iv = ss.boot.interval(label, st.cl_metric(name, learned if name in LEARNED_ONLY else None))
            _put(row, name, iv)
            table_row.append(iv)
        csv.append(row)
        cells.append(table_row)
    return csv, cells


def _put(row: dict, col: str, iv: st.Interval) -> None:
    row[col], row[f"{col}_lo"], row[f"{col}_hi"] = iv.mean, iv.lo, iv.hi


def comparison_text(ss: StreamStats) -> str:
    """Leader vs runner-up on new-task accuracy, final general-suite average and forgetting, decided by the
    paired difference's interval. Computed from the data, never written by hand."""
    labels = [g.label for g in ss.groups]
    if len(labels) < 2:
        return f"Stream `{ss.stream}`: only one method ({labels[0]}); nothing to compare."
    checks: list[tuple[str, st.Statistic | None, bool]] = [
        ("new-task accuracy", st.cl_metric("new_task_acc"), True)
    ]
    if any(r.G.shape[1] for g in ss.groups for r in g.runs):
        checks.append(("final general-suite average", st.general_avg(-1), True))
    parts = [_compare(ss, labels, name, stat, higher) for name, stat, higher in checks]
    parts.append(_compare_forgetting(ss, labels))
    return f"Stream `{ss.stream}`: " + "; ".join(parts) + "."


def _compare(
    ss: StreamStats, labels: list[str], name: str, stat: st.Statistic, higher: bool, suffix: str = ""
) -> str:
    values = {lab: ss.boot.interval(lab, stat) for lab in labels}
    ok = [lab for lab in labels if values[lab].finite]
    if len(ok) < 2:
        return f"{name} is undefined here"
    ranked = sorted(ok, key=lambda lab: values[lab].mean, reverse=higher)
    a, b = ranked[0], ranked[1]
    va, vb = values[a], values[b]
    diff = ss.boot.difference(a, b, stat)
    kind = "paired" if diff.paired else "unpaired"
    word = "higher" if higher else "lower"
    if diff.degenerate and not diff.items and diff.n <= 1:
        if va.mean == vb.mean:
            return f"{a} and {b} tie on {name}{suffix} ({interval_text(va, bare=True)})"
        return (
            f"{a} has the {word} {name}{suffix} ({interval_text(va, bare=True)} vs "
            f"{interval_text(vb, bare=True)} for {b}; no CI with a single seed)"
        )
    if diff.excludes_zero:
        return (
            f"{a} has the {word} {name}{suffix} ({interval_text(va)} vs {interval_text(vb)} for {b}; "
            f"{kind} difference {interval_text(diff, signed=True)})"
        )
    margin = round(100 * EQUIVALENCE_MARGIN)
    equivalent = (
        f"; equivalent within ±{margin} points (the interval lies inside ±{margin})"
        if diff.finite and -EQUIVALENCE_MARGIN <= diff.lo and diff.hi <= EQUIVALENCE_MARGIN
        else ""
    )
    return (
        f"{a} and {b} are not distinguishable on {name}{suffix} ({interval_text(va)} vs {interval_text(vb)}; "
        f"{kind} difference {interval_text(diff, signed=True)} covers 0{equivalent})"
    )


def _compare_forgetting(ss: StreamStats, labels: list[str]) -> str:
    name = "forgetting (Chaudhry)"
    if len(ss.tasks) < 2:
        return f"{name} is undefined here"
    none = [lab for lab in labels if not ss.forgettable(lab)]
    if none:
        return (
            f"{name}: {NOT_LEARNED} for {', '.join(none)} (no task learned before the last), so not compared"
        )
    common = [t for t in ss.tasks if all(t in ss.forgettable(lab) for lab in labels)]
    if not common:
        return (
            f"{name}: the methods learned different tasks ({NOT_LEARNED} on a common task), so not compared"
        )
    return _compare(
        ss,
        labels,
        name,
        st.cl_metric("forgetting", common),
        False,
        suffix=f" on the tasks all learned ({', '.join(common)})",
    )


# ---- per-order breakdown, matrices, general suite ---------------------------------------------------------
def order_table(ss: StreamStats) -> Table:
    header = ["Method", "order", "tasks", "n", "ACC", "New-task acc.", "Forgetting", "General Δ"]
    rows = []
    for g in ss.groups:
        learned = ss.forgettable(g.label)
        for order, members in g.orders().items():
            lab = ss.sub(g.label, order)
            forget = ss.boot.interval(lab, st.cl_metric("forgetting", learned)) if learned else NOT_LEARNED
            rows.append(
                [
                    g.label,
                    order,
                    " -> ".join(members[0].tasks),
                    str(len(members)),
                    ss.boot.interval(lab, st.cl_metric("acc")),
                    ss.boot.interval(lab, st.cl_metric("new_task_acc")),
                    forget,
                    ss.boot.interval(lab, st.cl_metric("general_delta")),
                ]
            )
    return Table(
        header, rows, caption=f"Per task order, stream {ss.stream} (the summary aggregates all orders)"
    )


def matrix_table(
    ss: StreamStats, g: Group, order: str, members: list[RunResult]
) -> tuple[Table, pd.DataFrame]:
    lab = ss.sub(g.label, order)
    tasks, extras = members[0].tasks, list(members[0].extra.columns)
    header = ["after stage"] + tasks + [f"{c} †" for c in extras] + ["general avg"]
    rows, means = [], []
    for i in range(len(tasks) + 1):
        cells = [ss.boot.interval(lab, st.cell(i, t)) for t in tasks]
        means.append([c.mean for c in cells])
        if extras and ss.extra_boot is not None:
            cells += [ss.extra_boot.interval(lab, st.general_cell(i, m)) for m in range(len(extras))]
        cells.append(ss.boot.interval(lab, st.general_avg(i)))
        rows.append(["0 (base)" if i == 0 else f"{i} ({tasks[i - 1]})", *cells])
    caption = f"Accuracy matrix: {g.label}" + ("" if len(ss.orders) == 1 else f", order {order}")
    mean = pd.DataFrame(means, columns=tasks, index=pd.Index(range(len(tasks) + 1), name="stage"))
    return Table(header, rows, caption=caption + " (rows: after stage i, 0 = base)"), mean


def general_table(ss: StreamStats, g: Group) -> Table | None:
    suite = list(g.runs[0].G.columns)
    if not suite:
        return None
    rows = []
    for i in range(len(ss.tasks) + 1):
        rows.append(
            [
                str(i),
                *[ss.boot.interval(g.label, st.general_cell(i, m)) for m in range(len(suite))],
                ss.boot.interval(g.label, st.general_avg(i)),
            ]
        )
    return Table(["after stage", *suite, "average"], rows, caption=f"General suite per task: {g.label}")


# ---- sample generations (HTML only) ---------------------------------------------------------------------
# ---- sections -----------------------------------------------------------------------------------------
def facts(runs: list[RunResult], skipped: int) -> list[str]:
    def values(get) -> str:
        return ", ".join(sorted({str(get(r)) for r in runs}))

    sizes: dict[str, set[int]] = {}
    for r in runs:
        for task, n in r.eval_sizes.items():
            sizes.setdefault(task, set()).add(n)
    evaluated = ", ".join(f"{t} {'/'.join(map(str, sorted(n)))}" for t, n in sorted(sizes.items()))
    with_items = sum(r.items is not None for r in runs)
    out = [
        f"Model: {values(lambda r: r.model + (' (random init)' if r.params.get('model.random_init') == 'True' else ''))}",
        f"Seeds: {values(lambda r: r.seed)} ({len(runs)} complete runs"
        + (f"; {skipped} incomplete runs ignored)" if skipped else ")"),
        f"Evaluation items per task (`eval.limit`; None = the full eval set): "
        f"{values(lambda r: r.params.get('eval.limit', 'not logged'))}"
        + (
            f"; general suite `eval.suite_limit`: {values(lambda r: r.params.get('eval.suite_limit', 'None'))}"
            if any(r.params.get("eval.suite_limit", "None") != "None" for r in runs)
            else ""
        )
        + (f"; evaluated: {evaluated}" if evaluated else ""),
        f"Streams: {values(lambda r: r.stream + ' = ' + ' -> '.join(r.R.columns))}",
        "General suite: " + values(lambda r: ", ".join(r.G.columns) or "none"),
        f"Item-level scores stored for {with_items} of {len(runs)} runs"
        + ("" if with_items == len(runs) else "; intervals of the others resample runs only"),
    ]
    scores = np.concatenate([np.ravel(m.to_numpy(dtype=float)) for r in runs for m in (r.R, r.G)])
    scores = scores[np.isfinite(scores)]
    if scores.size and (scores.min() < 0 or scores.max() > 1):
        # every table and plot assumes scores in [0, 1]; say so loudly instead of printing 300%
        out.append(
            f"WARNING: some logged scores lie outside [0, 1] (range {scores.min():g} to {scores.max():g}): "
            "the metric chosen for R or G is not an accuracy; check the task's metric"
        )
    return out


def _group_sections(ss: StreamStats, g: Group, out: Path, figs: list[tuple[Path, str]]) -> list[Section]:
    """One method group's accuracy matrices (one per task order; CSV, Markdown and a heatmap, which joins
    `figs`) and its general-suite table."""
    s = slug(ss.stream)
    sections = []
    for order, members in g.orders().items():
        table, mean = matrix_table(ss, g, order, members)
        name = f"{s}_{slug(g.overrides or g.label)}" + ("" if len(ss.orders) == 1 else f"_order{slug(order)}")
        mean.to_csv(out / f"matrix_{name}.csv")

        (out / f"matrix_{name}.md").write_text(
            f"{table.caption}, stream {ss.stream} (%, mean over {len(members)} run(s))\n\n{md_table(table)}\n"
        )
        heat = out / f"heatmap_{name}.png"
        plots.heatmap(
            mean,
            heat,
            f"{table.caption.split(' (')[0]}, stream {ss.stream} (mean of {len(members)} run(s))",
        )
        figs.append((heat, table.caption.split(" (")[0]))
        sec = Section(
            table.caption + " (% mean [95% interval])", level=3, tables=[Table(table.header, table.rows)]
        )
        if len(members[0].extra.columns):
            sec.notes.append("† further eval task of a stream task (logged beside the accuracy matrix)")
        sections.append(sec)
    gt = general_table(ss, g)
    if gt is not None:
        sections.append(
            Section(gt.caption + " (% mean [95% interval])", level=3, tables=[Table(gt.header, gt.rows)])
        )
    return sections


def stream_sections(ss: StreamStats, out: Path) -> tuple[list[Section], list[dict]]:
    csv, cells = summary_rows(ss)
    header = (
        ["Method", "n"]
        + [f"{t} (new / gen.)" for t in ss.tasks]
        + [d.replace("$\\Delta$", "Δ") for _, d, _ in METRIC_COLUMNS]
    )
    caption = (
        f"Stream \\texttt{{{ss.stream.replace('_', chr(92) + '_')}}}: score on each task right after learning "
        "it / general-suite average at that point, then continual-learning metrics (\\%, mean and 95\\% "
        "interval of the crossed seed $\\times$ item model)."
    )
    tex_header = header[: 2 + len(ss.tasks)] + [d for _, d, _ in METRIC_COLUMNS]
    summary = Table(
        header, cells, latex=True, first_row_apart=True, tex_header=tex_header, tex_caption=caption
    )
    main = Section(f"Stream `{ss.stream}`", text=[comparison_text(ss)], tables=[summary])
    sections = [main, baseline_section(ss), power_section(ss)]
    if len(ss.orders) > 1:
        sections.append(Section(f"Task orders: stream `{ss.stream}`", level=3, tables=[order_table(ss)]))
    s = slug(ss.stream)
    figs: list[tuple[Path, str]] = []
    for order in ss.orders:
        tag = s if len(ss.orders) == 1 else f"{s}_order{slug(order)}"
        figs += plots.stream_figures(ss, order, out, tag)
    figs += plots.shared_figures(ss, out, s)
    for g in ss.groups:
        sections += _group_sections(ss, g, out, figs)
    sections[-1].figures = figs
    for extra in (diagnostics_section(ss.stream, ss.groups), pareto_section(ss, out), passk_section(ss)):
        if extra is not None:
            sections.append(extra)
    gens = generations_html(ss)
    if gens:
        sections.append(
            Section(
                f"Sample generations: stream `{ss.stream}`",
                level=3,
                html_extra=gens,
                notes=["(in report.html)"],
            )
        )
    return sections, csv


def build_sections(
    name: str, runs: list[RunResult], groups: list[Group], skipped: int, out: Path
) -> tuple[list[Section], pd.DataFrame]:
    """Every section of the report, and the summary table as a frame (summary.csv)."""
    sections = [
        Section(f"Results: experiment `{name}`", level=1, bullets=facts(runs, skipped), text=[STATS_NOTE])
    ]
    rows: list[dict] = []
    for stream in dict.fromkeys(g.stream for g in groups):
        members = [g for g in groups if g.stream == stream]
        ss = StreamStats(stream, members, [r for g in members for r in g.runs])
        more, csv = stream_sections(ss, out)
        sections += more
        rows += csv
    return sections, pd.DataFrame(rows)


__all__ = ["build_sections", "comparison_text", "StreamStats", "clm"]
