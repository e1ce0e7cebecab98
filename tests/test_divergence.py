"""Divergences x supports against brute-force loops over small random distributions, and the direction of
the KL pinned by a hand-computed case."""

from __future__ import annotations

import math

import pytest
import torch

from harness.distill.divergence import token_divergence


def _probs(logits: list[float]) -> list[float]:
    z = sum(math.exp(x) for x in logits)
    return [math.exp(x) / z for x in logits]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


def _div(s: list[float], t: list[float], kind: str, beta: float) -> float:
    if kind == "forward":
        return _kl(t, s)
    if kind == "reverse":
        return _kl(s, t)
    m = [beta * ti + (1 - beta) * si for si, ti in zip(s, t, strict=True)]
    return beta * _kl(t, m) + (1 - beta) * _kl(s, m)


def _brute(
    s_logits: list[float], t_logits: list[float], kind: str, beta: float, support: str, k: int, tail: bool
) -> float:
    s, t = _probs(s_logits), _probs(t_logits)
    if support == "full":
        return _div(s, t, kind, beta)
    top = sorted(range(len(s)), key=lambda i: -s[i])[:k]  # the student's k most likely tokens
    s_k, t_k = [s[i] for i in top], [t[i] for i in top]
    if tail:
        s_k.append(1 - sum(s_k))
        t_k.append(1 - sum(t_k))
    else:
        s_k = [x / sum(s_k) for x in s_k]
        t_k = [x / sum(t_k) for x in t_k]
    return _div(s_k, t_k, kind, beta)


@pytest.mark.parametrize("support,tail", [("full", False), ("topk", True), ("topk", False)])
@pytest.mark.parametrize("kind,beta", [("forward", 0.5), ("reverse", 0.5), ("jsd", 0.5), ("jsd", 0.2)])
def test_divergence_matches_brute_force(kind: str, beta: float, support: str, tail: bool) -> None:
    gen = torch.Generator().manual_seed(7)
    s = torch.randn(6, 7, generator=gen, dtype=torch.float64) * 2
    t = torch.randn(6, 7, generator=gen, dtype=torch.float64) * 2
    got = token_divergence(s, t, kind=kind, beta=beta, support=support, topk=3, tail=tail)
    for row in range(s.shape[0]):
        want = _brute(s[row].tolist(), t[row].tolist(), kind, beta, support, 3, tail)
        assert got[row].item() == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_forward_and_reverse_are_not_swapped() -> None:
    # student p_s = (0.9, 0.1), teacher p_t = (0.5, 0.5), computed by hand:
    # forward KL(t||s) = 0.5 ln(0.5/0.9) + 0.5 ln(0.5/0.1) = 0.5108256
    # reverse KL(s||t) = 0.9 ln(0.9/0.5) + 0.1 ln(0.1/0.5) = 0.3680642
    s = torch.log(torch.tensor([[0.9, 0.1]], dtype=torch.float64))
    t = torch.log(torch.tensor([[0.5, 0.5]], dtype=torch.float64))
    assert token_divergence(s, t, kind="forward").item() == pytest.approx(0.5108256, abs=1e-6)
    assert token_divergence(s, t, kind="reverse").item() == pytest.approx(0.3680642, abs=1e-6)


@pytest.mark.parametrize("kind", ["forward", "reverse"])
def test_sampled_estimator_gradient_is_unbiased(kind: str) -> None:
    """Summing the single-token surrogate's gradient over every token y, weighted by p_s(y) (the exact
    expectation over rollouts y ~ student), gives the gradient of the exact full-vocabulary divergence."""
    gen = torch.Generator().manual_seed(3)
    s_logits = torch.randn(5, generator=gen, dtype=torch.float64)
    t_logits = torch.randn(5, generator=gen, dtype=torch.float64)

    exact = s_logits.clone().requires_grad_(True)
    token_divergence(exact, t_logits, kind=kind).backward()

    expected_grad = torch.zeros(5, dtype=torch.float64)
    p_s = torch.softmax(s_logits, -1)
    for y in range(5):
        x = s_logits.clone().requires_grad_(True)
        token_divergence(
            x.unsqueeze(0), t_logits.unsqueeze(0), kind=kind, support="sampled", tokens=torch.tensor([y])
        ).sum().backward()
        expected_grad += p_s[y] * x.grad
    torch.testing.assert_close(expected_grad, exact.grad, rtol=1e-9, atol=1e-12)


def test_sampled_rejects_jsd_and_unknown_names() -> None:
    s = torch.zeros(1, 3)
    with pytest.raises(ValueError, match="sampled"):
        token_divergence(s, s, kind="jsd", support="sampled", tokens=torch.tensor([0]))
    with pytest.raises(ValueError, match="valid"):
        token_divergence(s, s, kind="backward")
    with pytest.raises(ValueError, match="valid"):
        token_divergence(s, s, support="half")
