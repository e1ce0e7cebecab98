"""The SDFT distillation loss on completion positions, fused with the LM heads and chunked.

Per token: divergence(student || teacher) on next-token distributions at the same temperature; tokens
before `skip_tokens` and padding get weight 0; the per-token loss is averaged per sequence, then over the
batch (TRL's and the paper's aggregation). Only completion positions reach the heads, `chunk_size` positions
at a time, so neither model's full [B, C, V] logits ever exist (harness.distill.fused_head).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from harness.distill.credit import contrastive_teacher, reward_term
from harness.distill.diagnostics import position_profile
from harness.distill.divergence import kl, token_divergence
from harness.distill.fused_head import fused_head_loss, head_compute_dtype

FIRST_TOKENS = 3  # diagnostics: KL on the first completion tokens vs the rest (docs/design.md §11)


@dataclass
class DistillSettings:
    divergence: str = "forward"
    beta: float = 0.5
    support: str = "full"
    topk: int = 20
    tail: bool = True
    skip_tokens: int = 3
    temperature: float = 1.0
    chunk_size: int = 128
    # CREDIT: weight of the contrastive baseline subtracted from the teacher's log-probabilities
    # (harness.distill.credit); used only when baseline hidden states are passed
    credit_weight: float = 1.0


def loss_mask(completion_mask: torch.Tensor, skip_tokens: int) -> torch.Tensor:
    positions = torch.arange(completion_mask.shape[1], device=completion_mask.device).unsqueeze(0)
    return completion_mask * (positions >= skip_tokens).to(completion_mask.dtype)


def distillation_loss(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    student_head: torch.nn.Module,
    teacher_head: torch.nn.Module,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    settings: DistillSettings,
    batch_total: int | None = None,
    baseline_hidden: list[torch.Tensor] | None = None,
    advantages: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """(loss, diagnostics). Hidden states [B, C, H] at the positions predicting completion tokens [B, C].

    `batch_total`: number of sequences the batch mean divides by (the whole step's, under accumulation).
    `baseline_hidden`: CREDIT's contrastive baseline, the teacher's hidden states [B, C, H] under K other
    items' contexts (harness.distill.credit); `advantages` [B]: a per-sequence reward term (PBSD), each
    trained token adds -advantage * log p_student(token) (harness.distill.credit.reward_term).
    Diagnostics: `kl` = forward KL(teacher || student) per loss token (whatever the trained divergence),
    `kl_first` / `kl_rest` split at FIRST_TOKENS, `loss_tokens`.
    """
    rows = completion_ids.shape[0]
    batch_total = batch_total or rows
    keep = completion_mask.bool()
    trained = loss_mask(completion_mask, settings.skip_tokens).float()
    per_seq = trained.sum(-1, keepdim=True).clamp(min=1.0)
    weights = (trained / per_seq / batch_total)[keep]
    tokens = completion_ids[keep]
    fkl = torch.zeros(tokens.numel(), dtype=torch.float32, device=tokens.device)
    trained_value = torch.zeros_like(fkl)  # the trained divergence per token, for the loss profile
    teacher_logits = _teacher_logits(teacher_hidden[keep].detach(), teacher_head, settings.temperature)
    baselines = [
        _teacher_logits(b[keep].detach(), teacher_head, settings.temperature) for b in baseline_hidden or []
    ]
    adv = (
        None
        if advantages is None
        else advantages.to(tokens.device).unsqueeze(1).expand_as(completion_ids)[keep]
    )

    per_token = _per_token(settings, tokens, teacher_logits, baselines, adv, fkl, trained_value)
    loss = fused_head_loss(
        student_hidden[keep], student_head, weights, per_token, settings.chunk_size, floor=torch.float32
    )
    position = torch.arange(completion_ids.shape[1], device=tokens.device).expand_as(completion_ids)[keep]
    return loss, _diagnostics(fkl, trained_value, weights, position, trained[keep].bool())


def _per_token(
    settings: DistillSettings,
    tokens: torch.Tensor,
    teacher_logits: Callable[[int, int], torch.Tensor],
    baselines: list[Callable[[int, int], torch.Tensor]],
    adv: torch.Tensor | None,
    fkl: torch.Tensor,
    trained_value: torch.Tensor,
) -> Callable[[torch.Tensor, int, int], torch.Tensor]:
    """The per-token loss of positions [start, end) from the student's logits there; it also fills `fkl`
    (forward KL, a diagnostic whatever is trained) and `trained_value` (the trained divergence)."""

    def per_token(student_logits: torch.Tensor, start: int, end: int) -> torch.Tensor:
        with torch.no_grad():
            t_logits = teacher_logits(start, end)
            if baselines:
                t_logits = contrastive_teacher(
                    t_logits, [b(start, end) for b in baselines], settings.credit_weight
                )
        student_logits = student_logits / float(settings.temperature)
        value = token_divergence(
            student_logits,
            t_logits,
            kind=settings.divergence,
            beta=settings.beta,
            support=settings.support,
            topk=settings.topk,
            tail=settings.tail,
            tokens=tokens[start:end],
        )
        trained_value[start:end] = value.detach().float()
        if settings.divergence == "forward" and settings.support == "full":
            fkl[start:end] = value.detach()
        else:
            with torch.no_grad():
                fkl[start:end] = kl(
                    torch.log_softmax(t_logits.float(), -1),
                    torch.log_softmax(student_logits.detach().float(), -1),
                )
        if adv is not None:  # PBSD's reward term rides on the same chunk of student logits
            value = value + reward_term(student_logits, tokens[start:end], adv[start:end])
        return value

    return per_token


def _teacher_logits(
    t_hidden: torch.Tensor, teacher_head: torch.nn.Module, temperature: float
) -> Callable[[int, int], torch.Tensor]:
    """The teacher's tempered logits of positions [start, end), computed chunk by chunk from its hidden states.

    Both heads run in float32 even under bf16 mixed precision: the distillation signal is a small difference
    between two sets of logits (KL ~0.1 nat per token here), and bf16 logits are rounded to 0.06-0.125 at
    |logit| 8-16. Measured on the real model (tests/test_learning.py's 4-step check, seeds 0-2): with bf16
    heads the demonstrations' log-probability did not rise (-0.07, -0.01, +0.02), with float32 ones it did.
    The decoder still runs in bf16; the heads are ~1/5 of the model's FLOPs. The teacher's head is cast
    once here, not per chunk; the chunk loop runs with autocast off (harness.distill.fused_head).
    """
    compute = head_compute_dtype(t_hidden.device, teacher_head.weight.dtype, floor=torch.float32)
    weight = teacher_head.weight.detach().to(compute)
    bias = getattr(teacher_head, "bias", None)
    bias = bias.detach().to(compute) if bias is not None else None
    temp = float(temperature)

    def logits(start: int, end: int) -> torch.Tensor:
        return torch.nn.functional.linear(t_hidden[start:end].to(compute), weight, bias) / temp

    return logits


def _diagnostics(
    fkl: torch.Tensor,
    trained_value: torch.Tensor,
    weights: torch.Tensor,
    position: torch.Tensor,
    trained: torch.Tensor,
) -> dict[str, float]:
    first = position < FIRST_TOKENS
    return {
        "kl": _mean(fkl[trained]),
        "kl_first": _mean(fkl[first]),
        "kl_rest": _mean(fkl[~first]),
        "loss_tokens": float(trained.sum()),
        # share of the loss carried by the first FIRST_TOKENS positions (harness.distill.diagnostics)
        "loss_share_first": position_profile(trained_value, weights, position, FIRST_TOKENS)["share_first"],
    }


def _mean(x: torch.Tensor) -> float:
    return float(x.mean()) if x.numel() else float("nan")
