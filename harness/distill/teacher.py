"""The SDFT teacher: an EMA of the student, the stage's starting weights, or the live student.

A teacher is built at the start of every stage from the student *as it is then* (a deep copy in memory),
so in a continual run it never reverts to the original base model (TRL's SDFTTrainer reloads its teacher
from `config._name_or_path`, i.e. the original checkpoint; we never read weights from disk here).
Under FSDP the copy is allocated once, shard by shard like the student (harness.parallel.sharding), and overwritten with
the student's shards at the start of every stage: the same semantics without a deep copy of sharded modules.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from harness.config import TEACHERS
from harness.parallel import sharding


class Teacher:
    def __init__(self, student: torch.nn.Module, kind: str = "ema", ema_rate: float = 0.01) -> None:
        if kind not in TEACHERS:
            raise ValueError(f"teacher={kind!r} is not known; valid: {', '.join(TEACHERS)}")
        if not 0.0 < ema_rate <= 1.0:
            raise ValueError(f"ema_rate={ema_rate}: must be in (0, 1]")
        self.kind, self.rate, self.student = kind, ema_rate, student
        storage = sharding.teacher_copy(student)
        if kind == "live":
            self.model: Any = student  # no copy: the OPSD memory saving
        elif storage is not None:
            with torch.no_grad():
                for t, s in zip(storage.parameters(), student.parameters(), strict=True):
                    t.copy_(s)  # shard by shard: both are sharded the same way
            self.model = storage
        elif sharding.is_sharded(student):
            raise RuntimeError(
                f"teacher={kind!r} under FSDP needs the teacher copy that harness.parallel.sharding.shard "
                "allocates (with_teacher=True); it was sharded without one"
            )
        else:
            grads = [p.grad for p in student.parameters()]
            for p in student.parameters():
                p.grad = None  # keep gradients out of the copy
            # frozen weights (the base model under LoRA, harness/lora.py) are shared, not copied: the
            # teacher's own memory is then the adapters alone
            frozen = {id(p): p for p in student.parameters() if not p.requires_grad}
            self.model = copy.deepcopy(student, memo=frozen)
            for p, g in zip(student.parameters(), grads, strict=True):
                p.grad = g
            self.model.requires_grad_(False)
            self.model.eval()
        # the EMA runs over what trains (frozen weights are shared or equal in both copies)
        pairs = [
            (t, s)
            for t, s in zip(self.model.parameters(), student.parameters(), strict=True)
            if s.requires_grad
        ]
        self._teacher_params = [t for t, _ in pairs]
        self._student_params = [s for _, s in pairs]

    @torch.no_grad()
    def update(self) -> None:
        """After every optimizer step: phi <- a*theta + (1-a)*phi, in place, all tensors at once."""
        if self.kind == "ema":
            torch._foreach_lerp_(self._teacher_params, [p.detach() for p in self._student_params], self.rate)

    def release(self) -> None:
        """Drop the copy (the next stage builds a fresh one from the student)."""
        self._teacher_params, self._student_params = [], []
        self.model = None
