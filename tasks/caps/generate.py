"""Rebuild train.jsonl and eval.jsonl of the `caps` task (deterministic: fixed seed).

Skill: write two given words in capital letters, answer only. The prompt carries one worked example of a
different pair (a hint of the format), which puts the 135M base model in the regime of partial competence
that SDFT needs (it sometimes answers right on its own; with the item's own demonstration in context it
almost always does). Held out: the eval items use nouns that no train item uses, so a model cannot pass
eval by remembering train answers.
Run: python tasks/caps/generate.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 53
N_TRAIN, N_EVAL = 512, 400
HERE = Path(__file__).resolve().parent

ADJECTIVES = (
    "red blue green yellow black white brown quiet loud small large tall short warm cold dark bright soft hard "
    "old young fast slow happy sad calm wild clean dirty empty full heavy light rich poor sweet sour fresh "
    "round flat deep thin thick wet dry early late busy lazy proud brave gentle kind rough smooth sharp"
).split()
NOUNS = (
    "apple river stone cloud tiger lemon garden pencil window candle rocket forest bottle mirror bridge "
    "castle dragon engine feather guitar harbor island jacket kettle ladder meadow needle orange pillow "
    "rabbit saddle tunnel valley wagon basket button carpet dinner farmer hammer letter market monkey "
    "number parrot pepper planet ribbon silver spider summer ticket tomato turtle village wallet winter "
    "anchor blanket cabbage diamond eagle falcon giraffe helmet insect jungle kitten lantern magnet "
    "napkin ocean panda puzzle rainbow sandal teacher umbrella violin walrus yogurt zebra"
).split()


def item(adjective: str, noun: str, example: tuple[str, str]) -> dict:
    def question(a: str, n: str) -> str:
        return f"Write the words '{a} {n}' in capital letters. Answer with the words only."

    answer = f"{adjective} {noun}".upper()
    prompt = (
        f"Example:\nQ: {question(*example)}\nA: {' '.join(example).upper()}\n\n"
        f"Now answer this one.\nQ: {question(adjective, noun)}"
    )
    return {"prompt": prompt, "demonstration": answer, "answer": answer}


def split_items(rng: random.Random, nouns: list[str], n: int, example_nouns: list[str]) -> list[dict]:
    """n items whose target nouns come from `nouns`; the worked example uses a noun of the other split
    and another adjective, so the example never gives the answer away."""
    pairs = [(a, w) for a in ADJECTIVES for w in nouns]
    rng.shuffle(pairs)
    rows = []
    for adjective, noun in pairs[:n]:
        ex_adj = rng.choice([a for a in ADJECTIVES if a != adjective])
        rows.append(item(adjective, noun, (ex_adj, rng.choice(example_nouns))))
    return rows


def build() -> tuple[list[dict], list[dict]]:
    rng = random.Random(SEED)
    nouns = list(NOUNS)
    rng.shuffle(nouns)
    eval_nouns, train_nouns = nouns[:30], nouns[30:]
    train = split_items(rng, train_nouns, N_TRAIN, eval_nouns)
    evals = split_items(rng, eval_nouns, N_EVAL, train_nouns)
    for split, rows in (("train", train), ("eval", evals)):
        for i, row in enumerate(rows):
            row["id"] = f"caps-{split}-{i}"
    return train, evals


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    train, evals = build()
    write_jsonl(HERE / "train.jsonl", train)
    write_jsonl(HERE / "eval.jsonl", evals)
    print(f"wrote {len(train)} train and {len(evals)} eval items to {HERE}")
