"""Rebuild the `knowledge` task files (deterministic: fixed seed).

An invented corpus of post-2025 events: each entity (a bridge, a festival, a probe, a museum...) has a
city, a month and year, a person and a number, told in a short passage. Files:
- corpus.jsonl: the passages (for reference; the teacher sees the passage through `privileged`);
- train.jsonl: one direct question per fact (4 per entity), the passage as `privileged`;
- eval.jsonl (lm-eval task `knowledge`): the same facts asked with different (paraphrased) wording;
- eval_ood.jsonl (lm-eval task `knowledge_ood`): indirect, two-hop questions: the entity is named by two of
  its other facts (city and date) instead of its name.
Run: python tasks/knowledge/generate.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 77
N_ENTITIES = 64
N_EVAL_ID, N_EVAL_OOD = 400, 120
# the first 128 eval items (two facts per entity) came first and keep their place: runs that scored the first
# 120 items stay comparable; items 128-399 were added later (issue 25: at least 400 eval items per task)
N_EVAL_FIRST = 128
HERE = Path(__file__).resolve().parent

SYL_A = [
    "Vel",
    "Kor",
    "Tam",
    "Oss",
    "Bri",
    "Qua",
    "Zel",
    "Mor",
    "Ral",
    "Fen",
    "Dar",
    "Sul",
    "Nim",
    "Yor",
    "Pel",
    "Gav",
]
SYL_B = [
    "mora",
    "vik",
    "lund",
    "essa",
    "dane",
    "oria",
    "wick",
    "anth",
    "eli",
    "ford",
    "ozan",
    "ith",
    "brae",
    "usk",
]
FIRST = [
    "Tamsin",
    "Oren",
    "Lisel",
    "Kofi",
    "Marit",
    "Dario",
    "Ysolde",
    "Ravi",
    "Nadia",
    "Emeka",
    "Ilse",
    "Tomas",
    "Anouk",
    "Bram",
    "Selin",
    "Joaquin",
    "Freya",
    "Haruto",
    "Zanele",
    "Petra",
    "Caius",
    "Leilani",
]
LAST = [
    "Okoro",
    "Varga",
    "Lindqvist",
    "Abara",
    "Moreau",
    "Castell",
    "Ivers",
    "Nakamura",
    "Quill",
    "Desai",
    "Halloran",
    "Brisk",
    "Mbeki",
    "Sorensen",
    "Tavares",
    "Whitlow",
    "Zhou",
    "Amsel",
    "Ferro",
    "Kestrel",
]
CITY_SUFFIX = [" Bay", " Falls", "port", "ton", " Harbor", "holm", " Ridge", "field"]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]

# kind: (name pattern, passage, who-question wording, number unit, number question, number range)
KINDS = {
    "bridge": (
        "the {n} Bridge",
        "{N} opened in {city} in {date}. It was designed by the engineer {person} and is {num} metres long.",
        "designed",
        "metres long",
        (300, 3000),
    ),
    "festival": (
        "the {n} Lantern Festival",
        "{N} was first held in {city} in {date}. It was founded by {person} and drew {num} visitors.",
        "founded",
        "visitors",
        (2000, 90000),
    ),
    "probe": (
        "the {n} probe",
        "{N} was launched from {city} in {date}. Its mission was led by {person} and it "
        "weighs {num} kilograms.",
        "led",
        "kilograms",
        (200, 5000),
    ),
    "museum": (
        "the {n} Museum",
        "{N} opened in {city} in {date}. It was founded by the collector {person} and holds {num} objects.",
        "founded",
        "objects",
        (500, 20000),
    ),
    "tower": (
        "the {n} Tower",
        "{N} was completed in {city} in {date}. It was designed by the architect {person} and "
        "is {num} metres tall.",
        "designed",
        "metres tall",
        (80, 900),
    ),
}

# Direct (train) and paraphrased (eval) wording per fact. {N}: the name as in a sentence start.
TRAIN_Q = {
    "city": "In which city is {n}?",
    "date": "When did {n} open or start? Give the month and year.",
    "person": "Who {verb} {n}?",
    "num": "How many {unit} does {n} have? Give the number.",
}
EVAL_Q = {
    "city": ["Name the city where {n} is located.", "{N} can be found in which city?"],
    "date": ["In what month and year did {n} begin?", "{N} dates from which month and year?"],
    "person": ["{N} was {verb} by whom?", "Which person {verb} {n}?"],
    "num": ["What number of {unit} is reported for {n}?", "{N}: how many {unit}? Answer with the number."],
}
# More paraphrases for the later eval items: each asks a fact in words used nowhere else
EVAL_Q_MORE = {
    "city": ["Where, by city, is {n}?", "Tell me the city of {n}."],
    "date": ["Give the month and year {n} started.", "{N} began in which month of which year?"],
    "person": ["Name the person who {verb} {n}.", "Whose name is linked to {n} as the one who {verb} it?"],
    "num": ["State the count of {unit} for {n}.", "Report the number of {unit} of {n}."],
}


def unit_phrase(kind: str) -> str:
    return {
        "bridge": "metres of length",
        "festival": "visitors",
        "probe": "kilograms of mass",
        "museum": "objects",
        "tower": "metres of height",
    }[kind]


def make_entities(rng: random.Random) -> list[dict]:
    names, cities, people = set(), set(), set()
    entities = []
    kinds = sorted(KINDS)
    while len(entities) < N_ENTITIES:
        n = rng.choice(SYL_A) + rng.choice(SYL_B)
        city = rng.choice(SYL_A) + rng.choice(SYL_B) + rng.choice(CITY_SUFFIX)
        person = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        # unique names, cities and people, so every question (direct or two-hop) has one answer
        if n in names or city in cities or person in people or n in city:
            continue
        names.add(n)
        cities.add(city)
        people.add(person)
        kind = kinds[len(entities) % len(kinds)]
        pattern, passage, verb, _, (lo, hi) = KINDS[kind]
        full = pattern.format(n=n)
        date = f"{rng.choice(MONTHS)} {rng.choice([2026, 2027])}"
        num = rng.randint(lo, hi)
        text = passage.format(N=full[0].upper() + full[1:], city=city, date=date, person=person, num=num)
        entities.append(
            {
                "name": full,
                "kind": kind,
                "city": city,
                "date": date,
                "person": person,
                "num": str(num),
                "verb": verb,
                "passage": text,
            }
        )
    return entities


def question(template: str, ent: dict) -> str:
    n = ent["name"]
    return template.format(n=n, N=n[0].upper() + n[1:], verb=ent["verb"], unit=unit_phrase(ent["kind"]))


def answer_sentence(ent: dict, fact: str) -> str:
    """The short demonstration: one sentence that states the fact."""
    cap = ent["name"][0].upper() + ent["name"][1:]
    if fact == "city":
        return f"{cap} is in {ent['city']}."
    if fact == "date":
        return (
            f"{cap} opened in {ent['date']}."
            if ent["kind"] != "probe"
            else f"{cap} launched in {ent['date']}."
        )
    if fact == "person":
        return f"{cap} was {ent['verb']} by {ent['person']}."
    return f"{cap} has {ent['num']} {unit_phrase(ent['kind'])}."


def row(prompt: str, ent: dict, fact: str, rid: str, demonstration: str | None = None) -> dict:
    return {
        "prompt": prompt,
        "demonstration": demonstration or answer_sentence(ent, fact),
        "privileged": ent["passage"],
        "answer": ent[fact],
        "fact": fact,
        "id": rid,
    }


def build() -> tuple[list[dict], list[dict], list[dict], list[dict]]:
    rng = random.Random(SEED)
    entities = make_entities(rng)
    corpus = [
        {"id": f"event-{i}", "name": e["name"], "passage": e["passage"]} for i, e in enumerate(entities)
    ]
    train = [
        row(question(TRAIN_Q[f], e), e, f, f"knowledge-train-{i}-{f}")
        for i, e in enumerate(entities)
        for f in TRAIN_Q
    ]
    eval_id = []
    for i, e in enumerate(entities):
        for f in rng.sample(sorted(EVAL_Q), 2):  # two paraphrased facts per entity
            eval_id.append(row(question(rng.choice(EVAL_Q[f]), e), e, f, f"knowledge-eval-{i}-{f}"))
    eval_ood = []
    for i, e in enumerate(entities):
        kind_word = e["name"].split()[-1].lower() if e["kind"] != "festival" else "festival"
        where_when = f"the {kind_word} in {e['city']} that dates from {e['date']}"
        for f in rng.sample(["person", "num"], 2):
            if f == "person":
                q = f"Who {e['verb']} {where_when}?"
                demo = f"That is {e['name']}, {e['verb']} by {e['person']}."
            else:
                q = f"How many {unit_phrase(e['kind'])} does {where_when} have?"
                demo = f"That is {e['name']}, with {e['num']} {unit_phrase(e['kind'])}."
            eval_ood.append(row(q, e, f, f"knowledge-ood-{i}-{f}", demo))
    eval_id += more_eval_items(rng, entities, eval_id)
    return corpus, train, eval_id[:N_EVAL_ID], eval_ood[:N_EVAL_OOD]


def more_eval_items(rng: random.Random, entities: list[dict], first: list[dict]) -> list[dict]:
    """Items 128-399, drawn after every other file so the earlier items do not change: first the two facts
    of each entity the first pass left out (so all 256 facts are asked once), then a second wording of
    facts chosen at random. Every wording differs from the train question and from the fact's other
    eval wording; items of one fact are correlated, so intervals over these items are a little narrow."""
    asked = {r["id"] for r in first}
    rows = []
    for i, e in enumerate(entities):
        for f in sorted(TRAIN_Q):
            if f"knowledge-eval-{i}-{f}" not in asked:
                rows.append(row(question(rng.choice(EVAL_Q_MORE[f]), e), e, f, f"knowledge-eval-{i}-{f}"))
    used = {r["id"]: r["prompt"] for r in first + rows}
    pairs = [(i, f) for i in range(len(entities)) for f in sorted(TRAIN_Q)]
    for i, f in rng.sample(pairs, N_EVAL_ID - N_EVAL_FIRST - len(rows)):
        e = entities[i]
        options = [q for q in EVAL_Q[f] + EVAL_Q_MORE[f] if question(q, e) != used[f"knowledge-eval-{i}-{f}"]]
        rows.append(row(question(rng.choice(options), e), e, f, f"knowledge-eval-{i}-{f}-b"))
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    corpus, train, eval_id, eval_ood = build()
    write_jsonl(HERE / "corpus.jsonl", corpus)
    write_jsonl(HERE / "train.jsonl", train)
    write_jsonl(HERE / "eval.jsonl", eval_id)
    write_jsonl(HERE / "eval_ood.jsonl", eval_ood)
    print(f"wrote {len(corpus)} passages, {len(train)} train, {len(eval_id)} eval, {len(eval_ood)} ood items")
