"""Rebuild eval.jsonl of `general_mc`: general-knowledge multiple choice (deterministic: fixed seed).

Facts every small instruction model has seen (capitals, animals, everyday science, opposites...), written
here as (question, answer, distractor pool). Four options each; scored by lm-eval's loglikelihood `acc`.
Run: python tasks/general_mc/generate.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 5
HERE = Path(__file__).resolve().parent

CAPITALS = {
    "France": "Paris",
    "Germany": "Berlin",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Japan": "Tokyo",
    "China": "Beijing",
    "Russia": "Moscow",
    "Egypt": "Cairo",
    "Canada": "Ottawa",
    "Greece": "Athens",
    "Portugal": "Lisbon",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Austria": "Vienna",
    "Ireland": "Dublin",
    "Poland": "Warsaw",
    "Kenya": "Nairobi",
    "Peru": "Lima",
    "Argentina": "Buenos Aires",
    "Mexico": "Mexico City",
    "Thailand": "Bangkok",
    "South Korea": "Seoul",
    "Finland": "Helsinki",
    "Denmark": "Copenhagen",
    "Hungary": "Budapest",
    "Belgium": "Brussels",
    "Netherlands": "Amsterdam",
    "Cuba": "Havana",
    "England": "London",
    "India": "New Delhi",
    "Turkey": "Ankara",
    "Iran": "Tehran",
    "Chile": "Santiago",
    "Colombia": "Bogota",
    "Vietnam": "Hanoi",
    "Philippines": "Manila",
    "Czech Republic": "Prague",
    "Australia": "Canberra",
    "Indonesia": "Jakarta",
    "Ukraine": "Kyiv",
}

# (question, right answer, wrong answers)
FACTS = [
    ("What color is the sky on a clear day?", "blue", ["green", "red", "brown"]),
    ("What color is fresh grass?", "green", ["purple", "blue", "orange"]),
    ("What color is snow?", "white", ["black", "green", "red"]),
    ("What color is a ripe banana?", "yellow", ["blue", "purple", "black"]),
    ("What is frozen water called?", "ice", ["steam", "sand", "glass"]),
    ("What do bees make?", "honey", ["milk", "silk", "wool"]),
    ("Which animal says moo?", "cow", ["cat", "duck", "horse"]),
    ("Which animal barks?", "dog", ["cow", "fish", "sheep"]),
    ("Which animal is known as the king of the jungle?", "lion", ["rabbit", "mouse", "goat"]),
    ("Which animal has a very long neck?", "giraffe", ["pig", "cat", "rabbit"]),
    ("What is the largest animal in the ocean?", "blue whale", ["goldfish", "crab", "seahorse"]),
    ("Which bird is a symbol of peace?", "dove", ["crow", "vulture", "penguin"]),
    ("How many legs does a spider have?", "eight", ["six", "four", "ten"]),
    ("How many days are in a week?", "seven", ["five", "ten", "twelve"]),
    ("How many months are in a year?", "twelve", ["ten", "seven", "fifteen"]),
    ("How many hours are in a day?", "twenty-four", ["twelve", "sixty", "ten"]),
    ("How many minutes are in an hour?", "sixty", ["twenty", "one hundred", "twelve"]),
    ("What is the opposite of hot?", "cold", ["warm", "big", "fast"]),
    ("What is the opposite of up?", "down", ["left", "over", "high"]),
    ("What is the opposite of day?", "night", ["noon", "sun", "week"]),
    ("What is the opposite of happy?", "sad", ["glad", "tall", "quick"]),
    ("What is the opposite of big?", "small", ["large", "huge", "wide"]),
    ("Which planet do we live on?", "Earth", ["Mars", "Jupiter", "Venus"]),
    ("Which planet is known as the Red Planet?", "Mars", ["Earth", "Saturn", "Neptune"]),
    ("What is the closest star to Earth?", "the Sun", ["the Moon", "Mars", "Polaris"]),
    ("What gas do humans need to breathe?", "oxygen", ["helium", "neon", "hydrogen"]),
    ("What gas do plants take in from the air?", "carbon dioxide", ["helium", "neon", "argon"]),
    (
        "At what temperature in Celsius does water boil at sea level?",
        "100 degrees",
        ["50 degrees", "0 degrees", "10 degrees"],
    ),
    (
        "At what temperature in Celsius does water freeze?",
        "0 degrees",
        ["100 degrees", "50 degrees", "30 degrees"],
    ),
    ("What is the chemical symbol for water?", "H2O", ["CO2", "NaCl", "O3"]),
    ("What organ pumps blood through the body?", "the heart", ["the lungs", "the stomach", "the skin"]),
    ("Which organ do we use to think?", "the brain", ["the liver", "the heart", "the knee"]),
    ("What do we use to see?", "eyes", ["ears", "hands", "feet"]),
    ("What do we use to hear?", "ears", ["eyes", "knees", "teeth"]),
    (
        "What is the largest ocean on Earth?",
        "the Pacific Ocean",
        ["the Arctic Ocean", "the Indian Ocean", "the Red Sea"],
    ),
    ("What is the longest river in Africa?", "the Nile", ["the Thames", "the Seine", "the Rhine"]),
    ("Which continent is Egypt in?", "Africa", ["Europe", "Asia", "South America"]),
    ("Which continent is Brazil in?", "South America", ["Africa", "Europe", "Asia"]),
    ("Which continent is Japan in?", "Asia", ["Europe", "Africa", "South America"]),
    ("What language is mainly spoken in France?", "French", ["German", "Spanish", "Japanese"]),
    ("What language is mainly spoken in Spain?", "Spanish", ["French", "Russian", "Chinese"]),
    ("What language is mainly spoken in Japan?", "Japanese", ["Spanish", "French", "Italian"]),
    ("Who wrote Romeo and Juliet?", "William Shakespeare", ["Charles Dickens", "Mark Twain", "Jane Austen"]),
    (
        "Who painted the Mona Lisa?",
        "Leonardo da Vinci",
        ["Pablo Picasso", "Vincent van Gogh", "Claude Monet"],
    ),
    (
        "Who developed the theory of relativity?",
        "Albert Einstein",
        ["Isaac Newton", "Charles Darwin", "Galileo Galilei"],
    ),
    ("What is the currency of the United States?", "the dollar", ["the euro", "the yen", "the pound"]),
    ("What is the currency of Japan?", "the yen", ["the dollar", "the euro", "the rupee"]),
    ("What shape has three sides?", "a triangle", ["a square", "a circle", "a hexagon"]),
    ("What shape has four equal sides?", "a square", ["a triangle", "a circle", "a pentagon"]),
    ("What do cows drink?", "water", ["milk", "juice", "coffee"]),
    ("What do you use to write on paper?", "a pen", ["a spoon", "a shoe", "a plate"]),
    ("What do you use to cut paper?", "scissors", ["a spoon", "a pillow", "a cup"]),
    ("Which season comes after winter?", "spring", ["autumn", "summer", "winter"]),
    ("Which season is usually the hottest?", "summer", ["winter", "autumn", "spring"]),
    ("What falls from clouds when it rains?", "water", ["sand", "sugar", "oil"]),
    ("What is the main ingredient of bread?", "flour", ["rice", "sugar", "salt"]),
    ("What fruit is used to make wine?", "grapes", ["bananas", "apples", "lemons"]),
    ("Which fruit is sour and yellow?", "lemon", ["banana", "cherry", "plum"]),
    (
        "What is the tallest mountain in the world?",
        "Mount Everest",
        ["Mount Fuji", "Mont Blanc", "Kilimanjaro"],
    ),
    ("Which is the largest planet in our solar system?", "Jupiter", ["Mercury", "Earth", "Mars"]),
    ("What do caterpillars turn into?", "butterflies", ["spiders", "worms", "bees"]),
    ("What is a baby dog called?", "a puppy", ["a kitten", "a calf", "a chick"]),
    ("What is a baby cat called?", "a kitten", ["a puppy", "a foal", "a lamb"]),
    ("Where do fish live?", "in water", ["in trees", "in the sand", "in the sky"]),
    ("What do you call a person who treats sick people?", "a doctor", ["a pilot", "a farmer", "a baker"]),
    ("What do you call a person who flies a plane?", "a pilot", ["a doctor", "a chef", "a teacher"]),
    ("How many wheels does a bicycle have?", "two", ["three", "four", "six"]),
    ("How many sides does a square have?", "four", ["three", "five", "six"]),
    (
        "What is the boiling point of water in Fahrenheit?",
        "212 degrees",
        ["100 degrees", "32 degrees", "150 degrees"],
    ),
    ("Which metal is liquid at room temperature?", "mercury", ["iron", "copper", "gold"]),
    ("What is the hardest natural material?", "diamond", ["gold", "wood", "glass"]),
    ("Which instrument has black and white keys?", "the piano", ["the drum", "the flute", "the trumpet"]),
    ("What is the first letter of the English alphabet?", "A", ["Z", "M", "Q"]),
    ("Which direction does the sun rise in?", "east", ["west", "north", "south"]),
    ("What do you call a house made of ice?", "an igloo", ["a tent", "a castle", "a barn"]),
    ("Which sport uses a bat and a ball and has innings?", "cricket", ["swimming", "boxing", "skiing"]),
    ("How many players are on a soccer team on the field?", "eleven", ["five", "seven", "fifteen"]),
    (
        "What is the freezing point of water in Fahrenheit?",
        "32 degrees",
        ["0 degrees", "100 degrees", "212 degrees"],
    ),
    ("What is the largest country by area?", "Russia", ["France", "Italy", "Japan"]),
    (
        "Which animal is known for carrying its house on its back?",
        "the snail",
        ["the dog", "the horse", "the eagle"],
    ),
]


def build() -> list[dict]:
    rng = random.Random(SEED)
    rows = []
    capitals = sorted(CAPITALS.items())
    for country, city in capitals:
        wrong = rng.sample([c for _, c in capitals if c != city], 3)
        rows.append((f"What is the capital of {country}?", city, wrong))
    rows.extend(FACTS)
    out = []
    for i, (question, right, wrong) in enumerate(rows):
        choices = [right, *wrong]
        rng.shuffle(choices)
        out.append(
            {
                "prompt": question,
                "demonstration": right,
                "choices": choices,
                "gold": choices.index(right),
                "id": f"general_mc-{i}",
            }
        )
    return out


if __name__ == "__main__":
    rows = build()
    (HERE / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} items to {HERE / 'eval.jsonl'}")
