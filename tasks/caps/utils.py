"""Scoring of `caps`: the answer must be exactly the given word in capital letters.

Strict: the response's first non-empty line, after removing an optional "A:" prefix (the format of the
worked example in the prompt), surrounding quotes and one trailing period, must equal the gold answer
character for character (case-sensitive). Rejected: lower or title case ("Giraffe"), a misspelling in
capitals ("GIRAFE", the 135M model's most common error), extra words ("The answer is GIRAFFE"), the worked
example's word instead of the asked one. Text on later lines is ignored (the answer was already given).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
_PREFIX = re.compile(r"^A:\s*")


def load_split(data_files: str = "eval.jsonl", **_: Any):
    """lm-eval `custom_dataset`: the JSONL beside this file, whatever the working directory is."""
    import datasets

    lines = (HERE / data_files).read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def answer_line(response: str) -> str:
    """The first non-empty line, without an "A:" prefix, quotes and one trailing period."""
    lines = [line.strip() for line in response.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    line = _PREFIX.sub("", lines[0]).strip()
    line = line.strip("'\"")
    return line[:-1] if line.endswith(".") else line


def score(response: str, doc: dict) -> float:
    return float(answer_line(response) == doc["answer"])


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    return {"exact_match": score(results[0], doc)}
