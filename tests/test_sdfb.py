"""SDFB: rollouts judged by the task's scorer, the teacher shown the attempt, the verdict and a correct sibling.

The loss of one step with fixed rollouts is checked against an independent computation: the teacher's
context written out by hand, each sequence run unpadded through transformers (its own LM head), and the
reverse KL summed by hand.
"""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from harness.config import Config
from harness.tasks.spec import load_train_items, resolve_task, student_messages

SPEC = resolve_task("tooluse")
ITEMS = load_train_items(SPEC, 2)
WRONG = "I cannot help with that."


def _cfg(options=None, **distill):
    cfg = OmegaConf.structured(Config)
    cfg.method.name = "sdfb"
    cfg.method.distill.update(
        {"num_rollouts": 2, "divergence": "reverse", "skip_tokens": 1, "teacher": "base", **distill}
    )
    cfg.method.options = options or {}
    return cfg


def _texts():
    """Rows: item 0 twice (correct, wrong), item 1 twice (wrong, wrong)."""
    return [ITEMS[0].demonstration, WRONG, WRONG, WRONG + " Sorry."]


def _step(tiny_model, monkeypatch, options=None, **distill):
    from harness.batching import completion_ids, pad
    from harness.distill.rollout import Rollouts
    from harness.distill.teacher import Teacher
    from harness.methods import method_options
    from harness.methods.sdfb import FeedbackStep

    model, tok = tiny_model
    cfg = _cfg(options, **distill)
    opts = method_options("sdfb", cfg.method.options)
    step = FeedbackStep(
        model, tok, Teacher(model, "base"), cfg.method.distill, SPEC, cfg.model.max_length, options=opts
    )
    completions = [completion_ids(tok, t) for t in _texts()]

    def fixed(students, teachers):
        p_ids, p_mask = pad(students, tok.pad_token_id, "left")
        c_ids, c_mask = pad(completions, tok.pad_token_id, "right")
        return Rollouts(p_ids, p_mask, c_ids, c_mask, torch.zeros(4, dtype=torch.bool)), torch.zeros(
            4, dtype=torch.bool
        )

    monkeypatch.setattr(step, "rollouts", fixed)
    return step, completions


def _logp(model, tok, user_text: str, completion: list[int]) -> torch.Tensor:
    from harness.batching import chat_prompt_ids

    prompt = chat_prompt_ids(tok, [{"role": "user", "content": user_text}])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + completion])).logits[0].float()
    return torch.log_softmax(logits[len(prompt) - 1 : len(prompt) - 1 + len(completion)], -1)


def _expected(tiny_model, completions, contexts) -> float:
    """Mean over rows of the per-token reverse KL(student || teacher), first token skipped."""
    model, tok = tiny_model
    total = 0.0
    for item, completion, context in zip([ITEMS[0]] * 2 + [ITEMS[1]] * 2, completions, contexts, strict=True):
        s = _logp(model, tok, student_messages(item)[-1]["content"], completion)
        t = _logp(model, tok, context, completion)
        total += float((s.exp() * (s - t)).sum(-1)[1:].mean()) / 4
    return total


def _context(question: str, attempt: str, verdict: str, solution: str | None) -> str:
    text = f"{question}\n\nYour earlier answer:\n{attempt}\n\nFeedback: This answer is {verdict}."
    if solution is not None:
        text += f"\n\nA correct answer to this question:\n{solution}"
    return text + "\n\nNow answer the question yourself."


def test_loss_distils_towards_the_feedback_conditioned_teacher(tiny_model, monkeypatch):
    step, completions = _step(tiny_model, monkeypatch)
    loss, stats = step(ITEMS, ITEMS)
    q0, q1 = (student_messages(it)[-1]["content"] for it in ITEMS)
    texts = _texts()
    contexts = [
        _context(q0, texts[0], "correct", None),  # the only success: no *other* correct sibling
        _context(q0, texts[1], "wrong", texts[0]),  # its sibling succeeded
        _context(q1, texts[2], "wrong", None),
        _context(q1, texts[3], "wrong", None),
    ]
    assert stats["reward"] == 0.25 and stats["feedback_solution_frac"] == 0.25
    assert loss.item() == pytest.approx(_expected(tiny_model, completions, contexts), rel=5e-3)


def test_demonstration_option_fills_in_where_no_sibling_succeeded(tiny_model, monkeypatch):
    step, completions = _step(tiny_model, monkeypatch, {"demonstration": True, "show_attempt": True})
    loss, stats = step(ITEMS, ITEMS)
    q0, q1 = (student_messages(it)[-1]["content"] for it in ITEMS)
    texts, demo0, demo1 = _texts(), ITEMS[0].demonstration, ITEMS[1].demonstration
    contexts = [
        _context(q0, texts[0], "correct", demo0),
        _context(q0, texts[1], "wrong", texts[0]),  # a sibling beats the demonstration
        _context(q1, texts[2], "wrong", demo1),
        _context(q1, texts[3], "wrong", demo1),
    ]
    assert stats["feedback_solution_frac"] == 1.0
    assert loss.item() == pytest.approx(_expected(tiny_model, completions, contexts), rel=5e-3)


def test_runs_a_stage_and_refuses_a_step_without_a_task(tiny_model):
    from harness.methods import StageContext, train_stage

    model, tok = tiny_model
    cfg = _cfg(max_new_tokens=4)
    cfg.trainer.update({"batch_size": 2, "max_steps": 1, "warmup_steps": 0})
    stats = train_stage(copy.deepcopy(model), tok, ITEMS, SPEC, cfg, StageContext())
    assert stats.steps[0]["reward"] == 0.0  # a random 2-layer model writes no valid call in 4 tokens
    with pytest.raises(ValueError, match="needs a task folder"):
        train_stage(copy.deepcopy(model), tok, ITEMS, None, cfg, StageContext())
