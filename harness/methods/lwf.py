"""LwF (Learning without Forgetting, Li & Hoiem 2016) for language models.

Per demonstration token t of the new task: CE(student, y_t) + weight * T^2 * KL(p_old^T || p_student^T),
where p^T = softmax(logits / T) and p_old is the model as it was when the stage began (the previous stage's
result), frozen, fed the same new-task prompt + demonstration (teacher forcing: the old model sees the
new task's inputs only, no stored data of earlier tasks). T^2 keeps the KL's gradient on the same scale as
the CE's when T changes (Hinton et al. 2015). Both terms are averaged over the step's demonstration tokens,
as SFT's loss is, so gradient accumulation and data parallelism add up to the one-batch loss.

Costs one frozen copy of what trains for the stage (harness.distill.teacher, kind "base", whatever
`distill.teacher` says; under LoRA the adapters alone), declared to the memory estimate in `lwf_held`;
no rollouts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from harness.batching import collate, completion_hidden
from harness.config import TrainerConfig
from harness.distill.divergence import kl
from harness.distill.fused_head import fused_head_loss
from harness.distill.teacher import Teacher
from harness.methods import Held, MethodSpec, StudentSize
from harness.methods.base import StageContext, TrainStats, limit_items, run_stage, shuffled_batches
from harness.methods.sft import SUPERVISED_READS, SupervisedSettings, SupervisedStep, settings_with_options
from harness.tasks.spec import Item, TaskSpec


@dataclass(frozen=True)
class LwFSettings(SupervisedSettings):
    weight: float = 1.0  # of the KL to the stage's starting model, relative to the new task's CE
    temperature: float = 2.0  # T of both distributions in the KL


def lwf_held(settings: LwFSettings, student: StudentSize) -> tuple[Held, ...]:
    # not `teacher_copy`: that one follows distill.teacher (live = none), which LwF does not read
    return (Held("LwF previous model", student.trainable),)


METHOD = MethodSpec(
    name="lwf",
    settings=settings_with_options,
    reads=SUPERVISED_READS,
    options=LwFSettings,
    supports_fsdp=False,  # the frozen previous model is a whole copy outside the sharded root
    held=lwf_held,
)


def lwf_token_loss(
    student_logits: torch.Tensor,
    old_logits: torch.Tensor,
    targets: torch.Tensor,
    weight: float,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token loss, per-token KL) for logits [n, V] and targets [n]; the KL is at temperature T."""
    student = student_logits.float()
    ce = -torch.log_softmax(student, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    old_logp = torch.log_softmax(old_logits.float() / temperature, -1)
    divergence = kl(old_logp, torch.log_softmax(student / temperature, -1))
    return ce + weight * temperature**2 * divergence, divergence.detach()


class LwFStep(SupervisedStep):
    """SFT's micro-step with the old model's distribution on the same positions pulled in by a KL."""

    def __init__(self, model: Any, tokenizer: Any, old: Teacher, settings: LwFSettings, max_length: int):
        super().__init__(model, tokenizer, settings.loss_chunk_size, max_length)
        self.old, self.weight, self.temperature = old, settings.weight, settings.temperature

    def __call__(self, micro: list[Item], batch: list[Item]) -> tuple[torch.Tensor, dict[str, float]]:
        total_tokens = sum(len(self.encode(it)[1]) for it in batch)
        pairs = [self.encode(it) for it in micro]
        device = next(self.model.parameters()).device
        data = collate([p for p, _ in pairs], [c for _, c in pairs], self.tokenizer.pad_token_id).to(device)
        mask = data.completion_mask.bool()
        targets = data.completion_ids[mask]
        with torch.no_grad():
            old_hidden = completion_hidden(self.old.model, data)[mask]
        old_head = self.old.model.get_output_embeddings()
        kls: list[torch.Tensor] = []

        def per_token(logits: torch.Tensor, start: int, end: int) -> torch.Tensor:
            with torch.no_grad():  # the old model's logits of this chunk only: one chunk of V alive
                old_logits = old_head(old_hidden[start:end].to(old_head.weight.dtype))
            loss, divergence = lwf_token_loss(
                logits, old_logits, targets[start:end], self.weight, self.temperature
            )
            kls.append(divergence)
            return loss

        hidden = completion_hidden(self.model, data)[mask]
        weights = torch.full((targets.numel(),), 1.0 / total_tokens, device=device)
        head = self.model.get_output_embeddings()
        loss = fused_head_loss(hidden, head, weights, per_token, self.chunk)
        mean_kl = float(torch.cat(kls).mean()) if kls else 0.0
        return loss, {"train_tokens": float(targets.numel()), "lwf_kl": mean_kl}


def train(
    model: Any,
    tokenizer: Any,
    items: list[Item],
    spec: TaskSpec | None,
    settings: LwFSettings,
    trainer: TrainerConfig,
    ctx: StageContext,
) -> TrainStats:
    if settings.temperature <= 0:
        raise ValueError(f"method.options.temperature={settings.temperature}: must be > 0")
    if settings.weight < 0:
        raise ValueError(f"method.options.weight={settings.weight}: must be >= 0")
    batches = shuffled_batches(limit_items(items, trainer), trainer, ctx)
    old = Teacher(model, kind="base")  # the stage's starting weights, frozen for the whole stage
    try:
        step = LwFStep(model, tokenizer, old, settings, ctx.max_length)
        return run_stage(model, trainer, ctx, batches, step, desc="lwf")
    finally:
        old.release()
