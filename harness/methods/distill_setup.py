"""What a distillation stage sets up before its first step: the loss settings, template and rollout cap
resolved from the method and the task (`settings_from`), the warning when that cap would cut the
demonstrations (`check_rollout_length`), and the teacher-forcing probe (`stage_probe`)."""

from __future__ import annotations

import logging
from typing import Any

from harness.batching import completion_ids
from harness.config import DistillConfig
from harness.distill.loss import DistillSettings
from harness.distill.probe import probe, warn_if_recitable
from harness.parallel import sharding
from harness.tasks.spec import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_SKIP_TOKENS,
    DEFAULT_TEMPLATE,
    Item,
    TaskSpec,
    effective_setting,
    resolve_template,
)

log = logging.getLogger("harness.methods.sdft")  # the stage's warnings read as SDFT's, as before


def settings_from(d: DistillConfig, spec: TaskSpec | None) -> tuple[DistillSettings, str, int]:
    """(loss settings, teacher template, max new tokens): the method's value, else the task's, else default."""
    skip = effective_setting(d.skip_tokens, spec.skip_tokens if spec else None, DEFAULT_SKIP_TOKENS)
    max_new = effective_setting(
        d.max_new_tokens, spec.max_new_tokens if spec else None, DEFAULT_MAX_NEW_TOKENS
    )
    settings = DistillSettings(
        divergence=d.divergence,
        beta=d.jsd_beta,
        support=d.support,
        topk=d.topk,
        tail=d.topk_tail,
        skip_tokens=skip,
        temperature=d.temperature,
        chunk_size=d.loss_chunk_size,
        credit_weight=d.credit_weight,
    )
    return settings, resolve_template(d.template, spec), max_new


def check_rollout_length(
    tokenizer: Any, items: list[Item], spec: TaskSpec | None, d: DistillConfig
) -> str | None:
    """A rollout cap below the demonstrations' length cuts the answers the student should learn to give:
    warn loudly (or raise, `distill.short_rollouts=error`), naming the task and the lengths. Returns the text."""
    _, _, max_new = settings_from(d, spec)
    lengths = sorted(len(completion_ids(tokenizer, it.demonstration)) for it in items)  # EOS included
    longer = [n for n in lengths if n > max_new]
    if not longer:
        return None
    name = spec.name if spec else "?"
    task_value = spec.max_new_tokens if spec else None
    message = (
        f"task {name}: rollouts are capped at {max_new} new tokens (method.distill.max_new_tokens="
        f"{d.max_new_tokens}, the task's max_new_tokens={task_value}) but {len(longer)} of {len(lengths)} "
        f"demonstrations are longer ({longer[0]}-{longer[-1]} tokens with EOS; median of all {lengths[len(lengths) // 2]}):"
        f" such answers can only be distilled cut off; raise method.distill.max_new_tokens to >= {longer[-1]}"
        " or leave it null to use the task's"
    )
    if d.short_rollouts == "error":
        raise ValueError(message)
    log.warning(message)
    return message


def stage_probe(
    model: Any, tokenizer: Any, items: list[Item], spec: TaskSpec | None, d: DistillConfig
) -> dict[str, float]:
    """The teacher-forcing probe (harness.distill.probe) on the first `probe_items` train items, before training."""
    n = min(d.probe_items, len(items))
    if n <= 0 or sharding.is_sharded(model):  # under FSDP the layers are sharded outside a forward: skipped
        return {}
    _, template, _ = settings_from(d, spec)
    result = probe(model, tokenizer, items[:n], template)
    name = d.template or (spec.teacher_template if spec else None) or DEFAULT_TEMPLATE
    warn_if_recitable(result, spec.name if spec else "?", name)
    return result.stats()
