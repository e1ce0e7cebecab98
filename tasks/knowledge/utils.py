"""Scoring of `knowledge` and `knowledge_ood`: the key fact must appear in the answer.

Strict: the gold fact (a city, a "Month YYYY" date, a full person name, or a number) must appear as whole
words within the first 40 words of the response, after normalising both sides. Harmless variants that are
accepted: a full sentence around the fact, case, punctuation, thousands separators ("2,140" = "2140").
Rejected: a partial name ("Kofi" for "Kofi Desai"), another year or month, a different number, a fact
that only appears after 40 words of rambling.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MAX_WORDS = 40


def load_split(data_files: str = "eval.jsonl", **_: Any):
    """lm-eval `custom_dataset`: the JSONL beside this file, whatever the working directory is."""
    import datasets

    lines = (HERE / data_files).read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def normalize(text: str) -> str:
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text.lower())
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text).split())


def score(response: str, doc: dict) -> float:
    head = normalize(" ".join(response.split()[:MAX_WORDS]))
    gold = normalize(doc["answer"])
    return float(bool(gold) and f" {gold} " in f" {head} ")


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    return {"exact_match": score(results[0], doc)}
