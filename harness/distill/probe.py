"""Teacher-forcing probe: is the teacher's context pulling toward the demonstration or toward the template?

For a few train items, the model scores (no sampling, no gradient):
- the demonstration after the teacher context (the prompt rewritten by the template) and after the student
  context (the prompt alone);
- each of the template's own sentences (e.g. "This is an example for a response to the question:") as if
  it were the answer, under both contexts;
- the probability of the demonstration's first tokens, teacher minus student: where a short structured
  answer's format is decided, the push SDFT can give.

A teacher that finds its template's sentence more likely than the demonstration tends to recite it when
sampling, and distillation then teaches the student to recite it. `rank_templates` orders templates by
(demonstration minus template) mean log-probability per token, the figure `harness tasks probe` prints.
At the start of an SDFT stage the teacher *is* the student (same weights, different context), so one model
serves both contexts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from harness.batching import chat_prompt_ids, collate, completion_hidden
from harness.eval.recitation import template_sentences
from harness.tasks.spec import Item, student_messages, teacher_messages

log = logging.getLogger(__name__)

FIRST_K = 4  # demonstration tokens whose teacher-minus-student probability is reported


@dataclass
class ProbeResult:
    """Means over the probed items. `*_lp`: mean log-probability per token; `*_sum`: of the whole text."""

    items: int
    teacher_demo_lp: float
    student_demo_lp: float
    teacher_demo_sum: float
    student_demo_sum: float
    teacher_template_lp: float  # the template sentence the teacher finds likeliest, per item
    student_template_lp: float
    teacher_template_sum: float
    first_gap: float  # mean over items and the first FIRST_K demonstration tokens of p_teacher - p_student
    template_more_likely: float  # share of items whose likeliest template sentence beats the demonstration
    margin: float  # teacher_demo_lp - teacher_template_lp: larger = harder to recite
    seconds: float = 0.0

    def stats(self, prefix: str = "probe_") -> dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in asdict(self).items()}


@torch.no_grad()
def completion_logprobs(
    model: Any, tokenizer: Any, pairs: Sequence[tuple[list[int], list[int]]], batch_size: int = 8
) -> list[torch.Tensor]:
    """Per-token log-probabilities of each completion given its context (teacher forcing), float32."""
    head = model.get_output_embeddings()
    device = next(model.parameters()).device
    out: list[torch.Tensor] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            batch = collate([c for c, _ in chunk], [t for _, t in chunk], tokenizer.pad_token_id).to(device)
            logp = torch.log_softmax(head(completion_hidden(model, batch)).float(), -1)
            picked = logp.gather(-1, batch.completion_ids.unsqueeze(-1)).squeeze(-1).cpu()
            out.extend(picked[i, : len(t)] for i, (_, t) in enumerate(chunk))
    finally:
        model.train(was_training)
    return out


def _text_ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def probe(
    model: Any,
    tokenizer: Any,
    items: Sequence[Item],
    template: str,
    first_k: int = FIRST_K,
    batch_size: int = 8,
) -> ProbeResult:
    """Teacher-force the demonstration and the template's sentences under both contexts (see module doc)."""
    import time

    started = time.perf_counter()
    sentences = [_text_ids(tokenizer, s) for s in template_sentences(template)]
    pairs: list[tuple[list[int], list[int]]] = []
    layout: list[tuple[int, int]] = []  # per item: (index of its first pair, number of sentences)
    for item in items:
        teacher = chat_prompt_ids(tokenizer, teacher_messages(item, template))
        student = chat_prompt_ids(tokenizer, student_messages(item))
        demo = _text_ids(tokenizer, item.demonstration)
        layout.append((len(pairs), len(sentences)))
        pairs += [(teacher, demo), (student, demo)]
        pairs += [(teacher, s) for s in sentences] + [(student, s) for s in sentences]
    scored = completion_logprobs(model, tokenizer, pairs, batch_size)
    rows = [_item_row(scored, first, n_sent, first_k) for first, n_sent in layout]
    result = _mean_result(rows)
    result.seconds = time.perf_counter() - started
    return result


def _item_row(scored: list[Any], first: int, n_sent: int, first_k: int) -> dict[str, float]:
    """One item's figures from its scored pairs: demonstration under teacher and student, then its sentences."""
    t_demo, s_demo = scored[first], scored[first + 1]
    t_sent = scored[first + 2 : first + 2 + n_sent]
    s_sent = scored[first + 2 + n_sent : first + 2 + 2 * n_sent]
    k = min(first_k, len(t_demo))
    row = {
        "teacher_demo_lp": float(t_demo.mean()),
        "student_demo_lp": float(s_demo.mean()),
        "teacher_demo_sum": float(t_demo.sum()),
        "student_demo_sum": float(s_demo.sum()),
        "first_gap": float((t_demo[:k].exp() - s_demo[:k].exp()).mean()),
    }
    if n_sent:
        best = max(range(n_sent), key=lambda j: float(t_sent[j].sum()))  # likeliest to be recited
        row.update(
            {
                "teacher_template_lp": float(t_sent[best].mean()),
                "student_template_lp": float(s_sent[best].mean()),
                "teacher_template_sum": float(t_sent[best].sum()),
                "template_more_likely": float(float(t_sent[best].sum()) > row["teacher_demo_sum"]),
            }
        )
    else:  # a template with no text of its own cannot be recited
        row.update(
            {
                "teacher_template_lp": -math.inf,
                "student_template_lp": -math.inf,
                "teacher_template_sum": -math.inf,
                "template_more_likely": 0.0,
            }
        )
    return row


def _mean_result(rows: list[dict[str, float]]) -> ProbeResult:
    def mean(key: str) -> float:
        return sum(r[key] for r in rows) / len(rows) if rows else float("nan")

    return ProbeResult(
        items=len(rows),
        teacher_demo_lp=mean("teacher_demo_lp"),
        student_demo_lp=mean("student_demo_lp"),
        teacher_demo_sum=mean("teacher_demo_sum"),
        student_demo_sum=mean("student_demo_sum"),
        teacher_template_lp=mean("teacher_template_lp"),
        student_template_lp=mean("student_template_lp"),
        teacher_template_sum=mean("teacher_template_sum"),
        first_gap=mean("first_gap"),
        template_more_likely=mean("template_more_likely"),
        margin=mean("teacher_demo_lp") - mean("teacher_template_lp"),
    )


def warn_if_recitable(result: ProbeResult, task: str, template_name: str) -> str | None:
    """A loud warning when, on some probed items, the teacher finds the template's own sentence more likely
    than the demonstration (it may recite it; distillation would teach the student to). Returns the text."""
    if result.template_more_likely <= 0:
        return None
    message = (
        f"task {task}: with teacher template {template_name!r} the teacher finds the template's own sentence "
        f"more likely than the demonstration on {result.template_more_likely:.0%} of {result.items} probed "
        f"items (log-prob {result.teacher_template_sum:.1f} vs {result.teacher_demo_sum:.1f}); it may recite "
        f"the template. Compare templates with `harness tasks probe {task}`"
    )
    log.warning(message)
    return message


def rank_templates(
    model: Any, tokenizer: Any, items: Sequence[Item], templates: dict[str, str], batch_size: int = 8
) -> list[tuple[str, ProbeResult]]:
    """(name, result) for each template, best first: the largest margin (demonstration minus template)."""
    results = [
        (name, probe(model, tokenizer, items, text, batch_size=batch_size))
        for name, text in templates.items()
    ]
    return sorted(results, key=lambda nr: nr[1].margin, reverse=True)
