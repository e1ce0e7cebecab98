"""LwF: the new task's cross-entropy plus weight * T^2 * KL(old^T || student^T) on the demonstration tokens.

Checked against an independent computation: plain full-vocabulary forwards of both models (transformers'
own logits, no chunking, no fused head), the softmaxes and the KL written out by hand, averaged over the
batch's demonstration tokens; and gradients from autograd through that reference.
"""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from harness.batching import encode_demonstration
from harness.config import Config
from harness.distill.teacher import Teacher
from harness.methods import StudentSize, method_options, method_spec, train_stage
from harness.methods.base import StageContext
from harness.methods.lwf import LwFSettings, LwFStep
from harness.tasks.spec import Item

ITEMS = [
    Item(prompt="Name a colour of the sky.", demonstration="Blue, on a clear day.", id="a", source="t:1"),
    Item(prompt="Say hello in French.", demonstration="Bonjour !", id="b", source="t:2"),
]


def _cfg(weight: float = 1.0, temperature: float = 2.0, steps: int = 2, lr: float = 1e-2):
    cfg = OmegaConf.structured(Config)
    cfg.model.max_length = 256
    cfg.method.name = "lwf"
    cfg.method.options = {"weight": weight, "temperature": temperature}
    cfg.trainer.batch_size, cfg.trainer.max_steps, cfg.trainer.lr, cfg.trainer.warmup_steps = 2, steps, lr, 0
    cfg.trainer.epochs = steps  # two items, batch 2: one step per epoch
    return cfg


def _demo_logits(model, tok, item):
    prompt, demo = encode_demonstration(tok, item, 256)
    logits = model(input_ids=torch.tensor([prompt + demo])).logits[0]
    return logits[len(prompt) - 1 : len(prompt) - 1 + len(demo)], torch.tensor(demo)


def _reference(student, old, tok, weight, temperature):
    total, loss, kls = 0, 0.0, []
    for item in ITEMS:
        s_logits, demo = _demo_logits(student, tok, item)
        with torch.no_grad():
            o_logits, _ = _demo_logits(old, tok, item)
        probs = torch.exp(s_logits) / torch.exp(s_logits).sum(-1, keepdim=True)
        ce = -torch.log(probs[torch.arange(len(demo)), demo])
        p_old = torch.exp(o_logits / temperature)
        p_old = p_old / p_old.sum(-1, keepdim=True)
        p_new = torch.exp(s_logits / temperature)
        p_new = p_new / p_new.sum(-1, keepdim=True)
        token_kl = (p_old * (torch.log(p_old) - torch.log(p_new))).sum(-1)
        loss = loss + (ce + weight * temperature**2 * token_kl).sum()
        kls.append(token_kl.detach())
        total += len(demo)
    return loss / total, torch.cat(kls).mean()


@pytest.mark.parametrize("weight,temperature", [(0.7, 2.0), (3.0, 1.0)])
def test_loss_and_gradient_match_a_hand_computation(tiny_model, weight, temperature):
    model, tok = tiny_model
    student = copy.deepcopy(model).train()
    old = Teacher(student, kind="base")  # frozen copy of the starting weights
    with torch.no_grad():  # move the student away so the KL is not zero
        for p in student.parameters():
            p.add_(0.02 * torch.randn_like(p))
    settings = LwFSettings(loss_chunk_size=5, weight=weight, temperature=temperature)
    step = LwFStep(student, tok, old, settings, 256)
    loss, stats = step(ITEMS, ITEMS)
    loss.backward()

    ref = copy.deepcopy(student)
    ref.zero_grad()
    expected, mean_kl = _reference(ref, old.model, tok, weight, temperature)
    assert float(mean_kl) > 1e-4  # the KL term is really exercised
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert stats["lwf_kl"] == pytest.approx(float(mean_kl), rel=1e-4)
    expected.backward()
    for (name, p), (_, q) in zip(student.named_parameters(), ref.named_parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=1e-4), name


def test_micro_batches_add_up_to_the_batch_loss(tiny_model):
    model, tok = tiny_model
    student = copy.deepcopy(model)
    old = Teacher(student, kind="base")
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.02)
    step = LwFStep(student, tok, old, LwFSettings(weight=2.0), 256)
    whole = step(ITEMS, ITEMS)[0]
    halves = sum(step([it], ITEMS)[0] for it in ITEMS)
    assert halves.item() == pytest.approx(whole.item(), rel=1e-5)


def _kl_to(start, model, tok) -> float:
    with torch.no_grad():
        _, kl = _reference(model, start, tok, 0.0, 1.0)
    return float(kl)


def test_a_strong_weight_keeps_outputs_near_the_stage_start(tiny_model):
    model, tok = tiny_model
    drift = {}
    for weight in (0.0, 1000.0):
        m = copy.deepcopy(model)
        cfg = _cfg(weight=weight, temperature=1.0, steps=8, lr=1e-3)
        train_stage(m, tok, ITEMS, None, cfg, StageContext())
        drift[weight] = _kl_to(model, m, tok)
    # AdamW's first step is pure CE (the KL's gradient is zero at the start), the pull back comes after
    assert drift[0.0] > 1e-3
    assert drift[1000.0] < 0.2 * drift[0.0], drift


def test_options_and_registry():
    opts = method_options("lwf", {"weight": 0.5, "temperature": 1.5})
    assert (opts.weight, opts.temperature) == (0.5, 1.5)
    with pytest.raises(ValueError, match="valid: weight, temperature"):
        method_options("lwf", {"alpha": 1.0})
    # the frozen previous model: a copy of what trains (the adapters alone under LoRA), in the weights' dtype
    held = method_spec("lwf").held(LwFSettings(), StudentSize(params=10, trainable=3))
    assert [(h.values, h.value_bytes, h.model) for h in held] == [(3, None, None)]


def test_bad_temperature_is_one_line(tiny_model):
    model, tok = tiny_model
    with pytest.raises(ValueError, match=r"method.options.temperature=0.0: must be > 0"):
        train_stage(copy.deepcopy(model), tok, ITEMS, None, _cfg(temperature=0.0), StageContext())
