"""OPD: on-policy distillation from a separate, frozen teacher (a stage checkpoint here).

The loss of one step with fixed rollouts is checked against an independent computation: teacher and
student each run unpadded through transformers (their own LM heads) on the student's prompt, and the
divergence is summed by hand.
"""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from harness.config import Config
from harness.tasks.spec import Item, student_messages

ITEMS = [
    Item(prompt="Hi there, who are you?", demonstration="A model."),
    Item(prompt="2+2?", demonstration="4"),
]
COMPLETIONS = [[11, 12, 13, 14, 15, 16], [21, 22, 23, 2]]


@pytest.fixture
def teacher_file(tiny_model, tmp_path):
    """A stage checkpoint of a model that differs from the student: the tiny model with every weight moved."""
    from safetensors.torch import save_model

    model, _ = tiny_model
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    save_model(other, str(tmp_path / "stage_2.safetensors"))
    save_model(model, str(tmp_path / "stage_1.safetensors"))
    return tmp_path, other


def _cfg(teacher_model: str, **distill):
    cfg = OmegaConf.structured(Config)
    cfg.method.name = "opd"
    cfg.method.distill.update({"teacher": "base", "skip_tokens": 1, "max_new_tokens": 6, **distill})
    cfg.method.options = {"teacher_model": teacher_model}
    cfg.trainer.update({"batch_size": 2, "max_steps": 1, "warmup_steps": 0, "lr": 1e-3})
    return cfg


def _logp(model, tok, item, completion):
    from harness.batching import chat_prompt_ids

    prompt = chat_prompt_ids(tok, student_messages(item))
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + completion])).logits[0].float()
    return torch.log_softmax(logits[len(prompt) - 1 : len(prompt) - 1 + len(completion)], -1)


@pytest.mark.parametrize("divergence", ["forward", "reverse"])
def test_loss_against_the_external_teacher(tiny_model, teacher_file, monkeypatch, divergence):
    from harness.batching import pad
    from harness.distill.rollout import Rollouts
    from harness.methods.opd import FrozenTeacher, OPDStep, load_teacher

    model, tok = tiny_model
    folder, other = teacher_file
    teacher = load_teacher(str(folder), model, tok)  # the folder: its latest stage, stage_2
    for p, q in zip(teacher.parameters(), other.parameters(), strict=True):
        assert torch.equal(p, q)
    cfg = _cfg(str(folder), divergence=divergence)
    step = OPDStep(model, tok, FrozenTeacher(teacher), cfg.method.distill, None, cfg.model.max_length)

    def fixed(students, teachers):
        assert teachers == students  # the teacher reads the student's own prompt
        p_ids, p_mask = pad(students, tok.pad_token_id, "left")
        c_ids, c_mask = pad(COMPLETIONS, tok.pad_token_id, "right")
        none = torch.zeros(2, dtype=torch.bool)
        return Rollouts(p_ids, p_mask, c_ids, c_mask, none), none

    monkeypatch.setattr(step, "rollouts", fixed)
    loss, _ = step(ITEMS, ITEMS)
    expected = 0.0
    for item, completion in zip(ITEMS, COMPLETIONS, strict=True):
        s, t = _logp(model, tok, item, completion), _logp(other, tok, item, completion)
        p, q = (t, s) if divergence == "forward" else (s, t)
        expected += float((p.exp() * (p - q)).sum(-1)[1:].mean()) / 2
    assert loss.item() == pytest.approx(expected, rel=5e-3)
    assert expected > 1e-3  # the teacher really differs from the student


def test_a_stage_trains_the_student_and_leaves_the_teacher(tiny_model, teacher_file):
    from harness.methods import StageContext, train_stage

    model, tok = tiny_model
    folder, other = teacher_file
    student = copy.deepcopy(model)
    before = [p.detach().clone() for p in student.parameters()]
    stats = train_stage(student, tok, ITEMS, None, _cfg(str(folder / "stage_2.safetensors")), StageContext())
    assert stats.steps[0]["kl"] > 0
    assert any(not torch.equal(p, b) for p, b in zip(student.parameters(), before, strict=True))


def test_bad_teachers_are_refused_in_one_line(tiny_model, tmp_path):
    from harness.methods import StageContext, train_stage

    model, tok = tiny_model
    with pytest.raises(ValueError, match="needs method.options.teacher_model"):
        train_stage(copy.deepcopy(model), tok, ITEMS, None, _cfg(""), StageContext())
    with pytest.raises(ValueError, match="teacher_model=.*nowhere.*not loadable"):
        train_stage(copy.deepcopy(model), tok, ITEMS, None, _cfg(str(tmp_path / "nowhere")), StageContext())
    with pytest.raises(ValueError, match="teacher=live would make the student its own teacher"):
        train_stage(copy.deepcopy(model), tok, ITEMS, None, _cfg("x", teacher="live"), StageContext())


def test_a_model_folder_loads_as_the_teacher(tiny_model, teacher_file, tmp_path):
    """A local Hugging Face folder (what a hub id resolves to), with its tokenizer checked against ours."""
    from harness.methods.opd import load_teacher

    model, tok = tiny_model
    _, other = teacher_file
    folder = tmp_path / "hf_teacher"
    other.save_pretrained(folder)
    tok.save_pretrained(folder)
    teacher = load_teacher(str(folder), model, tok)
    for p, q in zip(teacher.parameters(), other.parameters(), strict=True):
        assert torch.equal(p, q) and not p.requires_grad
