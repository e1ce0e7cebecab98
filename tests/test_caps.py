"""The `caps` task (partial competence at 135M): its strict scorer on hand-written answers, and that its
eval split is held out by word, not only by prompt."""

from __future__ import annotations

import importlib.util
import json

import pytest

from harness.tasks.spec import TASKS_ROOT

DOC = {"answer": "GIRAFFE"}


def _utils():
    spec = importlib.util.spec_from_file_location("_caps_utils", TASKS_ROOT / "caps" / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("GIRAFFE", 1.0),
        ("A: GIRAFFE", 1.0),  # the worked example's own format
        ("GIRAFFE.", 1.0),
        ("'GIRAFFE'", 1.0),
        ("\nGIRAFFE\n\nThis is a response to the question:", 1.0),  # later lines ignored
        ("Giraffe", 0.0),  # title case
        ("giraffe", 0.0),
        ("GIRAFE", 0.0),  # misspelt in capitals, the base model's usual miss
        ("A: GIRAFFES", 0.0),
        ("The answer is GIRAFFE", 0.0),
        ("GIRAFFE GIRAFFE", 0.0),
        ("", 0.0),
    ],
)
def test_scorer_is_strict(response, expected):
    assert _utils().score(response, DOC) == expected


def _rows(name: str) -> list[dict]:
    lines = (TASKS_ROOT / "caps" / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_eval_words_are_held_out_and_examples_do_not_leak():
    train, evals = _rows("train.jsonl"), _rows("eval.jsonl")
    assert len(evals) >= 400
    train_words, eval_words = {r["word"] for r in train}, {r["word"] for r in evals}
    assert len(eval_words) >= 100
    assert not train_words & eval_words
    for row in train + evals:
        # the worked example is another word: the prompt names the word in lower case only
        assert row["answer"] == row["word"].upper() == row["demonstration"]
        assert row["answer"] not in row["prompt"]
