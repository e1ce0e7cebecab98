"""Checkers of `general_ifeval`: each item names one constraint (`kind`) and its argument (`arg`).

A response scores 1.0 when it satisfies the constraint (a binary, IFEval-style "strict" check):
- lowercase: it has letters and none is uppercase;
- uppercase: it contains `arg` in capitals and no lowercase letter;
- keyword: `arg` appears as a whole word (any case);
- max_words: 1 to `arg` words;
- bullets: exactly `arg` lines start with "- " or "* " (other lines, e.g. an intro line, are allowed);
- json: the response (code fences allowed) parses as a JSON object with a non-empty string under `arg`;
- first_word: the first word is `arg` (case and surrounding quotes/punctuation ignored);
- repeat: the sentence `arg` appears verbatim (surrounding quotes allowed);
- one_word: exactly one word (a final period allowed).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def load_split(data_files: str = "eval.jsonl", **_: Any):
    """lm-eval `custom_dataset`: the JSONL beside this file, whatever the working directory is."""
    import datasets

    lines = (HERE / data_files).read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def _strip_fences(text: str) -> str:
    text = text.strip()
    match = re.match(r"^```[a-zA-Z]*\s*(.*?)\s*```$", text, re.DOTALL)
    return match.group(1) if match else text


def check(kind: str, arg: str, response: str) -> bool:
    text = response.strip()
    if kind == "lowercase":
        return any(c.isalpha() for c in text) and not any(c.isupper() for c in text)
    if kind == "uppercase":
        return arg.upper() in text and not any(c.islower() for c in text)
    if kind == "keyword":
        return re.search(rf"\b{re.escape(arg.lower())}\b", text.lower()) is not None
    if kind == "max_words":
        return 1 <= len(text.split()) <= int(arg)
    if kind == "bullets":
        return sum(1 for line in text.splitlines() if re.match(r"^\s*[-*] \S", line)) == int(arg)
    if kind == "json":
        try:
            obj = json.loads(_strip_fences(text))
        except json.JSONDecodeError:
            return False
        return isinstance(obj, dict) and isinstance(obj.get(arg), str) and bool(obj[arg].strip())
    if kind == "first_word":
        words = text.split()
        return bool(words) and words[0].strip("\"'*.,!:").lower() == arg.lower()
    if kind == "repeat":
        return arg in text
    if kind == "one_word":
        return len(text.rstrip(".").split()) == 1
    raise ValueError(f"unknown constraint kind {kind!r}")


def score(response: str, doc: dict) -> float:
    return float(check(doc["kind"], doc["arg"], response))


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    return {"acc": score(results[0], doc)}
