"""PBSD: the SDFT teacher reweighted by the scorer's reward, exp(r / tau).

One step with fixed, scored rollouts is checked against an independent computation: every sequence run
unpadded through transformers (its own LM head), the reverse KL to the teacher and the reward term
-((r - mean r of the prompt) / tau) * log p_student(token) summed by hand.
"""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from harness.config import Config
from harness.tasks.spec import load_train_items, resolve_task, student_messages, teacher_messages

SPEC = resolve_task("tooluse")
ITEMS = load_train_items(SPEC, 2)
TEXTS = [ITEMS[0].demonstration, "No idea.", ITEMS[1].demonstration, ITEMS[1].demonstration + " Done."]


def _step(tiny_model, monkeypatch, tau: float, rollouts: int = 2):
    from harness.batching import completion_ids, pad
    from harness.distill.rollout import Rollouts
    from harness.distill.teacher import Teacher
    from harness.methods import method_options
    from harness.methods.pbsd import RewardStep

    model, tok = tiny_model
    cfg = OmegaConf.structured(Config)
    cfg.method.name = "pbsd"
    cfg.method.distill.update(
        {"num_rollouts": rollouts, "divergence": "reverse", "skip_tokens": 1, "template": "label"}
    )
    opts = method_options("pbsd", {"temperature": tau})
    step = RewardStep(
        model, tok, Teacher(model, "base"), cfg.method.distill, SPEC, cfg.model.max_length, options=opts
    )
    completions = [completion_ids(tok, t) for t in TEXTS]

    def fixed(students, teachers):
        p_ids, p_mask = pad(students, tok.pad_token_id, "left")
        c_ids, c_mask = pad(completions, tok.pad_token_id, "right")
        none = torch.zeros(4, dtype=torch.bool)
        return Rollouts(p_ids, p_mask, c_ids, c_mask, none), none

    monkeypatch.setattr(step, "rollouts", fixed)
    return step, completions


def _logp(model, tok, messages, completion):
    from harness.batching import chat_prompt_ids

    prompt = chat_prompt_ids(tok, messages)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + completion])).logits[0].float()
    return torch.log_softmax(logits[len(prompt) - 1 : len(prompt) - 1 + len(completion)], -1)


@pytest.mark.parametrize("tau", [0.5, 2.0])
def test_loss_is_reverse_kl_plus_the_reward_term(tiny_model, monkeypatch, tau):
    from harness.tasks.spec import resolve_template

    model, tok = tiny_model
    step, completions = _step(tiny_model, monkeypatch, tau)
    loss, stats = step(ITEMS, ITEMS)
    rewards = [1.0, 0.0, 1.0, 1.0]  # the demonstrations are valid calls; trailing text is accepted
    advantages = [0.5 / tau, -0.5 / tau, 0.0, 0.0]  # (r - the prompt's mean) / tau
    assert stats["reward"] == pytest.approx(sum(rewards) / 4)
    expected = 0.0
    rows = [ITEMS[0], ITEMS[0], ITEMS[1], ITEMS[1]]
    for item, completion, adv in zip(rows, completions, advantages, strict=True):
        s = _logp(model, tok, student_messages(item), completion)
        t = _logp(model, tok, teacher_messages(item, resolve_template("label")), completion)
        reverse_kl = (s.exp() * (s - t)).sum(-1)
        token_logp = s.gather(-1, torch.tensor(completion).unsqueeze(-1)).squeeze(-1)
        expected += float((reverse_kl - adv * token_logp)[1:].mean()) / 4
    assert loss.item() == pytest.approx(expected, rel=5e-3)


def test_the_reward_term_pushes_the_rewarded_rollout_up(tiny_model, monkeypatch):
    """The gradient of the reward term alone (difference of two temperatures) raises the log-probability
    of the rollout with the higher reward: one SGD step along it, compared before and after."""
    model, tok = tiny_model
    import copy

    m = copy.deepcopy(model)
    step_a, completions = _step((m, tok), monkeypatch, 0.1)
    step_b, _ = _step((m, tok), monkeypatch, 1e6)
    (step_a(ITEMS, ITEMS)[0] - step_b(ITEMS, ITEMS)[0]).backward()
    before = _logp(m, tok, student_messages(ITEMS[0]), completions[0])
    with torch.no_grad():
        for p in m.parameters():
            if p.grad is not None:
                p -= 1e-2 * p.grad
    after = _logp(m, tok, student_messages(ITEMS[0]), completions[0])
    ids = torch.tensor(completions[0]).unsqueeze(-1)
    assert after.gather(-1, ids).sum() > before.gather(-1, ids).sum()


def test_one_rollout_has_no_baseline(tiny_model, monkeypatch):
    with pytest.raises(ValueError, match="num_rollouts=1: pbsd's reward baseline"):
        _step(tiny_model, monkeypatch, 1.0, rollouts=1)
