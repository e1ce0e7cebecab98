"""Every built-in task declares its chance level, and the declared level is what its constant answer scores."""

from __future__ import annotations

import json

import pytest

from harness.eval.chance import constant_score, measure_chance
from harness.eval.scoring import load_scorer
from harness.tasks.spec import builtin_task_names, resolve_task


@pytest.mark.parametrize("name", builtin_task_names())
def test_builtin_task_declares_its_chance_level(name: str) -> None:
    spec = resolve_task(name)
    assert spec.chance is not None and spec.chance_answer, (
        f"tasks/{name}/task.yaml: no chance / chance_answer"
    )
    assert 0.0 <= spec.chance <= 1.0
    # recomputed here, item by item, with the task's own scorer (or the gold positions for multiple choice)
    docs = [json.loads(line) for line in spec.eval_file.read_text(encoding="utf-8").splitlines() if line]
    if spec.chance_answer.startswith("option "):
        k = int(spec.chance_answer.split()[1])
        by_hand = sum(1 for d in docs if d["gold"] == k) / len(docs)
    else:
        score = load_scorer(spec)
        by_hand = sum(score(spec.chance_answer, d) for d in docs) / len(docs)
    assert spec.chance == pytest.approx(by_hand, abs=5e-5)
    assert constant_score(spec, spec.chance_answer) == pytest.approx(by_hand)


def test_measured_chance_is_the_best_constant_answer(tmp_path) -> None:
    # a science-like folder where "<answer>4</answer>" is right on 2 of 3 items: the best constant answer
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "utils.py").write_text(
        "def score(response, doc):\n    return float(doc['answer'] in response)\n", encoding="utf-8"
    )
    rows = [("<answer>4</answer>", "4"), ("<answer>4</answer>", "4"), ("<answer>7</answer>", "7")]
    (folder / "eval.jsonl").write_text(
        "".join(json.dumps({"prompt": "q", "demonstration": d, "answer": a}) + "\n" for d, a in rows)
    )
    (folder / "train.jsonl").write_text("")
    c = measure_chance(resolve_task(str(folder)))
    assert c.answer == "<answer>4</answer>" and c.score == pytest.approx(2 / 3) and c.items == 3
