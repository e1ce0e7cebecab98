"""Rebuild train.jsonl and eval.jsonl of the `caps` task (deterministic: fixed seed).

Skill: write a given word in capital letters, answer only. The prompt carries one worked example of a
different word (a hint of the format), which puts the 135M base model in the regime of partial competence
that SDFT needs: it sometimes answers right on its own, and with the item's own demonstration in context it
almost always does (tasks/README.md, calibration). Held out: the eval items ask for words that no train item
asks for, so a model cannot pass eval by remembering train answers.
Run: python tasks/caps/generate.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 53
N_TRAIN, N_EVAL = 512, 400
N_EVAL_WORDS = 100
HERE = Path(__file__).resolve().parent

WORDS = sorted(
    set(
        """
apple river stone cloud tiger lemon garden pencil window candle rocket forest bottle mirror bridge castle
dragon engine feather guitar harbor island jacket kettle ladder meadow needle orange pillow rabbit saddle
tunnel valley wagon basket button carpet dinner farmer hammer letter market monkey number parrot pepper
planet ribbon silver spider summer ticket tomato turtle village wallet winter anchor blanket cabbage
diamond eagle falcon giraffe helmet insect jungle kitten lantern magnet napkin ocean panda puzzle rainbow
sandal teacher umbrella violin walrus yogurt zebra desert blossom cottage doctor elbow fountain glacier
hallway iceberg journal kitchen lizard mountain notebook oyster pirate quilt rooster sailor thunder
unicorn volcano whistle chimney donkey forehead goblin hedgehog jelly koala lobster mushroom nephew
octopus pumpkin raccoon scarecrow tractor vulture waffle beetle camera dolphin emerald fiddle gravel
hammock igloo jigsaw kayak lettuce marble nugget orchard pebble quiver radish shadow trumpet velvet
walnut acorn bamboo cactus dagger ember fossil gecko harvest ivory jasmine kennel locket meteor nectar
onion paddle riddle sponge tulip vessel willow badger canyon denim fabric gadget hornet inkwell jogger
lagoon mitten nozzle outlet pantry rattle saucer tassel utensil vendor wizard baker cobbler drummer
florist golfer hunter jeweler knight lawyer miner nurse plumber ranger singer tailor waiter author
banner cellar drawer fence gutter hinge jar keyboard lamp mattress oven porch roof shelf table vase
wall basin bucket clock fork glass kettle ladle mug pan plate spoon towel whisk broom candy cookie
donut muffin noodle pastry pickle pretzel salad sausage toast waffle almond banana cherry grape mango
melon olive peach pear plum berry bean carrot celery garlic potato spinach turnip
""".split()
    )
)


def question(word: str) -> str:
    return f"Write the word '{word}' in capital letters. Answer with the word only."


def item(word: str, example: str) -> dict:
    prompt = (
        f"Example:\nQ: {question(example)}\nA: {example.upper()}\n\nNow answer this one.\nQ: {question(word)}"
    )
    return {"prompt": prompt, "demonstration": word.upper(), "answer": word.upper(), "word": word}


def split_items(rng: random.Random, words: list[str], n: int, example_words: list[str]) -> list[dict]:
    """n items asking for words of `words` (each word about n / len(words) times, each time with another
    worked example); the example word comes from the other split, so it never gives the answer away."""
    pairs = sorted({(w, e) for w in words for e in example_words})
    rng.shuffle(pairs)
    by_word: dict[str, list[str]] = {}
    for word, example in pairs:
        by_word.setdefault(word, []).append(example)
    rows: list[dict] = []
    k = 0
    while len(rows) < n:  # round-robin over the words: every word is asked about equally often
        for word in words:
            if len(rows) == n:
                break
            rows.append(item(word, by_word[word][k]))
        k += 1
    return rows


def build() -> tuple[list[dict], list[dict]]:
    rng = random.Random(SEED)
    words = list(WORDS)
    rng.shuffle(words)
    eval_words, train_words = words[:N_EVAL_WORDS], words[N_EVAL_WORDS:]
    train = split_items(rng, train_words, N_TRAIN, eval_words)
    evals = split_items(rng, eval_words, N_EVAL, train_words)
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
