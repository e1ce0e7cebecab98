"""`harness report`: every table, plot and report.html of one experiment, read from MLflow or rebuilt from its
results folder (`harness report --folder DIR`)."""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from harness.config import Config, results_path, tracking_uri
from harness.report import render
from harness.report.diagnostics import TRAIN_COLUMNS
from harness.report.folder import DETAILS, details_frame, load_folder
from harness.report.labels import Display, assign_labels
from harness.report.runs import Group, RunResult, group_runs, load_runs, seed_order
from harness.report.sections import build_sections
from harness.tracking.store import Tracker


def _write_items(runs: list[RunResult], out: Path) -> None:
    """Every run's item-level results in one file beside the report (`items.csv.gz`: stream, method, seed,
    order, run_key, then the stage runs' columns), so the report's statistics can be recomputed from the results
    folder alone, without the MLflow store. Runs are named by their run key and rows sorted, so that rerunning
    the same experiment rewrites the same bytes (MLflow's run ids are new every time)."""
    frames = [
        r.items.assign(stream=r.stream, method=r.method, seed=r.seed, order=r.order, run_key=r.key)
        for r in runs
        if r.items is not None
    ]
    if not frames:
        return
    items = pd.concat(frames, ignore_index=True)
    first = ["stream", "method", "seed", "order", "run_key", "stage", "task"]
    items = items[first + [c for c in items.columns if c not in first and c != "run"]]
    items = items.sort_values([*first, "doc_id"], kind="stable", key=_natural).reset_index(drop=True)
    items.to_csv(out / "items.csv.gz", index=False, compression={"method": "gzip", "mtime": 0})


def _natural(column: pd.Series) -> pd.Series:
    """Sort numbers as numbers (seed 10 after seed 9) and text as text."""
    numbers = pd.to_numeric(column, errors="coerce")
    return numbers if numbers.notna().all() else column.astype(str)


def write_report(cfg: Config | DictConfig, display: Display | None = None) -> Path:
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
    assign_labels(groups, getattr(getattr(cfg, "report", None), "labels", None), display)
    _write_outputs(cfg.experiment_name, runs, groups, skipped, out)
    return out


def write_folder_report(
    folder: Path, labels: Mapping[str, str] | None = None, display: Display | None = None
) -> Path:
    """Rewrite the report in `folder` from the folder alone (runs.csv, items.csv.gz, details.csv): new labels,
    the current interval method, no MLflow store. Figures that need what the folder lacks (a folder written
    before details.csv: the step curves and diagnostics) are not drawn, and the report says so."""
    groups = load_folder(folder)
    if not groups:
        raise ValueError(f"{folder}: runs.csv names no run that has items in items.csv.gz")
    # the labels the folder's report had (a config's `report.labels` among them) stay unless --label changes
    # them; a folder from before readable labels has override strings there, which are not kept
    kept = {g.overrides: g.label for g in groups if g.label != g.overrides}
    assign_labels(groups, {**kept, **dict(labels or {})}, display)
    runs = [r for g in groups for r in g.runs]
    notes = (
        []
        if (folder / DETAILS).is_file()
        else [
            f"Rebuilt from the results folder, which has no {DETAILS} (written before it existed): the per-step "
            "curves, the teacher's in-context scores and the self-distillation diagnostics of these runs are "
            "not in it and are left out."
        ]
    )
    _write_outputs(folder.resolve().name, runs, groups, 0, folder, notes, details=not notes)
    return folder


def _write_outputs(
    name: str,
    runs: list[RunResult],
    groups: list[Group],
    skipped: int,
    out: Path,
    notes: list[str] = (),
    details: bool = True,
) -> None:
    """Every file of the report; `details=False` for a rebuild from a folder that had no details.csv (what it
    would hold is not known, and an empty one would hide that)."""
    sections, summary = build_sections(name, runs, groups, skipped, out)
    sections[0].bullets.extend(notes)
    # the machine-readable name of each row beside the readable one (empty for the base model)
    overrides = {(g.stream, g.label): g.overrides for g in groups}
    keys = zip(summary["stream"], summary["method"], strict=True)
    summary.insert(2, "overrides", [overrides.get(k, k[1]) for k in keys])  # the base model's row: its label
    summary.round(10).to_csv(out / "summary.csv", index=False)  # drop float noise like 0.22499999999999998
    ordered = [
        (g, r) for g in groups for r in sorted(g.runs, key=lambda r: (seed_order(r.seed), r.order, r.key))
    ]
    pd.DataFrame(
        [
            {
                "run_key": r.key,
                "stream": r.stream,
                "method": r.method,
                "seed": r.seed,
                "order": r.order,
                "tasks": " -> ".join(r.tasks),
                "model": r.model,
                "group": g.label,
                "overrides": g.overrides,
                "item_level": r.items is not None,
            }
            for g, r in ordered
        ]
    ).to_csv(out / "runs.csv", index=False)
    _write_items(runs, out)
    if details:
        details_frame([(r, g.split) for g, r in ordered], [k for k, _, _ in TRAIN_COLUMNS]).to_csv(
            out / DETAILS, index=False
        )
    (out / "summary.md").write_text(render.markdown(sections))
    (out / "summary.tex").write_text(render.latex(sections))
    (out / "report.html").write_text(render.html_page(name, sections))


def folder_command(argv: list[str], display: Display | None, description: str) -> Path:
    """`--folder DIR [--label GROUP=TEXT ...]` parsed and carried out (argparse exits 2 on bad arguments)."""
    parser = argparse.ArgumentParser(prog="harness report", description=description)
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--label", action="append", default=[], metavar="GROUP=TEXT")
    args = parser.parse_args(argv)
    labels = {}
    for given in args.label:
        key, sep, text = given.rpartition("=")
        if not sep or not key:
            parser.error(f"--label {given!r}: expected GROUP=TEXT (GROUP: a method name or override string)")
        labels[key] = text
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's empty-slice notes on absent curves
        return write_folder_report(args.folder, labels, display)
