"""Rebuild train.jsonl and eval.jsonl of the `dates` task (deterministic: fixed seed).

Skill: "what is the date N days after <Month D, YYYY>?" for small N (1-9), answered in the numeric
format DD.MM.YYYY. Teaches a fixed output format, month names -> numbers, and carrying across month ends.
Run: python tasks/dates/generate.py
"""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

SEED = 31
N_TRAIN, N_EVAL = 240, 400  # eval: the first 120 are the original set (issue 25 added 280)
HERE = Path(__file__).resolve().parent


def long_form(day: dt.date) -> str:
    return f"{day.strftime('%B')} {day.day}, {day.year}"


def make_item(rng: random.Random) -> dict:
    start = dt.date(2026, 1, 1) + dt.timedelta(days=rng.randrange(5 * 365))
    n = rng.randint(1, 9)
    end = start + dt.timedelta(days=n)
    unit = "day" if n == 1 else "days"
    prompt = f"What is the date {n} {unit} after {long_form(start)}? Answer in the format DD.MM.YYYY."
    gold = end.strftime("%d.%m.%Y")
    demonstration = f"{long_form(start)} + {n} {unit} = {long_form(end)}, so the answer is {gold}."
    return {"prompt": prompt, "demonstration": demonstration, "answer": gold}


def build() -> tuple[list[dict], list[dict]]:
    rng = random.Random(SEED)
    seen: set[str] = set()
    items: list[dict] = []
    while len(items) < N_TRAIN + N_EVAL:
        item = make_item(rng)
        if item["prompt"] in seen:
            continue
        seen.add(item["prompt"])
        items.append(item)
    train, evals = items[:N_TRAIN], items[N_TRAIN:]
    for split, rows in (("train", train), ("eval", evals)):
        for i, it in enumerate(rows):
            it["id"] = f"dates-{split}-{i}"
    return train, evals


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    train, evals = build()
    write_jsonl(HERE / "train.jsonl", train)
    write_jsonl(HERE / "eval.jsonl", evals)
    print(f"wrote {len(train)} train and {len(evals)} eval items to {HERE}")
