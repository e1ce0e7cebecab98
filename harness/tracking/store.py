"""MLflow tracking: one parent run per (method, stream, seed, swept keys), one child run per stage.

The layout is the "Tracking contract" of docs/ARCHITECTURE.md; `harness.report.runs` relies on nothing else.
Every call names its run explicitly through an `MlflowClient` (never mlflow's global active run), so two
runs in one process (a Hydra sweep, a test) cannot leak metrics into each other.

API used by the loop::

    tracker = Tracker(tracking_uri(cfg), cfg.experiment_name, results_path(cfg) / "mlartifacts")
    parent = tracker.open_parent(run_key(config), tags={...}, params=flatten_config(config),
                                 artifacts={"config.yaml": yaml_text})      # new, or the one to resume
    done = tracker.completed_stages(parent)          # {stage: metrics} of FINISHED children only;
                                                     # unfinished children (a killed stage) are deleted
    child = tracker.start_stage(parent, stage, task)  # RUNNING child: live step metrics go here
    tracker.log_steps(child, [{"step": 1, "loss": 2.3}])        # `train_step/<stat>` as they happen
    tracker.log_stage(parent, stage, task, metrics, step_stats, artifacts, run_id=child)  # FINISHED
    tracker.finish_parent(parent, R, G, final_metrics, config_yaml=...)     # idempotent
    tracker.mark_failed(parent, message)

Parent runs carry MLflow's source tags as `mlflow.start_run` would set them; stage runs may carry
`items.csv.gz` (`read_items`). Names and helpers (`run_key`, ...): harness.tracking.keys; artifact writing:
harness.tracking.artifacts.
"""

from __future__ import annotations

import io
import json
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, ViewType
from mlflow.exceptions import MlflowException

from harness.tracking.artifacts import log_artifacts, read_artifact_text
from harness.tracking.health import check_store
from harness.tracking.keys import (  # noqa: F401 (re-exported: the contract's names live with the Tracker)
    COMPLETE,
    ERROR,
    ITEMS_ARTIFACT,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VALUE,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VALUE,
    NON_RESULT_KEYS,
    PARENT_ID,
    ROLE,
    check_reachable,
    chunks,
    flatten_config,
    lm_eval_metrics,
    now_ms,
    run_key,
    sanitize_metric_key,
    source_tags,
)


class Tracker:
    """One MLflow experiment: creates it on first use (artifacts under `artifact_root`) and writes the
    parent/child runs of the tracking contract.

    `artifact_root` applies to local stores only: a tracking server decides where its artifacts live
    (a path on this machine would be useless to readers elsewhere). With `create=False` a missing store
    or experiment is an error instead of being created (what `harness report` wants).
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_name: str,
        artifact_root: Path | str | None = None,
        create: bool = True,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        check_reachable(tracking_uri)
        check_store(tracking_uri)
        if tracking_uri.startswith("sqlite:///"):
            db = Path(tracking_uri[len("sqlite:///") :])
            if not create and not db.exists():
                raise FileNotFoundError(
                    f"no MLflow store at {db}: run `harness run` first, or pass results_dir=/tracking_uri="
                )
            db.parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment_id = self._experiment(artifact_root, create)

    def _experiment(self, artifact_root: Path | str | None, create: bool) -> str:
        exp = self.client.get_experiment_by_name(self.experiment_name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                raise ValueError(
                    f"experiment {self.experiment_name!r} was deleted in MLflow ({self.tracking_uri}): "
                    "restore it (`mlflow experiments restore`), purge it (`mlflow gc`), or pick another "
                    "experiment_name"
                )
            return exp.experiment_id
        if not create:
            names = [e.name for e in self.client.search_experiments()]
            raise ValueError(
                f"no experiment {self.experiment_name!r} in {self.tracking_uri}; it has: {', '.join(names) or 'none'}"
            )
        location = None
        if artifact_root is not None and urlparse(self.tracking_uri).scheme not in ("http", "https"):
            slug = re.sub(r"[^\w\-.]", "_", self.experiment_name)
            path = Path(artifact_root).expanduser().resolve() / slug
            path.mkdir(parents=True, exist_ok=True)
            location = path.as_uri()
        try:
            return self.client.create_experiment(self.experiment_name, artifact_location=location)
        except MlflowException:
            # a parallel sweep job created it between our lookup and our create
            exp = self.client.get_experiment_by_name(self.experiment_name)
            if exp is None:
                raise
            return exp.experiment_id

    # ---- queries -------------------------------------------------------------------------------
    def search(self, filter_string: str = "", view: int = ViewType.ACTIVE_ONLY) -> list[Run]:
        """All runs of this experiment matching `filter_string`, following MLflow's pagination."""
        runs: list[Run] = []
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], filter_string, run_view_type=view, max_results=1000, page_token=token
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def parents(self, complete_only: bool = True) -> list[Run]:
        runs = self.search(f"tags.`{ROLE}` = 'parent'")
        if complete_only:
            runs = [r for r in runs if r.data.tags.get(COMPLETE) == "true"]
        return sorted(runs, key=lambda r: r.info.start_time or 0)

    def children(self, parent_id: str) -> list[Run]:
        return self.search(f"tags.`{PARENT_ID}` = '{parent_id}' and tags.`{ROLE}` = 'stage'")

    def is_complete(self, parent_id: str) -> bool:
        return self.client.get_run(parent_id).data.tags.get(COMPLETE) == "true"

    def history(self, run_id: str, key: str) -> dict[int, float]:
        """step -> value of one metric (the last value logged at each step)."""
        points = sorted(self.client.get_metric_history(run_id, key), key=lambda m: m.timestamp)
        return {m.step: m.value for m in points}

    # ---- the parent run ------------------------------------------------------------------------
    def open_parent(
        self,
        key: str,
        tags: Mapping[str, Any],
        params: Mapping[str, str],
        artifacts: Mapping[str, Any] | None = None,
        run_name: str | None = None,
    ) -> str:
        """The id of this experiment's parent run whose `run_key` tag is `key` (set RUNNING again: a resume), or of
        a new one. Params already on a resumed run are not re-logged: MLflow forbids changing a param,
        and keys outside the run key (e.g. results_dir) may legitimately differ between attempts."""
        found = self.search(f"tags.run_key = '{key}' and tags.`{ROLE}` = 'parent'")
        if found:
            # prefer a complete run, then the latest; more than one only after a manual copy
            run = max(found, key=lambda r: (r.data.tags.get(COMPLETE) == "true", r.info.start_time or 0))
            run_id = run.info.run_id
            self.client.update_run(run_id, status="RUNNING")
            if ERROR in run.data.tags:
                self.client.delete_tag(run_id, ERROR)
            existing = set(run.data.params)
        else:
            all_tags = {k: v[:MAX_TAG_VALUE] for k, v in source_tags().items()}
            all_tags.update({str(k): str(v)[:MAX_TAG_VALUE] for k, v in tags.items()})
            all_tags.update({ROLE: "parent", "run_key": key})
            name = run_name or "-".join(str(tags[k]) for k in ("method", "stream", "seed") if k in tags)
            run_id = self.client.create_run(
                self.experiment_id, tags=all_tags, run_name=name or None
            ).info.run_id
            existing = set()
        new = [Param(k, str(v)[:MAX_PARAM_VALUE]) for k, v in params.items() if k not in existing]
        for chunk in chunks(new, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, params=chunk)
        if artifacts:
            self.log_artifacts(run_id, artifacts)
        return run_id

    def finish_parent(
        self,
        parent_id: str,
        R: pd.DataFrame,
        G: pd.DataFrame,
        final_metrics: Mapping[str, float],
        extra: pd.DataFrame | None = None,
        config_yaml: str | None = None,
    ) -> None:
        """Curves `score/<task>`, `general/<task>`, `general/avg` (and `extra/<task>` for further eval
        tasks) with step = stage; `final/<metric>`; the matrices as CSV (and `config.yaml` when given); tag
        complete; status FINISHED.

        Idempotent: a (key, step) point already stored is not logged again, so a rerun after a crash in
        here completes what is missing without duplicating curve points.
        """
        points: list[tuple[str, int, float]] = []
        for prefix, frame in (("score", R), ("general", G), ("extra", extra)):
            if frame is None:
                continue
            for task in frame.columns:
                for stage, value in frame[task].items():
                    points.append((sanitize_metric_key(f"{prefix}/{task}"), int(stage), float(value)))
        if G.shape[1]:
            for stage, value in G.mean(axis=1).items():
                points.append(("general/avg", int(stage), float(value)))
        for name, value in final_metrics.items():
            points.append((sanitize_metric_key(f"final/{name}"), 0, float(value)))

        run = self.client.get_run(parent_id)
        logged: dict[str, set[int]] = {}
        for key in {k for k, _, _ in points}:
            logged[key] = (
                {m.step for m in self.client.get_metric_history(parent_id, key)}
                if key in run.data.metrics
                else set()
            )
        ts = now_ms()
        todo = [Metric(k, v, ts, s) for k, s, v in points if s not in logged[k]]
        for chunk in chunks(todo, MAX_METRICS_PER_BATCH):
            self.client.log_batch(parent_id, metrics=chunk)

        params = {"stream_tasks": json.dumps(list(R.columns)), "suite_tasks": json.dumps(list(G.columns))}
        missing = [Param(k, v) for k, v in params.items() if k not in run.data.params]
        if missing:
            self.client.log_batch(parent_id, params=missing)
        artifacts: dict[str, Any] = {
            "accuracy_matrix.csv": R.rename_axis("stage"),
            "general_matrix.csv": G.rename_axis("stage"),
        }
        if extra is not None:
            artifacts["extra_matrix.csv"] = extra.rename_axis("stage")
        if config_yaml is not None:
            artifacts["config.yaml"] = config_yaml
        self.log_artifacts(parent_id, artifacts)
        self.client.set_tag(parent_id, COMPLETE, "true")
        self.client.set_terminated(parent_id, "FINISHED")

    def mark_failed(self, parent_id: str, message: str, status: str = "FAILED") -> None:
        """Record why the run stopped (tag `harness.error`) and set `status` (FAILED, or KILLED for a run
        stopped by a signal), together with any stage run still RUNNING (the one that was training or
        evaluating); a rerun resumes it."""
        for child in self.children(parent_id):
            if child.info.status == "RUNNING":
                self.client.set_terminated(child.info.run_id, status)
        self.client.set_tag(parent_id, ERROR, message[:MAX_TAG_VALUE])
        self.client.set_terminated(parent_id, status)

    # ---- stage (child) runs --------------------------------------------------------------------
    def completed_stages(self, parent_id: str) -> dict[int, dict[str, float]]:
        """stage -> latest metrics of its child run, for FINISHED children only.

        A child that is not FINISHED belongs to a stage that was interrupted (killed, crashed): it is
        deleted here, so that the rerun's child for that stage is the only one the UI and report see.
        """
        done: dict[int, Run] = {}
        for run in sorted(self.children(parent_id), key=lambda r: r.info.start_time or 0):
            stage = int(run.data.tags["stage"])
            if run.info.status != "FINISHED":
                self.client.delete_run(run.info.run_id)
                continue
            if stage in done:  # two finished children of one stage: keep the latest
                self.client.delete_run(done[stage].info.run_id)
            done[stage] = run
        return {stage: dict(run.data.metrics) for stage, run in sorted(done.items())}

    def start_stage(self, parent_id: str, stage: int, task: str) -> str:
        """A RUNNING child run for `stage`, so that per-step metrics can be logged while it trains
        (`log_steps`); `log_stage(..., run_id=...)` completes it. Unfinished children of the same stage
        (an earlier attempt) are deleted; a FINISHED one is an error, as in `log_stage`."""
        self._clear_stage(parent_id, stage)
        tags = {PARENT_ID: parent_id, ROLE: "stage", "stage": str(stage), "task": task}
        return self.client.create_run(
            self.experiment_id, tags=tags, run_name=f"stage{stage}-{task}"
        ).info.run_id

    def log_steps(
        self, run_id: str, records: Sequence[Mapping[str, float]], prefix: str = "train_step"
    ) -> None:
        """`<prefix>/<stat>` for each record, at step = its `step` entry (required), timestamped now."""
        ts = now_ms()
        batch = [
            Metric(sanitize_metric_key(f"{prefix}/{name}"), float(v), ts, int(rec["step"]))
            for rec in records
            for name, v in rec.items()
            if name != "step"
        ]
        for chunk in chunks(batch, MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=chunk)

    def _clear_stage(self, parent_id: str, stage: int, keep: str | None = None) -> None:
        for run in self.children(parent_id):
            if int(run.data.tags["stage"]) != stage or run.info.run_id == keep:
                continue
            if run.info.status == "FINISHED":
                raise ValueError(
                    f"stage {stage} of parent run {parent_id} is already logged (run {run.info.run_id})"
                )
            self.client.delete_run(run.info.run_id)

    def read_items(self, run_id: str) -> pd.DataFrame | None:
        """The `items.csv.gz` artifact of a stage run, or None when the run has none (older runs)."""
        names = {f.path for f in self.client.list_artifacts(run_id)}
        if ITEMS_ARTIFACT not in names:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            path = self.client.download_artifacts(run_id, ITEMS_ARTIFACT, tmp)
            return pd.read_csv(
                path,
                compression="gzip",
                keep_default_na=False,
                dtype={"task": str, "generation": str, "target": str, "prompt": str},
            )

    def log_stage(
        self,
        parent_id: str,
        stage: int,
        task: str,
        metrics: Mapping[str, float],
        step_stats: list[Mapping[str, float]] | None = None,
        artifacts: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> str:
        """One child run for `stage` (task = the trained task, or "base" for stage 0).

        `metrics` are logged with step = stage under sanitised keys; `step_stats[k]` as
        `train_step/<stat>` with step = its `step` entry if present, else k + 1. `run_id` completes a
        child opened by `start_stage` instead of creating one. The child is set FINISHED only after
        everything is stored; any failure in between leaves it FAILED, which `completed_stages` treats
        as not done.
        """
        if run_id is not None:
            self._clear_stage(parent_id, stage, keep=run_id)
            return self._complete_stage(run_id, stage, metrics, step_stats, artifacts)
        for run in self.children(parent_id):
            if int(run.data.tags["stage"]) != stage:
                continue
            if run.info.status == "FINISHED":
                raise ValueError(
                    f"stage {stage} of parent run {parent_id} is already logged (run {run.info.run_id})"
                )
            self.client.delete_run(run.info.run_id)
        tags = {PARENT_ID: parent_id, ROLE: "stage", "stage": str(stage), "task": task}
        run_id = self.client.create_run(
            self.experiment_id, tags=tags, run_name=f"stage{stage}-{task}"
        ).info.run_id
        return self._complete_stage(run_id, stage, metrics, step_stats, artifacts)

    def _complete_stage(
        self,
        run_id: str,
        stage: int,
        metrics: Mapping[str, float],
        step_stats: list[Mapping[str, float]] | None,
        artifacts: Mapping[str, Any] | None,
    ) -> str:
        try:
            ts = now_ms()
            batch = [Metric(sanitize_metric_key(k), float(v), ts, stage) for k, v in metrics.items()]
            for k, stats in enumerate(step_stats or []):
                step = int(stats.get("step", k + 1))
                batch += [
                    Metric(sanitize_metric_key(f"train_step/{name}"), float(v), ts, step)
                    for name, v in stats.items()
                    if name != "step"
                ]
            for chunk in chunks(batch, MAX_METRICS_PER_BATCH):
                self.client.log_batch(run_id, metrics=chunk)
            if artifacts:
                self.log_artifacts(run_id, artifacts)
        except BaseException:
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED")
        return run_id

    # ---- artifacts -----------------------------------------------------------------------------
    def log_artifacts(self, run_id: str, artifacts: Mapping[str, Any]) -> None:
        """name -> str (text) | bytes | dict/list (JSON) | DataFrame (CSV) | Path (file copied); see
        harness.tracking.artifacts.log_artifacts."""
        log_artifacts(self.client, run_id, artifacts)

    def read_artifact_text(self, run_id: str, name: str) -> str:
        return read_artifact_text(self.client, run_id, name)

    def read_artifact_csv(self, run_id: str, name: str) -> pd.DataFrame:
        return pd.read_csv(io.StringIO(self.read_artifact_text(run_id, name)), index_col=0)
