"""The Pareto view: new-task accuracy against general-suite retention over a sweep of settings.

One point per group (a method at one setting: lr, steps, a method's weight ...), with 95% bootstrap
intervals on both axes; per method, the frontier of its settings (no other setting of that method has both
higher accuracy and higher retention). The question it answers: did a method forget less only because it
learned less? So the comparison is made at matched accuracy:

- x* = the highest new-task accuracy that every method's frontier reaches (the smallest of their maxima);
- each method's retention at x* is read off its frontier by linear interpolation between the two frontier
  points around x*; below a frontier's least accurate point, that point's retention is used (a setting
  reaching at least x* with that retention exists).

Axes: x = new-task accuracy (mean over tasks of the score right after learning each, `new_task_acc`),
y = general-suite change after the whole stream (`general_delta`: 0 = nothing forgotten). A joint
(multi-task) baseline, if present, is no point of any frontier: it is drawn as dashed reference lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.report import plots
from harness.report import stats as st
from harness.report.render import Section, Table, interval_text, pct
from harness.report.runs import Group, slug
from harness.report.streams import StreamStats

JOINT_METHODS = ("joint",)


@dataclass(frozen=True)
class Point:
    method: str
    label: str
    accuracy: st.Interval
    retention: st.Interval


def frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The Pareto frontier (maximising both coordinates) of (accuracy, retention) points, by accuracy."""
    best: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):  # most accurate first
        if not best or y > best[-1][1]:  # more retention than every more accurate point
            best.append((x, y))
    return best[::-1]


def retention_at(front: list[tuple[float, float]], x: float) -> float:
    """Retention along a frontier (sorted by accuracy) at accuracy `x`, linearly interpolated; NaN past its
    most accurate point, the least accurate point's retention below it."""
    if not front or x > front[-1][0]:
        return float("nan")
    if x <= front[0][0]:
        return front[0][1]
    for (x0, y0), (x1, y1) in zip(front, front[1:], strict=False):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return float("nan")  # unreachable for a sorted frontier


def matched_retention(fronts: dict[str, list[tuple[float, float]]]) -> tuple[float, dict[str, float]]:
    """(x*, {method: retention at x*}) where x* is the highest accuracy every frontier reaches."""
    reached = [f[-1][0] for f in fronts.values() if f]
    if len(reached) < 2:
        return float("nan"), {}
    x = min(reached)
    return x, {method: retention_at(f, x) for method, f in fronts.items()}


def matched_sentence(fronts: dict[str, list[tuple[float, float]]]) -> str:
    x, at = matched_retention(fronts)
    if not at:
        return ""
    parts = ", ".join(
        f"{m} {'+' if r > 0 else ''}{pct(r)}" for m, r in sorted(at.items(), key=lambda kv: -kv[1])
    )
    return (
        f"Forgetting at matched new-task accuracy: at {pct(x)}% new-task accuracy (the highest every method "
        f"reaches), the general-suite change is {parts} points (interpolated along each method's frontier; "
        "means over runs)."
    )


def is_joint(group: Group) -> bool:
    return group.method in JOINT_METHODS


def points(ss: StreamStats) -> list[Point]:
    out = []
    for g in ss.groups:
        if is_joint(g):
            continue
        acc = ss.boot.interval(g.label, st.cl_metric("new_task_acc"))
        ret = ss.boot.interval(g.label, st.cl_metric("general_delta"))
        out.append(Point(g.method, g.label, acc, ret))
    return out


def joint_reference(ss: StreamStats) -> tuple[str, st.Interval, st.Interval] | None:
    """The joint baseline's final accuracy over all tasks and its general change, if one was run."""
    for g in ss.groups:
        if is_joint(g):
            acc = ss.boot.interval(g.label, st.cl_metric("acc"))
            return g.label, acc, ss.boot.interval(g.label, st.cl_metric("general_delta"))
    return None


def fronts_of(pts: list[Point]) -> dict[str, list[tuple[float, float]]]:
    by_method: dict[str, list[tuple[float, float]]] = {}
    for p in pts:
        if p.accuracy.finite and p.retention.finite:
            by_method.setdefault(p.method, []).append((p.accuracy.mean, p.retention.mean))
    return {m: frontier(v) for m, v in by_method.items()}


def pareto_figure(pts: list[Point], joint, path: Path, title: str) -> None:
    plt = plots._plt()
    methods = list(dict.fromkeys(p.method for p in pts))
    col = plots.colors(methods)
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for m in methods:
        mine = [p for p in pts if p.method == m]
        for p in mine:
            xerr = [[100 * (p.accuracy.mean - p.accuracy.lo)], [100 * (p.accuracy.hi - p.accuracy.mean)]]
            yerr = [[100 * (p.retention.mean - p.retention.lo)], [100 * (p.retention.hi - p.retention.mean)]]
            ax.errorbar(
                100 * p.accuracy.mean,
                100 * p.retention.mean,
                xerr=xerr,
                yerr=yerr,
                fmt="o",
                color=col[m],
                alpha=0.6,
                capsize=2,
            )
        front = fronts_of(mine).get(m, [])
        if front:
            ax.plot([100 * x for x, _ in front], [100 * y for _, y in front], "-", color=col[m], label=m)
    if joint is not None:
        label, acc, ret = joint
        ax.axvline(100 * acc.mean, color="black", linestyle="--", linewidth=1, label=f"{label} (upper bound)")
        ax.axhline(100 * ret.mean, color="black", linestyle=":", linewidth=1)
    ax.set_xlabel("new-task accuracy (%)")
    ax.set_ylabel("general-suite change after the stream (points)")
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:  # no front and no joint run: nothing to name
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pareto_section(ss: StreamStats, out: Path) -> Section | None:
    """The Pareto section of a stream: a table of the points, the frontiers' figure, the matched sentence.
    None unless some method was run at several settings or a joint baseline was run."""
    pts = points(ss)
    joint = joint_reference(ss)
    methods = [p.method for p in pts]
    swept = any(methods.count(m) > 1 for m in methods)
    if not swept and joint is None:  # one setting per method: the summary table already compares them
        return None
    header = ["Setting", "Method", "New-task acc.", "General Δ", "On frontier"]
    fronts = fronts_of(pts)
    rows = []
    for p in pts:
        on = (p.accuracy.mean, p.retention.mean) in fronts.get(p.method, [])
        rows.append(
            [
                p.label,
                p.method,
                interval_text(p.accuracy),
                interval_text(p.retention, signed=True),
                "yes" if on else "",
            ]
        )
    sec = Section(f"Pareto view: stream `{ss.stream}`", level=3, tables=[Table(header, rows)])
    sentence = matched_sentence(fronts)
    if sentence:
        sec.text.append(sentence)
    if joint is not None:
        label, acc, ret = joint
        sec.text.append(
            f"Joint training on all tasks at once ({label}, the upper-bound reference): final accuracy "
            f"{interval_text(acc)}, general-suite change {interval_text(ret, signed=True)}."
        )
    path = out / f"pareto_{slug(ss.stream)}.png"
    pareto_figure(pts, joint, path, f"stream {ss.stream}: accuracy vs retention")
    sec.figures.append((path, "New-task accuracy vs general-suite change, one point per setting, frontiers"))
    return sec
