"""The SDFT distillation loss on completion positions, fused with the LM heads and chunked.

Per token: divergence(student || teacher) on next-token distributions at the same temperature; tokens
before `skip_tokens` and padding get weight 0; the per-token loss is averaged per sequence, then over the
batch (TRL's and the paper's aggregation). Only completion positions reach the heads, `chunk_size` positions
at a time, so neither model's full [B, C, V] logits ever exist (harness.distill.fused_head).
"""

from __future__ import annotations

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
    t_hidden = teacher_hidden[keep].detach()
    b_hidden = [b[keep].detach() for b in baseline_hidden or []]
    adv = (
        None
        if advantages is None
        else advantages.to(tokens.device).unsqueeze(1).expand_as(completion_ids)[keep]
    )
    temp = float(settings.temperature)
    fkl = torch.zeros(tokens.numel(), dtype=torch.float32, device=tokens.device)
    trained_value = torch.zeros_like(fkl)  # the trained divergence per token, for the loss profile

    # Both heads run in float32 even under bf16 mixed precision: the distillation signal is a small difference
    # between two sets of logits (KL ~0.1 nat per token here), and bf16 logits are rounded to 0.06-0.125 at
    # |logit| 8-16. Measured on the real model (tests/test_learning.py's 4-step check, seeds 0-2): with bf16
    # heads the demonstrations' log-probability did not rise (-0.07, -0.01, +0.02), with float32 ones it did.
    # The decoder still runs in bf16; the heads are ~1/5 of the model's FLOPs. The teacher's head is cast
    # once here, not per chunk; the chunk loop runs with autocast off (harness.distill.fused_head).
    t_compute = head_compute_dtype(t_hidden.device, teacher_head.weight.dtype, floor=torch.float32)
    t_weight = teacher_head.weight.detach().to(t_compute)
    t_bias = getattr(teacher_head, "bias", None)
    t_bias = t_bias.detach().to(t_compute) if t_bias is not None else None

    def teacher_at(hidden: torch.Tensor, start: int, end: int) -> torch.Tensor:
        return torch.nn.functional.linear(hidden[start:end].to(t_compute), t_weight, t_bias) / temp

    def per_token(student_logits: torch.Tensor, start: int, end: int) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher_at(t_hidden, start, end)
            if b_hidden:
                baselines = [teacher_at(b, start, end) for b in b_hidden]
                teacher_logits = contrastive_teacher(teacher_logits, baselines, settings.credit_weight)
        student_logits = student_logits / temp
        value = token_divergence(
            student_logits,
            teacher_logits,
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
                    torch.log_softmax(teacher_logits.float(), -1),
                    torch.log_softmax(student_logits.detach().float(), -1),
                )
        if adv is not None:  # PBSD's reward term rides on the same chunk of student logits
            value = value + reward_term(student_logits, tokens[start:end], adv[start:end])
        return value

    loss = fused_head_loss(
        student_hidden[keep], student_head, weights, per_token, settings.chunk_size, floor=torch.float32
    )
    position = torch.arange(completion_ids.shape[1], device=tokens.device).expand_as(completion_ids)[keep]
    trained_flat = trained[keep].bool()
    first = position < FIRST_TOKENS
    diag = {
        "kl": _mean(fkl[trained_flat]),
        "kl_first": _mean(fkl[first]),
        "kl_rest": _mean(fkl[~first]),
        "loss_tokens": float(trained_flat.sum()),
        # share of the loss carried by the first FIRST_TOKENS positions (harness.distill.diagnostics)
        "loss_share_first": position_profile(trained_value, weights, position, FIRST_TOKENS)["share_first"],
    }
    return loss, diag


def _mean(x: torch.Tensor) -> float:
    return float(x.mean()) if x.numel() else float("nan")
