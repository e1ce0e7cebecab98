"""SDFT diagnostics against hand-made rollouts and hand-computed per-position figures."""

from __future__ import annotations

import math

import pytest
import torch

from harness.distill.diagnostics import (
    distinct_n,
    position_profile,
    repeated_ngram_rate,
    rollout_health,
)
from harness.distill.loss import FIRST_TOKENS, DistillSettings, distillation_loss
from harness.eval.recitation import recitation_rate, template_ngrams, template_sentences
from harness.tasks.spec import TEACHER_TEMPLATES


def test_template_sentences_are_the_templates_own_text() -> None:
    assert template_sentences(TEACHER_TEMPLATES["plain"]) == [
        "This is an example for a response to the question:",
        "Now answer with a response of your own.",
    ]
    assert template_sentences(TEACHER_TEMPLATES["label"]) == ["Correct answer:"]
    assert template_sentences(TEACHER_TEMPLATES["system"]) == ["Reference answer for the next question:"]
    # a short label counts whole: its only "n-gram" is the label itself
    assert template_ngrams(TEACHER_TEMPLATES["label"]) == {("correct", "answer")}


def test_recitation_rate_on_hand_made_rollouts() -> None:
    rollouts = [
        "This is an example of a response to a question: This is an example of",  # 4-gram "this is an example"
        'The user wants the forecast.\n{"name": "skyline_forecast"}',
        "Sure! Now ANSWER with a response, here it is",  # "now answer with a" (case, punctuation ignored)
        "an example for you",  # 3 words of the sentence only: not a recitation
    ]
    assert recitation_rate(rollouts, TEACHER_TEMPLATES["plain"]) == pytest.approx(2 / 4)
    assert recitation_rate(
        ["Correct answer:\n{}", "the correct one", "answer correct"], TEACHER_TEMPLATES["label"]
    ) == pytest.approx(1 / 3)
    assert recitation_rate([], TEACHER_TEMPLATES["plain"]) == 0.0


def test_repetition_and_distinct_n_hand_computed() -> None:
    loop = [1, 2, 3, 1, 2, 3, 1, 2, 3]  # 7 trigrams, the last 4 seen before
    assert repeated_ngram_rate(loop, 3) == pytest.approx(4 / 7)
    assert repeated_ngram_rate([1, 2, 3, 4, 5], 3) == 0.0
    assert distinct_n([1, 2, 1, 2, 3], 2) == pytest.approx(3 / 4)  # (1,2) twice among 4 bigrams
    health = rollout_health(
        [loop, [5, 6, 7, 8]], ["this is an example for", "fine"], TEACHER_TEMPLATES["plain"]
    )
    assert health["recite_frac"] == pytest.approx(0.5)
    assert health["repeat3"] == pytest.approx((4 / 7 + 0.0) / 2)
    assert health["distinct2"] == pytest.approx((3 / 8 + 1.0) / 2)  # loop: bigrams (1,2),(2,3),(3,1) of 8


def test_position_profile_hand_computed() -> None:
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    weights = torch.tensor([0.0, 0.5, 0.5, 0.25, 0.25])  # token 0 skipped
    positions = torch.tensor([0, 1, 2, 0, 1])
    out = position_profile(values, weights, positions, k=1)
    assert out["first"] == pytest.approx(4.0)  # trained tokens at position 0: only the 4th
    assert out["rest"] == pytest.approx((2 + 3 + 5) / 3)
    assert out["share_first"] == pytest.approx(1.0 / (1.0 + 1.5 + 1.0 + 1.25))


def test_loss_share_first_matches_an_independent_per_token_kl() -> None:
    """forward KL per token computed directly, per-sequence mean weights, share of positions < FIRST_TOKENS."""
    gen = torch.Generator().manual_seed(3)
    B, C, V = 2, 7, 9
    student = torch.randn(B, C, V, generator=gen, dtype=torch.float64)
    teacher = torch.randn(B, C, V, generator=gen, dtype=torch.float64)
    ids = torch.randint(V, (B, C), generator=gen)
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
    head = torch.nn.Linear(V, V, bias=False, dtype=torch.float64)
    with torch.no_grad():
        head.weight.copy_(torch.eye(V))
    settings = DistillSettings(skip_tokens=1, chunk_size=3)
    _, diag = distillation_loss(student, teacher, head, head, ids, mask, settings)
    pt, ps = torch.softmax(teacher, -1), torch.log_softmax(student, -1)
    kl = (pt * (pt.log() - ps)).sum(-1)  # [B, C]
    first = total = 0.0
    for b in range(B):
        n = int(mask[b].sum())
        for c in range(1, n):  # position 0 skipped
            w = float(kl[b, c]) / (n - 1)
            total += w
            first += w if c < FIRST_TOKENS else 0.0
    assert diag["loss_share_first"] == pytest.approx(first / total, rel=1e-5)
    assert 0.0 < diag["loss_share_first"] < 1.0
    assert not math.isnan(diag["kl"])
