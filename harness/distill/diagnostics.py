"""Diagnostics of self-distillation: why SDFT learns or does not (pure functions, no model, no I/O).

- rollout health: how often completions recite the teacher template's own instruction text, how repetitive
  they are (a repetition loop run to the length cap is distilled like any answer), distinct bigrams;
- per-position profile of a per-token quantity (KL, loss): the first k completion positions, where a short
  structured answer's format is decided, against the rest, and the share of the loss those positions carry;
- the same recitation rate over evaluation outputs (a template that leaked into ordinary answers).

The teacher-forcing probe, which needs a model, lives in harness.probe.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch

from harness.tasks import SYSTEM_MARK, USER_MARK

RECITE_N = 4  # words per n-gram of the template's instruction text that count as recitation
_WORD = re.compile(r"[a-z0-9']+")
_PLACEHOLDER = re.compile(r"\{[a-z_]+\}")


def words(text: str) -> list[str]:
    """Lower-cased word tokens; punctuation and layout are ignored so "question:" matches "question"."""
    return _WORD.findall(text.lower())


def template_sentences(template: str) -> list[str]:
    """The template's own text: the literal pieces between its placeholders that contain a word, stripped.

    For the paper's template these are "This is an example for a response to the question:" and "Now answer
    with a response of your own, including the thinking process.": what a teacher might recite.
    """
    text = template.replace(SYSTEM_MARK, "\n").replace(USER_MARK, "\n")
    pieces = (p.strip() for p in _PLACEHOLDER.split(text))
    return [p for p in pieces if words(p)]


def template_ngrams(template: str, n: int = RECITE_N) -> set[tuple[str, ...]]:
    """Word n-grams of the template's sentences; a sentence shorter than n counts whole (e.g. "Correct
    answer:"), so a short label is still detected when it is recited."""
    grams: set[tuple[str, ...]] = set()
    for sentence in template_sentences(template):
        w = words(sentence)
        size = min(n, len(w))
        grams.update(tuple(w[i : i + size]) for i in range(len(w) - size + 1))
    return grams


def recites(text: str, grams: set[tuple[str, ...]]) -> bool:
    """Whether `text` contains any of `grams` (word n-grams, possibly of different lengths)."""
    w = words(text)
    for size in {len(g) for g in grams}:
        if any(tuple(w[i : i + size]) in grams for i in range(len(w) - size + 1)):
            return True
    return False


def recitation_rate(texts: Sequence[str], template: str, n: int = RECITE_N) -> float:
    """Share of `texts` (rollouts or evaluation answers) that contain an n-gram of the template's own text.

    0.0 for an empty list. Texts are compared as lower-cased words (see `words`).
    """
    if not texts:
        return 0.0
    grams = template_ngrams(template, n)
    if not grams:
        return 0.0
    return sum(recites(t, grams) for t in texts) / len(texts)


def repeated_ngram_rate(tokens: Sequence[int] | Sequence[str], n: int = 3) -> float:
    """Share of a sequence's n-grams that already occurred earlier in it (0 = no repetition; a loop of one
    phrase approaches 1). 0.0 when the sequence has fewer than n + 1 tokens."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if len(grams) < 2:
        return 0.0
    seen: set[tuple] = set()
    repeats = 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams)


def distinct_n(tokens: Sequence[int] | Sequence[str], n: int = 2) -> float:
    """Distinct n-grams / n-grams of one sequence (1 = no n-gram twice); 1.0 when it has none."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def rollout_health(
    token_rows: Iterable[Sequence[int]], texts: Sequence[str], template: str, n: int = RECITE_N
) -> dict[str, float]:
    """Per-batch rollout statistics: `recite_frac` (rollouts reciting the template), `repeat3` (mean
    repeated-trigram rate over token ids), `distinct2` (mean distinct-bigram ratio)."""
    rows = [list(r) for r in token_rows]
    if not rows:
        return {"recite_frac": 0.0, "repeat3": 0.0, "distinct2": 1.0}
    return {
        "recite_frac": recitation_rate(texts, template, n),
        "repeat3": sum(repeated_ngram_rate(r, 3) for r in rows) / len(rows),
        "distinct2": sum(distinct_n(r, 2) for r in rows) / len(rows),
    }


def position_profile(
    values: torch.Tensor, weights: torch.Tensor, positions: torch.Tensor, k: int
) -> dict[str, float]:
    """Per-position profile of a per-token quantity, over flattened tokens.

    values: per-token value (e.g. forward KL, or the trained divergence); weights: each token's weight in the
    loss (0 for skipped tokens); positions: each token's index within its completion; k: the boundary.
    Returns the mean value at positions < k and >= k over *trained* tokens (weight > 0; NaN where there are
    none) and `share_first`, the share of the loss (sum of weight * value) that comes from positions < k.
    """
    values, weights = values.detach().double(), weights.detach().double()
    trained = weights > 0
    first = positions < k

    def mean(sel: torch.Tensor) -> float:
        return float(values[sel].mean()) if bool(sel.any()) else float("nan")

    contribution = weights * values
    total = float(contribution.sum())
    share = float(contribution[first].sum()) / total if total != 0.0 else float("nan")
    return {"first": mean(trained & first), "rest": mean(trained & ~first), "share_first": share}
