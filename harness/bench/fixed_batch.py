"""The step benchmark's fixed batch: 8 prompts with short demonstrations, and the teacher template both our
SDFT and TRL's SDFTTrainer use (harness.bench.step, harness.bench.trl_step)."""

from __future__ import annotations

from harness.tasks.spec import Item

PROMPTS = [
    "Explain why the sky is blue.",
    "Write a short poem about autumn leaves.",
    "What are the main causes of inflation?",
    "Describe how a bicycle works.",
    "Give three tips for learning a new language.",
    "Summarise the plot of a detective story you invent.",
    "How do vaccines train the immune system?",
    "Compare cats and dogs as pets.",
]
DEMOS = [
    "Sunlight scatters off air molecules; blue light scatters most, so the sky looks blue.",
    "Red and gold they fall, / whispering down the garden wall.",
    "Demand outpacing supply, rising costs, and growth of the money supply.",
    "Pedals turn a chain that drives the rear wheel; gears trade force for speed.",
    "Practise daily, speak with natives, and learn words in context.",
    "A detective traces a stolen violin to the orchestra's own conductor.",
    "They show the body a harmless piece of a pathogen so it learns to fight it.",
    "Cats are independent and low-maintenance; dogs are social and need walks.",
]
TEMPLATE = "paper"


def items() -> list[Item]:
    """The fixed batch as training items."""
    return [
        Item(prompt=p, demonstration=d, id=str(i), source=f"bench:{i}")
        for i, (p, d) in enumerate(zip(PROMPTS, DEMOS, strict=True))
    ]
