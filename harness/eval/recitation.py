"""Recitation of a teacher template's own text in generated answers (pure text functions, no model).

A self-distilled student can learn to recite its teacher's instruction ("This is an example for a response
to the question: ...") instead of answering. This measures how often: in training rollouts
(harness.distill.diagnostics) and in evaluation answers (the report). It lives with evaluation so that the
report, which must not import training code, can use it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from harness.tasks.spec import SYSTEM_MARK, USER_MARK

RECITE_N = 4  # words per n-gram of the template's instruction text that count as recitation
_WORD = re.compile(r"[a-z0-9']+")
_PLACEHOLDER = re.compile(r"\{[a-z_]+\}")


def words(text: str) -> list[str]:
    """Lower-cased word tokens; punctuation and layout are ignored so "question:" matches "question"."""
    return _WORD.findall(text.lower())


def template_sentences(template: str) -> list[str]:
    """The template's own text: the literal pieces between its placeholders that contain a word, stripped.

    For the paper's template these are "This is an example for a response to the question:" and "Now answer
    with a response of your own, including the thinking process.": what a teacher might recite.
    """
    text = template.replace(SYSTEM_MARK, "\n").replace(USER_MARK, "\n")
    pieces = (p.strip() for p in _PLACEHOLDER.split(text))
    return [p for p in pieces if words(p)]


def template_ngrams(template: str, n: int = RECITE_N) -> set[tuple[str, ...]]:
    """Word n-grams of the template's sentences; a sentence shorter than n counts whole (e.g. "Correct
    answer:"), so a short label is still detected when it is recited."""
    grams: set[tuple[str, ...]] = set()
    for sentence in template_sentences(template):
        w = words(sentence)
        size = min(n, len(w))
        grams.update(tuple(w[i : i + size]) for i in range(len(w) - size + 1))
    return grams


def recites(text: str, grams: set[tuple[str, ...]]) -> bool:
    """Whether `text` contains any of `grams` (word n-grams, possibly of different lengths)."""
    w = words(text)
    for size in {len(g) for g in grams}:
        if any(tuple(w[i : i + size]) in grams for i in range(len(w) - size + 1)):
            return True
    return False


def recitation_rate(texts: Sequence[str], template: str, n: int = RECITE_N) -> float:
    """Share of `texts` (rollouts or evaluation answers) that contain an n-gram of the template's own text.

    0.0 for an empty list. Texts are compared as lower-cased words (see `words`).
    """
    if not texts:
        return 0.0
    grams = template_ngrams(template, n)
    if not grams:
        return 0.0
    return sum(recites(t, grams) for t in texts) / len(texts)
