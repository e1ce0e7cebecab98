"""OPSD (on-policy self-distillation, arXiv 2601.18734): SDFT whose teacher sees a verified solution.

A preset, not a fork: `conf/method/opsd.yaml` sets the live teacher (no second copy of the weights) and
the `solution` template; when no template is configured, this falls back to `solution` rather than the
SDFT paper's template.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from harness.methods import MethodSpec, sdft
from harness.methods.base import StageContext, TrainStats
from harness.tasks import Item, TaskSpec

METHOD = MethodSpec(name="opsd", reads=("distill",), teacher_copy=True)


def train(
    model: Any, tokenizer: Any, items: list[Item], spec: TaskSpec | None, cfg: Any, ctx: StageContext
) -> TrainStats:
    if cfg.method.distill.template is None:
        cfg = OmegaConf.merge(cfg, {"method": {"distill": {"template": "solution"}}})
    return sdft.train(model, tokenizer, items, spec, cfg, ctx)
