"""The names and keys of the tracking contract (harness.tracking.store): MLflow's limits, the tags that mark
parent and stage runs, metric-key sanitising, lm-eval results as flat metrics, the flattened config as
params, the run key, MLflow's source tags, and the reachability check of a tracking server. No MLflow
client here: harness.run.preflight uses these without opening a store."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from harness.eval.results import NON_SCORE_KEYS

# MLflow's own limits (mlflow.utils.validation); repeated here so that we truncate instead of crashing.
MAX_PARAM_VALUE = 6000
MAX_KEY = 250
MAX_TAG_VALUE = 5000
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100

ITEMS_ARTIFACT = (
    "items.csv.gz"  # per stage run: one row per (eval task, item); harness.eval.results.item_frame
)

ROLE = "harness.role"
COMPLETE = "harness.complete"
ERROR = "harness.error"
PARENT_ID = "mlflow.parentRunId"  # MLflow's own nesting tag: the UI shows children under the parent

# Config keys that say where things go or how they are shown, not what is computed: excluded from the
# run key (resuming from another directory finds the same run) and from the report's grouping.
NON_RESULT_KEYS = frozenset(
    {
        "results_dir",
        "tracking_uri",
        "print_config",
        "checkpoints",
        "experiment_name",
        "model.cache_dir",
        "eval.log_samples",
        "eval.fsdp_sharing",  # who evaluates under FSDP; the merged scores are one process's
    }
)
# whole sections of that kind: what the console shows (`harness.verbose`), how the report names groups
NON_RESULT_SECTIONS = ("harness.", "report.")


def is_result_key(key: str) -> bool:
    """Whether a flattened config key (`trainer.lr`) can change results (NON_RESULT_* say which cannot)."""
    return key not in NON_RESULT_KEYS and not key.startswith(NON_RESULT_SECTIONS)


# MLflow allows alphanumerics, _ - . / space and (not on Windows) ':'; everything else becomes '_'.
_ILLEGAL = re.compile(r"[^\w\-./ ]")


def sanitize_metric_key(key: str) -> str:
    """A legal MLflow metric/param key for `key`.

    lm-eval names metrics `<metric>,<filter>`: the default filter `none` is dropped (`acc,none` -> `acc`,
    `exact_match,none` -> `exact_match`); any other filter is kept with an underscore so that two filters
    of one metric stay distinct (`exact_match,strict-match` -> `exact_match_strict-match`). Other illegal
    characters become `_`; empty path segments and leading/trailing slashes are removed because MLflow
    rejects keys that are not normalised paths.
    """
    metric, sep, filt = key.partition(",")
    if sep:
        key = metric if filt in ("none", "") else f"{metric}_{filt}"
    key = _ILLEGAL.sub("_", key)
    parts = [p for p in key.split("/") if p not in ("", ".")]
    key = "/".join(p if p != ".." else "__" for p in parts)
    if not key:
        raise ValueError("metric key is empty after sanitising")
    return key[:MAX_KEY]


def lm_eval_metrics(results: Mapping[str, Any]) -> dict[str, float]:
    """`<task>/<metric>` -> value for every numeric entry of lm-eval's `results["results"]` (or of the
    per-task mapping itself). Non-numeric entries (`alias`, stderr `"N/A"`) and bookkeeping are skipped."""
    per_task = results.get("results", results)
    out: dict[str, float] = {}
    for task, values in per_task.items():
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if name.split(",")[0] in NON_SCORE_KEYS:  # lm-eval's bookkeeping (sample_len), not a score
                continue
            out[sanitize_metric_key(f"{task}/{name}")] = float(value)
    return out


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> {"a.b.c": "value"}; lists as JSON, values truncated to MLflow's param limit."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, prefix=f"{name}."))
            continue
        is_list = isinstance(value, Sequence) and not isinstance(value, (str, bytes))  # ListConfig too
        text = json.dumps(list(value), default=str) if is_list else str(value)
        flat[sanitize_metric_key(name)] = text[:MAX_PARAM_VALUE]
    return flat


def run_key(config: Mapping[str, Any]) -> str:
    """A stable hash of everything in the resolved config that can change results (seed included)."""
    flat = {k: v for k, v in flatten_config(config).items() if is_result_key(k)}
    return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:16]


def source_tags() -> dict[str, str]:
    """MLflow's run-context tags (user, entry point, source type, git commit), what `mlflow.start_run`
    adds; a run created through `MlflowClient.create_run` gets none of them otherwise. The commit falls
    back to the repository holding this package when the entry point is not inside one."""
    try:
        from mlflow.tracking.context.registry import resolve_tags

        tags = {k: str(v) for k, v in resolve_tags().items()}
    except Exception:  # a broken context provider must not stop an experiment
        tags = {}
    if "mlflow.source.git.commit" not in tags:
        try:
            from mlflow.utils.git_utils import get_git_commit

            commit = get_git_commit(str(Path(__file__).resolve().parent))
        except Exception:
            commit = None
        if commit:
            tags["mlflow.source.git.commit"] = commit
    return tags


def now_ms() -> int:
    return int(time.time() * 1000)


def chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, with advice, when an http(s) tracking server does not answer.

    MLflow itself retries a dead server for minutes (MLFLOW_HTTP_REQUEST_MAX_RETRIES, default 7 with
    exponential backoff); one direct request settles it first. Any HTTP answer (even 401 or 404)
    counts as reachable: authentication and paths are MLflow's business, not this check's.
    """
    if urlparse(uri).scheme not in ("http", "https"):
        return
    import requests  # a dependency of mlflow

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout_s)
    except requests.RequestException as err:
        raise ConnectionError(
            f"MLflow tracking server {uri} is not reachable ({type(err).__name__}). Start it "
            f"(e.g. `mlflow server --port {urlparse(uri).port or 5000}`), fix tracking_uri, or set "
            "tracking_uri=null to use the local SQLite store under results_dir."
        ) from None
