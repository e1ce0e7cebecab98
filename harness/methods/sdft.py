"""SDFT (self-distillation fine-tuning, arXiv 2601.19897), paper-faithful defaults (docs/design.md §4).

Per optimizer step, for each micro-batch of prompts:
1. roll out `num_rollouts` completions per prompt from the *student* context (prompt alone);
2. score the same completion tokens with the teacher under the teacher context (prompt rewritten by a
   template that shows the demonstration and any privileged passage), without gradient;
3. distil: per-token divergence on completion positions (skip the first `skip_tokens`), mean per sequence,
   mean over the batch; backward.
Then one optimizer step and, for an EMA teacher, phi <- a*theta + (1-a)*phi. The teacher is built from
the student at the start of every stage (harness.distill.teacher).
"""

from __future__ import annotations

from typing import Any

import torch

from harness.batching import chat_prompt_ids, completion_hidden, item_name, join, pad
from harness.distill.loss import DistillSettings, distillation_loss
from harness.distill.rollout import sample
from harness.distill.teacher import Teacher
from harness.distributed import replicas
from harness.methods.base import (
    StageContext,
    TrainStats,
    epoch_batches,
    limit_items,
    num_steps,
    run_stage,
    stage_generator,
)
from harness.tasks import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_SKIP_TOKENS,
    Item,
    TaskSpec,
    effective_setting,
    resolve_template,
    student_messages,
    teacher_messages,
)
from harness.timing import synchronized_clock


def settings_from(cfg: Any, spec: TaskSpec | None) -> tuple[DistillSettings, str, int]:
    """(loss settings, teacher template, max new tokens): the method's value, else the task's, else default."""
    d = cfg.method.distill
    skip = effective_setting(d.skip_tokens, spec.skip_tokens if spec else None, DEFAULT_SKIP_TOKENS)
    max_new = effective_setting(d.max_new_tokens, spec.max_new_tokens if spec else None, DEFAULT_MAX_NEW_TOKENS)
    settings = DistillSettings(
        divergence=d.divergence, beta=float(d.jsd_beta), support=d.support, topk=int(d.topk),
        tail=bool(d.topk_tail), skip_tokens=int(skip), temperature=float(d.temperature),
        chunk_size=int(d.loss_chunk_size),
    )
    return settings, resolve_template(d.template, spec), int(max_new)


class DistillStep:
    """Rollout, teacher scoring and the student's forward for one micro-batch; run_stage calls backward."""

    def __init__(self, model: Any, tokenizer: Any, teacher: Teacher, cfg: Any, spec: TaskSpec | None) -> None:
        self.model, self.tokenizer, self.teacher = model, tokenizer, teacher
        self.settings, self.template, self.max_new_tokens = settings_from(cfg, spec)
        d = cfg.method.distill
        self.num_rollouts, self.temperature, self.top_p = int(d.num_rollouts), float(d.temperature), float(d.top_p)
        self.max_length = int(cfg.model.max_length)
        self._prompts: dict[int, tuple[list[int], list[int]]] = {}

    def prompts(self, item: Item) -> tuple[list[int], list[int]]:
        """(student prompt ids, teacher prompt ids), checked against max_length before any compute."""
        key = id(item)
        if key not in self._prompts:
            student = chat_prompt_ids(self.tokenizer, student_messages(item))
            teacher = chat_prompt_ids(self.tokenizer, teacher_messages(item, self.template))
            if len(teacher) >= self.max_length:
                raise ValueError(
                    f"item {item_name(item)}: the teacher prompt has {len(teacher)} tokens, not below "
                    f"model.max_length={self.max_length}; it would be truncated and lose the demonstration"
                )
            if len(student) >= self.max_length:
                raise ValueError(f"item {item_name(item)}: the prompt has {len(student)} tokens, "
                                 f"model.max_length={self.max_length}")
            self._prompts[key] = (student, teacher)
        return self._prompts[key]

    def __call__(self, micro: list[Item], batch: list[Item]) -> tuple[torch.Tensor, dict[str, float]]:
        device = next(self.model.parameters()).device
        rows = [it for it in micro for _ in range(self.num_rollouts)]
        students = [self.prompts(it)[0] for it in rows]
        teachers = [self.prompts(it)[1] for it in rows]

        clock = synchronized_clock(device)  # phase times of an asynchronous device need a synchronisation
        t0 = clock()
        budget = self.max_length - max(len(s) for s in students)
        out = sample(self.model, self.tokenizer, students, max_new_tokens=min(self.max_new_tokens, budget),
                     temperature=self.temperature, top_p=self.top_p)
        lengths = out.lengths
        for it, prompt, n in zip(rows, teachers, lengths.tolist(), strict=True):
            if len(prompt) + n > self.max_length:
                raise ValueError(
                    f"item {item_name(it)}: teacher prompt ({len(prompt)} tokens) + completion ({n} tokens) "
                    f"exceeds model.max_length={self.max_length}; the teacher context would be truncated"
                )
        t1 = clock()

        t_ids, t_mask = pad(teachers, self.tokenizer.pad_token_id, "left")
        teacher_batch = join(t_ids, t_mask, out.completion_ids, out.completion_mask).to(device)
        with torch.no_grad():
            teacher_hidden = completion_hidden(self.teacher.model, teacher_batch)
        t2 = clock()

        student_batch = join(out.prompt_ids, out.prompt_mask, out.completion_ids, out.completion_mask).to(device)
        student_hidden = completion_hidden(self.model, student_batch)
        loss, diag = distillation_loss(
            student_hidden, teacher_hidden, self.model.get_output_embeddings(),
            self.teacher.model.get_output_embeddings(), student_batch.completion_ids,
            student_batch.completion_mask, self.settings, batch_total=len(batch) * self.num_rollouts,
        )
        t3 = clock()
        stats = {
            "completion_len": float(lengths.float().mean()),
            "clipped_frac": float(out.truncated.float().mean()),
            "completion_tokens": float(lengths.sum()),
            "gen_s": t1 - t0,
            "teacher_s": t2 - t1,  # the teacher's decoder; its LM head runs chunked inside the loss (student_s)
            "student_s": t3 - t2,  # forward only; run_stage adds backward_s
            **diag,
        }
        return loss, stats


def train(model: Any, tokenizer: Any, items: list[Item], spec: TaskSpec | None, cfg: Any,
          ctx: StageContext) -> TrainStats:
    items = limit_items(items, cfg)
    d = cfg.method.distill
    gen = stage_generator(ctx)  # shuffling; sampling is seeded per micro-batch by run_stage (micro_seed)
    steps = num_steps(len(items), cfg.trainer)
    batches = [[items[i] for i in idx] for idx in epoch_batches(len(items), int(cfg.trainer.batch_size), steps, gen)]
    teacher = Teacher(model, d.teacher, float(d.ema_rate))  # from the student as it is now, every stage
    try:
        step = DistillStep(model, tokenizer, teacher, cfg, spec)
        for item in items:  # fail on an over-long teacher prompt before spending any compute
            step.prompts(item)
        stats = run_stage(model, cfg, ctx, batches, step, after_step=teacher.update, desc=cfg.method.name)
        replicas().check_in_sync(teacher.model, f"stage {ctx.stage} teacher")  # EMA copies must agree too
    finally:
        teacher.release()
    settings, _, max_new = settings_from(cfg, spec)
    stats.summary.update({"skip_tokens": float(settings.skip_tokens), "max_new_tokens": float(max_new)})
    return stats
