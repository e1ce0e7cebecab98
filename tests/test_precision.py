"""bfloat16 training (the default dtype on CUDA), checked on the CPU against the same model in float32.

The GPU path differs from this one only in the device; what can go wrong with bf16 is in our code: the
fused head must accumulate its weight gradient in float32 and hand back a bf16 gradient, the EMA teacher
must stay in the student's dtype, and the losses must agree with float32 to bf16's precision (8 bits of
mantissa: about 0.4% per rounding; we allow 3% on a loss, i.e. a few roundings' worth, and demand that the
gradients point the same way, cosine > 0.99).
"""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from harness.config import Config
from harness.methods.sft import SupervisedStep
from harness.tasks import Item

ITEMS = [
    Item(prompt="Name a colour of the sky.", demonstration="Blue, on a clear day.", id="a", source="t:1"),
    Item(prompt="What is two plus two?", demonstration="Four.", id="b", source="t:2"),
    Item(prompt="Say hello in French.", demonstration="Bonjour !", id="c", source="t:3"),
    Item(prompt="Give one prime number.", demonstration="Seven is prime.", id="d", source="t:4"),
]


def _cfg(**distill):
    cfg = OmegaConf.structured(Config)
    cfg.model.max_length = 256
    cfg.method.distill.update({"loss_chunk_size": 7, **distill})
    cfg.trainer.update({"batch_size": 2, "max_steps": 2, "warmup_steps": 0, "lr": 1e-3})
    return cfg


def _flat_grad(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.float().reshape(-1) for p in model.parameters() if p.grad is not None])


def test_bf16_supervised_loss_and_gradient_agree_with_float32(tiny_model) -> None:
    model32, tok = tiny_model
    model32 = copy.deepcopy(model32).train()
    model16 = copy.deepcopy(model32).to(torch.bfloat16)
    losses, grads = {}, {}
    for name, model in (("fp32", model32), ("bf16", model16)):
        loss, _ = SupervisedStep(model, tok, _cfg())(ITEMS, ITEMS)
        loss.backward()
        assert loss.dtype == torch.float32  # accumulated in float32 whatever the weights' dtype
        assert all(p.grad.dtype == p.dtype for p in model.parameters() if p.grad is not None)
        losses[name], grads[name] = loss.item(), _flat_grad(model)
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=3e-2)
    cosine = torch.nn.functional.cosine_similarity(grads["bf16"], grads["fp32"], dim=0)
    assert cosine > 0.99, float(cosine)


def test_bf16_sdft_stage_trains_and_keeps_dtypes(tiny_model) -> None:
    """Two SDFT steps in bf16: finite losses, the weights move, student and EMA teacher stay bf16."""
    from harness.distill import teacher as teacher_module
    from harness.methods import StageContext, get_method

    model, tok = tiny_model
    model = copy.deepcopy(model).to(torch.bfloat16)
    before = [p.detach().clone() for p in model.parameters()]
    seen: list[torch.dtype] = []

    class Recording(teacher_module.Teacher):
        def update(self) -> None:
            super().update()
            seen.extend({p.dtype for p in self.model.parameters()})

    original = teacher_module.Teacher
    import harness.methods.sdft as sdft

    sdft.Teacher = Recording
    try:
        torch.manual_seed(0)
        stats = get_method("sdft")(model, tok, ITEMS, None, _cfg(max_new_tokens=6, skip_tokens=0), StageContext())
    finally:
        sdft.Teacher = original
    losses = [s["loss"] for s in stats.steps]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(v)) for v in losses)
    assert seen and set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    moved = max(float((p.detach().float() - b.float()).abs().max()) for p, b in zip(model.parameters(), before, strict=True))
    assert moved > 0
