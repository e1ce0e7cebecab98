"""The teacher-forcing probe against an independent full forward, the warning, the ranking, the CLI."""

from __future__ import annotations

import pytest
import torch

from harness.batching import chat_prompt_ids
from harness.distill.probe import ProbeResult, probe, rank_templates, warn_if_recitable
from harness.tasks.spec import TEACHER_TEMPLATES, Item, student_messages, teacher_messages

ITEMS = [
    Item(prompt="What is 2+2?", demonstration="It is 4."),
    Item(prompt="Name a colour of the sky.", demonstration="Blue, on a clear day."),
]


def _logprobs(model, tok, context: list[int], text: str) -> torch.Tensor:
    """Independent: one unpadded forward of context + text through the full model (its own LM head)."""
    target = tok(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([context + target])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(context) - 1 : -1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(target).unsqueeze(-1)).squeeze(-1)


def test_probe_matches_an_independent_forward(tiny_model) -> None:
    model, tok = tiny_model
    template = TEACHER_TEMPLATES["plain"]
    r = probe(model, tok, ITEMS, template, first_k=2)
    t_demo, s_demo, t_sent, first_gap, more = [], [], [], [], []
    for it in ITEMS:
        teacher = chat_prompt_ids(tok, teacher_messages(it, template))
        student = chat_prompt_ids(tok, student_messages(it))
        td, sd = (
            _logprobs(model, tok, teacher, it.demonstration),
            _logprobs(model, tok, student, it.demonstration),
        )
        sentences = [
            _logprobs(model, tok, teacher, s)
            for s in (
                "This is an example for a response to the question:",
                "Now answer with a response of your own.",
            )
        ]
        best = max(sentences, key=lambda x: float(x.sum()))
        t_demo.append(float(td.mean()))
        s_demo.append(float(sd.mean()))
        t_sent.append(float(best.mean()))
        first_gap.append(float((td[:2].exp() - sd[:2].exp()).mean()))
        more.append(float(best.sum()) > float(td.sum()))
    assert r.items == 2
    assert r.teacher_demo_lp == pytest.approx(sum(t_demo) / 2, abs=1e-4)
    assert r.student_demo_lp == pytest.approx(sum(s_demo) / 2, abs=1e-4)
    assert r.teacher_template_lp == pytest.approx(sum(t_sent) / 2, abs=1e-4)
    assert r.first_gap == pytest.approx(sum(first_gap) / 2, abs=1e-5)
    assert r.template_more_likely == pytest.approx(sum(more) / 2)
    assert r.margin == pytest.approx(r.teacher_demo_lp - r.teacher_template_lp)


def _result(more: float, margin: float = 0.0) -> ProbeResult:
    return ProbeResult(
        items=4,
        teacher_demo_lp=-1,
        student_demo_lp=-2,
        teacher_demo_sum=-6.6,
        student_demo_sum=-80,
        teacher_template_lp=-1 - margin,
        student_template_lp=-3,
        teacher_template_sum=-4.2,
        first_gap=0.01,
        template_more_likely=more,
        margin=margin,
    )


def test_warning_only_when_the_template_beats_the_demonstration(caplog) -> None:
    with caplog.at_level("WARNING"):
        assert warn_if_recitable(_result(0.0), "tooluse", "plain") is None
        message = warn_if_recitable(_result(0.5), "tooluse", "plain")
    assert message is not None and "tooluse" in message and "'plain'" in message and "-4.2 vs -6.6" in message
    assert "harness tasks probe tooluse" in caplog.text


def test_rank_templates_orders_by_margin_and_cli_prints_them(tiny_model, capsys) -> None:
    from harness.tasktools.commands import cmd_probe

    model, tok = tiny_model
    templates = {k: TEACHER_TEMPLATES[k] for k in ("plain", "label", "system")}
    ranked = rank_templates(model, tok, ITEMS, templates)
    margins = [r.margin for _, r in ranked]
    assert sorted(margins, reverse=True) == margins and {n for n, _ in ranked} == set(templates)
    assert cmd_probe("tooluse", ["plain", "label"], n=2, model=model, tokenizer=tok) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [ln.split()[0] for ln in lines if ln.split() and ln.split()[0] in ("plain", "label")]
    assert sorted(rows) == ["label", "plain"]
