"""Rebuild eval.jsonl of `general_arith`: small arithmetic and everyday counting (deterministic: fixed seed).

Generative and strict: the model must state the number (see utils.py).
Run: python tasks/general_arith/generate.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 3
HERE = Path(__file__).resolve().parent
SUFFIX = "Answer with the number only."

COUNTS = [
    ("How many legs does a dog have?", 4),
    ("How many legs does a bird have?", 2),
    ("How many days are in a week?", 7),
    ("How many months are in a year?", 12),
    ("How many hours are in a day?", 24),
    ("How many minutes are in an hour?", 60),
    ("How many sides does a triangle have?", 3),
    ("How many sides does a square have?", 4),
    ("How many wheels does a bicycle have?", 2),
    ("How many wheels does a car have?", 4),
    ("How many fingers are on one hand?", 5),
    ("How many eyes does a person have?", 2),
    ("How many legs does a spider have?", 8),
    ("How many seconds are in a minute?", 60),
    ("How many days are in a leap year?", 366),
    ("How many days are in a normal year?", 365),
    ('How many letters are in the word "cat"?', 3),
    ("How many cents are in a dollar?", 100),
    ("How many weeks are in a year?", 52),
    ("How many legs does an insect have?", 6),
    ("How many players are in a chess game?", 2),
    ("How many sides does a hexagon have?", 6),
]

N_ITEMS = 250


def build() -> list[dict]:
    rng = random.Random(SEED)
    rows: list[tuple[str, int]] = []
    seen: set[str] = set()

    def add(question: str, answer: int) -> None:
        if question not in seen:
            seen.add(question)
            rows.append((question, answer))

    while len(rows) < 40:
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        add(f"What is {a} + {b}?", a + b)
    while len(rows) < 65:
        a, b = rng.randint(5, 30), rng.randint(1, 5)
        add(f"What is {a} - {b}?", a - b)
    while len(rows) < 90:
        a, b = rng.randint(2, 10), rng.randint(2, 10)
        add(f"What is {a} times {b}?", a * b)
    for question, answer in COUNTS:
        add(question, answer)
    # issue 25: drawn on after the original 112 items (which stay the prefix), up to N_ITEMS
    while len(rows) < N_ITEMS:
        a, b = rng.randint(10, 60), rng.randint(2, 40)
        op = rng.choice(["+", "-", "times"])
        if op == "times":
            a, b = rng.randint(2, 12), rng.randint(2, 12)
            add(f"What is {a} times {b}?", a * b)
        elif op == "-":
            add(f"What is {max(a, b)} - {min(a, b)}?", max(a, b) - min(a, b))
        else:
            add(f"What is {a} + {b}?", a + b)
    return [
        {"prompt": f"{q} {SUFFIX}", "demonstration": str(a), "answer": str(a), "id": f"general_arith-{i}"}
        for i, (q, a) in enumerate(rows)
    ]


if __name__ == "__main__":
    rows = build()
    (HERE / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} items to {HERE / 'eval.jsonl'}")
