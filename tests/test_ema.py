"""The EMA teacher: closed form after k steps, and a fresh start from the student at every stage."""

from __future__ import annotations

import copy

import torch
from omegaconf import OmegaConf

import harness.methods.sdft as sdft_module
from harness.config import Config
from harness.distill.teacher import Teacher
from harness.methods import StageContext, train_stage
from harness.tasks.spec import Item

ITEMS = [
    Item(prompt=f"What is {i} times 3?", demonstration=f"{3 * i}", privileged=f"{i}*3={3 * i}")
    for i in range(4)
]


def _snapshot(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


class RecordingTeacher(Teacher):
    """The real teacher, recording its weights at creation, the student after every step, and its end state."""

    created: list[list[torch.Tensor]] = []
    students: list[list[torch.Tensor]] = []
    final: list[list[torch.Tensor]] = []

    def __init__(self, student, kind="ema", ema_rate=0.01):
        super().__init__(student, kind, ema_rate)
        RecordingTeacher.created.append(_snapshot(self.model))

    def update(self):
        RecordingTeacher.students.append(_snapshot(self.student))
        super().update()

    def release(self):
        RecordingTeacher.final.append(_snapshot(self.model))
        super().release()


def _cfg(rate: float, steps: int):
    cfg = OmegaConf.structured(Config)
    cfg.method.distill.update({"teacher": "ema", "ema_rate": rate, "max_new_tokens": 4, "skip_tokens": 0})
    cfg.trainer.update({"batch_size": 2, "max_steps": steps, "warmup_steps": 0, "lr": 1e-2})
    return cfg


def test_ema_closed_form_and_restart_from_current_student(tiny_model, monkeypatch) -> None:
    model, tok = tiny_model
    model = copy.deepcopy(model)
    base = _snapshot(model)
    monkeypatch.setattr(sdft_module, "Teacher", RecordingTeacher)
    RecordingTeacher.created, RecordingTeacher.students, RecordingTeacher.final = [], [], []
    a, k = 0.3, 3
    train = train_stage

    train(model, tok, ITEMS, None, _cfg(a, k), StageContext(stage=1))
    end_of_stage_1 = _snapshot(model)
    # closed form: phi_k = (1-a)^k phi_0 + sum_j a (1-a)^(k-j) theta_j, theta_j = student after step j
    thetas = RecordingTeacher.students
    assert len(thetas) == k
    for i, phi0 in enumerate(RecordingTeacher.created[0]):
        want = (1 - a) ** k * phi0 + sum(a * (1 - a) ** (k - j) * thetas[j - 1][i] for j in range(1, k + 1))
        torch.testing.assert_close(RecordingTeacher.final[0][i], want, rtol=1e-5, atol=1e-6)
    for t, b in zip(RecordingTeacher.created[0], base, strict=True):
        assert torch.equal(t, b)
    assert any(not torch.equal(x, b) for x, b in zip(end_of_stage_1, base, strict=True))

    train(model, tok, ITEMS, None, _cfg(a, 1), StageContext(stage=2))
    # stage 2's teacher starts from the student at the end of stage 1, not from the base weights
    for t, s in zip(RecordingTeacher.created[1], end_of_stage_1, strict=True):
        assert torch.equal(t, s)


def test_teacher_kinds() -> None:
    student = torch.nn.Linear(3, 2)
    live = Teacher(student, "live")
    assert live.model is student
    frozen = Teacher(student, "base")
    before = _snapshot(frozen.model)
    with torch.no_grad():
        student.weight.add_(1.0)
    frozen.update()
    assert all(torch.equal(x, y) for x, y in zip(_snapshot(frozen.model), before, strict=True))
    assert all(not p.requires_grad for p in frozen.model.parameters())
