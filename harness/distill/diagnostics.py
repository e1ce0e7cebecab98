"""Diagnostics of self-distillation: why SDFT learns or does not (pure functions, no model, no I/O).

- rollout health: how often completions recite the teacher template's own instruction text, how repetitive
  they are (a repetition loop run to the length cap is distilled like any answer), distinct bigrams;
- per-position profile of a per-token quantity (KL, loss): the first k completion positions, where a short
  structured answer's format is decided, against the rest, and the share of the loss those positions carry;
- the same recitation rate over evaluation outputs (a template that leaked into ordinary answers).

The teacher-forcing probe, which needs a model, lives in harness.distill.probe; recitation, which the
report also measures on evaluation answers, in harness.eval.recitation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from harness.eval.recitation import RECITE_N, recitation_rate


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
