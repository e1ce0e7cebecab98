"""pass@k: the unbiased estimator against brute-force enumeration of k-subsets, and the sampling path
checked end to end on the tiny model with a scorer whose verdicts are recomputed here."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from harness.eval import passk
from harness.eval.passk import check_pass_k, eval_docs, pass_at_k, pass_k_scores, sample_responses
from harness.eval.scoring import doc_to_item, task_stop_strings
from harness.tasks.spec import resolve_task, student_messages


def _brute_force(n: int, c: int, k: int) -> float:
    """Fraction of all k-subsets of n samples (the first c correct) that hold a correct sample."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8, 10])
def test_estimator_matches_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(_brute_force(n, c, k), abs=1e-12), (n, c, k)


def test_estimator_known_values():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the fraction correct
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # C(3,2)/C(4,2) = 3/6 missed
    assert pass_at_k(200, 0, 100) == 0.0
    assert pass_at_k(200, 1, 100) == pytest.approx(0.5)
    assert pass_at_k(200, 150, 100) == 1.0


def test_bad_settings_are_one_line():
    with pytest.raises(
        ValueError, match=r"eval.pass_k=\[1, 20\]: each k must be in 1..eval.samples=10, not 20"
    ):
        check_pass_k([1, 20], 10)
    with pytest.raises(ValueError, match="n=3, c=4"):
        pass_at_k(3, 4, 1)


def test_sampled_pass_k_on_the_tiny_model(tiny_model, monkeypatch):
    model, tok = tiny_model
    spec = resolve_task("dates")
    docs = eval_docs(spec, 3)

    def scorer(response: str, doc: dict) -> float:  # any deterministic verdict on the sampled text
        return float(len(response) % 2 == 0)

    monkeypatch.setattr(passk, "load_scorer", lambda spec: scorer)
    before = torch.get_rng_state()
    scores = pass_k_scores(
        model, tok, spec, docs, [1, 2, 4], samples=4, temperature=1.0, seed=7, max_new_tokens=6
    )
    assert torch.equal(torch.get_rng_state(), before)  # sampling leaves the global RNG alone

    conversations = [student_messages(doc_to_item(d)) for d in docs]
    answers = sample_responses(model, tok, conversations, 4, 6, 1.0, 7, task_stop_strings(spec))
    assert all(len(a) == 4 for a in answers)
    correct = [sum(scorer(a, d) for a in texts) for texts, d in zip(answers, docs, strict=True)]
    for k in (1, 2, 4):
        expected = sum(_brute_force(4, int(c), k) for c in correct) / len(docs)
        assert scores[k] == pytest.approx(expected)
    assert scores[1] <= scores[2] <= scores[4]
    assert not math.isnan(scores[1])


def test_config_refuses_bad_pass_k():
    from omegaconf import OmegaConf

    from harness.config import Config
    from harness.run.validate import validate

    cfg = OmegaConf.structured(Config)
    cfg.stream.name, cfg.stream.tasks = "s", ["dates"]
    cfg.suite.name = "none"
    cfg.eval.pass_k, cfg.eval.samples = [1, 5], 5
    validate(cfg)
    cfg.eval.pass_k = [0, 5]
    with pytest.raises(ValueError, match=r"eval.pass_k=\[0, 5\]: must be >= 1"):
        validate(cfg)
    cfg.eval.pass_k = [1, 8]
    with pytest.raises(ValueError, match="each k must be in 1..eval.samples=5, not 8"):
        validate(cfg)
