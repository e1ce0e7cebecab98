"""Rebuild train.jsonl and eval.jsonl of the `science` task (deterministic: fixed seed).

Chemistry-style questions: molar mass of a compound from a given table, grams <-> moles, unit conversions.
The demonstration is a one-line worked solution and the final number in <answer></answer> tags.
Run: python tasks/science/generate.py
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

SEED = 2024
N_TRAIN, N_EVAL = 240, 400
# The first 240 + 120 items are the original sets (drawn with MOLES); issue 25 extended the eval set to 400
# by drawing on with MORE_MOLES, whose larger space has room for 280 more distinct prompts. The original
# eval items stay its first 120 lines, so older results remain comparable.
N_ORIGINAL = 360
MOLES = [0.5, 2, 3, 4, 5, 10]
MORE_MOLES = [0.25, 0.5, 1.5, 2, 3, 4, 5, 6, 8, 10, 20]
HERE = Path(__file__).resolve().parent

MASSES = {"H": 1, "C": 12, "N": 14, "O": 16, "Na": 23, "Mg": 24, "S": 32, "Cl": 35.5, "K": 39, "Ca": 40}
COMPOUNDS = [
    "H2O",
    "CO2",
    "NaCl",
    "CH4",
    "NH3",
    "O2",
    "N2",
    "HCl",
    "CaCO3",
    "NaOH",
    "H2SO4",
    "C2H6",
    "KCl",
    "MgO",
    "CaO",
    "SO2",
    "NO2",
    "KOH",
    "H2O2",
    "HNO3",
    "MgCl2",
    "Na2CO3",
    "CaCl2",
    "C3H8",
    "N2O",
    "SO3",
    "Na2O",
    "K2O",
    "C2H4",
    "MgS",
]
CONVERSIONS = [
    ("L", "mL", 1000),
    ("kg", "g", 1000),
    ("g", "mg", 1000),
    ("km", "m", 1000),
    ("m", "cm", 100),
    ("mL", "L", 0.001),
    ("g", "kg", 0.001),
    ("mg", "g", 0.001),
    ("cm", "m", 0.01),
    ("m", "km", 0.001),
]
TAG = "Give the final answer as a number in <answer></answer> tags."


def fmt(x: float) -> str:
    """Numbers as a chemist writes them: no trailing zeros, at most 4 decimals."""
    text = f"{x:.4f}".rstrip("0").rstrip(".")
    return text if text != "-0" else "0"


def parse_formula(formula: str) -> list[tuple[str, int]]:
    return [(el, int(n) if n else 1) for el, n in re.findall(r"([A-Z][a-z]?)(\d*)", formula)]


def molar_mass(formula: str) -> tuple[float, str]:
    """(mass, the sum written out, e.g. '12 + 2×16')."""
    parts = parse_formula(formula)
    terms = [f"{n}×{fmt(MASSES[el])}" if n > 1 else fmt(MASSES[el]) for el, n in parts]
    return sum(MASSES[el] * n for el, n in parts), " + ".join(terms)


def table_for(formula: str) -> str:
    elements = [el for el, _ in parse_formula(formula)]
    return "Molar masses (g/mol): " + ", ".join(f"{el} {fmt(MASSES[el])}" for el in dict.fromkeys(elements))


def make_item(rng: random.Random, moles_from: list[float] = MOLES) -> dict:
    kind = rng.choice(["mass", "grams", "moles", "convert"])
    if kind == "convert":
        src, dst, factor = rng.choice(CONVERSIONS)
        value = rng.choice([0.2, 0.5, 1.5, 2, 2.5, 3, 4, 7.5, 12, 25, 40, 250, 600])
        answer = value * factor
        prompt = f"Convert {fmt(value)} {src} to {dst}. {TAG}"
        work = f"1 {src} = {fmt(factor)} {dst}, so {fmt(value)} × {fmt(factor)} = {fmt(answer)} {dst}."
        return {
            "prompt": prompt,
            "demonstration": f"<answer>{fmt(answer)}</answer> ({work})",
            "answer": fmt(answer),
        }
    formula = rng.choice(COMPOUNDS)
    mass, terms = molar_mass(formula)
    table = table_for(formula)
    if kind == "mass":
        prompt = f"{table}.\nWhat is the molar mass of {formula} in g/mol? {TAG}"
        work = f"{formula} = {terms} = {fmt(mass)} g/mol."
        answer = mass
    elif kind == "grams":
        moles = rng.choice(moles_from)
        answer = moles * mass
        prompt = f"{table}.\nWhat is the mass in grams of {fmt(moles)} mol of {formula}? {TAG}"
        work = f"{formula} = {terms} = {fmt(mass)} g/mol; {fmt(moles)} × {fmt(mass)} = {fmt(answer)} g."
    else:
        moles = rng.choice(moles_from)
        grams = moles * mass
        answer = moles
        prompt = f"{table}.\nHow many moles are in {fmt(grams)} g of {formula}? {TAG}"
        work = f"{formula} = {terms} = {fmt(mass)} g/mol; {fmt(grams)} / {fmt(mass)} = {fmt(moles)} mol."
    return {
        "prompt": prompt,
        "demonstration": f"<answer>{fmt(answer)}</answer> ({work})",
        "answer": fmt(answer),
    }


def build() -> tuple[list[dict], list[dict]]:
    rng = random.Random(SEED)
    seen: set[str] = set()
    items: list[dict] = []
    while len(items) < N_TRAIN + N_EVAL:
        item = make_item(rng, MOLES if len(items) < N_ORIGINAL else MORE_MOLES)
        if item["prompt"] in seen:
            continue
        seen.add(item["prompt"])
        items.append(item)
    train, evals = items[:N_TRAIN], items[N_TRAIN:]
    for split, rows in (("train", train), ("eval", evals)):
        for i, it in enumerate(rows):
            it["id"] = f"science-{split}-{i}"
    return train, evals


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    train, evals = build()
    write_jsonl(HERE / "train.jsonl", train)
    write_jsonl(HERE / "eval.jsonl", evals)
    print(f"wrote {len(train)} train and {len(evals)} eval items to {HERE}")
