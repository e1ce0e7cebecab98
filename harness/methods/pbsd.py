"""PBSD-style self-distillation: the SDFT teacher reweighted by the task scorer's reward.

Target: pi*(y) = p_teacher(y) exp(r(y) / tau) / Z, the optimum of "maximise E[r] - tau KL(pi || teacher)".
The reverse KL from the student to pi* is the reverse KL to the teacher minus E_student[r] / tau (plus a
constant), so the loss is SDFT's per-token distillation plus a policy-gradient term for r / tau on the
student's own rollouts (harness.distill.credit.reward_term). Rewards come from the task's strict scorer
(harness.methods.scored); the baseline is the mean reward of the prompt's rollouts, so `num_rollouts` must be
at least 2. Both terms share SDFT's aggregation (mean per sequence over trained tokens, then over the
batch). Lower `options.temperature` puts more weight on the reward; a very high one is SDFT.

Published variant: Preference-Based Self-Distillation (arXiv 2605.05040) has the same target, the
reward-reweighted teacher, but reaches it by optimising preference gaps between teacher and student
samples; here the target's reverse KL is optimised directly with the decomposition above, with the
divergence set to reverse in conf/method/pbsd.yaml (with forward KL the reward term is added to it all the
same, but the sum is no longer a divergence to pi*).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from harness.config import DistillConfig, MethodConfig, TrainerConfig
from harness.distill.credit import group_advantages
from harness.methods import MethodSpec, method_options, sdft
from harness.methods.base import StageContext, TrainStats
from harness.methods.scored import ScoredStep
from harness.tasks.spec import Item, TaskSpec


@dataclass
class RewardOptions:
    temperature: float = 1.0  # tau of exp(r / tau): the reward's weight against the teacher


@dataclass(frozen=True)
class RewardSettings:
    distill: DistillConfig
    options: RewardOptions


def reward_settings(method: MethodConfig) -> RewardSettings:
    options = method_options(method.name, method.options)
    if options.temperature <= 0:
        raise ValueError(f"method.options.temperature={options.temperature}: must be > 0")
    return RewardSettings(method.distill, options)


METHOD = MethodSpec(
    name="pbsd", settings=reward_settings, reads=("distill",), teacher_copy=True, options=RewardOptions
)


class RewardStep(ScoredStep):
    def __init__(self, *args: Any, options: RewardOptions) -> None:
        super().__init__(*args)
        if self.num_rollouts < 2:
            raise ValueError(
                f"method.distill.num_rollouts={self.num_rollouts}: pbsd's reward baseline is the mean of a "
                "prompt's rollouts, so it needs at least 2"
            )
        self.temperature = options.temperature

    def use_rewards(self, rows, texts, rewards, teachers):
        advantages = group_advantages(rewards, self.num_rollouts, self.temperature)
        return teachers, advantages, {"advantage_abs": float(advantages.abs().mean())}


def train(
    model: Any,
    tokenizer: Any,
    items: list[Item],
    spec: TaskSpec | None,
    settings: RewardSettings,
    trainer: TrainerConfig,
    ctx: StageContext,
) -> TrainStats:
    make = partial(RewardStep, options=settings.options)
    return sdft.train(
        model, tokenizer, items, spec, settings.distill, trainer, ctx, desc="pbsd", make_step=make
    )
