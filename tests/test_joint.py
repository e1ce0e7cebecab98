"""Joint training: stage k resets to the base weights and trains on the union of tasks 1..k for the sum of
their sequential step counts. Checked against an independent path: plain SFT from a fresh copy of the base
model on the union (same shuffle generator), which must give the same weights."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from harness.config import Config, TrainerConfig
from harness.methods import train_stage
from harness.methods.base import StageContext
from harness.methods.joint import joint_plan, tasks_of
from harness.tasks.spec import Item

FIRST = [
    Item(prompt="Name a colour of the sky.", demonstration="Blue.", id="a", source="one/train.jsonl:1"),
    Item(prompt="Say hello in French.", demonstration="Bonjour !", id="b", source="one/train.jsonl:2"),
]
SECOND = [
    Item(prompt="What is 2 + 3?", demonstration="5", id="c", source="two/train.jsonl:1"),
    Item(prompt="Spell cat backwards.", demonstration="tac", id="d", source="two/train.jsonl:2"),
    Item(prompt="Capital of Italy?", demonstration="Rome", id="e", source="two/train.jsonl:3"),
]


def _cfg(method: str, epochs: float = 1.0, max_steps: int | None = None):
    cfg = OmegaConf.structured(Config)
    cfg.model.max_length = 256
    cfg.method.name = method
    cfg.trainer.batch_size, cfg.trainer.lr, cfg.trainer.warmup_steps = 2, 1e-2, 0
    cfg.trainer.epochs, cfg.trainer.max_steps = epochs, max_steps
    return cfg


def test_steps_are_the_sum_of_the_sequential_ones():
    trainer = TrainerConfig(batch_size=2, epochs=2.0)
    assert [len(t) for t in tasks_of(FIRST + SECOND)] == [2, 3]
    # sequential: ceil(2 * 2 / 2) = 2 and ceil(2 * 3 / 2) = 3 steps
    batches = joint_plan(FIRST, SECOND, trainer, StageContext(stage=2))
    assert len(batches) == 5 and all(len(b) == 2 for b in batches)
    assert {it.id for b in batches for it in b} == {"a", "b", "c", "d", "e"}
    capped = TrainerConfig(batch_size=2, epochs=2.0, max_steps=2)
    assert len(joint_plan(FIRST, SECOND, capped, StageContext(stage=2))) == 4  # 2 per task


def test_stage_two_is_sft_from_the_base_on_the_union(tiny_model):
    model, tok = tiny_model
    joint = copy.deepcopy(model)
    train_stage(joint, tok, FIRST, None, _cfg("joint"), StageContext(stage=1))
    moved = any(not torch.equal(p, q) for p, q in zip(joint.parameters(), model.parameters(), strict=True))
    assert moved
    stats = train_stage(joint, tok, SECOND, None, _cfg("joint"), StageContext(stage=2, replay_items=FIRST))
    assert stats.summary["steps"] == 3.0  # ceil(2/2) + ceil(3/2)

    # independent: SFT from the base on the union; epochs chosen so its own step count is the same 3
    ref = copy.deepcopy(model)
    train_stage(ref, tok, FIRST + SECOND, None, _cfg("sft", epochs=2.0, max_steps=3), StageContext(stage=2))
    for (name, p), q in zip(joint.named_parameters(), ref.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), name


def test_a_resume_past_stage_one_is_refused(tiny_model):
    model, tok = tiny_model
    with pytest.raises(ValueError, match="method joint cannot resume at stage 2"):
        train_stage(copy.deepcopy(model), tok, SECOND, None, _cfg("joint"), StageContext(stage=2))
