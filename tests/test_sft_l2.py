"""The registry's example method: SFT with an L2 anchor to the stage's starting weights.

Checked against an independent computation: the transformers `labels=` loss of the batch plus the penalty
summed by hand over `state_dict()` tensors, and the penalty's gradient weight * (theta - theta_0).
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
from harness.methods.sft_l2 import AnchoredStep
from harness.tasks.spec import Item

ITEMS = [
    Item(prompt="Name a colour of the sky.", demonstration="Blue, on a clear day.", id="a", source="t:1"),
    Item(prompt="Say hello in French.", demonstration="Bonjour !", id="b", source="t:2"),
]


def _cfg(weight: float = 0.5, steps: int = 2, lr: float = 1e-2):
    cfg = OmegaConf.structured(Config)
    cfg.model.max_length = 256
    cfg.method.name = "sft_l2"
    cfg.method.options = {"weight": weight}
    cfg.trainer.batch_size, cfg.trainer.max_steps, cfg.trainer.lr, cfg.trainer.warmup_steps = 2, steps, lr, 0
    return cfg


def test_loss_is_cross_entropy_plus_half_weight_squared_distance(tiny_model):
    model, tok = tiny_model
    model = copy.deepcopy(model).train()
    step = AnchoredStep(model, tok, _cfg().method.sft.loss_chunk_size, _cfg().model.max_length, weight=0.5)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():  # move the weights away from the anchor by a known amount
        for p in model.parameters():
            p.add_(0.01)
    loss, stats = step(ITEMS, ITEMS)
    loss.backward()

    ref = copy.deepcopy(model)
    ref.zero_grad()
    total, terms = 0, []
    for item in ITEMS:
        prompt, demo = encode_demonstration(tok, item, 256)
        labels = torch.tensor([[-100] * len(prompt) + demo])
        terms.append(ref(input_ids=torch.tensor([prompt + demo]), labels=labels).loss * len(demo))
        total += len(demo)
    seen, distance = set(), 0.0
    for k, v in ref.state_dict(
        keep_vars=True
    ).items():  # tied weights (embeddings = LM head) are one tensor: count once
        if v.data_ptr() not in seen and v.is_floating_point() and not k.endswith("inv_freq"):
            seen.add(v.data_ptr())
            distance = distance + ((v.float() - start[k].float()) ** 2).sum()
    expected = sum(terms) / total + 0.25 * distance
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert stats["l2_distance"] == pytest.approx(float(distance.sqrt()), rel=1e-5)

    expected.backward()
    for (name, p), (_, q) in zip(model.named_parameters(), ref.named_parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=1e-4), (
            name,
            (p.grad - q.grad).abs().max(),
            q.grad.abs().max(),
        )


def test_penalty_is_split_across_micro_batches(tiny_model):
    """Two micro-batches of one step carry one penalty in all, as accumulation and DDP sums require."""
    model, tok = tiny_model
    model = copy.deepcopy(model).train()
    step = AnchoredStep(model, tok, _cfg().method.sft.loss_chunk_size, _cfg().model.max_length, weight=2.0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02)
    whole, _ = step(ITEMS, ITEMS)
    halves = sum(step([it], ITEMS)[0] for it in ITEMS)
    assert halves.item() == pytest.approx(whole.item(), rel=1e-5)


def test_a_strong_anchor_keeps_the_weights_near_the_stage_start(tiny_model):
    model, tok = tiny_model
    moved = {}
    for weight in (0.0, 1e4):
        m = copy.deepcopy(model)
        start = [p.detach().clone() for p in m.parameters()]
        train_stage(m, tok, ITEMS, None, _cfg(weight=weight, steps=3), StageContext())
        moved[weight] = sum(
            float((p.detach() - s).pow(2).sum()) for p, s in zip(m.parameters(), start, strict=True)
        )
    assert moved[1e4] < 0.5 * moved[0.0]


def test_options_are_typed_by_the_method():
    assert method_options("sft_l2", {"weight": 0.3}).weight == 0.3
    with pytest.raises(ValueError, match="method.options.wieght is not an option of 'sft_l2'; valid: weight"):
        method_options("sft_l2", {"wieght": 0.3})
    with pytest.raises(ValueError, match="takes no options"):
        method_options("sft", {"weight": 0.3})
