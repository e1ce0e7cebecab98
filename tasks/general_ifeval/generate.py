"""Rebuild eval.jsonl of `general_ifeval`: verifiable instruction following (deterministic: fixed seed).

IFEval-style constraints that code can check (see utils.py): lowercase only, capitals only, a required
keyword, a word limit, N bullet points, JSON output, a required first word, exact repetition, one word.
Each line carries `kind` and `arg` (what the checker needs) and a compliant `demonstration`.
Run: python tasks/general_ifeval/generate.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 11
HERE = Path(__file__).resolve().parent

TOPICS = [
    "the sea",
    "cats",
    "autumn",
    "coffee",
    "trains",
    "the moon",
    "music",
    "gardens",
    "rain",
    "books",
    "winter",
    "bread",
    "mountains",
    "bicycles",
    "the city",
    "birds",
    "friendship",
    "the forest",
]
KEYWORDS = ["blue", "quiet", "morning", "happy", "water", "light", "small", "warm", "green", "old"]
PLURALS = {
    "fruits": ["apple", "banana", "pear", "plum"],
    "colors": ["red", "blue", "green", "yellow"],
    "animals": ["dog", "cat", "horse", "cow"],
    "countries": ["France", "Japan", "Peru", "Kenya"],
    "vegetables": ["carrot", "onion", "pea", "leek"],
}
WORDS = ["hello", "river", "planet", "garden", "winter", "yellow", "basket", "candle", "silver", "market"]
SENTENCES = [
    "The cat sleeps on the warm mat.",
    "We walked to the old bridge.",
    "Rain makes the grass green.",
    "She reads a book every night.",
    "The train leaves at noon.",
    "Birds sing in the early morning.",
]
THINGS = ["city", "fruit", "animal", "color", "planet", "river"]
THING_EXAMPLE = {
    "city": "Paris",
    "fruit": "apple",
    "animal": "horse",
    "color": "blue",
    "planet": "Mars",
    "river": "Nile",
}
FIRST_WORDS = ["Yes", "Sure", "Today", "Well"]
ONE_WORD_Q = [
    ("What color is the sky on a clear day?", "Blue"),
    ("What animal says meow?", "Cat"),
    ("What is the opposite of cold?", "Hot"),
    ("What do bees make?", "Honey"),
    ("Which season comes after summer?", "Autumn"),
    ("What is frozen water called?", "Ice"),
    ("What is the opposite of up?", "Down"),
    ("Which planet do we live on?", "Earth"),
    ("What color is snow?", "White"),
    ("What do cows drink?", "Water"),
]


def make(kind: str, rng: random.Random) -> dict:
    topic = rng.choice(TOPICS)
    if kind == "lowercase":
        return {
            "prompt": f"Write one sentence about {topic}. Use only lowercase letters, no capitals.",
            "arg": "",
            "demonstration": f"i like {topic} very much.",
        }
    if kind == "uppercase":
        word = rng.choice(WORDS)
        return {
            "prompt": f'Write the word "{word}" in capital letters only. Reply with that word alone.',
            "arg": word,
            "demonstration": word.upper(),
        }
    if kind == "keyword":
        kw = rng.choice(KEYWORDS)
        return {
            "prompt": f'Write one sentence about {topic} that contains the word "{kw}".',
            "arg": kw,
            "demonstration": f"I think of {topic} as {kw}.",
        }
    if kind == "max_words":
        n = rng.choice([8, 10, 12, 15])
        return {
            "prompt": f"Describe {topic} in at most {n} words.",
            "arg": str(n),
            "demonstration": f"{topic.capitalize()} is lovely.",
        }
    if kind == "bullets":
        n = rng.choice([2, 3])
        plural = rng.choice(sorted(PLURALS))
        demo = "\n".join(f"- {x}" for x in PLURALS[plural][:n])
        return {
            "prompt": f'List {n} {plural} as a bulleted list: exactly {n} lines, each starting with "- ".',
            "arg": str(n),
            "demonstration": demo,
        }
    if kind == "json":
        thing = rng.choice(THINGS)
        return {
            "prompt": f'Name one {thing}. Reply only with a JSON object with the key "name", '
            f'for example {{"name": "..."}}.',
            "arg": "name",
            "demonstration": json.dumps({"name": THING_EXAMPLE[thing]}),
        }
    if kind == "first_word":
        w = rng.choice(FIRST_WORDS)
        return {
            "prompt": f'Tell me one thing about {topic}. Start your reply with the word "{w}".',
            "arg": w,
            "demonstration": f"{w}, {topic} can be beautiful.",
        }
    if kind == "repeat":
        s = rng.choice(SENTENCES)
        return {
            "prompt": f"Repeat this sentence exactly, and write nothing else: {s}",
            "arg": s,
            "demonstration": s,
        }
    q, a = rng.choice(ONE_WORD_Q)
    return {"prompt": f"{q} Answer with one word only.", "arg": "", "demonstration": a}


KINDS = [
    "lowercase",
    "uppercase",
    "keyword",
    "max_words",
    "bullets",
    "json",
    "first_word",
    "repeat",
    "one_word",
]


def build(n: int = 250) -> list[dict]:  # 108 before issue 25; the first 108 are unchanged
    rng = random.Random(SEED)
    rows: list[dict] = []
    seen: set[str] = set()
    attempts = 0
    while len(rows) < n and attempts < 100_000:
        attempts += 1
        kind = KINDS[attempts % len(KINDS)]  # round robin; a kind with few variants just runs out
        row = make(kind, rng)
        if row["prompt"] in seen:
            continue
        seen.add(row["prompt"])
        rows.append(
            {
                "prompt": row["prompt"],
                "demonstration": row["demonstration"],
                "kind": kind,
                "arg": row["arg"],
                "id": f"general_ifeval-{len(rows)}",
            }
        )
    return rows


if __name__ == "__main__":
    rows = build()
    (HERE / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} items to {HERE / 'eval.jsonl'}")
