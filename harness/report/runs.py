"""`harness report`: MLflow -> pandas -> sections (tables, sentences, figures) -> Markdown, LaTeX, HTML.

Reads only what `harness.tracking.store` wrote (the tracking contract in docs/ARCHITECTURE.md): the complete
parent runs of one experiment, their tags and params, their `score/<task>` / `general/<task>` /
`extra/<task>` curves (step = stage), and from each stage run the per-step curves (`train_step/*`,
`step_eval/score`), the teacher's in-context score and `items.csv.gz` (every eval item's score). Nothing
else, so runs logged on a cluster and on a laptop mix.

Runs are grouped by stream x method x any param that varies between runs of that method (a swept
`trainer.lr`, say), ignoring the seed, the task order (`stream.order`: runs in several orders are one
group, with a per-order breakdown) and the keys in `tracking.NON_RESULT_KEYS`. Every number is a mean over
a group's runs with a 95% interval from the crossed seed x item estimate (`harness.report.crossed`).

This module loads and groups; `harness.report.sections` builds the sections, `harness.report.plots` draws,
`harness.report.render` writes Markdown / LaTeX / HTML. Everything lands in <results_dir>/<experiment_name>/:
    summary.md  summary.csv  summary.tex  report.html  runs.csv
    matrix_<stream>_<group>.csv / .md      (mean accuracy matrix, rows = after stage i, 0 = base)
    forgetting_<stream>.png  general_<stream>.png  normalized_<stream>.png  heatmap_<stream>_<group>.png
    training_<stream>.png  within_<stream>.png   (when the runs logged step curves)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.report.stats import Scores
from harness.tracking.keys import is_result_key
from harness.tracking.store import NON_RESULT_KEYS, Tracker, sanitize_metric_key

BASE_LABEL = "base model"
_GROUP_IGNORED = NON_RESULT_KEYS | {"seed", "stream_tasks", "suite_tasks", "method.name", "stream.order"}
STEP_CURVES = ("train_step/loss", "train_step/grad_norm", "step_eval/score")
ITEM_TOLERANCE = 1e-6  # item means must reproduce the logged score this closely to be used


@dataclass
class RunResult:
    run_id: str
    method: str
    stream: str
    seed: str
    model: str
    params: dict[str, str]
    R: pd.DataFrame  # index = stage 0..T, columns = stream tasks in this run's training order
    G: pd.DataFrame  # index = stage 0..T, columns = suite tasks
    extra: pd.DataFrame  # further eval tasks (e.g. knowledge_ood), possibly with no columns
    order: str = "0"
    items: pd.DataFrame | None = None  # stage, task, doc_id, score, generation, target, prompt (all stages)
    curves: dict[int, dict[str, dict[int, float]]] = field(default_factory=dict)  # stage -> key -> step -> v
    in_context: dict[int, float] = field(default_factory=dict)  # stage -> teacher in-context score
    eval_sizes: dict[str, int] = field(default_factory=dict)  # n_items/<task> at stage 0
    train: dict[int, dict[str, float]] = field(default_factory=dict)  # stage -> train/<key> (stage summary)
    pass_k: dict[int, dict[str, float]] = field(default_factory=dict)  # stage -> pass_at_<k>/<task>
    key: str = ""  # the run key (tag `run_key`): the same for a rerun of the same config, unlike run_id

    @property
    def tasks(self) -> list[str]:
        return list(self.R.columns)


@dataclass
class Group:
    stream: str
    method: str
    label: str  # what the report shows (harness.report.labels); the override string until labels are set
    runs: list[RunResult] = field(default_factory=list)
    overrides: str = ""  # "sdft (method.distill.sft_weight=1.0)": the method and the params that split it off
    split: tuple[tuple[str, str], ...] = ()  # those params as (key, value)

    @property
    def tasks(self) -> list[str]:
        return list(self.runs[0].R.columns)

    def orders(self) -> dict[str, list[RunResult]]:
        """Runs per task order (sorted by seed), orders sorted."""
        out: dict[str, list[RunResult]] = {}
        for r in self.runs:
            out.setdefault(r.order, []).append(r)
        # orders sorted (0, 1, 2, ..., then names), not as first seen: a report rebuilt from its folder
        # meets the runs in another order than the store returned them
        return {k: sorted(out[k], key=lambda r: seed_order(r.seed)) for k in sorted(out, key=seed_order)}

    def stack(self, attr: str) -> np.ndarray:
        """(n_runs, T+1, columns) array of one matrix over the group's seeds (one task order only)."""
        return np.stack([getattr(r, attr).to_numpy(dtype=float) for r in self.runs])


def seed_order(seed: str) -> tuple:
    return (0, int(seed), "") if seed.lstrip("-").isdigit() else (1, 0, seed)


# ---- reading MLflow -----------------------------------------------------------------------------
def load_runs(tracker: Tracker, details: bool = True) -> list[RunResult]:
    """Every complete parent run of the experiment, its matrices rebuilt from the metric curves; with
    `details`, also its stage runs' step curves, in-context scores and item-level scores."""
    out = []
    for run in tracker.parents(complete_only=True):
        params, tags = dict(run.data.params), run.data.tags
        tasks = json.loads(params["stream_tasks"])
        suite = json.loads(params.get("suite_tasks", "[]"))
        stages = list(range(len(tasks) + 1))
        rid = run.info.run_id
        extra_names = sorted(k.split("/", 1)[1] for k in run.data.metrics if k.startswith("extra/"))
        result = RunResult(
            run_id=rid,
            method=tags.get("method", params.get("method.name", "?")),
            stream=tags.get("stream", params.get("stream.name", "?")),
            seed=tags.get("seed", params.get("seed", "?")),
            model=tags.get("model", params.get("model.name", "?")),
            params=params,
            R=_curves(tracker, rid, "score", tasks, stages),
            G=_curves(tracker, rid, "general", suite, stages),
            extra=_curves(tracker, rid, "extra", extra_names, stages),
            order=tags.get(
                "order", "0" if params.get("stream.order") in (None, "None") else params["stream.order"]
            ),
            key=tags.get("run_key", rid),
        )
        if details:
            _load_details(tracker, result)
        out.append(result)
    return out


def _curves(tracker: Tracker, run_id: str, prefix: str, names: list[str], stages: list[int]) -> pd.DataFrame:
    """stage x name frame of the curves `<prefix>/<name>` (NaN where a stage was never logged)."""
    cols = {}
    for name in names:
        hist = tracker.history(run_id, sanitize_metric_key(f"{prefix}/{name}"))
        cols[name] = [hist.get(s, np.nan) for s in stages]
    return pd.DataFrame(cols, index=pd.Index(stages, name="stage"), columns=names, dtype=float)


def _load_details(tracker: Tracker, run: RunResult) -> None:
    frames = []
    for child in tracker.children(run.run_id):
        if child.info.status != "FINISHED":
            continue
        stage = int(child.data.tags.get("stage", -1))
        metrics = child.data.metrics
        run.train[stage] = {
            k.split("/", 1)[1]: float(v) for k, v in metrics.items() if k.startswith("train/")
        }
        run.pass_k[stage] = {k: float(v) for k, v in metrics.items() if k.startswith("pass_at_")}
        if "train/teacher_in_context_acc" in metrics:
            run.in_context[stage] = float(metrics["train/teacher_in_context_acc"])
        if stage == 0:
            run.eval_sizes = {
                k.split("/", 1)[1]: int(v) for k, v in metrics.items() if k.startswith("n_items/")
            }
        run.curves[stage] = {k: tracker.history(child.info.run_id, k) for k in STEP_CURVES if k in metrics}
        items = tracker.read_items(child.info.run_id)
        if items is not None:
            frames.append(items.assign(stage=stage))
    if frames:
        run.items = pd.concat(frames, ignore_index=True)


def group_runs(runs: list[RunResult]) -> list[Group]:
    """Group by stream x method x every param that varies within that method's runs (seed and task order
    excluded: one group holds a method's runs in every order)."""
    groups: dict[tuple, Group] = {}
    by_method: dict[tuple[str, str], list[RunResult]] = {}
    for r in runs:
        by_method.setdefault((r.stream, r.method), []).append(r)
    for (stream, method), members in sorted(by_method.items()):
        keys = sorted(k for k in {k for r in members for k in r.params} - _GROUP_IGNORED if is_result_key(k))
        varying = [k for k in keys if len({r.params.get(k) for r in members}) > 1]
        for r in members:
            split = tuple((k, r.params.get(k, "-")) for k in varying)
            label = method + (" (" + ", ".join(f"{k}={v}" for k, v in split) + ")" if split else "")
            group = groups.setdefault(
                (stream, method, split), Group(stream, method, label, overrides=label, split=split)
            )
            if group.runs and sorted(group.runs[0].R.columns) != sorted(r.R.columns):
                raise ValueError(
                    f"runs {group.runs[0].run_id} and {r.run_id} of stream {stream!r} have different task lists; "
                    "rename one of the streams"
                )
            group.runs.append(r)
    return list(groups.values())


# ---- item-level scores --------------------------------------------------------------------------
def _column(runs: list[RunResult], name: str, frame: str, stages: int) -> tuple[np.ndarray, bool]:
    """(runs, stages, items) scores of one task: item-level when every run has every stage's items and
    their means reproduce the logged scores; else one pseudo-item per run and stage (the logged mean)."""
    logged = np.stack([getattr(r, frame)[name].to_numpy(dtype=float)[:stages] for r in runs])
    per_run = []
    for r in runs:
        if r.items is None:
            break
        sub = r.items[r.items["task"] == name]
        table = sub.pivot_table(index="stage", columns="doc_id", values="score", aggfunc="first")
        if sorted(table.index) != list(range(stages)) or table.isna().any().any():
            break
        per_run.append(table.sort_index().sort_index(axis=1))
    ids = {tuple(t.columns) for t in per_run}
    if len(per_run) == len(runs) and len(ids) == 1:
        x = np.stack([t.to_numpy(dtype=float) for t in per_run])
        ok = np.isnan(logged) | (np.abs(x.mean(axis=-1) - logged) < ITEM_TOLERANCE)
        if ok.all():
            return x, True
    return logged[..., None], False


def scores_of(runs: list[RunResult], order: str, suite_attr: str = "G") -> Scores:
    """`harness.report.stats.Scores` of runs that share one task order; `suite_attr="extra"` puts the further eval
    tasks where the general suite usually goes (their intervals come out of `stats.general_cell`)."""
    tasks = runs[0].tasks
    suite = list(getattr(runs[0], suite_attr).columns)
    stages = len(tasks) + 1
    columns, item_level = {}, {}
    for name in tasks:
        columns[name], item_level[name] = _column(runs, name, "R", stages)
    for name in suite:
        columns[name], item_level[name] = _column(runs, name, suite_attr, stages)
    return Scores(order, [r.seed for r in runs], tasks, suite, columns, item_level)


def base_scores(runs: list[RunResult], tasks: list[str]) -> tuple[Scores, int]:
    """The base model as the distinct stage-0 evaluations among `runs` (a deterministic evaluation repeated
    by every run of a sweep is one evaluation, n = 1), as a Scores whose every stage repeats stage 0."""
    suite = list(runs[0].G.columns)
    distinct: dict[tuple, RunResult] = {}
    for r in runs:
        key = tuple(np.round(r.R.loc[0, tasks].to_numpy(dtype=float), 9)) + tuple(
            np.round(r.G.loc[0].to_numpy(dtype=float), 9)
        )
        if r.items is not None:
            zero = r.items[r.items["stage"] == 0].sort_values(["task", "doc_id"])
            key += tuple(zero["score"].round(9))
        distinct.setdefault(key, r)
    reps = list(distinct.values())
    columns, item_level = {}, {}
    stages = len(tasks) + 1
    for name, attr in [(t, "R") for t in tasks] + [(m, "G") for m in suite]:
        first, ok = _column([_stage0(r, tasks) for r in reps], name, attr, 1)
        columns[name], item_level[name] = np.repeat(first[:, :1], stages, axis=1), ok
    seeds = [f"base{i}" for i in range(len(reps))]
    return Scores("base", seeds, tasks, suite, columns, item_level), len(reps)


def _stage0(r: RunResult, tasks: list[str]) -> RunResult:
    """A view of a run's stage 0 with its columns in `tasks` order (orders differ; stage 0 does not)."""
    return RunResult(
        r.run_id,
        r.method,
        r.stream,
        r.seed,
        r.model,
        r.params,
        r.R.loc[[0], tasks],
        r.G.loc[[0]],
        r.extra.loc[[0]],
        r.order,
        None if r.items is None else r.items[r.items["stage"] == 0],
    )


def slug(text: str) -> str:
    return re.sub(r"[^\w\-.=]+", "_", text).strip("_")


# ---- the report ---------------------------------------------------------------------------------
