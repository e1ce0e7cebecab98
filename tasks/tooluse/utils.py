"""Scoring of `tooluse`: parse the JSON call in the response and compare it with the gold call.

Strict: the function name and the arguments must equal the gold ones exactly. Harmless variants that are
accepted: any text or reasoning before/after the JSON, markdown code fences, whitespace, argument order,
and a number written as 4.0 instead of 4. Rejected: a wrong or missing argument, an extra argument, a
number written as a string ("4"), a different spelling or case of a value, no parsable JSON object.
The first JSON object in the response that has a "name" key is the call that counts.
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


def extract_call(response: str) -> dict | None:
    decoder = json.JSONDecoder()
    for start, char in enumerate(response):
        if char != "{":
            continue
        try:
            obj, _ = decoder.raw_decode(response, start)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "name" in obj:
            return obj
    return None


def _same(a: Any, b: Any) -> bool:
    # bool is an int subclass in Python: keep True != 1
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return type(a) is type(b) and a == b


def score(response: str, doc: dict) -> float:
    gold = json.loads(doc["answer"])
    call = extract_call(response)
    if call is None or call.get("name") != gold["name"]:
        return 0.0
    args = call.get("arguments")
    if not isinstance(args, dict) or set(args) != set(gold["arguments"]):
        return 0.0
    return float(all(_same(args[k], v) for k, v in gold["arguments"].items()))


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    return {"exact_match": score(results[0], doc)}
