"""Scoring of `science`: the number in the last <answer>...</answer> tag against the gold number.

Strict on the format: without an <answer> tag the response scores 0, however right its text is.
Harmless variants that are accepted: text before the tag (the worked solution), spaces inside the tag,
thousands separators ("2,500"), a unit after the number ("54 g"), and any number within 1% (relative)
of the gold value (so 0.667 for 2/3 or 35.50 for 35.5 pass). Rejected: a missing or empty tag, a tag
that holds no number, a value off by more than 1%.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TOLERANCE = 0.01  # relative
_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_NUMBER = re.compile(r"^[-+]?(\d[\d,]*(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


def load_split(data_files: str = "eval.jsonl", **_: Any):
    """lm-eval `custom_dataset`: the JSONL beside this file, whatever the working directory is."""
    import datasets

    lines = (HERE / data_files).read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def extract_answer(response: str) -> float | None:
    tags = _TAG.findall(response)
    if not tags:
        return None
    match = _NUMBER.match(tags[-1].strip())
    if not match:
        return None
    try:
        return float(match.group(0).replace(",", ""))
    except ValueError:
        return None


def score(response: str, doc: dict) -> float:
    value = extract_answer(response)
    if value is None:
        return 0.0
    gold = float(doc["answer"])
    return float(abs(value - gold) <= TOLERANCE * max(abs(gold), 1e-9))


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    return {"exact_match": score(results[0], doc)}
