"""`general_mc`: four-option general-knowledge questions, scored by lm-eval's loglikelihood accuracy.

lm-eval compares the log-probabilities of the four options as the assistant's reply and reports `acc`
(the right option is the most likely). `score` below is the generative check used by `harness tasks
validate` and by greedy scoring: the response, normalised (case, surrounding spaces and a final period),
must equal the right option.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def load_split(data_files: str = "eval.jsonl", **_: Any):
    """lm-eval `custom_dataset`: the JSONL beside this file, whatever the working directory is."""
    import datasets

    lines = (HERE / data_files).read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def _norm(text: str) -> str:
    return " ".join(text.strip().rstrip(".").lower().split())


def score(response: str, doc: dict) -> float:
    return float(_norm(response) == _norm(doc["choices"][doc["gold"]]))


def process_results(doc: dict, results: list[tuple[float, bool]]) -> dict[str, float]:
    """Same as lm-eval's default `acc` for multiple choice: the gold option has the highest loglikelihood."""
    lls = [ll for ll, _ in results]
    return {"acc": float(max(range(len(lls)), key=lls.__getitem__) == doc["gold"])}
