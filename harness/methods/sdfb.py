"""SDFB, self-distillation from feedback: the teacher is the model itself, shown the task scorer's verdict
on the student's own attempt.

Per micro-batch: the student samples `num_rollouts` answers per prompt; the task's `score()` judges each
(harness.methods.scored); the teacher (the same model: an EMA copy by default, `distill.teacher`) reads a
context holding the question, the attempt, the verdict and, when a sibling rollout of the same prompt was
judged correct, that sibling as a correct answer (or, with `options.demonstration`, the item's
demonstration when no sibling succeeded); the student is distilled towards that teacher on its own attempt.

Published variant: SDPO, "Reinforcement Learning via Self-Distillation" (Hübotter et al., arXiv
2601.20802), in its scalar-reward setting, where a successful rollout of the group is the feedback for the
others. The defaults follow it in: on-policy student rollouts, several per prompt, a successful sibling
shown to the teacher (here never the attempt itself), no demonstration, reverse KL(student || teacher) per token.
They differ in: the teacher is an EMA of the student at SDFT's rate 0.01 (SDPO also keeps its self-teacher
from drifting; whether its form and rate match was not checked); the verdict is written out as text; the
attempt itself is in the teacher's context (`options.show_attempt`; SDPO's teacher may see the feedback
only); the divergence runs over the full vocabulary (SDPO keeps top-K logits to save memory); there is no
GRPO term mixed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from harness.batching import chat_prompt_ids, item_name
from harness.config import DistillConfig, MethodConfig, TrainerConfig
from harness.methods import MethodSpec, method_options, sdft
from harness.methods.base import StageContext, TrainStats
from harness.methods.scored import ScoredStep
from harness.tasks.spec import Item, TaskSpec, student_messages

VERDICTS = {True: "This answer is correct.", False: "This answer is wrong."}


@dataclass
class FeedbackOptions:
    show_attempt: bool = True  # the student's attempt in the teacher's context (SDPO: feedback only)
    sibling: bool = True  # a sibling rollout judged correct, shown as a correct answer (SDPO)
    demonstration: bool = False  # the item's demonstration when no sibling succeeded (not in SDPO)


@dataclass(frozen=True)
class FeedbackSettings:
    distill: DistillConfig
    options: FeedbackOptions


def feedback_settings(method: MethodConfig) -> FeedbackSettings:
    return FeedbackSettings(method.distill, method_options(method.name, method.options))


METHOD = MethodSpec(
    name="sdfb", settings=feedback_settings, reads=("distill",), teacher_copy=True, options=FeedbackOptions
)


def feedback_text(question: str, attempt: str | None, correct: bool, solution: str | None) -> str:
    """The teacher's user message: the question, the attempt and its verdict, a correct answer if known."""
    parts = [question]
    if attempt is not None:
        parts.append(f"Your earlier answer:\n{attempt}")
    parts.append(f"Feedback: {VERDICTS[correct]}")
    if solution is not None:
        parts.append(f"A correct answer to this question:\n{solution}")
    parts.append("Now answer the question yourself.")
    return "\n\n".join(parts)


class FeedbackStep(ScoredStep):
    def __init__(self, *args: Any, options: FeedbackOptions) -> None:
        super().__init__(*args)
        self.options = options
        self._feedback: list[tuple[str | None, bool, str | None]] = []  # per row of the current micro-batch

    def context(self, question_item: Item, feedback: tuple[str | None, bool, str | None]) -> list[int]:
        messages = student_messages(question_item)
        privileged = f"{question_item.privileged.strip()}\n\n" if question_item.privileged else ""
        text = privileged + feedback_text(messages[-1]["content"], *feedback)
        ids = chat_prompt_ids(self.tokenizer, [*messages[:-1], {"role": "user", "content": text}])
        if len(ids) >= self.max_length:
            raise ValueError(
                f"item {item_name(question_item)}: the feedback context has {len(ids)} tokens, not below "
                f"model.max_length={self.max_length}"
            )
        return ids

    def solution(self, row: int, item: Item, texts: list[str], rewards: torch.Tensor) -> str | None:
        """A correct sibling of `row` (same prompt, another rollout), else the demonstration if allowed."""
        group = row - row % self.num_rollouts
        if self.options.sibling:
            for j in range(group, group + self.num_rollouts):
                if j != row and rewards[j] > 0.5:
                    return texts[j]
        return item.demonstration if self.options.demonstration else None

    def use_rewards(self, rows, texts, rewards, teachers):
        self._feedback = [
            (
                texts[i] if self.options.show_attempt else None,
                bool(rewards[i] > 0.5),
                self.solution(i, it, texts, rewards),
            )
            for i, it in enumerate(rows)
        ]
        contexts = [self.context(it, fb) for it, fb in zip(rows, self._feedback, strict=True)]
        with_solution = sum(fb[2] is not None for fb in self._feedback) / len(rows)
        return contexts, None, {"feedback_solution_frac": with_solution}

    def baseline_prompt(self, other: Item, row: int) -> list[int]:
        """CREDIT: the other item's question with this row's attempt and feedback (only the input varies)."""
        return self.context(other, self._feedback[row])


def train(
    model: Any,
    tokenizer: Any,
    items: list[Item],
    spec: TaskSpec | None,
    settings: FeedbackSettings,
    trainer: TrainerConfig,
    ctx: StageContext,
) -> TrainStats:
    make = partial(FeedbackStep, options=settings.options)
    return sdft.train(
        model, tokenizer, items, spec, settings.distill, trainer, ctx, desc="sdfb", make_step=make
    )
