"""Per-token divergences between the student's and the teacher's next-token distributions.

Conventions (docs/design.md §4; the direction is easy to swap, tests pin it to hand-computed numbers):
- `forward` = KL(teacher || student) = sum_v p_t(v) (log p_t(v) - log p_s(v)), what the paper's results used;
- `reverse` = KL(student || teacher);
- `jsd` with beta: M = beta p_t + (1 - beta) p_s, JSD = beta KL(teacher || M) + (1 - beta) KL(student || M)
  (the generalised JSD of GKD, as TRL's `distillation_alpha` in (0, 1)).
Supports:
- `full`: the whole vocabulary;
- `topk`: the student's k most likely tokens; with `tail` one more bucket holds the remaining mass of each
  distribution, without it both are renormalised over the k tokens;
- `sampled`: a single-token estimator on the rollout token y ~ student. Its value is a surrogate whose
  gradient is an unbiased estimate of the divergence's gradient: reverse: (log p_s(y) - log p_t(y)) detached
  times log p_s(y) (as TRL); forward: -(p_t(y) / p_s(y)) detached times log p_s(y) (importance weighted,
  high variance). JSD has no such estimator here.
All inputs are log-probabilities over the last dimension; outputs have the leading shape.
"""

from __future__ import annotations

import torch

SAMPLED_DIVERGENCES = ("forward", "reverse")


def kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last dimension (finite log-probabilities: log_softmax of finite logits)."""
    return (logp.exp() * (logp - logq)).sum(-1)


def divergence(
    student_logp: torch.Tensor, teacher_logp: torch.Tensor, kind: str, beta: float = 0.5
) -> torch.Tensor:
    if kind == "forward":
        return kl(teacher_logp, student_logp)
    if kind == "reverse":
        return kl(student_logp, teacher_logp)
    if kind == "jsd":
        if beta <= 0.0 or beta >= 1.0:  # M equals one of the two: the JSD is identically 0
            return torch.zeros(student_logp.shape[:-1], dtype=student_logp.dtype, device=student_logp.device)
        log_m = torch.logaddexp(
            teacher_logp + torch.log(torch.tensor(beta, dtype=teacher_logp.dtype)),
            student_logp + torch.log(torch.tensor(1.0 - beta, dtype=student_logp.dtype)),
        )
        return beta * kl(teacher_logp, log_m) + (1.0 - beta) * kl(student_logp, log_m)
    raise ValueError(f"divergence={kind!r} is not known; valid: forward, reverse, jsd")


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """Softmaxes of bf16/fp16 logits lose too much; float64 stays float64 (tests)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _with_tail(logp_k: torch.Tensor) -> torch.Tensor:
    """Append log(1 - sum exp(logp_k)), the probability mass outside the support (clamped away from 0)."""
    log_mass = torch.logsumexp(logp_k, dim=-1, keepdim=True).clamp(max=-1e-7)
    return torch.cat([logp_k, torch.log(-torch.expm1(log_mass))], dim=-1)


def token_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    kind: str = "forward",
    beta: float = 0.5,
    support: str = "full",
    topk: int = 20,
    tail: bool = True,
    tokens: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-position divergence from raw logits [..., V] (temperature already applied by the caller)."""
    student_logp = torch.log_softmax(_at_least_fp32(student_logits), dim=-1)
    teacher_logp = torch.log_softmax(_at_least_fp32(teacher_logits), dim=-1)
    if support == "full":
        return divergence(student_logp, teacher_logp, kind, beta)
    if support == "topk":
        if topk < 1:
            raise ValueError(f"topk={topk}: must be >= 1")
        index = student_logp.detach().topk(min(topk, student_logp.shape[-1]), dim=-1).indices
        s_k, t_k = student_logp.gather(-1, index), teacher_logp.gather(-1, index)
        if tail:
            s_k, t_k = _with_tail(s_k), _with_tail(t_k)
        else:
            s_k = s_k - torch.logsumexp(s_k, dim=-1, keepdim=True)
            t_k = t_k - torch.logsumexp(t_k, dim=-1, keepdim=True)
        return divergence(s_k, t_k, kind, beta)
    if support == "sampled":
        if tokens is None:
            raise ValueError("support=sampled needs the rollout tokens")
        if kind not in SAMPLED_DIVERGENCES:
            raise ValueError(f"support=sampled supports divergence in {SAMPLED_DIVERGENCES}, got {kind!r}")
        s_y = student_logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        t_y = teacher_logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        if kind == "reverse":
            return (s_y - t_y).detach() * s_y
        return -torch.exp(t_y - s_y).detach() * s_y
    raise ValueError(f"support={support!r} is not known; valid: full, topk, sampled")
