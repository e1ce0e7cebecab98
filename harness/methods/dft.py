"""DFT (dynamic fine-tuning): SFT with each token's loss weighted by its detached probability."""

from __future__ import annotations

from typing import Any

from harness.config import TrainerConfig
from harness.methods import MethodSpec
from harness.methods.base import StageContext, TrainStats
from harness.methods.sft import (
    SUPERVISED_READS,
    SupervisedSettings,
    supervised_settings,
    token_dft,
    train_supervised,
)
from harness.tasks.spec import Item, TaskSpec

METHOD = MethodSpec(name="dft", settings=supervised_settings, reads=SUPERVISED_READS)


def train(
    model: Any,
    tokenizer: Any,
    items: list[Item],
    spec: TaskSpec | None,
    settings: SupervisedSettings,
    trainer: TrainerConfig,
    ctx: StageContext,
) -> TrainStats:
    return train_supervised(model, tokenizer, items, settings, trainer, ctx, token_dft, "dft")
