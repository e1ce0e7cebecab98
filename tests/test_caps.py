"""The `caps` task (partial competence at 135M): its strict scorer on hand-written answers, and that its
eval split is held out by word, not only by prompt."""

from __future__ import annotations

import importlib.util
import json

import pytest

from harness.tasks.spec import TASKS_ROOT

DOC = {"answer": "LOUD GIRAFFE"}


def _utils():
    spec = importlib.util.spec_from_file_location("_caps_utils", TASKS_ROOT / "caps" / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("LOUD GIRAFFE", 1.0),
        ("A: LOUD GIRAFFE", 1.0),  # the worked example's own format
        ("LOUD GIRAFFE.", 1.0),
        ("'LOUD GIRAFFE'", 1.0),
        ("\nLOUD GIRAFFE\nThese are the words in capitals.", 1.0),  # later lines ignored
        ("Loud Giraffe", 0.0),  # title case
        ("loud giraffe", 0.0),
        ("LOUD  GIRAFFE", 0.0),  # two spaces
        ("GIRAFFE LOUD", 0.0),
        ("LOUD", 0.0),
        ("The answer is LOUD GIRAFFE", 0.0),
        ("LOUD GIRAFFE LOUD GIRAFFE", 0.0),
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
    train_nouns = {r["answer"].split()[1] for r in train}
    eval_nouns = {r["answer"].split()[1] for r in evals}
    assert not train_nouns & eval_nouns
    for row in train + evals:
        # the prompt's worked example is another pair: the answer itself never appears in the prompt
        assert row["answer"] not in row["prompt"]
        assert row["demonstration"] == row["answer"]
