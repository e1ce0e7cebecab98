"""A task's chance level: what a model that answers every item with one constant, well-formatted response
scores with the task's own scorer.

A score of 6% can be a format gain rather than a skill gain: on `science`, the constant answer
`<answer>4</answer>` is right on about one item in ten. The report calls a task learned only when the gain
interval clears both the base model and this level.

- Generated answers: every distinct demonstration of the eval set is tried as the constant response (each is
  in the task's format), and the best one's mean score is the chance level. The choice is made on the eval
  set itself, so the level is, if anything, high (a stricter bar for "learned").
- Multiple choice (docs with `choices` and `gold`): the best constant *position*; the answer reads
  `option <k>` (0-based).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from harness.eval.scoring import load_scorer
from harness.tasks.spec import TaskSpec


@dataclass(frozen=True)
class Chance:
    score: float
    answer: str
    items: int


def eval_docs(spec: TaskSpec) -> list[dict]:
    with spec.eval_file.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def measure_chance(spec: TaskSpec, docs: list[dict] | None = None) -> Chance:
    """The best constant answer's mean score over the eval docs (module docstring)."""
    docs = eval_docs(spec) if docs is None else docs
    if not docs:
        raise ValueError(f"{spec.eval_file}: no eval items to measure a chance level on")
    if all("choices" in d and "gold" in d for d in docs):
        positions = range(max(len(d["choices"]) for d in docs))
        best = max(positions, key=lambda k: (sum(d["gold"] == k for d in docs), -k))
        return Chance(sum(d["gold"] == best for d in docs) / len(docs), f"option {best}", len(docs))
    score = load_scorer(spec)
    candidates = sorted({d["demonstration"] for d in docs if d.get("demonstration")})
    if not candidates:
        raise ValueError(f"{spec.eval_file}: no demonstration to use as a constant answer")
    totals = {c: sum(score(c, d) for d in docs) for c in candidates}
    answer = max(candidates, key=lambda c: (totals[c], -len(c)))  # ties: the shortest, then the first
    return Chance(totals[answer] / len(docs), answer, len(docs))


def constant_score(spec: TaskSpec, answer: str, limit: int | None = None) -> float:
    """The mean score of one declared constant answer (`task.yaml`'s `chance_answer`) over the eval docs
    (the first `limit` of them, as `eval.limit` evaluates)."""
    docs = eval_docs(spec)[:limit]
    if not docs:
        raise ValueError(f"{spec.eval_file}: no eval items to score the constant answer on")
    if answer.startswith("option ") and all("choices" in d and "gold" in d for d in docs):
        k = int(answer.split()[1])
        return sum(d["gold"] == k for d in docs) / len(docs)
    score = load_scorer(spec)
    return sum(score(answer, d) for d in docs) / len(docs)
