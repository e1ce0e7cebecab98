"""Two corrections of the teacher's signal from the self-distillation literature, as pure functions.

CREDIT (Contrastive REward from DIsTillation, arXiv 2605.11613): a context-conditioned teacher also
predicts what *any* item's context would make likely (the template's phrasing, a generic answer shape).
The baseline is the teacher's log-probabilities for the same completion prefix under K other items'
contexts, averaged; subtracting `weight` times it leaves the part specific to this item. Per position:

    log q(v) = log p_t(v | this context) - weight * mean_k log p_t(v | context_k) + const

renormalised over the vocabulary (the divergence log-softmaxes it), so q is a distribution: the teacher
divided by the geometric mean of the baselines to the power `weight`. weight 0 is the plain teacher.
The paper applies the baseline to its token rewards; this is the same subtraction at the logit level, so
that every divergence and support of harness.distill.divergence works on the corrected teacher.

PBSD (Preference-Based Self-Distillation, arXiv 2605.05040) targets the teacher reweighted by a reward:
pi*(y) = p_t(y) exp(r(y) / tau) / Z. The reverse KL to it splits into the reverse KL to the teacher minus
E[r] / tau (plus log Z), so its gradient is the distillation gradient plus a policy gradient of r / tau.
`reward_term` is that second part as a per-token surrogate: -advantage * log p_s(token), where the
caller's advantage is (r - mean r of the prompt's rollouts) / tau, the group mean being the baseline that
keeps the estimator unbiased and lowers its variance.
"""

from __future__ import annotations

import torch


def contrastive_teacher(
    teacher_logits: torch.Tensor, baseline_logits: list[torch.Tensor], weight: float
) -> torch.Tensor:
    """Log-scores [n, V] of the CREDIT teacher: teacher log-probs minus `weight` x the mean of the
    baselines' log-probs (unnormalised; the divergence normalises them)."""
    teacher_logp = torch.log_softmax(_at_least_fp32(teacher_logits), dim=-1)
    if not baseline_logits or weight == 0.0:
        return teacher_logp
    base = torch.stack([torch.log_softmax(_at_least_fp32(b), dim=-1) for b in baseline_logits]).mean(0)
    return teacher_logp - weight * base


def reward_term(student_logits: torch.Tensor, tokens: torch.Tensor, advantage: torch.Tensor) -> torch.Tensor:
    """Per-token surrogate -advantage * log p_s(token) [n]: its gradient is the policy gradient of the
    advantage (REINFORCE); the advantage is a constant (no gradient flows into the scorer's reward)."""
    logp = (
        torch.log_softmax(_at_least_fp32(student_logits), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    )
    return -advantage.detach().to(logp.dtype) * logp


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """bf16 logits lose too much in a softmax; float64 stays float64 (tests)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def group_advantages(rewards: torch.Tensor, group: int, temperature: float) -> torch.Tensor:
    """(r - mean of the prompt's `group` rollouts) / temperature, for rows laid out prompt by prompt."""
    if rewards.numel() % group:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group} rollouts")
    grouped = rewards.float().view(-1, group)
    return ((grouped - grouped.mean(1, keepdim=True)) / temperature).reshape(-1)
