"""Screen candidate partial-competence tasks with the embedded model: base and in-context greedy accuracy.

    PYTHONPATH=$PWD nice -n 19 python results/regime/screen_tasks.py --n 24 [--only larger upper ...]

Each candidate is a prompt generator + a strict scorer; the target regime (issue 26) is base 15-50% and
in-context (the `plain` teacher template with the item's own demonstration) >= 85%.
"""

from __future__ import annotations

import argparse
import random
import re
import time
from pathlib import Path

from harness.config import ModelConfig
from harness.eval.scoring import greedy_responses
from harness.models import load_model
from harness.tasks.spec import TaskSpec

WORDS = "apple river stone cloud tiger lemon garden pencil window candle rocket forest bottle mirror".split()
UNITS = [
    ("kilometers", "meters", 1000, "m"),
    ("meters", "centimeters", 100, "cm"),
    ("kilograms", "grams", 1000, "g"),
    ("hours", "minutes", 60, "min"),
    ("minutes", "seconds", 60, "s"),
    ("liters", "milliliters", 1000, "ml"),
]


def larger(rng):
    a, b = rng.sample(range(100, 1000), 2)
    p = f"Which number is larger, {a} or {b}? Answer with the number inside <answer></answer> tags."
    return p, f"<answer>{max(a, b)}</answer>", str(max(a, b))


def upper(rng):
    ws = rng.sample(WORDS, 3)
    p = f"Write these words in capital letters, separated by commas: {', '.join(ws)}."
    g = ", ".join(w.upper() for w in ws)
    return p, g, g


def reverse(rng):
    ws = rng.sample(WORDS, 4)
    p = f"Reverse the order of these words: {', '.join(ws)}. Answer with the words separated by commas."
    g = ", ".join(reversed(ws))
    return p, g, g


def sort3(rng):
    ns = rng.sample(range(10, 100), 3)
    p = f"Sort these numbers from smallest to largest: {', '.join(map(str, ns))}. Answer with the numbers separated by commas."
    g = ", ".join(map(str, sorted(ns)))
    return p, g, g


def units(rng):
    src, dst, f, sym = rng.choice(UNITS)
    n = rng.randint(2, 9)
    p = f"Convert {n} {src} to {dst}. Answer in the format <answer>N {sym}</answer>."
    g = f"{n * f} {sym}"
    return p, f"<answer>{g}</answer>", g


def upper1(rng):
    w = rng.choice(WORDS)
    p = f"Write the word '{w}' in capital letters. Answer with the word only."
    return p, w.upper(), w.upper()


def nextletter(rng):
    c = chr(rng.randrange(ord("B"), ord("Y")))
    g = chr(ord(c) + 1)
    p = f"Which letter comes right after {c} in the alphabet? Answer with the letter only."
    return p, g, g


def add2(rng):
    a, b = rng.randint(10, 89), rng.randint(2, 9)
    p = f"What is {a} + {b}? Answer with the number only."
    return p, str(a + b), str(a + b)


def one_shot(make):
    """The same task with one worked example of another item in the prompt: a hint of the format."""

    def build(rng):
        ex_p, ex_d, _ = make(rng)
        p, d, g = make(rng)
        return f"Example:\nQ: {ex_p}\nA: {ex_d}\n\nNow answer this one.\nQ: {p}", d, g

    return build


def tag_or_line(resp: str) -> str:
    m = re.findall(r"<answer>(.*?)</answer>", resp, flags=re.S)
    return m[-1].strip() if m else resp.strip().rstrip(".").strip()


CANDIDATES = {
    "larger": larger,
    "upper": upper,
    "reverse": reverse,
    "sort3": sort3,
    "units": units,
    "upper1": upper1,
    "nextletter": nextletter,
    "add2": add2,
}
CANDIDATES.update({f"{k}_1shot": one_shot(v) for k, v in list(CANDIDATES.items())})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--only", nargs="*", default=list(CANDIDATES))
    ap.add_argument("--show", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    model, tok = load_model(ModelConfig())
    spec = TaskSpec(name="screen", path=Path("/tmp"), teacher_template="plain", eval_max_gen_toks=24)
    for name in args.only:
        rng = random.Random(7)
        rows = [CANDIDATES[name](rng) for _ in range(args.n)]
        docs = [{"prompt": p, "demonstration": d} for p, d, _ in rows]
        t0 = time.time()
        out = {}
        for mode in ("base", "in_context"):
            resp = greedy_responses(model, tok, spec, docs, mode, batch_size=24)
            out[mode] = sum(tag_or_line(r) == g for r, (_, _, g) in zip(resp, rows, strict=True)) / len(rows)
            for r in resp[: args.show]:
                print(f"  [{name} {mode}] {r!r}")
        print(
            f"{name}: base {out['base']:.2f} in-context {out['in_context']:.2f} n={len(rows)} "
            f"({time.time() - t0:.0f}s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
