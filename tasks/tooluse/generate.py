"""Rebuild train.jsonl and eval.jsonl of the `tooluse` task (deterministic: fixed seed).

Each item: a short list of invented API functions, a user request, and the instruction to reply with one
reasoning line and the call as JSON. Run: python tasks/tooluse/generate.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 1234
N_TRAIN, N_EVAL = 240, 400  # eval: the first 120 are the original set (issue 25 added 280)
HERE = Path(__file__).resolve().parent

CITIES = [
    "Lisbon",
    "Oslo",
    "Nairobi",
    "Lima",
    "Hanoi",
    "Quito",
    "Tbilisi",
    "Perth",
    "Accra",
    "Bergen",
    "Cusco",
    "Dakar",
    "Graz",
    "Kyoto",
    "Malmo",
    "Porto",
    "Riga",
    "Tunis",
    "Zagreb",
    "Cebu",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
RESTAURANTS = ["Blue Fig", "Copper Pot", "Olive Lane", "Red Lantern", "Salt House", "Green Door", "Mint Leaf"]
TIMES = ["18:00", "18:30", "19:00", "19:30", "20:00", "20:30", "21:00"]
CURRENCIES = ["EUR", "USD", "JPY", "GBP", "CHF", "NOK", "INR", "BRL"]
SONGS = [
    ("Paper Moon", "Ida Vale"),
    ("Night Train", "The Larks"),
    ("Golden Hour", "Sam Reyes"),
    ("Low Tide", "Mara Quinn"),
    ("Open Road", "Kit Arlo"),
    ("Glass Heart", "Nova Bell"),
]
ITEMS = ["eggs", "rice", "apples", "milk", "lentils", "onions", "bread", "lemons"]
MODES = ["bus", "train", "bike"]
TASKS_TEXT = ["call the dentist", "water the plants", "pay the rent", "pick up the kids", "send the report"]

# name: (signature shown in the prompt, description)
FUNCTIONS = {
    "skyline_forecast": ("skyline_forecast(city, day)", "weather forecast for a city on a weekday"),
    "tablehop_book": (
        "tablehop_book(restaurant, people, time)",
        "book a restaurant table; people is a number",
    ),
    "coinbridge_convert": (
        "coinbridge_convert(amount, source, target)",
        "convert money; amount is a number, source and target are currency codes",
    ),
    "parcelpath_track": ("parcelpath_track(code)", "track a parcel by its tracking code"),
    "tunebox_play": ("tunebox_play(song, artist)", "play a song"),
    "remindly_set": ("remindly_set(task, hour)", "set a reminder; hour is a number from 0 to 23"),
    "transitly_route": (
        "transitly_route(origin, destination, mode)",
        "route between two cities by bus, train or bike",
    ),
    "pantry_add": ("pantry_add(item, quantity)", "add an item to the shopping list; quantity is a number"),
}


def make_call(rng: random.Random, name: str) -> tuple[str, dict, str]:
    """(request text, arguments, reasoning line) for one function."""
    if name == "skyline_forecast":
        c, d = rng.choice(CITIES), rng.choice(DAYS)
        req = rng.choice(
            [
                f"Will it rain in {c} on {d}?",
                f"What is the weather in {c} on {d}?",
                f"I am in {c} on {d}. How warm will it be?",
            ]
        )
        return req, {"city": c, "day": d}, f"The user wants the forecast for {c} on {d}."
    if name == "tablehop_book":
        r, p, t = rng.choice(RESTAURANTS), rng.randint(2, 9), rng.choice(TIMES)
        req = rng.choice(
            [
                f"Book a table for {p} at {r} at {t}.",
                f"Reserve {r} for {p} people at {t}, please.",
                f"Can you get us a table at {r}? We are {p}, at {t}.",
            ]
        )
        return (
            req,
            {"restaurant": r, "people": p, "time": t},
            f"The user wants a table at {r} for {p} at {t}.",
        )
    if name == "coinbridge_convert":
        a = rng.choice([5, 10, 20, 25, 50, 75, 100, 120, 250, 300, 500, 1000])
        s, t = rng.sample(CURRENCIES, 2)
        req = rng.choice(
            [
                f"How much is {a} {s} in {t}?",
                f"Convert {a} {s} to {t}.",
                f"I have {a} {s}. What is that in {t}?",
            ]
        )
        return req, {"amount": a, "source": s, "target": t}, f"The user wants {a} {s} converted to {t}."
    if name == "parcelpath_track":
        code = f"{rng.choice(['PX', 'QT', 'ZR', 'MK'])}-{rng.randint(1000, 9999)}"
        req = rng.choice(
            [
                f"Where is my parcel {code}?",
                f"Track the package with code {code}.",
                f"Has parcel {code} arrived yet?",
            ]
        )
        return req, {"code": code}, f"The user wants to track parcel {code}."
    if name == "tunebox_play":
        s, a = rng.choice(SONGS)
        req = rng.choice([f"Play {s} by {a}.", f"I want to hear {s} by {a}.", f"Put on {a}'s song {s}."])
        return req, {"song": s, "artist": a}, f"The user wants to hear {s} by {a}."
    if name == "remindly_set":
        task, h = rng.choice(TASKS_TEXT), rng.randint(6, 22)
        req = rng.choice(
            [
                f"Remind me to {task} at {h}:00.",
                f"Set a reminder at {h}:00 to {task}.",
                f"At {h}:00 I need to {task}. Remind me.",
            ]
        )
        return req, {"task": task, "hour": h}, f"The user wants a reminder to {task} at hour {h}."
    if name == "transitly_route":
        o, d = rng.sample(CITIES, 2)
        m = rng.choice(MODES)
        req = rng.choice(
            [
                f"How do I get from {o} to {d} by {m}?",
                f"Find a {m} route from {o} to {d}.",
                f"I want to go from {o} to {d} by {m}.",
            ]
        )
        return req, {"origin": o, "destination": d, "mode": m}, f"The user wants a {m} route from {o} to {d}."
    item, q = rng.choice(ITEMS), rng.randint(1, 12)
    req = rng.choice(
        [
            f"Add {q} {item} to my shopping list.",
            f"Put {item} on the list, {q} of them.",
            f"I need {q} {item}. Add them to the list.",
        ]
    )
    return req, {"item": item, "quantity": q}, f"The user wants {q} {item} on the list."


def make_item(rng: random.Random) -> dict:
    name = rng.choice(sorted(FUNCTIONS))
    others = rng.sample([f for f in sorted(FUNCTIONS) if f != name], 2)
    shown = [name, *others]
    rng.shuffle(shown)
    request, args, reason = make_call(rng, name)
    listing = "\n".join(f"- {FUNCTIONS[f][0]}: {FUNCTIONS[f][1]}" for f in shown)
    prompt = (
        f"Functions:\n{listing}\nRequest: {request}\n"
        "Reply with one short reasoning line, then the function call as JSON."
    )
    call = {"name": name, "arguments": args}
    demonstration = f"{reason}\n{json.dumps(call)}"
    return {"prompt": prompt, "demonstration": demonstration, "answer": json.dumps(call)}


def build() -> tuple[list[dict], list[dict]]:
    rng = random.Random(SEED)
    seen: set[str] = set()
    items: list[dict] = []
    while len(items) < N_TRAIN + N_EVAL:
        item = make_item(rng)
        if item["prompt"] in seen:  # held-out items must never repeat a train prompt
            continue
        seen.add(item["prompt"])
        items.append(item)
    train, evals = items[:N_TRAIN], items[N_TRAIN:]
    for i, it in enumerate(train):
        it["id"] = f"tooluse-train-{i}"
    for i, it in enumerate(evals):
        it["id"] = f"tooluse-eval-{i}"
    return train, evals


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    train, evals = build()
    write_jsonl(HERE / "train.jsonl", train)
    write_jsonl(HERE / "eval.jsonl", evals)
    print(f"wrote {len(train)} train and {len(evals)} eval items to {HERE}")
