"""What an lm-eval run becomes: `EvalResult` (scores, samples, every scored item), the score that enters
R or G (`primary_metric`), item-level frames, and the merge of several processes' results.

Pure data handling, no model and no torch: the tracking and report layers may read these names cheaply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class EvalResult:
    metrics: dict[str, dict[str, float]]  # lm-eval task -> {"exact_match,none": 0.5, ...}
    samples: list[dict[str, Any]] = field(default_factory=list)  # a few generations per task
    n_items: dict[str, int] = field(default_factory=dict)  # items actually scored per task
    raw: dict[str, Any] = field(default_factory=dict)  # lm-eval's results/configs, JSON-safe
    # every scored item (not only `samples`): task, doc_id, filter, prompt, generation, target, scores
    items: list[dict[str, Any]] = field(default_factory=list)


# Entries of lm-eval's per-task results that are bookkeeping, not scores.
NON_SCORE_KEYS = ("alias", "sample_len", "sample_count", "samples")


def score_keys(task_metrics: dict[str, Any]) -> list[str]:
    return [k for k in task_metrics if "stderr" not in k and k.split(",")[0] not in NON_SCORE_KEYS]


def primary_metric(task_metrics: dict[str, float], preferred: str | None = None) -> float:
    """The score that goes into the accuracy matrix: `preferred` if given, else the first score metric."""
    keys = score_keys(task_metrics)
    if preferred:
        for key in keys:
            if key.split(",")[0] == preferred:
                return float(task_metrics[key])
        raise KeyError(f"metric {preferred!r} not in lm-eval output {keys}")
    if not keys:
        raise KeyError("lm-eval returned no metric")
    return float(task_metrics[keys[0]])


def from_lm_eval(out: dict, limit: int | None, max_gen_toks: int | None, log_samples: int) -> EvalResult:
    """lm-eval's `simple_evaluate` output as an EvalResult: scores, a few samples per task, every item."""
    metrics = {
        task: {k: float(v) for k, v in vals.items() if isinstance(v, (int, float)) and not _is_nan(v)}
        for task, vals in out["results"].items()
    }
    samples: list[dict[str, Any]] = []
    n_items: dict[str, int] = {}
    items: list[dict[str, Any]] = []
    for task, rows in (out.get("samples") or {}).items():
        n_items[task] = len({row.get("doc_id") for row in rows})  # a task with 2 filters logs each doc twice
        items += [_item(task, row, _metric_names(out, task)) for row in rows]
        for row in rows[:log_samples]:
            samples.append(
                {
                    "task": task,
                    "doc_id": row.get("doc_id"),
                    "prompt": _first_arg(row),
                    "response": _first_response(row),
                    "target": str(row.get("target", "")),
                    **{m: row[m] for m in _metric_names(out, task) if m in row},
                }
            )
    raw = {
        "results": out["results"],
        "n-samples": out.get("n-samples", {}),
        "versions": out.get("versions", {}),
        "config": {"limit": limit, "max_gen_toks": max_gen_toks},
    }
    return EvalResult(metrics=metrics, samples=samples, n_items=n_items, raw=_json_safe(raw), items=items)


def _item(task: str, row: dict, metric_names: list[str]) -> dict[str, Any]:
    """One lm-eval logged sample, reduced to what item-level statistics and the report need."""
    doc = row.get("doc") if isinstance(row.get("doc"), dict) else {}
    scores = {}
    for name in metric_names:
        try:
            scores[name] = float(row[name])
        except (KeyError, TypeError, ValueError):  # absent, or a corpus-level metric's tuple (e.g. bleu)
            continue
    return {
        "task": task,
        "doc_id": row.get("doc_id"),
        "item_id": doc.get("id"),
        "filter": row.get("filter"),
        "prompt": _first_arg(row),
        "generation": _first_response(row),
        "target": str(row.get("target", "")),
        "scores": scores,
    }


ITEM_COLUMNS = ("task", "doc_id", "item_id", "metric", "score", "generation", "target", "prompt")


def item_frame(result: EvalResult, preferred: dict[str, str | None] | None = None):
    """Every scored item as a frame with ITEM_COLUMNS: `score` is the item's value of the task's primary
    metric, the one that enters R or G (`preferred[task]`, else the first score metric, as
    `primary_metric` picks it), so that its mean over a task's items is the logged score."""
    import pandas as pd

    preferred = preferred or {}
    rows = []
    for row in result.items:
        task = row["task"]
        keys = score_keys(result.metrics.get(task, {}))
        want = preferred.get(task)
        key = next((k for k in keys if want and k.split(",")[0] == want), keys[0] if keys else None)
        if key is None:
            continue
        metric, _, filt = key.partition(",")
        if (row.get("filter") or "none") != (filt or "none") or metric not in row["scores"]:
            continue
        rows.append(
            {
                "task": task,
                "doc_id": row["doc_id"],
                "item_id": row.get("item_id"),
                "metric": metric,
                "score": row["scores"][metric],
                "generation": row["generation"],
                "target": row["target"],
                "prompt": row["prompt"],
            }
        )
    return pd.DataFrame(rows, columns=list(ITEM_COLUMNS))


def merge_results(parts: list[EvalResult]) -> EvalResult:
    """One result from several processes' results on disjoint eval tasks."""
    merged = EvalResult(metrics={})
    for part in parts:
        merged.metrics.update(part.metrics)
        merged.samples.extend(part.samples)
        merged.items.extend(part.items)
        merged.n_items.update(part.n_items)
        for key, value in part.raw.items():
            if isinstance(value, dict) and key != "config":
                merged.raw.setdefault(key, {}).update(value)
            else:
                merged.raw.setdefault(key, value)
    return merged


def _metric_names(out: dict, task: str) -> list[str]:
    return [k.split(",")[0] for k in score_keys(out["results"].get(task, {}))]


def _first_arg(row: dict) -> str:
    args = row.get("arguments")
    try:
        if isinstance(args, dict):
            first = next(iter(args.values()))
            return str(first.get("arg_0", first)) if isinstance(first, dict) else str(first)
        return str(args[0][0])
    except (TypeError, IndexError, KeyError, StopIteration):
        return ""


def _first_response(row: dict) -> str:
    resp = row.get("filtered_resps") or row.get("resps") or [""]
    while isinstance(resp, (list, tuple)) and resp:
        resp = resp[0]
    return str(resp)


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)
