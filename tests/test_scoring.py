"""Task scorers (hand-written right, harmless-variant and wrong answers) and harness.eval.scoring's greedy path."""

from __future__ import annotations

import json

import pytest
import torch

from harness.eval.scoring import (
    cut_at_stop,
    greedy_generate,
    greedy_scores,
    load_scorer,
    task_stop_strings,
)
from harness.tasks.spec import TASKS_ROOT, resolve_task


def scorer(name: str):
    return load_scorer(resolve_task(name))


def first_doc(name: str, file: str = "eval.jsonl") -> dict:
    return json.loads((TASKS_ROOT / name / file).read_text().splitlines()[0])


TOOL_DOC = {
    "answer": json.dumps(
        {"name": "tablehop_book", "arguments": {"restaurant": "Blue Fig", "people": 4, "time": "19:30"}}
    )
}


@pytest.mark.parametrize(
    "response",
    [
        '{"name": "tablehop_book", "arguments": {"restaurant": "Blue Fig", "people": 4, "time": "19:30"}}',
        'The user wants a table.\n{"arguments": {"time": "19:30", "people": 4, "restaurant": "Blue Fig"}, "name": "tablehop_book"}',
        '```json\n{"name":"tablehop_book","arguments":{"restaurant":"Blue Fig","people":4.0,"time":"19:30"}}\n```',
        'Sure. {"name": "tablehop_book", "arguments": {"restaurant": "Blue Fig", "people": 4, "time": "19:30"}} Done!',
    ],
)
def test_tooluse_accepts(response):
    assert scorer("tooluse")(response, TOOL_DOC) == 1.0


@pytest.mark.parametrize(
    "response",
    [
        '{"name": "tablehop_book", "arguments": {"restaurant": "Blue Fig", "people": "4", "time": "19:30"}}',
        '{"name": "tablehop_book", "arguments": {"restaurant": "blue fig", "people": 4, "time": "19:30"}}',
        '{"name": "tablehop_book", "arguments": {"restaurant": "Blue Fig", "people": 4}}',
        '{"name": "tablehop_book", "arguments": {"restaurant": "Blue Fig", "people": 4, "time": "19:30", "x": 1}}',
        '{"name": "skyline_forecast", "arguments": {"restaurant": "Blue Fig", "people": 4, "time": "19:30"}}',
        'tablehop_book(restaurant="Blue Fig", people=4, time="19:30")',
        '{"name": "tablehop_book", "arguments": {"restaurant": "Blue Fig", "people": 4, "time": "19:30"',
        "",
    ],
)
def test_tooluse_rejects(response):
    assert scorer("tooluse")(response, TOOL_DOC) == 0.0


@pytest.mark.parametrize(
    "response,gold,expected",
    [
        ("<answer>44</answer> (CO2 = 12 + 2×16 = 44 g/mol.)", "44", 1.0),
        ("CO2 = 12 + 2×16 = 44 g/mol.\n<answer>44</answer>", "44", 1.0),
        ("<answer> 44 g/mol </answer>", "44", 1.0),
        ("<ANSWER>2,500</ANSWER>", "2500", 1.0),
        ("<answer>0.667</answer>", "0.6667", 1.0),
        ("<answer>43</answer>", "44", 0.0),
        ("The molar mass is 44.", "44", 0.0),
        ("<answer>forty-four</answer>", "44", 0.0),
        ("<answer>12</answer> then <answer>44</answer>", "44", 1.0),
        ("<answer>44</answer> no wait <answer>12</answer>", "44", 0.0),
        ("<answer></answer>", "44", 0.0),
    ],
)
def test_science_scorer(response, gold, expected):
    assert scorer("science")(response, {"answer": gold}) == expected


@pytest.mark.parametrize(
    "response,expected",
    [
        ("Kofi Desai.", 1.0),
        ("The Raloria Bridge was designed by kofi desai, an engineer.", 1.0),
        ("It was Kofi  Desai", 1.0),
        ("Kofi", 0.0),
        ("Kofi Desaie designed it.", 0.0),
        ("I do not know.", 0.0),
        (" ".join(["word"] * 45) + " Kofi Desai", 0.0),
    ],
)
def test_knowledge_scorer_person(response, expected):
    assert scorer("knowledge")(response, {"answer": "Kofi Desai"}) == expected


@pytest.mark.parametrize(
    "response,gold,expected",
    [
        ("It opened in August 2026.", "August 2026", 1.0),
        ("It opened in August 2027.", "August 2026", 0.0),
        ("It has 2,140 metres of length.", "2140", 1.0),
        ("It has 21400 metres.", "2140", 0.0),
        ("It is in Zelessaton.", "Zelessaton", 1.0),
        ("It is in Zelessatonia.", "Zelessaton", 0.0),
    ],
)
def test_knowledge_scorer_dates_numbers_places(response, gold, expected):
    assert scorer("knowledge")(response, {"answer": gold}) == expected


@pytest.mark.parametrize(
    "response,expected",
    [
        ("May 30, 2030 + 2 days = June 1, 2030, so the answer is 01.06.2030.", 1.0),
        ("Answer: 01.06.2030", 1.0),
        ("01.06.2030", 1.0),
        ("The date is 01.06.2030.", 1.0),
        ("1.6.2030", 0.0),
        ("2030-06-01", 0.0),
        ("06.01.2030", 0.0),
        ("Answer: 02.06.2030", 0.0),
        ("01.06.2030 or maybe 02.06.2030", 0.0),
    ],
)
def test_dates_scorer(response, expected):
    assert scorer("dates")(response, {"answer": "01.06.2030"}) == expected


@pytest.mark.parametrize(
    "kind,arg,response,expected",
    [
        ("lowercase", "", "the sea is calm today.", 1.0),
        ("lowercase", "", "The sea is calm today.", 0.0),
        ("lowercase", "", "123", 0.0),
        ("uppercase", "river", "RIVER", 1.0),
        ("uppercase", "river", "River", 0.0),
        ("keyword", "blue", "The Blue sea.", 1.0),
        ("keyword", "blue", "The bluest sea.", 0.0),
        ("max_words", "8", "Cats are small and soft.", 1.0),
        ("max_words", "8", "Cats are small soft and very lovely animals indeed.", 0.0),
        ("bullets", "3", "Here are three:\n- apple\n- pear\n* plum", 1.0),
        ("bullets", "3", "- apple\n- pear", 0.0),
        ("bullets", "2", "1. apple\n2. pear", 0.0),
        ("json", "name", '{"name": "Paris"}', 1.0),
        ("json", "name", '```json\n{"name": "Paris"}\n```', 1.0),
        ("json", "name", 'Sure: {"name": "Paris"}', 0.0),
        ("json", "name", '{"city": "Paris"}', 0.0),
        ("first_word", "Yes", "Yes, the sea is big.", 1.0),
        ("first_word", "Yes", '"yes" it is.', 1.0),
        ("first_word", "Yes", "Well, yes.", 0.0),
        ("repeat", "The cat sleeps.", '"The cat sleeps."', 1.0),
        ("repeat", "The cat sleeps.", "The cat sleeps", 0.0),
        ("one_word", "", "Blue.", 1.0),
        ("one_word", "", "It is blue.", 0.0),
    ],
)
def test_ifeval_checkers(kind, arg, response, expected):
    assert scorer("general_ifeval")(response, {"kind": kind, "arg": arg}) == expected


@pytest.mark.parametrize(
    "response,expected",
    [
        ("12", 1.0),
        ("12.", 1.0),
        ("The answer is 12.", 1.0),
        ("7 + 5 = 12", 1.0),
        ("twelve", 1.0),
        ("7 plus 5 is 12", 1.0),
        ("13", 0.0),
        ("13, no 12", 0.0),
        ("I cannot say.", 0.0),
        ("120", 0.0),
    ],
)
def test_arith_scorer(response, expected):
    assert scorer("general_arith")(response, {"answer": "12"}) == expected


def test_mc_scorer_and_process_results():
    doc = {"choices": ["Rome", "Paris", "Oslo", "Lima"], "gold": 1}
    assert scorer("general_mc")("Paris.", doc) == 1.0
    assert scorer("general_mc")("Rome", doc) == 0.0


def test_stop_strings_follow_the_yaml():
    assert task_stop_strings(resolve_task("science")) == ("<|im_end|>",)
    assert task_stop_strings(resolve_task("general_arith")) == ("\n",)
    assert cut_at_stop("a\n\nb\nc", ("\n",)) == "a"
    assert cut_at_stop("abc", ("\n\n",)) == "abc"


def test_greedy_generate_batched_equals_one_by_one(tiny_model):
    """Left padding must not change a greedy answer: compare a batch with single-item generation."""
    model, tok = tiny_model
    convs = [
        [{"role": "user", "content": "Hi"}],
        [{"role": "user", "content": "What is the capital of a very long invented country name?"}],
    ]
    batched = greedy_generate(model, tok, convs, max_new_tokens=6, batch_size=2, stops=())
    for conv, text in zip(convs, batched, strict=True):
        ids = tok.apply_chat_template(conv, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
        assert tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True) == text


def test_greedy_scores_modes(tiny_model):
    model, tok = tiny_model
    spec = resolve_task("dates")
    docs = [first_doc("dates")] * 2
    for mode in ("base", "in_context"):
        scores = greedy_scores(model, tok, spec, docs, mode, max_new_tokens=4)
        assert len(scores) == 2 and all(s in (0.0, 1.0) for s in scores)
    with pytest.raises(ValueError, match="mode"):
        greedy_scores(model, tok, spec, docs, "teacher")


@pytest.mark.slow
def test_in_context_score_with_real_model(real_model):
    """The teacher signal exists: with the demonstration in context the real model answers dates right
    (calibration: 0.84 in context vs 0.00 base on 32 items; one batch here to stay cheap)."""
    model, tok = real_model
    spec = resolve_task("dates")
    docs = [json.loads(x) for x in (TASKS_ROOT / "dates" / "eval.jsonl").read_text().splitlines()[:8]]
    scores = greedy_scores(model, tok, spec, docs, "in_context", max_new_tokens=40, batch_size=8)
    assert sum(scores) >= 5
