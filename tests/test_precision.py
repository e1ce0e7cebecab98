"""Precision: bf16 weights (a model cast by hand) and mixed precision (model.dtype=bfloat16/auto: bf16
compute under autocast, float32 master weights, gradients and AdamW state), each against float32.

What can go wrong with bf16 is in our code: the fused head must accumulate its weight gradient in float32
and hand back a gradient in the weight's dtype, the EMA teacher must stay in the student's (master) dtype,
and the losses must agree with float32 to bf16's precision (8 bits of mantissa: about 0.4% per rounding;
we allow 3% on a loss, i.e. a few roundings' worth, and demand that the gradients point the same way,
cosine > 0.99).
"""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from harness.config import Config
from harness.methods.sft import SupervisedStep
from harness.tasks.spec import Item

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
    cfg.method.sft.loss_chunk_size = 7  # several chunks per batch, SFT as SDFT
    cfg.trainer.update({"batch_size": 2, "max_steps": 2, "warmup_steps": 0, "lr": 1e-3})
    return cfg


def _supervised_step(model, tok) -> SupervisedStep:
    cfg = _cfg()
    return SupervisedStep(model, tok, cfg.method.sft.loss_chunk_size, cfg.model.max_length)


def _flat_grad(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.float().reshape(-1) for p in model.parameters() if p.grad is not None])


def test_bf16_supervised_loss_and_gradient_agree_with_float32(tiny_model) -> None:
    model32, tok = tiny_model
    model32 = copy.deepcopy(model32).train()
    model16 = copy.deepcopy(model32).to(torch.bfloat16)
    losses, grads = {}, {}
    for name, model in (("fp32", model32), ("bf16", model16)):
        loss, _ = _supervised_step(model, tok)(ITEMS, ITEMS)
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
    from harness.methods import StageContext, train_stage

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
        stats = train_stage(model, tok, ITEMS, None, _cfg(max_new_tokens=6, skip_tokens=0), StageContext())
    finally:
        sdft.Teacher = original
    losses = [s["loss"] for s in stats.steps]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(v)) for v in losses)
    assert seen and set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    moved = max(
        float((p.detach().float() - b.float()).abs().max())
        for p, b in zip(model.parameters(), before, strict=True)
    )
    assert moved > 0


def _mixed(model: torch.nn.Module, compute: torch.dtype) -> torch.nn.Module:
    from harness.models import Precision, set_precision

    copy_ = copy.deepcopy(model)
    set_precision(copy_, Precision(torch.float32, compute, "test"))
    return copy_


def test_autocast_only_where_the_compute_dtype_differs(tiny_model) -> None:
    from harness.models import autocast, resolve_precision

    model, _ = tiny_model
    x = torch.randn(2, 3)
    w = torch.randn(4, 3)
    with autocast(_mixed(model, torch.bfloat16)):
        assert torch.nn.functional.linear(x, w).dtype == torch.bfloat16
    with autocast(_mixed(model, torch.float32)):
        assert torch.nn.functional.linear(x, w).dtype == torch.float32
    with autocast(model):  # the tiny test model: float32 throughout
        assert torch.nn.functional.linear(x, w).dtype == torch.float32
    p = resolve_precision("bfloat16", torch.device("cpu"))
    assert (p.weights, p.compute) == (torch.float32, torch.bfloat16)
    with pytest.raises(ValueError, match="valid: auto, float32, bfloat16"):
        resolve_precision("float16", torch.device("cpu"))


def test_mixed_precision_fused_head_matches_float32(tiny_model) -> None:
    """The fused head under bf16 autocast: gradients land in float32 weights, close to float32's."""
    model32, tok = tiny_model
    losses, grads = {}, {}
    for name, compute in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        from harness.models import autocast

        model = _mixed(model32, compute).train()
        with autocast(model):
            loss, _ = _supervised_step(model, tok)(ITEMS, ITEMS)
        loss.backward()
        assert all(
            p.dtype == torch.float32 and p.grad.dtype == torch.float32
            for p in model.parameters()
            if p.grad is not None
        )
        losses[name], grads[name] = loss.item(), _flat_grad(model)
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=3e-2)
    assert losses["bf16"] != losses["fp32"]  # bf16 did run
    cosine = torch.nn.functional.cosine_similarity(grads["bf16"], grads["fp32"], dim=0)
    assert cosine > 0.99, float(cosine)


@pytest.mark.slow
def test_mixed_precision_stages_agree_with_float32_on_the_real_model(real_model, monkeypatch) -> None:
    """The same SFT and SDFT stages (2 steps, batch 2) on the embedded model, float32 vs bf16 compute.

    SDFT's rollouts are drawn once (float32) and replayed in the bf16 run, so both stages train on the same
    tokens: what differs is only the arithmetic of the forward passes. Tolerances: 3% on SFT losses (as
    above; measured 0.5% on the first step, 1.8% on the second, after one update from bf16 gradients) and
    5% on SDFT losses (a KL of two close distributions is a difference of nearly equal log-probabilities, so
    bf16's rounding weighs more; measured 1.7% and 2.3%).
    Master weights, the EMA teacher and the AdamW moments stay float32; the bf16 forward really ran in bf16.
    """
    import harness.methods.base as base
    import harness.methods.sdft as sdft
    from harness.distill import teacher as teacher_module
    from harness.methods import StageContext, train_stage

    base_model, tok = real_model
    recorded: list = []
    autocast_seen: dict[str, set[bool]] = {}
    optimizers: list = []
    teacher_dtypes: set[torch.dtype] = set()
    real_sample, real_build = sdft.sample, base.build_optimizer

    def build(model, tcfg):
        optimizers.append(real_build(model, tcfg))
        return optimizers[-1]

    class Recording(teacher_module.Teacher):
        def update(self) -> None:
            super().update()
            teacher_dtypes.update(p.dtype for p in self.model.parameters())

    monkeypatch.setattr(base, "build_optimizer", build)
    monkeypatch.setattr(sdft, "Teacher", Recording)
    losses: dict[tuple[str, str], list[float]] = {}
    for name, compute in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        replay = iter(list(recorded))

        def sample(model, *args, _name=name, _replay=replay, **kwargs):
            autocast_seen.setdefault(_name, set()).add(torch.is_autocast_enabled("cpu"))
            if _name == "fp32":
                recorded.append(real_sample(model, *args, **kwargs))
                return recorded[-1]
            return next(_replay)

        monkeypatch.setattr(sdft, "sample", sample)
        for method in ("sft", "sdft"):
            model = _mixed(base_model, compute)
            # generate's rollouts: the tolerances below were measured on its seed-0 draws; the static
            # decoder's draws (another random stream) gave 2.6% and 6.7% on SDFT's two steps, since the
            # relative error of a small KL depends on the tokens it is taken over
            cfg = _cfg(max_new_tokens=12, skip_tokens=0, decoder="hf")
            cfg.method.name = method
            cfg.trainer.lr = 1e-5
            torch.manual_seed(0)
            stats = train_stage(model, tok, ITEMS, None, cfg, StageContext())
            losses[(name, method)] = [s["loss"] for s in stats.steps]
            assert all(p.dtype == torch.float32 for p in model.parameters())
            moments = [v for state in optimizers[-1].state.values() for v in state.values() if v.dim() > 0]
            assert moments and all(v.dtype == torch.float32 for v in moments)
            del model
    assert autocast_seen == {"fp32": {False}, "bf16": {True}}
    assert teacher_dtypes == {torch.float32}
    for method, rel in (("sft", 3e-2), ("sdft", 5e-2)):
        fp32, bf16 = losses[("fp32", method)], losses[("bf16", method)]
        print(f"{method}: float32 losses {fp32}, bf16 {bf16}")  # the figures behind the tolerance (pytest -s)
        assert len(fp32) == len(bf16) == 2
        assert bf16 == pytest.approx(fp32, rel=rel), (method, fp32, bf16)
        assert bf16 != fp32


def test_distillation_heads_stay_float32_under_bf16_autocast():
    """The teacher-student divergence compares two sets of logits; bf16 logits (spacing 0.06-0.125 at
    |logit| 8-16) drown its signal, so under bf16 autocast both LM heads still run in float32: the loss and
    the hidden-state gradient equal a float32 computation on the same inputs (a bf16 head misses by ~1%)."""
    from harness.distill.loss import DistillSettings, distillation_loss

    torch.manual_seed(0)
    hidden_size, vocab = 64, 3000
    student_head = torch.nn.Linear(hidden_size, vocab, bias=False)
    teacher_head = torch.nn.Linear(hidden_size, vocab, bias=False)
    teacher_head.weight.data = student_head.weight.data + 0.01 * torch.randn(vocab, hidden_size)
    ids = torch.randint(0, vocab, (2, 5))
    mask = torch.ones(2, 5, dtype=torch.long)
    teacher_hidden = 3 * torch.randn(2, 5, hidden_size)
    settings = DistillSettings(skip_tokens=0, chunk_size=4)

    def run(autocast: bool):
        student_hidden = 3 * torch.randn(2, 5, hidden_size, generator=torch.Generator().manual_seed(1))
        student_hidden.requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss, _ = distillation_loss(
                student_hidden, teacher_hidden, student_head, teacher_head, ids, mask, settings
            )
        loss.backward()
        return loss.item(), student_hidden.grad

    loss32, grad32 = run(False)
    loss_bf, grad_bf = run(True)
    assert loss_bf == pytest.approx(loss32, rel=1e-5)
    assert torch.allclose(grad_bf.float(), grad32, rtol=1e-4, atol=1e-7)
