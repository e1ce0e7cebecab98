"""CREDIT's contrastive teacher baseline (method.distill.credit_k / credit_weight).

Checked against independent computations: a brute-force loop over a tiny vocabulary (python floats, no
harness code), and, through a real step of the tiny model, full-logit forwards of each context with
transformers' own LM head (no fused head, no divergence module).
"""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from harness.config import Config
from harness.distill.loss import DistillSettings, distillation_loss
from harness.tasks.spec import Item

V = 5


def _softmax(xs: list[float]) -> list[float]:
    z = sum(math.exp(x) for x in xs)
    return [math.exp(x) / z for x in xs]


def _credit_forward_kl(s: list[float], t: list[float], bases: list[list[float]], w: float) -> float:
    """KL(q || p_s) with q(v) proportional to p_t(v) / (prod_k p_bk(v))^(w / K), by hand."""
    p_s, p_t = _softmax(s), _softmax(t)
    p_b = [_softmax(b) for b in bases]
    raw = [p_t[v] / math.prod(pb[v] for pb in p_b) ** (w / len(p_b)) for v in range(len(s))]
    q = [x / sum(raw) for x in raw]
    return sum(qv * math.log(qv / sv) for qv, sv in zip(q, p_s, strict=True))


def _eye() -> torch.nn.Linear:
    head = torch.nn.Linear(V, V, bias=False, dtype=torch.float64)
    with torch.no_grad():
        head.weight.copy_(torch.eye(V))
    return head


@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0])
def test_loss_matches_a_brute_force_loop(weight: float) -> None:
    gen = torch.Generator().manual_seed(4)
    B, C = 2, 4
    student = torch.randn(B, C, V, generator=gen, dtype=torch.float64)
    teacher = torch.randn(B, C, V, generator=gen, dtype=torch.float64)
    bases = [torch.randn(B, C, V, generator=gen, dtype=torch.float64) for _ in range(2)]
    ids = torch.randint(V, (B, C), generator=gen)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    settings = DistillSettings(skip_tokens=1, chunk_size=3, credit_weight=weight)
    loss, _ = distillation_loss(student, teacher, _eye(), _eye(), ids, mask, settings, baseline_hidden=bases)
    expected = 0.0
    for b in range(B):
        positions = [c for c in range(1, C) if mask[b, c]]
        per_token = [
            _credit_forward_kl(
                student[b, c].tolist(), teacher[b, c].tolist(), [x[b, c].tolist() for x in bases], weight
            )
            for c in positions
        ]
        expected += sum(per_token) / len(per_token) / B
    assert loss.item() == pytest.approx(expected, rel=1e-6)  # the loss weights are float32


def _cfg(**distill):
    cfg = OmegaConf.structured(Config)
    cfg.method.distill.update({"max_new_tokens": 6, "skip_tokens": 1, **distill})
    return cfg


ITEMS = [
    Item(prompt="Hi there, who are you?", demonstration="A model."),
    Item(prompt="2+2?", demonstration="4"),
]
COMPLETIONS = [[11, 12, 13, 14, 15, 16], [21, 22, 23, 2]]


def _fixed_step(tiny_model, monkeypatch, **distill):
    from harness.batching import pad
    from harness.distill.rollout import Rollouts
    from harness.distill.teacher import Teacher
    from harness.methods import sdft

    model, tok = tiny_model
    cfg = _cfg(**distill)
    step = sdft.DistillStep(
        model, tok, Teacher(model, "base"), cfg.method.distill, None, cfg.model.max_length
    )
    step.pool = ITEMS

    def fixed(students, teachers):
        p_ids, p_mask = pad(students, tok.pad_token_id, "left")
        c_ids, c_mask = pad(COMPLETIONS, tok.pad_token_id, "right")
        return Rollouts(p_ids, p_mask, c_ids, c_mask, torch.tensor([True, False])), torch.zeros(2, dtype=bool)

    monkeypatch.setattr(step, "rollouts", fixed)
    return step


def _completion_logp(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """log-probabilities [C, V] at the positions predicting `completion`: one unpadded forward, HF's head."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + completion])).logits[0].float()
    return torch.log_softmax(logits[len(prompt) - 1 : len(prompt) - 1 + len(completion)], -1)


@pytest.mark.parametrize("weight", [0.5, 1.0])
def test_a_real_step_subtracts_the_other_items_context(tiny_model, monkeypatch, weight) -> None:
    """Two items, K = 2: every draw is the other item, so the baseline is its teacher context."""
    from harness.batching import chat_prompt_ids
    from harness.tasks.spec import student_messages, teacher_messages

    model, tok = tiny_model
    step = _fixed_step(tiny_model, monkeypatch, credit_k=2, credit_weight=weight)
    loss, stats = step(ITEMS, ITEMS)
    expected = 0.0
    for row, (item, other) in enumerate([(ITEMS[0], ITEMS[1]), (ITEMS[1], ITEMS[0])]):
        completion = COMPLETIONS[row]
        s = _completion_logp(model, chat_prompt_ids(tok, student_messages(item)), completion)
        t = _completion_logp(model, chat_prompt_ids(tok, teacher_messages(item, step.template)), completion)
        b = _completion_logp(model, chat_prompt_ids(tok, teacher_messages(other, step.template)), completion)
        q = torch.log_softmax(t - weight * b, -1)
        per_token = (q.exp() * (q - s)).sum(-1)[1:]  # skip_tokens=1
        expected += float(per_token.mean()) / 2
    assert loss.item() == pytest.approx(expected, rel=5e-3)  # padded batch vs unpadded forwards, float32
    plain = _fixed_step(tiny_model, monkeypatch)(ITEMS, ITEMS)[0]
    assert abs(loss.item() - plain.item()) > 1e-3  # the baseline changed the target


def test_weight_zero_is_the_plain_teacher(tiny_model, monkeypatch) -> None:
    with_zero = _fixed_step(tiny_model, monkeypatch, credit_k=1, credit_weight=0.0)(ITEMS, ITEMS)[0]
    plain = _fixed_step(tiny_model, monkeypatch)(ITEMS, ITEMS)[0]
    assert with_zero.item() == pytest.approx(plain.item(), rel=1e-6)


def test_one_item_cannot_be_contrasted() -> None:
    from harness.methods.contrast import check_credit

    with pytest.raises(ValueError, match="credit_k=2 needs at least 2 train items"):
        check_credit(_cfg(credit_k=2).method.distill, ITEMS[:1])


def test_other_items_never_draw_the_row_itself() -> None:
    from harness.methods.contrast import other_items

    pool = [Item(prompt=f"q{i}", demonstration="a") for i in range(4)]
    torch.manual_seed(0)
    drawn = other_items(pool, pool, 50)
    for row, others in zip(pool, drawn, strict=True):
        assert row not in others and {id(o) for o in others} == {id(p) for p in pool if p is not row}
