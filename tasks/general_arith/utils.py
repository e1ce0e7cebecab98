"""Scoring of `general_arith`: the stated number must equal the gold integer.

The number that counts is the first one in the response after dropping an echoed expression ("7 + 5 =")
or "The answer is". Harmless variants that are accepted: "12", "12.", "The answer is 12", "7 + 5 = 12",
number words up to twenty ("twelve"), thousands separators. Rejected: another number first ("13, no 12"),
no number at all.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]
_ECHO = re.compile(r"^.*?\d+\s*(?:[-+x×*/]|times|plus|minus)\s*\d+\s*(?:=|is)\s*", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*|\b(?:" + "|".join(WORDS) + r")\b", re.IGNORECASE)


def load_split(data_files: str = "eval.jsonl", **_: Any):
    """lm-eval `custom_dataset`: the JSONL beside this file, whatever the working directory is."""
    import datasets

    lines = (HERE / data_files).read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def extract_number(response: str) -> int | None:
    first_line = response.strip().split("\n", 1)[0] if response.strip() else ""
    text = _ECHO.sub("", first_line, count=1)
    match = _NUMBER.search(text)
    if not match:
        return None
    token = match.group(0).lower().replace(",", "")
    return WORDS.index(token) if token in WORDS else int(token)


def score(response: str, doc: dict) -> float:
    return float(extract_number(response) == int(doc["answer"]))


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    return {"acc": score(results[0], doc)}
