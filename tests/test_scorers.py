"""The scorer library: every scorer on answers it must accept and answers it must reject."""

from __future__ import annotations

import json

import pytest

from harness import scorers
from harness.scorers import choice, json_call, make_scorer, numeric, react, regex

CASES = {
    "exact": (
        [
            ("Paris", "paris"),
            ("  The Eiffel Tower. ", "the eiffel tower"),
            ("Lyon", ["Paris", "Lyon"]),
            ("lyon", '["Paris", "Lyon"]'),
        ],
        [("It is Paris", "Paris"), ("", "Paris"), ("Pariss", "Paris"), ("Marseille", ["Paris", "Lyon"])],
    ),
    "contains": (
        [
            ("The capital is Paris, of course.", "Paris"),
            ("answer: 12 apples", "12"),
            ("NEW YORK city", "new york"),
        ],
        [("It is 123", "12"), ("category", "cat"), ("The capital is Lyon", "Paris"), ("anything", "")],
    ),
    "numeric": (
        [
            ("So the mass is 54 g", "54"),
            ("2,500", 2500),
            ("first 3 then 35.50", "35.5"),
            ("0.667", "0.6666"),
            ("-1.2e3 J", "-1200"),
        ],
        [("no number here", "5"), ("54 then 60", "54"), ("0.70", "0.6666"), ("2500 vs 25000", "2500")],
    ),
    "choice": (
        [
            ("<answer>B</answer>", "B"),
            ("Reasoning... The answer is (C).", "C"),
            ("B. Paris", "B"),
            ("(d)", "D"),
            ("<answer> b </answer>", "B"),
            ("Answer: A", "A"),
        ],
        [
            ("<answer>A</answer>", "B"),
            ("A and B are both wrong, I think", "A"),
            ("no idea", "A"),
            ("The answer is E", "E_not_used"),
        ],
    ),
    "regex": (
        [("Work: 6*7\nAnswer: 42", "42"), ("Answer: x\nAnswer: Yes.", "yes")],
        [("Work: 6*7", "42"), ("Answer: 41", "42"), ("Answer: 42\nAnswer: 41", "42")],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_scorer_accepts(name):
    scorer = scorers.get_scorer(name)
    options = {"pattern": r"Answer:\s*(.+)"} if name == "regex" else {}
    for response, gold in CASES[name][0]:
        assert scorer(response, gold, **options) == 1.0, (name, response, gold)


@pytest.mark.parametrize("name", list(CASES))
def test_scorer_rejects(name):
    scorer = scorers.get_scorer(name)
    options = {"pattern": r"Answer:\s*(.+)"} if name == "regex" else {}
    for response, gold in CASES[name][1]:
        if gold == "E_not_used":  # a gold outside the option letters is a data error, not a wrong answer
            with pytest.raises(ValueError, match="option letters"):
                choice(response, gold, letters="ABCD")
            continue
        assert scorer(response, gold, **options) == 0.0, (name, response, gold)


def test_numeric_tolerance_is_relative_or_absolute():
    assert numeric("100.9", 100, rel_tol=0.01) == 1.0
    assert numeric("101.1", 100, rel_tol=0.01) == 0.0
    assert numeric("0.04", 0, rel_tol=0.01, abs_tol=0.05) == 1.0
    assert numeric("0.06", 0, rel_tol=0.01, abs_tol=0.05) == 0.0
    with pytest.raises(ValueError, match="not a number"):
        numeric("5", "five")


def test_regex_first_and_flags():
    assert regex("ANSWER: a\nanswer: b", "a", pattern=r"answer:\s*(\w)", which="first", flags="i") == 1.0
    assert regex("ANSWER: a\nanswer: b", "a", pattern=r"answer:\s*(\w)", which="last", flags="i") == 0.0
    with pytest.raises(ValueError, match="which="):
        regex("x", "x", which="middle")


GOLD_CALL = {"name": "skyline_forecast", "arguments": {"city": "Zagreb", "day": "Sunday", "days": 4}}


@pytest.mark.parametrize(
    "response",
    [
        'The user wants the forecast.\n{"name": "skyline_forecast", "arguments": {"city": "Zagreb", "day": "Sunday", "days": 4}}',
        '```json\n{"arguments": {"days": 4.0, "day": "Sunday", "city": "Zagreb"}, "name": "skyline_forecast"}\n```',
        'x = {"not": "a call"}; {"name": "skyline_forecast", "arguments": {"city": "Zagreb", "day": "Sunday", "days": 4}} ok',
    ],
)
def test_json_call_accepts(response):
    assert json_call(response, GOLD_CALL) == 1.0
    assert json_call(response, json.dumps(GOLD_CALL)) == 1.0  # the gold as stored in eval.jsonl


@pytest.mark.parametrize(
    "response",
    [
        '{"name": "skyline_book", "arguments": {"city": "Zagreb", "day": "Sunday", "days": 4}}',  # wrong function
        '{"name": "skyline_forecast", "arguments": {"city": "Zagreb", "day": "Monday", "days": 4}}',  # wrong value
        '{"name": "skyline_forecast", "arguments": {"city": "Zagreb", "day": "Sunday"}}',  # missing argument
        '{"name": "skyline_forecast", "arguments": {"city": "Zagreb", "day": "Sunday", "days": 4, "x": 1}}',  # extra
        '{"name": "skyline_forecast", "arguments": {"city": "Zagreb", "day": "Sunday", "days": "4"}}',  # "4" != 4
        '{"name": "skyline_forecast", "arguments": {"city": "zagreb", "day": "Sunday", "days": 4}}',  # case
        'skyline_forecast(city="Zagreb", day="Sunday", days=4)',  # no JSON at all
        '{"name": "skyline_forecast", "arguments": {"city": "Zagreb", "day": "Sunday", "days": 4}',  # truncated
    ],
)
def test_json_call_rejects(response):
    assert json_call(response, GOLD_CALL) == 0.0


def test_json_call_keeps_booleans_apart_from_numbers():
    gold = {"name": "f", "arguments": {"flag": True}}
    assert json_call('{"name": "f", "arguments": {"flag": true}}', gold) == 1.0
    assert json_call('{"name": "f", "arguments": {"flag": 1}}', gold) == 0.0


# ToolAlpaca's format, as in the SDFT repository: the gold is text holding a list of {Action, Action_Input},
# the input itself a JSON string.
REACT_GOLD = json.dumps(
    [
        {"Action": "searchRecipes", "Action_Input": json.dumps({"query": "pasta", "limit": 3})},
        {"Action": "getRecipe", "Action_Input": '{"id": 17}'},
    ]
)


@pytest.mark.parametrize(
    "response",
    [
        'Thought: I should search first.\nAction: searchRecipes\nAction Input: {"query": "pasta", "limit": 3}\n'
        'Thought: then fetch one.\nAction: getRecipe\nAction Input: {"id": 17}',
        'Action: searchRecipes\nAction_Input: {"limit": 3.0, "query": "pasta"}\nAction: getRecipe\n'
        'Action Input: {\n  "id": 17\n}\nEnd.',
    ],
)
def test_react_accepts(response):
    assert react(response, REACT_GOLD) == 1.0


@pytest.mark.parametrize(
    "response",
    [
        'Action: searchRecipe\nAction Input: {"query": "pasta", "limit": 3}\nAction: getRecipe\nAction Input: {"id": 17}',
        'Action: searchRecipes\nAction Input: {"query": "pizza", "limit": 3}\nAction: getRecipe\nAction Input: {"id": 17}',
        'Action: searchRecipes\nAction Input: {"query": "pasta", "limit": 3}',  # one action short
        'Action: getRecipe\nAction Input: {"id": 17}\nAction: searchRecipes\nAction Input: {"query": "pasta", "limit": 3}',
        'Action: searchRecipes\nThought: hmm\nAction: getRecipe\nAction Input: {"id": 17}',  # an action without input
        "I would search for pasta recipes and then get recipe 17.",  # no actions at all
        'Action: searchRecipes\nAction Input: {"query": "pasta", "limit": 3\nAction: getRecipe\nAction Input: {"id": 17}',
    ],
)
def test_react_rejects(response):
    assert react(response, REACT_GOLD) == 0.0


def test_react_reads_python_literal_golds_and_empty_inputs():
    gold = str([{"Action": "listAll", "Action_Input": ""}])  # single quotes: a Python literal, not JSON
    assert react("Action: listAll\nAction Input: {}", gold) == 1.0
    assert react('Action: listAll\nAction Input: {"page": 2}', gold) == 0.0


def test_react_rejects_an_action_line_without_input_even_when_the_rest_matches():
    gold = [{"Action": "getRecipe", "Action_Input": {"id": 17}}]
    assert react('Action: getRecipe\nAction Input: {"id": 17}', gold) == 1.0
    assert (
        react('Action: searchRecipes\nThought: no\nAction: getRecipe\nAction Input: {"id": 17}', gold) == 0.0
    )


def test_make_scorer_reads_the_answer_field_and_lists_valid_names():
    score = make_scorer("numeric", rel_tol=0.0)
    assert score("it is 7", {"answer": "7"}) == 1.0
    assert score("it is 7.01", {"answer": "7"}) == 0.0
    assert "last number" in score.__doc__
    with pytest.raises(ValueError, match="valid: exact, contains"):
        make_scorer("fuzzy")
