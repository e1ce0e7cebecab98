"""The report's figures (matplotlib, files only). Each function draws from numbers the caller computed.

Conventions: one colour per group; thin lines = single runs (seeds), the thick line = their mean with its
95% interval band (the crossed seed x item estimate); dashed lines = the teacher's in-context score on
that task (SDFT's ceiling), measured before the stage that trains it; a dotted vertical line = the stage
that trains the task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.eval import metrics as clm
from harness.report import stats as st
from harness.report.streams import StreamStats, normalized_floor


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window, works without a display
    import matplotlib.pyplot as plt

    return plt


def colors(labels: list[str]) -> dict[str, Any]:
    cmap = _plt().get_cmap("tab10")
    return {lab: cmap(i % 10) for i, lab in enumerate(labels)}


def _stage_ticks(ax, tasks: list[str] | None, stages: int) -> None:
    ax.set_xticks(range(stages))
    if tasks:
        ax.set_xticklabels(["base"] + [f"{i}:{t}" for i, t in enumerate(tasks, 1)], rotation=30, ha="right")
    ax.set_xlabel("after stage (task learned)")


def _band(ax, x, mean, lo, hi, per_run, label, color, clip=(0.0, 1.0)) -> None:
    for y in per_run:
        ax.plot(x, y, color=color, alpha=0.35, linewidth=0.8)
    ax.plot(x, mean, marker="o", label=label, color=color, linewidth=2)
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    if np.isfinite(lo).any():
        if clip is not None:
            lo, hi = np.clip(lo, *clip), np.clip(hi, *clip)
        ax.fill_between(x, lo, hi, color=color, alpha=0.18, linewidth=0)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)


# ---- per stream and task order ------------------------------------------------------------------------
def stream_figures(ss: StreamStats, order: str, out: Path, tag: str) -> list[tuple[Path, str]]:
    """Forgetting curves and (when meaningful) normalized scores of one task order."""
    members = {g.label: g.orders()[order] for g in ss.groups if order in g.orders()}
    tasks = next(iter(members.values()))[0].tasks
    col = colors([g.label for g in ss.groups])
    suffix = "" if len(ss.orders) == 1 else f", order {order}"
    figs = []
    path = out / f"forgetting_{tag}.png"
    forgetting(ss, members, tasks, col, path, f"Forgetting curves: stream {ss.stream}{suffix}")
    figs.append((path, f"Forgetting curves{suffix} (thin: single runs; dashed: teacher in context)"))
    path = out / f"normalized_{tag}.png"
    if normalized(ss, members, tasks, col, path, f"Normalized scores: stream {ss.stream}{suffix}"):
        figs.append((path, f"Normalized scores (paper Fig. 3){suffix}"))
    return figs


def _cells(ss: StreamStats, label: str, tasks: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    T = len(tasks)
    ivs = [[ss.boot.interval(label, st.cell(i, t)) for t in tasks] for i in range(T + 1)]
    return tuple(np.array([[getattr(c, a) for c in row] for row in ivs]) for a in ("mean", "lo", "hi"))


def forgetting(ss: StreamStats, members: dict, tasks: list[str], col: dict, path: Path, title: str) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.8), squeeze=False, sharey=True)
    x = np.arange(len(tasks) + 1)
    for label, runs in members.items():
        mean, lo, hi = _cells(ss, ss.sub(label, runs[0].order), tasks)
        per_run = np.stack([r.R.to_numpy(dtype=float) for r in runs])
        for j, ax in enumerate(axes[0]):
            _band(ax, x, mean[:, j], lo[:, j], hi[:, j], per_run[:, :, j], label, col[label])
            ref = [r.in_context[j + 1] for r in runs if j + 1 in r.in_context]
            if ref:
                ax.axhline(float(np.mean(ref)), color=col[label], linestyle="--", linewidth=1)
    for j, (ax, task) in enumerate(zip(axes[0], tasks, strict=True)):
        ax.axvline(j + 1, color="grey", linestyle=":", linewidth=1)
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(task)
        _stage_ticks(ax, tasks, len(tasks) + 1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("score")
    axes[0][-1].legend(loc="best", fontsize=8)
    fig.suptitle(f"{title} (dotted: stage that trains the task)")
    _save(fig, path)


def normalized(ss: StreamStats, members: dict, tasks: list[str], col: dict, path: Path, title: str) -> bool:
    """(R - base) / (best - base) per run, against the best group mean; columns whose denominator is below
    the floor (`streams.normalized_floor`) are left out. False (nothing drawn) when none remains."""

    means = {lab: _cells(ss, ss.sub(lab, runs[0].order), tasks)[0] for lab, runs in members.items()}
    best = clm.best_scores(list(means.values()))
    best_label = {}
    for j, t in enumerate(tasks):
        for lab, m in means.items():
            if np.nanmax(m[:, j]) == best[j]:
                best_label[t] = ss.sub(lab, members[lab][0].order)
                break
    floor = normalized_floor(ss, {t: best_label.get(t) for t in ss.tasks})
    floor = np.array([floor[ss.tasks.index(t)] for t in tasks])
    kept = [
        j for j in range(len(tasks)) if best[j] - np.nanmean([m[0, j] for m in means.values()]) > floor[j]
    ]
    if not kept:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, len(kept), figsize=(4.2 * len(kept), 3.8), squeeze=False, sharey=True)
    x = np.arange(len(tasks) + 1)
    for label, runs in members.items():
        per_run = np.stack([clm.normalized_scores(r.R.to_numpy(dtype=float), best, floor) for r in runs])
        with np.errstate(all="ignore"):
            mean = np.nanmean(per_run, axis=0)
        for ax, j in zip(axes[0], kept, strict=True):
            _band(
                ax,
                x,
                mean[:, j],
                [np.nan] * len(x),
                [np.nan] * len(x),
                per_run[:, :, j],
                label,
                col[label],
                clip=None,
            )
    for ax, j in zip(axes[0], kept, strict=True):
        for level in (0.0, 1.0):
            ax.axhline(level, color="grey", linewidth=0.6)
        ax.axvline(j + 1, color="grey", linestyle=":", linewidth=1)
        ax.set_ylim(-0.6, 1.4)
        ax.set_title(f"{tasks[j]} (best - base = {100 * (best[j] - means[next(iter(means))][0, j]):.1f} pts)")
        _stage_ticks(ax, tasks, len(tasks) + 1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("normalized score (0 = base, 1 = best)")
    axes[0][-1].legend(loc="best", fontsize=8)
    left_out = [tasks[j] for j in range(len(tasks)) if j not in kept]
    fig.suptitle(title + (f" (not drawn: {', '.join(left_out)}: gain below noise)" if left_out else ""))
    _save(fig, path)
    return True


# ---- across orders ---------------------------------------------------------------------------------------
def shared_figures(ss: StreamStats, out: Path, tag: str) -> list[tuple[Path, str]]:
    figs = []
    col = colors([g.label for g in ss.groups])
    if any(r.G.shape[1] for g in ss.groups for r in g.runs):
        path = out / f"general_{tag}.png"
        general(ss, col, path)
        figs.append((path, "General suite: average and each task"))
    if any(r.curves.get(s, {}).get("train_step/loss") for g in ss.groups for r in g.runs for s in r.curves):
        path = out / f"training_{tag}.png"
        step_curves(
            ss, col, path, ["train_step/loss", "train_step/grad_norm"], "Training loss and gradient norm"
        )
        figs.append((path, "Training loss and gradient norm per optimizer step (thin: runs; thick: mean)"))
    if any(r.curves.get(s, {}).get("step_eval/score") for g in ss.groups for r in g.runs for s in r.curves):
        path = out / f"within_{tag}.png"
        step_curves(ss, col, path, ["step_eval/score"], "Within-stage learning curves", reference=True)
        figs.append(
            (
                path,
                "Within-stage learning curve: the task being trained, scored on a fixed subset every "
                "eval.every_steps steps (dashed: teacher in context)",
            )
        )
    return figs


def general(ss: StreamStats, col: dict, path: Path) -> None:
    suite = list(ss.groups[0].runs[0].G.columns)
    panels = ["average", *suite]
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.8), squeeze=False, sharey=True)
    T = len(ss.tasks)
    x = np.arange(T + 1)
    ticks = ss.tasks if len(ss.orders) == 1 else None
    for g in ss.groups:
        for k, ax in enumerate(axes[0]):
            stat = (lambda i: st.general_avg(i)) if k == 0 else (lambda i, m=k - 1: st.general_cell(i, m))
            ivs = [ss.boot.interval(g.label, stat(i)) for i in range(T + 1)]
            per_run = [
                clm.general_average(r.G.to_numpy(dtype=float)) if k == 0 else r.G.iloc[:, k - 1].to_numpy()
                for r in g.runs
            ]
            _band(
                ax,
                x,
                [iv.mean for iv in ivs],
                [iv.lo for iv in ivs],
                [iv.hi for iv in ivs],
                per_run,
                g.label,
                col[g.label],
            )
    for ax, name in zip(axes[0], panels, strict=True):
        ax.set_title(name)
        ax.set_ylim(-0.03, 1.03)
        _stage_ticks(ax, ticks, T + 1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("general-suite score")
    axes[0][-1].legend(loc="best", fontsize=8)
    fig.suptitle(f"Prior capabilities: stream {ss.stream}")
    _save(fig, path)


def step_curves(
    ss: StreamStats, col: dict, path: Path, keys: list[str], title: str, reference: bool = False
) -> None:
    """Rows = `keys`, columns = stages 1..T; per group, one thin line per run and the mean over runs."""
    T = len(ss.tasks)
    plt = _plt()
    fig, axes = plt.subplots(len(keys), T, figsize=(4.0 * T, 3.2 * len(keys)), squeeze=False)
    for g in ss.groups:
        for row, key in enumerate(keys):
            for stage in range(1, T + 1):
                ax = axes[row][stage - 1]
                curves = [r.curves.get(stage, {}).get(key, {}) for r in g.runs]
                curves = [c for c in curves if c]
                for c in curves:
                    ax.plot(list(c), list(c.values()), color=col[g.label], alpha=0.35, linewidth=0.8)
                if curves:
                    frame = pd.DataFrame(curves).sort_index(axis=1)
                    ax.plot(
                        frame.columns,
                        frame.mean(axis=0).to_numpy(),
                        color=col[g.label],
                        linewidth=2,
                        label=g.label,
                        marker="o" if reference else None,
                        markersize=3,
                    )
                ref = [r.in_context[stage] for r in g.runs if stage in r.in_context]
                if reference and ref:
                    ax.axhline(float(np.mean(ref)), color=col[g.label], linestyle="--", linewidth=1)
    for row, key in enumerate(keys):
        for stage in range(1, T + 1):
            ax = axes[row][stage - 1]
            tasks = {r.tasks[stage - 1] for g in ss.groups for r in g.runs}
            ax.set_title(f"stage {stage}: {'/'.join(sorted(tasks))}", fontsize=9)
            ax.set_xlabel("optimizer step")
            ax.grid(alpha=0.3)
            if reference:
                ax.set_ylim(-0.03, 1.03)
        axes[row][0].set_ylabel(key.split("/", 1)[1])
    axes[0][-1].legend(loc="best", fontsize=8)
    fig.suptitle(f"{title}: stream {ss.stream}")
    _save(fig, path)


def heatmap(mean: pd.DataFrame, path: Path, title: str) -> None:
    """The mean accuracy matrix as a heat map with the numbers written in the cells."""
    plt = _plt()
    values = mean.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(1.4 * values.shape[1] + 2.8, 0.6 * values.shape[0] + 1.8))
    image = ax.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(
                j, i, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black", fontsize=9
            )
    ax.set_xticks(range(values.shape[1]))
    ax.set_xticklabels(mean.columns, rotation=30, ha="right")
    ax.set_yticks(range(values.shape[0]))
    ax.set_yticklabels(["base"] + [f"{i}:{t}" for i, t in enumerate(mean.columns, 1)])
    ax.set_xlabel("evaluated task")
    ax.set_ylabel("after stage")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="score")
    _save(fig, path)
