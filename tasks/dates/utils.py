"""Scoring of `dates`: the last DD.MM.YYYY date in the response must equal the gold date.

Strict on the format: two-digit day, two-digit month, four-digit year, separated by dots. Harmless
variants that are accepted: the worked line before it, an "Answer:" prefix or not, surrounding text and
punctuation. Rejected: another date, "2.4.2027" (no zero padding), "2027-04-02" or "04/02/2027" (other
formats), month and day swapped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
_DATE = re.compile(r"(?<![\d.])(\d{2}\.\d{2}\.\d{4})(?![\d])")


def load_split(data_files: str = "eval.jsonl", **_: Any):
    """lm-eval `custom_dataset`: the JSONL beside this file, whatever the working directory is."""
    import datasets

    lines = (HERE / data_files).read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def score(response: str, doc: dict) -> float:
    found = _DATE.findall(response)
    return float(bool(found) and found[-1] == doc["answer"])


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    return {"exact_match": score(results[0], doc)}
