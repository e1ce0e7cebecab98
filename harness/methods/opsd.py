"""OPSD (on-policy self-distillation, arXiv 2601.18734): SDFT whose teacher sees a verified solution.

A preset, not a fork: `conf/method/opsd.yaml` sets the live teacher (no second copy of the weights) and
the `solution` template; when no template is configured, this falls back to `solution` rather than the
SDFT paper's template.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from harness.config import DistillConfig, MethodConfig, TrainerConfig
from harness.methods import MethodSpec, sdft
from harness.methods.base import StageContext, TrainStats
from harness.tasks.spec import Item, TaskSpec


def opsd_settings(method: MethodConfig) -> DistillConfig:
    """SDFT's settings with the `solution` template when none is configured."""
    return replace(method.distill, template=method.distill.template or "solution")


METHOD = MethodSpec(
    name="opsd",
    settings=opsd_settings,
    reads=("distill",),
    teacher_copy=True,
    display=sdft.distill_display("OPSD"),
)


def train(
    model: Any,
    tokenizer: Any,
    items: list[Item],
    spec: TaskSpec | None,
    d: DistillConfig,
    trainer: TrainerConfig,
    ctx: StageContext,
) -> TrainStats:
    return sdft.train(model, tokenizer, items, spec, d, trainer, ctx, desc="opsd")
