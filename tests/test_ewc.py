"""EWC: SFT + (weight / 2) * sum F (theta - theta*)^2 with a diagonal Fisher summed over stages.

Independent computations: per-item gradients from transformers' own `labels=` loss (no fused head), squared
and averaged by hand for the Fisher; the penalty summed by hand over `state_dict()` tensors.
"""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from harness.batching import encode_demonstration
from harness.config import Config
from harness.methods import method_options, train_stage
from harness.methods.base import StageContext
from harness.methods.ewc import EWCSettings, EWCState, EWCStep, estimate_fisher, ewc_penalty
from harness.tasks.spec import Item

ITEMS = [
    Item(prompt="Name a colour of the sky.", demonstration="Blue, on a clear day.", id="a", source="t:1"),
    Item(prompt="Say hello in French.", demonstration="Bonjour !", id="b", source="t:2"),
]
LATER = [
    Item(prompt="What is 2 + 3?", demonstration="5", id="c", source="u:1"),
    Item(prompt="Spell cat backwards.", demonstration="tac", id="d", source="u:2"),
]


def _cfg(weight: float = 1000.0, steps: int = 2, lr: float = 1e-2):
    cfg = OmegaConf.structured(Config)
    cfg.model.max_length = 256
    cfg.method.name = "ewc"
    cfg.method.options = {"weight": weight, "fisher_items": 0}
    cfg.trainer.batch_size, cfg.trainer.max_steps, cfg.trainer.lr, cfg.trainer.warmup_steps = 2, steps, lr, 0
    cfg.trainer.epochs = steps
    return cfg


def _item_nll(model, tok, item):
    prompt, demo = encode_demonstration(tok, item, 256)
    labels = torch.tensor([[-100] * len(prompt) + demo])
    return model(input_ids=torch.tensor([prompt + demo]), labels=labels).loss, len(demo)


def _hand_fisher(model, tok, items):
    ref = copy.deepcopy(model).eval()
    out = {name: torch.zeros_like(p) for name, p in ref.named_parameters()}
    for item in items:
        ref.zero_grad()
        _item_nll(ref, tok, item)[0].backward()
        for name, p in ref.named_parameters():
            out[name] += p.grad**2 / len(items)
    return out


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> bool:
    """Equal up to float rounding relative to the tensor's size (squared gradients span many decades)."""
    return float((a - b).norm()) <= tol * float(b.norm()) + 1e-20


def test_fisher_is_the_mean_squared_per_item_gradient(tiny_model):
    model, tok = tiny_model
    model = copy.deepcopy(model)
    fisher = estimate_fisher(model, tok, ITEMS, chunk_size=5, max_length=256)
    expected = _hand_fisher(model, tok, ITEMS)
    assert set(fisher) == set(expected)
    for name, value in fisher.items():
        assert _close(value, expected[name]), name
    assert all(p.grad is None for p in model.parameters())  # estimation leaves no gradients behind


def test_loss_and_gradient_match_a_hand_computation(tiny_model):
    model, tok = tiny_model
    model = copy.deepcopy(model).train()
    gen = torch.Generator().manual_seed(1)
    names = [n for n, _ in model.named_parameters()]
    state = EWCState(
        fisher={n: torch.rand(p.shape, generator=gen) for n, p in model.named_parameters()},
        anchor={n: p.detach().clone() for n, p in model.named_parameters()},
        stages=1,
    )
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=gen))
    step = EWCStep(model, tok, EWCSettings(loss_chunk_size=5, weight=3.0), 256, state)
    loss, stats = step(ITEMS, ITEMS)
    loss.backward()

    ref = copy.deepcopy(model)
    ref.zero_grad()
    pairs = [_item_nll(ref, tok, it) for it in ITEMS]
    ce = sum(nll * n for nll, n in pairs) / sum(n for _, n in pairs)
    params = dict(ref.named_parameters())
    penalty = sum((state.fisher[n] * (params[n] - state.anchor[n]) ** 2).sum() for n in names)
    expected = ce + 0.5 * 3.0 * penalty
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert stats["ewc_penalty"] == pytest.approx(penalty.item(), rel=1e-5)
    expected.backward()
    for (name, p), (_, q) in zip(model.named_parameters(), ref.named_parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=1e-4), name


def test_fisher_accumulates_over_stages_and_anchors_at_the_last_stage_end(tiny_model):
    model, tok = tiny_model
    model = copy.deepcopy(model)
    train_stage(model, tok, ITEMS, None, _cfg(steps=1), StageContext(stage=1))
    first = {n: f.clone() for n, f in model.ewc_state.fisher.items()}
    assert model.ewc_state.stages == 1
    for n, f in _hand_fisher(model, tok, ITEMS).items():  # stage 1's Fisher at stage 1's end weights
        assert _close(first[n], f), n
    train_stage(model, tok, LATER, None, _cfg(steps=1), StageContext(stage=2, replay_items=ITEMS))
    second = _hand_fisher(model, tok, LATER)
    for n, p in model.named_parameters():
        assert _close(model.ewc_state.fisher[n], first[n] + second[n]), n
        assert torch.equal(model.ewc_state.anchor[n], p.detach())
    assert model.ewc_state.stages == 2


def test_a_strong_penalty_keeps_important_weights_near_the_anchor(tiny_model):
    model, tok = tiny_model
    base = copy.deepcopy(model)
    train_stage(base, tok, ITEMS, None, _cfg(steps=2), StageContext(stage=1))
    moved = {}
    for weight in (0.0, 1e7):
        m = copy.deepcopy(base)  # carries stage 1's Fisher and anchor
        state = copy.deepcopy(m.ewc_state)
        cfg = _cfg(weight=weight, steps=6, lr=1e-3)
        train_stage(m, tok, LATER, None, cfg, StageContext(stage=2, replay_items=ITEMS))
        with torch.no_grad():
            moved[weight] = float(ewc_penalty(m, state))
    assert moved[0.0] > 0
    assert moved[1e7] < 0.2 * moved[0.0], moved


def test_a_resumed_stage_rebuilds_the_fisher_from_earlier_items(tiny_model):
    """A fresh process (no state on the model) at stage 2 rebuilds stage 1's Fisher from the replay items."""
    model, tok = tiny_model
    model = copy.deepcopy(model)
    expected = _hand_fisher(model, tok, ITEMS)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_stage(model, tok, LATER, None, _cfg(steps=1), StageContext(stage=2, replay_items=ITEMS))
    # the state holds the rebuilt stage-1 Fisher (at the resumed weights) plus stage 2's own
    second = _hand_fisher(model, tok, LATER)
    for n, _ in model.named_parameters():
        assert _close(model.ewc_state.fisher[n], expected[n] + second[n]), n
        assert not torch.equal(start[n], model.ewc_state.anchor[n])
    assert model.ewc_state.stages == 2


def test_options_are_typed():
    assert method_options("ewc", {"weight": 5.0}).weight == 5.0
    with pytest.raises(ValueError, match="valid: weight, fisher_items"):
        method_options("ewc", {"lambda": 5.0})
