"""Training methods: one module per method, each with the same `train(...)` (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from harness.methods.base import NonFiniteLossError, StageContext, TrainStats

MODULES = {
    "sft": "harness.methods.sft",
    "dft": "harness.methods.dft",
    "sdft": "harness.methods.sdft",
    "opsd": "harness.methods.opsd",
    "sft_replay": "harness.methods.sft_replay",
}

# methods that train against a teacher (harness.distill.teacher), hence may need a second copy of the weights
DISTILLATION_METHODS = ("sdft", "opsd")


def get_method(name: str) -> Callable[..., TrainStats]:
    """The `train` function of method `name`; unknown names list the valid ones."""
    if name not in MODULES:
        raise ValueError(f"method {name!r} is not known; valid methods: {', '.join(MODULES)}")
    return importlib.import_module(MODULES[name]).train


__all__ = ["DISTILLATION_METHODS", "NonFiniteLossError", "StageContext", "TrainStats", "get_method", "MODULES"]
