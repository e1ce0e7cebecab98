"""EWC (Elastic Weight Consolidation, Kirkpatrick et al. 2017), online form with a diagonal Fisher.

Loss of a stage: SFT's cross-entropy + (weight / 2) * sum_i F_i (theta_i - theta*_i)^2, where
- F is the sum over the stages trained so far of each stage's diagonal empirical Fisher, estimated at the
  stage's end on that stage's own train items: F_k = mean over items of (d/dtheta NLL(item))^2, NLL being
  the item's mean per-token negative log-likelihood of its demonstration (the same per-item loss SFT
  averages), one backward per item;
- theta* is the weights at the end of the previous stage (online EWC, Schwarz et al. 2018, with decay 1):
  one anchor and one summed Fisher instead of one pair per task.
The first stage has no Fisher yet and is plain SFT. The penalty of one optimizer step is spread over its
micro-batches by their share of the batch, as in sft_l2, so accumulation and data parallelism add up to
one penalty per step. Memory: three float32 tensors the size of what trains: F, theta*, and the penalty's
(theta - theta*) that autograd keeps for the square's backward until the micro-batch's backward (`ewc_held`).

Where the state lives: on the model object itself (attribute `ewc_state`), so that stage k+1 of the same
process finds stage k's Fisher without any module-global state and a new model (a sweep's next job) starts
clean. A resumed run loads only the weights from the stage checkpoint, so the state is missing there: it is
rebuilt once from the earlier stages' train items (`ctx.replay_items`) at the resumed weights, with a
warning. That matches an uninterrupted run for the stage just before the resume point and approximates
the older stages' Fisher (taken at later weights than it would have been); stage-to-stage continuation
inside one process is exact.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.config import TrainerConfig
from harness.methods import Held, MethodSpec, StudentSize
from harness.methods.base import StageContext, TrainStats, limit_items, run_stage, shuffled_batches
from harness.methods.sft import SUPERVISED_READS, SupervisedSettings, SupervisedStep, settings_with_options
from harness.models import autocast
from harness.parallel import sharding
from harness.tasks.spec import Item, TaskSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EWCSettings(SupervisedSettings):
    weight: float = 1000.0  # lambda: strength of the Fisher-weighted pull towards the previous stage's end
    fisher_items: int = 64  # train items of a stage used to estimate its Fisher (0 = all)


def ewc_held(settings: EWCSettings, student: StudentSize) -> tuple[Held, ...]:
    """The Fisher and the anchor (float32, on the model for the whole run), and the penalty's difference
    tensor, saved by autograd until backward: the training peak. Estimating a Fisher after the stage needs
    less (the AdamW moments are freed by then: gradients, old and new Fisher, old and new anchor)."""
    return (
        Held("EWC Fisher diagonal", student.trainable, 4),
        Held("EWC anchor", student.trainable, 4),
        Held("EWC penalty graph", student.trainable, 4),
    )


METHOD = MethodSpec(
    name="ewc",
    settings=settings_with_options,
    reads=SUPERVISED_READS,
    options=EWCSettings,
    supports_fsdp=False,  # the Fisher and anchor are whole weight-sized tensors
    held=ewc_held,
)


@dataclass
class EWCState:
    """Summed diagonal Fisher and the anchor, by parameter name; `stages`: how many Fishers were summed."""

    fisher: dict[str, torch.Tensor] = field(default_factory=dict)
    anchor: dict[str, torch.Tensor] = field(default_factory=dict)
    stages: int = 0


def trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def estimate_fisher(
    model: torch.nn.Module, tokenizer: Any, items: list[Item], chunk_size: int, max_length: int
) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher: mean over `items` of the squared gradient of each item's mean token NLL."""
    params = trainable(model)
    fisher = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    step = SupervisedStep(model, tokenizer, chunk_size, max_length)
    saved = {name: p.grad for name, p in params.items()}
    was_training = model.training
    model.eval()  # no dropout: the Fisher of the model as it will be used
    try:
        for item in items:
            for p in params.values():
                p.grad = None
            with autocast(model):
                loss, _ = step([item], [item])
            loss.backward()
            for name, p in params.items():
                if p.grad is not None:
                    fisher[name] += p.grad.float().pow(2) / len(items)
    finally:
        for name, p in params.items():
            p.grad = saved[name]
        model.train(was_training)
    return fisher


def ewc_penalty(model: torch.nn.Module, state: EWCState) -> torch.Tensor:
    """sum_i F_i (theta_i - theta*_i)^2 over trainable weights, in float32."""
    terms = [
        (state.fisher[name] * (p.float() - state.anchor[name]).pow(2)).sum()
        for name, p in trainable(model).items()
    ]
    return torch.stack(terms).sum()


class EWCStep(SupervisedStep):
    """SFT's micro-step plus this micro-batch's share of the EWC penalty (none before the first Fisher)."""

    def __init__(self, model: Any, tokenizer: Any, settings: EWCSettings, max_length: int, state: EWCState):
        super().__init__(model, tokenizer, settings.loss_chunk_size, max_length)
        self.weight, self.state = settings.weight, state

    def __call__(self, micro: list[Item], batch: list[Item]) -> tuple[torch.Tensor, dict[str, float]]:
        loss, stats = super().__call__(micro, batch)
        if not self.state.fisher:
            return loss, stats
        penalty = ewc_penalty(self.model, self.state)
        stats = {**stats, "ewc_penalty": float(penalty.detach())}
        return loss + len(micro) / len(batch) * 0.5 * self.weight * penalty, stats


def consolidate(
    model: torch.nn.Module, tokenizer: Any, items: list[Item], settings: EWCSettings, max_length: int
) -> EWCState:
    """Add the Fisher of `items` at the current weights to the model's state; the anchor becomes the
    current weights."""
    state: EWCState = getattr(model, "ewc_state", None) or EWCState()
    sample = items[: settings.fisher_items] if settings.fisher_items else items
    new = estimate_fisher(model, tokenizer, sample, settings.loss_chunk_size, max_length)
    for name, value in new.items():
        state.fisher[name] = state.fisher[name] + value if name in state.fisher else value
    state.anchor = {name: p.detach().float().clone() for name, p in trainable(model).items()}
    state.stages += 1
    model.ewc_state = state
    return state


def train(
    model: Any,
    tokenizer: Any,
    items: list[Item],
    spec: TaskSpec | None,
    settings: EWCSettings,
    trainer: TrainerConfig,
    ctx: StageContext,
) -> TrainStats:
    if sharding.is_sharded(model):
        raise ValueError("method ewc does not support FSDP (its Fisher and anchor are whole copies)")
    if settings.weight < 0 or settings.fisher_items < 0:
        raise ValueError(f"method.options for 'ewc': weight and fisher_items must be >= 0, got {settings}")
    if getattr(model, "ewc_state", None) is None and ctx.stage > 1 and ctx.replay_items:
        log.warning(
            "ewc: stage %d starts without the earlier stages' Fisher (a resumed run); rebuilding it from "
            "their %d train items at the resumed weights",
            ctx.stage,
            len(ctx.replay_items),
        )
        consolidate(model, tokenizer, ctx.replay_items, settings, ctx.max_length)
    state: EWCState = getattr(model, "ewc_state", None) or EWCState()
    train_items = limit_items(items, trainer)
    batches = shuffled_batches(train_items, trainer, ctx)
    step = EWCStep(model, tokenizer, settings, ctx.max_length, state)
    stats = run_stage(model, trainer, ctx, batches, step, desc="ewc")
    start = time.perf_counter()
    consolidate(model, tokenizer, train_items, settings, ctx.max_length)
    stats.summary["ewc_fisher_s"] = time.perf_counter() - start
    return stats
