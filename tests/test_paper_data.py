"""The SDFT paper's data adapters on fixtures written in each source's schema, and the paper configs."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from harness.cli import compose, main
from harness.eval.scoring import load_scorer
from harness.tasks.spec import resolve_task
from harness.tasktools import commands as task_tools

FIXTURES = Path(__file__).parent / "fixtures" / "paper"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _build(tmp_path: Path, name: str, *args: str) -> Path:
    folder = tmp_path / name
    assert main(["tasks", "new", name, *args, "--out", str(folder)]) == 0
    assert task_tools.validate_task(str(folder)) == []
    return folder


@pytest.fixture(scope="module")
def tooluse(tmp_path_factory) -> Path:
    return _build(
        tmp_path_factory.mktemp("paper"),
        "paper_tooluse",
        "--adapter",
        "sdft_tooluse",
        "--from",
        str(FIXTURES / "tooluse_train_data.json"),
        "--eval-from",
        str(FIXTURES / "tooluse_eval_data.json"),
    )


def _raw_gold(row: dict) -> list[tuple[str, dict]]:
    """The fixture's golden_answer decoded here, independently of the adapter: (action, input) pairs."""
    text = row["golden_answer"]
    try:
        actions = json.loads(text)
    except json.JSONDecodeError:
        actions = ast.literal_eval(text)
    pairs = []
    for a in actions:
        value = a["Action_Input"]
        pairs.append((a["Action"], json.loads(value) if isinstance(value, str) else value))
    return pairs


def _answer_text(pairs: list[tuple[str, dict]], thought: bool = True) -> str:
    """A model-style answer: a thought line, then each action with its input (keys in reverse order)."""
    lines = ["Thought: I will call the API."] if thought else []
    for action, value in pairs:
        lines += [f"Action: {action}", f"Action Input: {json.dumps(dict(reversed(list(value.items()))))}"]
    return "\n".join(lines)


def test_tooluse_rows_and_settings(tooluse):
    raw_train = json.loads((FIXTURES / "tooluse_train_data.json").read_text())
    train = _rows(tooluse / "train.jsonl")
    assert [r["prompt"] for r in train] == [r["prompt"] for r in raw_train]
    assert [r["demonstration"] for r in train] == ["\n".join(r["golden_response"]) for r in raw_train]
    spec = resolve_task(str(tooluse))
    assert spec.teacher_template == "paper" and "react" in (tooluse / "utils.py").read_text()


def test_tooluse_scorer_accepts_every_gold_and_rejects_wrong_answers(tooluse):
    raw_eval = json.loads((FIXTURES / "tooluse_eval_data.json").read_text())
    docs = _rows(tooluse / "eval.jsonl")
    assert [d["prompt"] for d in docs] == [r["prompt"] for r in raw_eval]
    score = load_scorer(resolve_task(str(tooluse)))
    for doc, raw in zip(docs, raw_eval, strict=True):
        gold = _raw_gold(raw)
        assert score(doc["demonstration"], doc) == 1.0
        assert score(_answer_text(gold), doc) == 1.0, raw["instruction"]
        wrong_function = [(f"{gold[0][0]}X", gold[0][1]), *gold[1:]]
        assert score(_answer_text(wrong_function), doc) == 0.0
        key = next(iter(gold[0][1]))
        wrong_argument = [(gold[0][0], {**gold[0][1], key: "something else"}), *gold[1:]]
        assert score(_answer_text(wrong_argument), doc) == 0.0
        extra_argument = [(gold[0][0], {**gold[0][1], "extra": 1}), *gold[1:]]
        assert score(_answer_text(extra_argument), doc) == 0.0
        unparsable = _answer_text(gold).replace("}", "", 1)  # the first input's JSON is cut
        assert score(unparsable, doc) == 0.0
        assert (
            score(f"I would use {gold[0][0]} with {json.dumps(gold[0][1])}.", doc) == 0.0
        )  # no Action lines
    # the two-step item needs both actions, in order
    two = next(i for i, r in enumerate(raw_eval) if len(_raw_gold(r)) == 2)
    pairs = _raw_gold(raw_eval[two])
    assert score(_answer_text(pairs[:1]), docs[two]) == 0.0
    assert score(_answer_text(pairs[::-1]), docs[two]) == 0.0


def test_tooluse_needs_both_files(tmp_path, capsys):
    code = main(
        [
            "tasks",
            "new",
            "paper_tooluse",
            "--adapter",
            "sdft_tooluse",
            "--from",
            str(FIXTURES / "tooluse_train_data.json"),
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert code == 1 and "--eval-from is required" in capsys.readouterr().err


def test_sciknoweval_keeps_chemistry_l3_multiple_choice(tmp_path):
    folder = _build(
        tmp_path,
        "paper_science",
        "--adapter",
        "sciknoweval",
        "--from",
        str(FIXTURES / "sciknoweval_test.jsonl"),
        "--split",
        "train",
        "--eval-fraction",
        "0.3",
    )
    raw = _rows(FIXTURES / "sciknoweval_test.jsonl")
    wanted = {
        r["question"]: r["answerKey"]
        for r in raw
        if r["domain"] == "Chemistry" and r["details"]["level"] == "L3" and r["type"].startswith("mcq")
    }
    items = _rows(folder / "train.jsonl") + _rows(folder / "eval.jsonl")
    assert len(items) == len(wanted) == 10 and len(_rows(folder / "eval.jsonl")) == 3
    score = load_scorer(resolve_task(str(folder)))
    for item in items:
        question = item["prompt"].split("Question: ", 1)[1].split("\n", 1)[0]
        key = wanted[question]
        assert item["answer"] == key and f"\n{key}. " in f"\n{item['prompt']}"
        assert score(item["demonstration"], item) == 1.0
        assert score(f"Reasoning first.\n<answer>{key}</answer>", item) == 1.0
        other = "A" if key != "A" else "B"
        assert score(f"<answer>{other}</answer>", item) == 0.0
        assert score("I am not sure.", item) == 0.0


def test_sdft_science_folders(tmp_path):
    """The SDFT repository's science data: save_to_disk folders (train: messages + output_text; eval: prompt
    + answer), built here in that schema."""
    import datasets

    system = {"role": "system", "content": "Answer in <reasoning></reasoning><answer></answer> format."}
    questions = [
        ("Which gas is inert?\nA. O2\nB. Ar", "B"),
        ("Symbol of sodium?\nA. Na\nB. So", "A"),
        ("pH of pure water?\nA. 7\nB. 1", "A"),
    ]
    train = [
        {
            "messages": [system, {"role": "user", "content": q}],
            "output_text": f"<reasoning>Known fact.</reasoning>\n<answer>{a}</answer>",
        }
        for q, a in questions
    ]
    evals = [
        {
            "prompt": [
                system,
                {"role": "user", "content": "Charge of an electron?\nA. negative\nB. positive"},
            ],
            "answer": "A",
        }
    ]
    datasets.Dataset.from_list(train).save_to_disk(str(tmp_path / "train_data"))
    datasets.Dataset.from_list(evals).save_to_disk(str(tmp_path / "eval_data"))
    folder = _build(
        tmp_path,
        "paper_science",
        "--adapter",
        "sdft_science",
        "--from",
        str(tmp_path / "train_data"),
        "--eval-from",
        str(tmp_path / "eval_data"),
    )
    item = _rows(folder / "eval.jsonl")[0]
    assert item["prompt"].startswith(system["content"]) and item["prompt"].endswith("B. positive")
    assert _rows(folder / "train.jsonl")[0]["demonstration"] == train[0]["output_text"]
    score = load_scorer(resolve_task(str(folder)))
    assert score("<reasoning>electrons are negative</reasoning><answer>A</answer>", item) == 1.0
    assert score("<answer>B</answer>", item) == 0.0
    assert score("A", item) == 0.0  # the repository's format requires the tag


def test_medical_o1(tmp_path):
    folder = _build(
        tmp_path,
        "paper_medical",
        "--adapter",
        "medical_o1",
        "--from",
        str(FIXTURES / "medical_o1_sft_en.jsonl"),
        "--eval-from",
        str(FIXTURES / "medical_o1_verifiable.jsonl"),
    )
    sft, ver = _rows(FIXTURES / "medical_o1_sft_en.jsonl"), _rows(FIXTURES / "medical_o1_verifiable.jsonl")
    train = _rows(folder / "train.jsonl")
    assert [(r["prompt"], r["demonstration"]) for r in train] == [(r["Question"], r["Response"]) for r in sft]
    evals = _rows(folder / "eval.jsonl")
    train_questions = {r["Question"] for r in sft}
    assert sorted(r["prompt"] for r in evals) == sorted(
        r["Open-ended Verifiable Question"]
        for r in ver
        if r["Open-ended Verifiable Question"] not in train_questions
    )
    assert "1 eval item(s) dropped" in (folder / "README.md").read_text()
    score = load_scorer(resolve_task(str(folder)))
    doc = next(d for d in evals if d["answer"] == "Borrelia burgdorferi")
    assert score("Lyme disease is caused by the spirochete Borrelia burgdorferi.", doc) == 1.0
    assert score("Lyme disease is caused by a tick bite.", doc) == 0.0


def test_paper_table5_composes_and_prints(capsys):
    cfg = compose(["experiment=paper_table5"])
    assert cfg.suite.name == "paper" and cfg.trainer.lr == 1e-5 and cfg.method.distill.template == "paper"
    assert cfg.model.name == "Qwen/Qwen2.5-7B-Instruct"
    assert list(cfg.stream.tasks) == ["results/paper_tasks/paper_tooluse"]
    assert main(["run", "experiment=paper_table5", "print_config=true"]) == 0
    out = capsys.readouterr().out
    assert "experiment_name: paper_table5" in out and "paper_tooluse" in out


def test_paper_stream_order_and_root(monkeypatch):
    monkeypatch.setenv("HARNESS_PAPER_TASKS", "/data/sdft")
    cfg = compose(["stream=paper"])
    assert list(cfg.stream.tasks) == [f"/data/sdft/paper_{t}" for t in ("tooluse", "science", "medical")]
