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

import logging
from collections.abc import Callable
from typing import Any

import torch

from harness.batching import chat_prompt_ids, completion_hidden, item_name, join, pad
from harness.config import DistillConfig, MethodConfig, TrainerConfig
from harness.distill.diagnostics import rollout_health
from harness.distill.loss import distillation_loss
from harness.distill.rollout import Rollouts, eos_ids, sample
from harness.distill.teacher import Teacher
from harness.methods import MethodSpec
from harness.methods.base import StageContext, TrainStats, limit_items, run_stage, shuffled_batches
from harness.methods.contrast import check_credit, credit_baselines
from harness.methods.distill_setup import check_rollout_length, settings_from, stage_probe
from harness.methods.sft import SupervisedStep
from harness.tasks.spec import (
    Item,
    TaskSpec,
    student_messages,
    teacher_messages,
)
from harness.timing import synchronized_clock

log = logging.getLogger(__name__)


def distill_settings(method: MethodConfig) -> DistillConfig:
    return method.distill


def distill_display(name: str) -> Callable[[DistillConfig], str]:
    """A self-distillation method's report name: the SFT anchor and a teacher other than the EMA show."""

    def display(d: DistillConfig) -> str:
        text = name + (" + SFT anchor" if d.sft_weight > 0 else "")
        return text + {"ema": "", "base": " (frozen teacher)", "live": " (live teacher)"}.get(d.teacher, "")

    return display


METHOD = MethodSpec(
    name="sdft",
    settings=distill_settings,
    reads=("distill",),
    teacher_copy=True,
    display=distill_display("SDFT"),
)


class DistillStep:
    """Rollout, teacher scoring and the student's forward for one micro-batch; run_stage calls backward.

    The remedies of DistillConfig act here: who writes the rollouts (student, teacher, a mix), no loss on
    rollouts cut at the length cap, an SFT anchor added to the loss, SFT alone for the first warm-up steps.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        teacher: Teacher,
        d: DistillConfig,
        spec: TaskSpec | None,
        max_length: int,
    ) -> None:
        self.model, self.tokenizer, self.teacher = model, tokenizer, teacher
        self.settings, self.template, self.max_new_tokens = settings_from(d, spec)
        self.num_rollouts, self.top_p = d.num_rollouts, d.top_p
        self.temperature = d.temperature if d.sample_temperature is None else d.sample_temperature
        self.top_k, self.min_p, self.decoder = d.top_k, d.min_p, d.decoder
        self.source, self.teacher_share = d.rollout_source, d.teacher_share
        self.mask_clipped = d.mask_clipped
        self.sft_weight, self.warmup_steps = d.sft_weight, d.sft_warmup_steps
        self.sft = (
            SupervisedStep(model, tokenizer, d.loss_chunk_size, max_length)
            if self.sft_weight > 0 or self.warmup_steps > 0
            else None
        )
        self.max_length = max_length
        self.credit_k = d.credit_k
        self.pool: list[Item] = []  # the stage's items: CREDIT draws its other contexts from them
        self.steps_done = 0  # optimizer steps so far in this stage (the SFT warm-up counts them)
        self._prompts: dict[int, tuple[list[int], list[int]]] = {}

    def after_step(self) -> None:
        self.steps_done += 1
        self.teacher.update()

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
                raise ValueError(
                    f"item {item_name(item)}: the prompt has {len(student)} tokens, "
                    f"model.max_length={self.max_length}"
                )
            self._prompts[key] = (student, teacher)
        return self._prompts[key]

    def _sample(self, model: Any, prompts: list[list[int]]) -> Rollouts:
        budget = self.max_length - max(len(p) for p in prompts)
        return sample(
            model,
            self.tokenizer,
            prompts,
            max_new_tokens=min(self.max_new_tokens, budget),
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            decoder=self.decoder,
        )

    def rollouts(self, students: list[list[int]], teachers: list[list[int]]) -> tuple[Rollouts, torch.Tensor]:
        """Completions for every row and which rows the teacher wrote (under its own context)."""
        rows = len(students)
        if self.source == "student":
            return self._sample(self.model, students), torch.zeros(rows, dtype=torch.bool)
        if self.source == "teacher":
            from_teacher = torch.ones(rows, dtype=torch.bool)
        else:  # mix: drawn from the global RNG, which run_stage seeds per micro-batch
            from_teacher = torch.rand(rows) < self.teacher_share
        completions: list[list[int]] = [[] for _ in range(rows)]
        truncated = torch.zeros(rows, dtype=torch.bool)
        for writer, prompts, want in ((self.teacher.model, teachers, True), (self.model, students, False)):
            index = [i for i in range(rows) if bool(from_teacher[i]) == want]
            if not index:
                continue
            out = self._sample(writer, [prompts[i] for i in index])
            for j, i in enumerate(index):
                completions[i] = out.completion_ids[j, : int(out.lengths[j])].tolist()
                truncated[i] = out.truncated[j]
        pad_id = self.tokenizer.pad_token_id
        p_ids, p_mask = pad(students, pad_id, "left")
        c_ids, c_mask = pad(completions, pad_id, "right")
        return Rollouts(p_ids, p_mask, c_ids, c_mask.long(), truncated), from_teacher

    def __call__(self, micro: list[Item], batch: list[Item]) -> tuple[torch.Tensor, dict[str, float]]:
        if self.sft is not None and self.steps_done < self.warmup_steps:
            loss, sft_stats = self.sft(micro, batch)
            return loss, {"sft_warmup": 1.0, "sft_tokens": sft_stats["train_tokens"]}
        device = next(self.model.parameters()).device
        rows = [it for it in micro for _ in range(self.num_rollouts)]
        students = [self.prompts(it)[0] for it in rows]
        teachers = [self.prompts(it)[1] for it in rows]

        clock = synchronized_clock(device)  # phase times of an asynchronous device need a synchronisation
        t0 = clock()
        out, from_teacher = self.rollouts(students, teachers)
        teachers, advantages, judged = self.judge(rows, out, teachers)
        self._check_teacher_context(rows, teachers, out.lengths)
        t1 = clock()

        with torch.no_grad():
            teacher_hidden = self.teacher_hidden(teachers, out, device)
            baselines = credit_baselines(self, rows, out, device) if self.credit_k else None
        t2 = clock()

        loss, stats = self._student_loss(out, teacher_hidden, batch, device, baselines, advantages)
        stats.update(judged)
        if self.sft is not None and self.sft_weight > 0:
            sft_loss, stats["sft_ce"] = self._sft_anchor(micro, batch)
            loss = loss + self.sft_weight * sft_loss
        t3 = clock()
        texts, token_rows = self.decode(out)
        stats.update(
            {
                "teacher_rollout_frac": float(from_teacher.float().mean()),
                "gen_s": t1 - t0,
                # the teacher's decoder; its LM head runs chunked inside the loss (student_s)
                "teacher_s": t2 - t1,
                "student_s": t3 - t2,  # forward only; run_stage adds backward_s
                **rollout_health(token_rows, texts, self.template),
            }
        )
        self._log_sample(texts, out, from_teacher)
        return loss, stats

    def _check_teacher_context(
        self, rows: list[Item], teachers: list[list[int]], lengths: torch.Tensor
    ) -> None:
        for it, prompt, n in zip(rows, teachers, lengths.tolist(), strict=True):
            if len(prompt) + n > self.max_length:
                raise ValueError(
                    f"item {item_name(it)}: teacher prompt ({len(prompt)} tokens) + completion ({n} tokens) "
                    f"exceeds model.max_length={self.max_length}; the teacher context would be truncated"
                )

    def _student_loss(
        self,
        out: Rollouts,
        teacher_hidden: torch.Tensor,
        batch: list[Item],
        device: torch.device,
        baselines: list[torch.Tensor] | None = None,
        advantages: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The student's forward on the rollouts and the distillation loss (clipped rows masked if asked;
        CREDIT's baselines and PBSD's advantages passed through when given)."""
        student_batch = join(out.prompt_ids, out.prompt_mask, out.completion_ids, out.completion_mask).to(
            device
        )
        student_hidden = completion_hidden(self.model, student_batch)
        mask = student_batch.completion_mask
        masked = self.mask_clipped and bool(out.truncated.any())
        all_masked = masked and bool(out.truncated.all())
        if masked and not all_masked:  # clipped rows: no loss; they still count in the batch mean's divisor
            mask = mask * (~out.truncated).to(mask.device, mask.dtype).unsqueeze(1)
        loss, diag = distillation_loss(
            student_hidden,
            teacher_hidden,
            self.model.get_output_embeddings(),
            self.teacher.model.get_output_embeddings(),
            student_batch.completion_ids,
            mask,
            self.settings,
            batch_total=len(batch) * self.num_rollouts,
            baseline_hidden=baselines,
            advantages=advantages,
        )
        if all_masked:  # nothing to learn from; keep the graph (and the diagnostics of what was sampled)
            loss = loss * 0.0
        truncated = float(out.truncated.float().mean())
        return loss, {
            "completion_len": float(out.lengths.float().mean()),
            "clipped_frac": truncated,
            "masked_frac": truncated if masked else 0.0,
            "completion_tokens": float(out.lengths.sum()),
            **diag,
        }

    def _sft_anchor(self, micro: list[Item], batch: list[Item]) -> tuple[torch.Tensor, float]:
        """The SFT anchor's loss (normalised by the whole batch) and this micro-batch's mean cross-entropy
        per demonstration token."""
        assert self.sft is not None
        sft_loss, sft_stats = self.sft(micro, batch)
        total = sum(len(self.sft.encode(it)[1]) for it in batch)
        return sft_loss, float(sft_loss.detach()) * total / max(sft_stats["train_tokens"], 1.0)

    def _log_sample(self, texts: list[str], out: Rollouts, from_teacher: torch.Tensor) -> None:
        if self.steps_done % 4 == 0 and texts:  # a sample in the log shows what is being distilled
            log.info(
                "step %d rollout (%s, %d tokens%s): %r",
                self.steps_done,
                "teacher" if bool(from_teacher[0]) else "student",
                int(out.lengths[0]),
                ", clipped" if bool(out.truncated[0]) else "",
                texts[0][:300],
            )

    def judge(
        self, rows: list[Item], out: Rollouts, teachers: list[list[int]]
    ) -> tuple[list[list[int]], torch.Tensor | None, dict[str, float]]:
        """After the rollouts, before the teacher scores them: (teacher prompts, per-row reward advantages
        or None, stats). SDFT's teacher context is fixed per item; methods whose teacher sees the student's
        attempt or whose loss uses a reward (harness.methods.scored) override this."""
        return teachers, None, {}

    def teacher_hidden(self, prompts: list[list[int]], out: Rollouts, device: torch.device) -> torch.Tensor:
        """The teacher's hidden states [B, C, H] for the rollouts' completions after `prompts`."""
        t_ids, t_mask = pad(prompts, self.tokenizer.pad_token_id, "left")
        batch = join(t_ids, t_mask, out.completion_ids, out.completion_mask).to(device)
        return completion_hidden(self.teacher.model, batch)

    def baseline_prompt(self, other: Item, row: int) -> list[int]:
        """CREDIT: the teacher context of another item, for row `row`'s completion (its teacher prompt)."""
        return self.prompts(other)[1]

    def decode(self, out: Rollouts) -> tuple[list[str], list[list[int]]]:
        """Each completion as text and as token ids, without the closing EOS."""
        stops = set(eos_ids(self.model, self.tokenizer))
        token_rows = []
        for row, n in zip(out.completion_ids.tolist(), out.lengths.tolist(), strict=True):
            ids = row[: int(n)]
            token_rows.append(ids[:-1] if ids and ids[-1] in stops else ids)
        return self.tokenizer.batch_decode(token_rows, skip_special_tokens=True), token_rows


def train(
    model: Any,
    tokenizer: Any,
    items: list[Item],
    spec: TaskSpec | None,
    d: DistillConfig,
    trainer: TrainerConfig,
    ctx: StageContext,
    desc: str = "sdft",
    make_step: Callable[..., DistillStep] | None = None,
    teacher: Teacher | None = None,
) -> TrainStats:
    """One SDFT stage. `make_step` (builds a DistillStep subclass from DistillStep's arguments) and `teacher`
    (a prepared teacher; default: built from the student as `distill.teacher` says) let the other members
    of the family reuse the stage."""
    make_step = make_step or DistillStep
    items = limit_items(items, trainer)
    check_rollout_length(tokenizer, items, spec, d)
    probe_stats = stage_probe(model, tokenizer, items, spec, d)
    # shuffling from the stage's generator; sampling is seeded per micro-batch by run_stage (micro_seed)
    batches = shuffled_batches(items, trainer, ctx)
    teacher = teacher or Teacher(model, d.teacher, d.ema_rate)  # from the student as it is now, every stage
    try:
        step = make_step(model, tokenizer, teacher, d, spec, ctx.max_length)
        step.pool = items
        check_credit(d, items)
        for item in items:  # fail on an over-long teacher prompt before spending any compute
            step.prompts(item)
        stats = run_stage(model, trainer, ctx, batches, step, after_step=step.after_step, desc=desc)
        ctx.replicas.check_in_sync(teacher.model, f"stage {ctx.stage} teacher")  # EMA copies must agree
    finally:
        teacher.release()
    settings, _, max_new = settings_from(d, spec)
    _summarize_late_keys(stats)
    stats.summary.update(
        {"skip_tokens": float(settings.skip_tokens), "max_new_tokens": float(max_new), **probe_stats}
    )
    return stats


def _summarize_late_keys(stats: TrainStats) -> None:
    """Means of step stats that the first step lacked (after an SFT warm-up, the distillation stats)."""
    for key in {k for s in stats.steps for k in s}:
        if f"mean_{key}" not in stats.summary:
            values = [s[key] for s in stats.steps if key in s]
            stats.summary[f"mean_{key}"] = float(sum(values) / len(values))
