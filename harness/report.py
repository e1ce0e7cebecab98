"""`harness report`: MLflow -> pandas -> tables (Markdown, CSV, LaTeX), plots (PNG) and one report.html.

Reads only what `harness.tracking` wrote (the tracking contract in docs/ARCHITECTURE.md): the complete
parent runs of one experiment, their tags and params, and their `score/<task>` / `general/<task>` /
`extra/<task>` curves (step = stage). Nothing else, so runs logged on a cluster and on a laptop mix.

Runs are grouped by stream x method x any param that varies between runs of that method (a swept
`trainer.lr`, say), ignoring the seed and the keys in `tracking.NON_RESULT_KEYS`. Within a group every
number is a mean over seeds with a 95% confidence interval (t-distribution, n-1 degrees of freedom);
CL metrics are computed per seed with `harness.metrics` and then aggregated.

Everything lands in <results_dir>/<experiment_name>/:
    summary.md  summary.csv  summary.tex  report.html  runs.csv
    matrix_<stream>_<group>.csv / .md      (mean accuracy matrix, rows = after stage i, 0 = base)
    forgetting_<stream>.png  general_<stream>.png  normalized_<stream>.png  heatmap_<stream>_<group>.png
"""

from __future__ import annotations

import base64
import html
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import metrics as clm
from harness.config import results_path, tracking_uri
from harness.tracking import NON_RESULT_KEYS, Tracker, sanitize_metric_key

# summary columns after the per-task ones: (csv name, display name, higher is better)
METRIC_COLUMNS = (
    ("acc", "ACC", True),
    ("new_task_acc", "New-task acc.", True),
    ("bwt", "BWT", True),
    ("fwt", "FWT", True),
    ("forgetting", "Forgetting", False),
    ("general_delta", "General $\\Delta$", True),
)
_GROUP_IGNORED = NON_RESULT_KEYS | {"seed", "stream_tasks", "suite_tasks", "method.name"}
BASE_LABEL = "base model"


@dataclass
class RunResult:
    run_id: str
    method: str
    stream: str
    seed: str
    model: str
    params: dict[str, str]
    R: pd.DataFrame  # index = stage 0..T, columns = stream tasks
    G: pd.DataFrame  # index = stage 0..T, columns = suite tasks
    extra: pd.DataFrame  # further eval tasks (e.g. knowledge_ood), possibly with no columns


@dataclass
class Group:
    stream: str
    method: str
    label: str
    runs: list[RunResult] = field(default_factory=list)

    @property
    def tasks(self) -> list[str]:
        return list(self.runs[0].R.columns)

    def stack(self, attr: str) -> np.ndarray:
        """(n_runs, T+1, columns) array of one matrix over the group's seeds."""
        return np.stack([getattr(r, attr).to_numpy(dtype=float) for r in self.runs])


# ---- reading MLflow -----------------------------------------------------------------------------
def load_runs(tracker: Tracker) -> list[RunResult]:
    """Every complete parent run of the experiment, with its matrices rebuilt from the metric curves."""
    out = []
    for run in tracker.parents(complete_only=True):
        params, tags = dict(run.data.params), run.data.tags
        tasks = json.loads(params["stream_tasks"])
        suite = json.loads(params.get("suite_tasks", "[]"))
        stages = list(range(len(tasks) + 1))
        rid = run.info.run_id

        extra_names = sorted(k.split("/", 1)[1] for k in run.data.metrics if k.startswith("extra/"))
        out.append(
            RunResult(
                run_id=run.info.run_id,
                method=tags.get("method", params.get("method.name", "?")),
                stream=tags.get("stream", params.get("stream.name", "?")),
                seed=tags.get("seed", params.get("seed", "?")),
                model=tags.get("model", params.get("model.name", "?")),
                params=params,
                R=_curves(tracker, rid, "score", tasks, stages),
                G=_curves(tracker, rid, "general", suite, stages),
                extra=_curves(tracker, rid, "extra", extra_names, stages),
            )
        )
    return out


def _curves(tracker: Tracker, run_id: str, prefix: str, names: list[str], stages: list[int]) -> pd.DataFrame:
    """stage x name frame of the curves `<prefix>/<name>` (NaN where a stage was never logged)."""
    cols = {}
    for name in names:
        hist = tracker.history(run_id, sanitize_metric_key(f"{prefix}/{name}"))
        cols[name] = [hist.get(s, np.nan) for s in stages]
    return pd.DataFrame(cols, index=pd.Index(stages, name="stage"), columns=names, dtype=float)


def group_runs(runs: list[RunResult]) -> list[Group]:
    """Group by stream x method x every param that varies within that method's runs (seed excluded)."""
    groups: dict[tuple, Group] = {}
    by_method: dict[tuple[str, str], list[RunResult]] = {}
    for r in runs:
        by_method.setdefault((r.stream, r.method), []).append(r)
    for (stream, method), members in sorted(by_method.items()):
        keys = sorted({k for r in members for k in r.params} - _GROUP_IGNORED)
        varying = [k for k in keys if len({r.params.get(k) for r in members}) > 1]
        for r in members:
            split = tuple((k, r.params.get(k, "-")) for k in varying)
            label = method + (" (" + ", ".join(f"{k}={v}" for k, v in split) + ")" if split else "")
            group = groups.setdefault((stream, method, split), Group(stream, method, label))
            if group.runs and list(group.runs[0].R.columns) != list(r.R.columns):
                raise ValueError(
                    f"runs {group.runs[0].run_id} and {r.run_id} of stream {stream!r} have different task lists; "
                    "rename one of the streams"
                )
            group.runs.append(r)
    return list(groups.values())


# ---- statistics ---------------------------------------------------------------------------------
def mean_ci(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, 95% CI half-width (Student t, n-1 dof) and n along `axis`, NaN-aware; half-width NaN if n < 2."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    n = np.sum(~np.isnan(v), axis=axis)
    # all-NaN columns (e.g. BWT of the base row) are expected: silence numpy's "mean of empty slice"
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(v, axis=axis)
        sd = np.nanstd(v, axis=axis, ddof=1)
        tq = stats.t.ppf(0.975, np.maximum(n - 1, 1))
        half = np.where(n > 1, tq * sd / np.sqrt(np.maximum(n, 1)), np.nan)
    return mean, half, n


def _run_row(r: RunResult, base: bool) -> dict[str, float]:
    """One run's numbers in the summary layout (for the base row: stage 0 of that run)."""
    R, gavg = r.R.to_numpy(dtype=float), clm.general_average(r.G.to_numpy(dtype=float))
    row: dict[str, float] = {}
    for j, task in enumerate(r.R.columns, start=1):
        stage = 0 if base else j
        row[f"{task}/new"] = R[stage, j - 1]
        row[f"{task}/general"] = gavg[stage]
    cl = clm.all_metrics(R, r.G.to_numpy(dtype=float))
    for name, _, _ in METRIC_COLUMNS:
        row[name] = np.nan if base else cl[name]
    return row


def summary_table(groups: list[Group]) -> pd.DataFrame:
    """One row per stream x (base model, then each group): mean and `<col>_ci95` of every column."""
    rows = []
    for stream in dict.fromkeys(g.stream for g in groups):
        members = [g for g in groups if g.stream == stream]
        entries = [(BASE_LABEL, [r for g in members for r in g.runs], True)]
        entries += [(g.label, g.runs, False) for g in members]
        for label, runs, base in entries:
            per_run = pd.DataFrame([_run_row(r, base) for r in runs])
            mean, half, n = mean_ci(per_run.to_numpy(dtype=float))
            row: dict[str, Any] = {
                "stream": stream,
                "method": label,
                "n": len(runs),
                "seeds": " ".join(sorted({r.seed for r in runs}, key=_seed_order)),
            }
            for i, col in enumerate(per_run.columns):
                row[col] = mean[i]
                row[f"{col}_ci95"] = half[i]
            rows.append(row)
    return pd.DataFrame(rows)


def _seed_order(seed: str) -> tuple:
    return (0, int(seed), "") if seed.lstrip("-").isdigit() else (1, 0, seed)


def mean_matrix(group: Group, attr: str = "R") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean over seeds and CI half-width of one matrix (rows = stage, columns = tasks)."""
    frame = getattr(group.runs[0], attr)
    mean, half, _ = mean_ci(group.stack(attr), axis=0)
    return (
        pd.DataFrame(mean, index=frame.index, columns=frame.columns),
        pd.DataFrame(half, index=frame.index, columns=frame.columns),
    )


# ---- formatting ---------------------------------------------------------------------------------
def _pct(mean: float, half: float, tex: bool = False) -> str:
    if mean is None or not np.isfinite(mean):
        return "--" if tex else "—"
    text = f"{round(100 * mean, 1) or 0.0:.1f}"  # `or` turns -0.0 into 0.0
    if half is not None and np.isfinite(half):
        text = f"${text}_{{\\pm {100 * half:.1f}}}$" if tex else f"{text} ± {100 * half:.1f}"
    return text


def _cells(summary: pd.DataFrame, stream: str, tex: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the paper-layout table of one stream, as strings."""
    rows = summary[summary["stream"] == stream]
    tasks = [c[: -len("/new")] for c in rows.columns if c.endswith("/new") and rows[c].notna().any()]
    header = (
        ["Method", "n"]
        + [f"{t} (new / gen.)" for t in tasks]
        + [d if tex else d.replace("$\\Delta$", "Δ") for _, d, _ in METRIC_COLUMNS]
    )
    body = []
    for _, r in rows.iterrows():
        cells = [str(r["method"]), str(r["n"])]
        for t in tasks:
            cells.append(
                f"{_pct(r[f'{t}/new'], r[f'{t}/new_ci95'], tex)} / "
                f"{_pct(r[f'{t}/general'], r[f'{t}/general_ci95'], tex)}"
            )
        cells += [_pct(r[c], r[f"{c}_ci95"], tex) for c, _, _ in METRIC_COLUMNS]
        body.append(cells)
    return header, body


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = [[c.replace("|", "\\|") for c in row] for row in [header, *rows]]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in esc[1:]]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _tex_escape(text: str) -> str:
    return re.sub(r"([_%&#{}])", r"\\\1", text)


def _tex_table(stream: str, header: list[str], rows: list[list[str]]) -> str:
    cols = "l" + "r" * (len(header) - 1)
    # cells already holding math ($...$) are kept; plain text is escaped
    fmt = [(lambda c: c if "$" in c else _tex_escape(c)) for _ in header]
    lines = [
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{Stream \\texttt{{{_tex_escape(stream)}}}: score on each task right after learning it / "
        "general-suite average at that point, then continual-learning metrics (\\%, mean$_{\\pm\\mathrm{95\\%\\ CI}}$ "
        "over seeds).}",
        f"\\begin{{tabular}}{{{cols}}}",
        "\\toprule",
        " & ".join(fmt[i](h) for i, h in enumerate(header)) + " \\\\",
        "\\midrule",
    ]
    for k, row in enumerate(rows):
        lines.append(" & ".join(fmt[i](c) for i, c in enumerate(row)) + " \\\\")
        if k == 0:
            lines.append("\\midrule")  # the base model row stands apart, as in the paper
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(lines)


def _matrix_table(group: Group) -> tuple[list[str], list[list[str]]]:
    R, Rh = mean_matrix(group, "R")
    G, _ = mean_matrix(group, "G")
    X, Xh = mean_matrix(group, "extra")
    gavg = clm.general_average(G.to_numpy())
    header = ["after stage"] + list(R.columns) + [f"{c} †" for c in X.columns] + ["general avg"]
    rows = []
    for i in R.index:
        name = "0 (base)" if i == 0 else f"{i} ({R.columns[i - 1]})"
        cells = [name] + [_pct(R.loc[i, c], Rh.loc[i, c]) for c in R.columns]
        cells += [_pct(X.loc[i, c], Xh.loc[i, c]) for c in X.columns]
        rows.append(cells + [_pct(gavg[i], np.nan)])
    return header, rows


def _slug(text: str) -> str:
    return re.sub(r"[^\w\-.=]+", "_", text).strip("_")


# ---- the comparison sentence --------------------------------------------------------------------
def comparison_text(summary: pd.DataFrame, stream: str) -> str:
    """Which group leads on new-task accuracy, final general-suite average and forgetting, and whether
    the leaders' 95% CIs overlap. Computed from the table, never written by hand."""
    rows = summary[(summary["stream"] == stream) & (summary["method"] != BASE_LABEL)]
    if len(rows) < 2:
        return f"Stream `{stream}`: only one method ({rows['method'].iloc[0]}); nothing to compare."
    general = [c for c in rows.columns if c.endswith("/general") and rows[c].notna().any()]
    checks = [("new_task_acc", "new-task accuracy", True), ("forgetting", "forgetting (Chaudhry)", False)]
    if general:  # the last task's column holds the general-suite average after the final stage
        checks.insert(1, (general[-1], "final general-suite average", True))
    parts = []
    for col, name, higher in checks:
        ok = rows[rows[col].notna()]
        if len(ok) < 2:
            parts.append(f"{name} is undefined here")
            continue
        ranked = ok.sort_values(col, ascending=not higher)
        a, b = ranked.iloc[0], ranked.iloc[1]
        ha, hb = a[f"{col}_ci95"], b[f"{col}_ci95"]
        if not (np.isfinite(ha) and np.isfinite(hb)):
            verdict = "no CI with a single seed"
        elif abs(a[col] - b[col]) > ha + hb:
            verdict = "95% CIs do not overlap"
        else:
            verdict = "95% CIs overlap"
        word = "higher" if higher else "lower"
        if a[col] == b[col]:
            parts.append(f"{a['method']} and {b['method']} tie on {name} ({_pct(a[col], ha)})")
        else:
            parts.append(
                f"{a['method']} has the {word} {name} ({_pct(a[col], ha)} vs {_pct(b[col], hb)} "
                f"for {b['method']}; {verdict})"
            )
    return f"Stream `{stream}`: " + "; ".join(parts) + "."


# ---- plots --------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window, works without a display
    import matplotlib.pyplot as plt

    return plt


def _stage_ticks(ax, tasks: list[str]) -> None:
    ax.set_xticks(range(len(tasks) + 1))
    ax.set_xticklabels(["base"] + [f"{i}:{t}" for i, t in enumerate(tasks, 1)], rotation=30, ha="right")
    ax.set_xlabel("after stage (task learned)")


def _line(ax, x, mean, half, label, color, clip: tuple[float, float] | None = (0.0, 1.0)) -> None:
    """A mean curve with its CI band; scores live in [0, 1], so the band is clipped there (with 2 seeds
    a t-interval is wide enough to leave the range and squash the curves)."""
    ax.plot(x, mean, marker="o", label=label, color=color)
    if np.isfinite(half).any():
        lo, hi = mean - half, mean + half
        if clip is not None:
            lo, hi = np.clip(lo, *clip), np.clip(hi, *clip)
        ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)


def _colors(groups: list[Group]) -> dict[str, Any]:
    plt = _plt()
    cmap = plt.get_cmap("tab10")
    return {g.label: cmap(i % 10) for i, g in enumerate(groups)}


def plot_forgetting(groups: list[Group], path: Path, normalized: bool = False) -> None:
    """One panel per stream task: its score after every stage, one line per group (CI band if n > 1)."""
    plt = _plt()
    tasks = groups[0].tasks
    colors = _colors(groups)
    best = clm.best_scores([mean_matrix(g)[0].to_numpy() for g in groups]) if normalized else None
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.8), squeeze=False, sharey=True)
    for j, (ax, task) in enumerate(zip(axes[0], tasks, strict=True)):
        for g in groups:
            if normalized:
                # per seed, against the common best of the group means; then mean and CI over seeds
                per_run = np.stack(
                    [clm.normalized_scores(r.R.to_numpy(dtype=float), best)[:, j] for r in g.runs]
                )
                y, h, _ = mean_ci(per_run, axis=0)
            else:
                mean, half = (m.to_numpy() for m in mean_matrix(g))
                y, h = mean[:, j], half[:, j]
            _line(
                ax, np.arange(len(y)), y, h, g.label, colors[g.label], clip=None if normalized else (0.0, 1.0)
            )
        ax.axvline(j + 1, color="grey", linestyle=":", linewidth=1)  # the stage that trains this task
        if normalized:
            for level in (0.0, 1.0):
                ax.axhline(level, color="grey", linewidth=0.6)
            ax.set_ylim(-0.6, 1.4)  # below 0 = worse than the base model; bands beyond are cut
        else:
            ax.set_ylim(-0.03, 1.03)
        ax.set_title(task)
        _stage_ticks(ax, tasks)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("normalized score (0 = base, 1 = best)" if normalized else "score")
    axes[0][-1].legend(loc="best", fontsize=8)
    title = "Normalized scores" if normalized else "Forgetting curves"
    fig.suptitle(f"{title}: stream {groups[0].stream} (dotted: stage that trains the task)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_general(groups: list[Group], path: Path) -> None:
    """General-suite average after every stage, one line per group (CI band over seeds if n > 1)."""
    plt = _plt()
    colors = _colors(groups)
    tasks = groups[0].tasks
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for g in groups:
        per_run = np.stack([clm.general_average(r.G.to_numpy(dtype=float)) for r in g.runs])
        mean, half, _ = mean_ci(per_run, axis=0)
        _line(ax, np.arange(len(mean)), mean, half, g.label, colors[g.label])
    _stage_ticks(ax, tasks)
    ax.set_ylabel("general-suite average score")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(f"Prior capabilities: stream {groups[0].stream}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_heatmap(group: Group, path: Path) -> None:
    """The mean accuracy matrix as a heat map with the numbers written in the cells."""
    plt = _plt()
    mean = mean_matrix(group)[0]
    values = mean.to_numpy()
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
    ax.set_title(f"{group.label}, stream {group.stream} (mean of {len(group.runs)} seed(s))")
    fig.colorbar(image, ax=ax, label="score")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- the report ---------------------------------------------------------------------------------
def _eval_sizes(tracker: Tracker, runs: list[RunResult]) -> str:
    """Items actually evaluated per task (`n_items/<task>` on the stage-0 child of one run per stream),
    which is min(eval.limit, size of the eval set); empty when the loop did not log them."""
    sizes: dict[str, set[int]] = {}
    for run in {r.stream: r for r in runs}.values():
        for child in tracker.children(run.run_id):
            if child.data.tags.get("stage") == "0":
                for key, value in child.data.metrics.items():
                    if key.startswith("n_items/"):
                        sizes.setdefault(key.split("/", 1)[1], set()).add(int(value))
    return ", ".join(f"{task} {'/'.join(map(str, sorted(n)))}" for task, n in sorted(sizes.items()))


def _facts(runs: list[RunResult], skipped: int, sizes: str) -> list[str]:
    def values(get) -> str:
        return ", ".join(sorted({str(get(r)) for r in runs}))

    facts = [
        f"Model: {values(lambda r: r.model + (' (random init)' if r.params.get('model.random_init') == 'True' else ''))}",
        f"Seeds: {values(lambda r: r.seed)} ({len(runs)} complete runs"
        + (f"; {skipped} incomplete runs ignored)" if skipped else ")"),
        f"Evaluation items per task (`eval.limit`; None = the full eval set): "
        f"{values(lambda r: r.params.get('eval.limit', 'not logged'))}"
        + (f"; evaluated: {sizes}" if sizes else ""),
        f"Streams: {values(lambda r: r.stream + ' = ' + ' -> '.join(r.R.columns))}",
        "General suite: " + values(lambda r: ", ".join(r.G.columns) or "none"),
    ]
    scores = np.concatenate([np.ravel(m.to_numpy(dtype=float)) for r in runs for m in (r.R, r.G)])
    scores = scores[np.isfinite(scores)]
    if scores.size and (scores.min() < 0 or scores.max() > 1):
        # every table and plot assumes scores in [0, 1]; say so loudly instead of printing 300%
        facts.append(
            f"WARNING: some logged scores lie outside [0, 1] (range {scores.min():g} to "
            f"{scores.max():g}): the metric chosen for R or G is not an accuracy; check the task's metric"
        )
    return facts


def write_report(cfg: Any) -> Path:
    """Write every table, plot and report.html for `cfg.experiment_name`; returns the output folder."""
    uri = tracking_uri(cfg)
    tracker = Tracker(uri, cfg.experiment_name, create=False)
    runs = load_runs(tracker)
    skipped = len(tracker.parents(complete_only=False)) - len(runs)
    if not runs:
        raise ValueError(
            f"experiment {cfg.experiment_name!r} in {uri} has no complete runs yet "
            f"({skipped} incomplete); finish or resume them with `harness run` first"
        )
    out = results_path(cfg) / cfg.experiment_name
    out.mkdir(parents=True, exist_ok=True)
    groups = group_runs(runs)
    summary = summary_table(groups)
    summary.round(10).to_csv(out / "summary.csv", index=False)  # drop float noise like 0.22499999999999998
    pd.DataFrame(
        [
            {
                "run_id": r.run_id,
                "stream": r.stream,
                "method": r.method,
                "seed": r.seed,
                "model": r.model,
                "group": g.label,
            }
            for g in groups
            for r in g.runs
        ]
    ).to_csv(out / "runs.csv", index=False)

    facts = _facts(runs, skipped, _eval_sizes(tracker, runs))
    md = (
        [f"# Results: experiment `{cfg.experiment_name}`", ""]
        + [f"- {f}" for f in facts]
        + [
            "",
            "Scores in %; `a ± b` = mean over seeds ± 95% CI half-width (t-distribution); n = runs. Per task: "
            "score right after learning it / general-suite average at that point. BWT, FWT, Forgetting "
            "(Chaudhry) and general Δ as in docs/design.md §5 (Forgetting: lower is better; the rest: higher).",
            "",
        ]
    )
    tex: list[str] = ["% generated by `harness report`; needs \\usepackage{booktabs}", ""]
    body_html: list[str] = [
        f"<h1>Results: experiment {html.escape(cfg.experiment_name)}</h1>",
        "<ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in facts) + "</ul>",
        f"<p>{html.escape(md[-2])}</p>",
    ]
    images: list[Path] = []
    for stream in dict.fromkeys(g.stream for g in groups):
        members = [g for g in groups if g.stream == stream]
        header, rows = _cells(summary, stream)
        sentence = comparison_text(summary, stream)
        md += [f"## Stream `{stream}`", "", _md_table(header, rows), "", sentence, ""]
        tex.append(_tex_table(stream, *_cells(summary, stream, tex=True)))
        body_html += [
            f"<h2>Stream {html.escape(stream)}</h2>",
            _html_table(header, rows),
            f"<p>{html.escape(sentence)}</p>",
        ]
        s = _slug(stream)
        plots = [
            (out / f"forgetting_{s}.png", "Forgetting curves"),
            (out / f"normalized_{s}.png", "Normalized scores (paper Fig. 3)"),
        ]
        plot_forgetting(members, plots[0][0])
        plot_forgetting(members, plots[1][0], normalized=True)
        if any(r.G.shape[1] for g in members for r in g.runs):
            plots.append((out / f"general_{s}.png", "General-suite average"))
            plot_general(members, plots[-1][0])
        for g in members:
            name = f"{s}_{_slug(g.label)}"
            mean_matrix(g)[0].to_csv(out / f"matrix_{name}.csv")
            mh, mr = _matrix_table(g)
            table = _md_table(mh, mr)
            (out / f"matrix_{name}.md").write_text(
                f"Accuracy matrix, {g.label}, stream {stream} (%, mean over {len(g.runs)} run(s))\n\n{table}\n"
            )
            heat = out / f"heatmap_{name}.png"
            plot_heatmap(g, heat)
            plots.append((heat, f"Accuracy matrix: {g.label}"))
            caption = f"Accuracy matrix: {g.label} (rows: after stage i, 0 = base; % mean ± 95% CI)"
            md += [f"### {caption}", "", table, ""]
            body_html += [f"<h3>{html.escape(caption)}</h3>", _html_table(mh, mr)]
            if len(g.runs[0].extra.columns):
                md.append("† further eval task of a stream task (logged beside the accuracy matrix)\n")
        md += [f"![{title}]({p.name})" for p, title in plots] + [""]
        for p, title in plots:
            data = base64.b64encode(p.read_bytes()).decode()
            body_html.append(
                f"<figure><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{html.escape(title)}</figcaption></figure>"
            )
        images += [p for p, _ in plots]

    (out / "summary.md").write_text("\n".join(md))
    (out / "summary.tex").write_text("\n".join(tex))
    (out / "report.html").write_text(
        _HTML.format(title=html.escape(cfg.experiment_name), body="\n".join(body_html))
    )
    return out


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}: continual-learning report</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border-top: 1px solid #ccc; border-bottom: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
thead th {{ border-bottom: 2px solid #444; }}
img {{ max-width: 100%; }} figure {{ margin: 1.5em 0; }} figcaption {{ color: #555; }}
</style></head><body>
{body}
</body></html>
"""
