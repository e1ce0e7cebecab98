"""`harness tasks new`: folders built from a JSONL file, a CSV, a saved data set; they validate and run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import compose, main
from harness.tasks.spec import read_jsonl, resolve_task
from harness.tasktools import commands as task_tools
from harness.tasktools import sources as task_sources

FIXTURES = Path(__file__).parent / "fixtures" / "byod"
PROMPT = "Question: {question}\\nAnswer with the city name only."  # as typed in a shell: \n is two characters
MAPPING = ["--prompt", PROMPT, "--demonstration", "answer"]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _new(*args: str) -> int:
    return main(["tasks", "new", *args])


def _fixture_prompts() -> list[str]:
    """The prompts the builder should keep, computed from the fixture without the builder: non-empty answers,
    first occurrence of each case-insensitive question."""
    seen, kept = set(), []
    for row in _rows(FIXTURES / "capitals.jsonl"):
        key = row["question"].lower()
        if row["answer"] and key not in seen:
            seen.add(key)
            kept.append(f"Question: {row['question']}\nAnswer with the city name only.")
    return kept


@pytest.fixture(scope="module")
def jsonl_task(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("byod") / "capitals_qa"
    assert (
        _new(
            "capitals_qa",
            "--from",
            str(FIXTURES / "capitals.jsonl"),
            *MAPPING,
            "--dedupe",
            "--eval-fraction",
            "0.25",
            "--out",
            str(folder),
        )
        == 0
    )
    return folder


def test_jsonl_source_gives_a_valid_complete_folder(jsonl_task):
    names = {p.name for p in jsonl_task.iterdir()}
    assert names == {"train.jsonl", "eval.jsonl", "task.yaml", "capitals_qa.yaml", "utils.py", "README.md"}
    assert task_tools.validate_task(str(jsonl_task)) == []
    train, evals = _rows(jsonl_task / "train.jsonl"), _rows(jsonl_task / "eval.jsonl")
    expected = _fixture_prompts()  # 16 rows - 1 without an answer - 1 duplicate = 14
    assert len(expected) == 14 and len(evals) == round(0.25 * 14) and len(train) == 14 - len(evals)
    assert sorted(r["prompt"] for r in train + evals) == sorted(expected)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in evals}
    # the answer of each item is its own city (mapping, not order, decides it)
    cities = {
        f"Question: {r['question']}\nAnswer with the city name only.": r["answer"]
        for r in _rows(FIXTURES / "capitals.jsonl")
    }
    assert all(r["demonstration"] == r["answer"] == cities[r["prompt"]] for r in train + evals)
    spec = resolve_task(str(jsonl_task))
    assert (
        spec.name == "capitals_qa" and spec.eval_tasks == ["capitals_qa"] and spec.teacher_template == "plain"
    )
    assert spec.max_new_tokens >= 8 and spec.eval_max_gen_toks >= spec.max_new_tokens
    readme = (jsonl_task / "README.md").read_text()
    for needed in (
        "capitals.jsonl",
        "prompt <- ",
        "demonstration <- `'answer'`",
        "1 duplicate train prompt",
        "harness tasks new capitals_qa",
        "`harness tasks validate`: valid",
        "scorer `exact`",
    ):
        assert needed in readme, needed


def test_split_is_seeded(jsonl_task, tmp_path):
    again, other = tmp_path / "again", tmp_path / "other"
    args = ["--from", str(FIXTURES / "capitals.jsonl"), *MAPPING, "--dedupe", "--eval-fraction", "0.25"]
    assert _new("capitals_qa", *args, "--out", str(again)) == 0
    assert _new("capitals_qa", *args, "--seed", "7", "--out", str(other)) == 0
    assert (again / "eval.jsonl").read_text() == (jsonl_task / "eval.jsonl").read_text()
    assert _rows(other / "eval.jsonl") != _rows(jsonl_task / "eval.jsonl")


def test_csv_source_reads_like_the_jsonl(jsonl_task, tmp_path):
    folder = tmp_path / "capitals_qa"
    assert (
        _new(
            "capitals_qa",
            "--from",
            str(FIXTURES / "capitals.csv"),
            *MAPPING,
            "--dedupe",
            "--eval-fraction",
            "0.25",
            "--out",
            str(folder),
        )
        == 0
    )
    assert task_tools.validate_task(str(folder)) == []
    for name in ("train.jsonl", "eval.jsonl"):
        assert _rows(folder / name) == _rows(jsonl_task / name), name


def test_saved_dataset_with_existing_splits(tmp_path):
    import datasets

    rows = _rows(FIXTURES / "capitals.jsonl")[:14]
    saved = tmp_path / "saved"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows[:10]), "test": datasets.Dataset.from_list(rows[10:])}
    ).save_to_disk(str(saved))
    folder = tmp_path / "capitals_saved"
    assert (
        _new(
            "capitals_saved",
            "--from",
            str(saved),
            "--eval-split",
            "test",
            "--prompt",
            "{question}",
            "--demonstration",
            "answer",
            "--limit",
            "6",
            "--out",
            str(folder),
        )
        == 0
    )
    assert task_tools.validate_task(str(folder)) == []
    assert [r["prompt"] for r in _rows(folder / "eval.jsonl")] == [r["question"] for r in rows[10:]]
    assert [r["prompt"] for r in _rows(folder / "train.jsonl")] == [r["question"] for r in rows[:6]]


def test_built_folder_runs_in_a_stream_end_to_end(jsonl_task, tmp_path):
    from harness.run.loop import run_experiment

    cfg = compose(
        [
            "model=tiny",
            "method=sft",
            "suite=none",
            "stream.name=byod",
            f"stream.tasks=[{jsonl_task}]",
            "trainer.max_steps=2",
            "trainer.batch_size=4",
            "trainer.warmup_steps=1",
            "eval.limit=3",
            "eval.batch_size=4",
            "eval.max_gen_toks=4",
            "eval.in_context_items=0",
            f"results_dir={tmp_path}",
        ]
    )
    result = run_experiment(cfg)
    R = result["R"]
    assert list(R.columns) == ["capitals_qa"] and list(R.index) == [0, 1]
    assert R.notna().all().all() and ((R >= 0) & (R <= 1)).all().all()


def test_scorer_that_rejects_the_demonstrations_fails_validation(tmp_path, capsys):
    """Demonstration "Paris" vs answer "The capital of France is Paris": exact rejects, the folder is not valid."""
    folder = tmp_path / "mismatch"
    code = _new(
        "mismatch",
        "--from",
        str(FIXTURES / "capitals.jsonl"),
        *MAPPING,
        "--answer",
        "The capital of {country} is {answer}",
        "--out",
        str(folder),
    )
    assert code == 1
    assert "score(demonstration, doc) = 0.0, expected 1.0" in capsys.readouterr().err
    assert "problem(s)" in (folder / "README.md").read_text()
    # the same data with a scorer that fits (the city as a phrase inside the answer sentence) is valid
    fixed = tmp_path / "fixed"
    assert (
        _new(
            "fixed",
            "--from",
            str(FIXTURES / "capitals.jsonl"),
            "--prompt",
            PROMPT,
            "--demonstration",
            "The capital of {country} is {answer}",
            "--answer",
            "answer",
            "--scorer",
            "contains",
            "--out",
            str(fixed),
        )
        == 0
    )


def test_regex_scorer_options_reach_utils(tmp_path):
    folder = tmp_path / "tagged"
    assert (
        _new(
            "tagged",
            "--from",
            str(FIXTURES / "capitals.jsonl"),
            "--prompt",
            PROMPT,
            "--demonstration",
            "Thinking...\\nFinal: {answer}",
            "--answer",
            "answer",
            "--scorer",
            "regex",
            "--scorer-option",
            r"pattern=Final:\s*(.+)",
            "--out",
            str(folder),
        )
        == 0
    )
    from harness.eval.scoring import load_scorer

    score = load_scorer(resolve_task(str(folder)))
    assert score("so... Final: Rome", {"answer": "Rome"}) == 1.0
    assert score("Rome", {"answer": "Rome"}) == 0.0  # no "Final:" line


def test_templates_letters_lists_and_chat_prompts():
    row = {"q": "Pick one", "opts": ["red", "blue"], "mc": {"label": ["A", "B"], "text": ["x", "y"]}}
    assert task_sources.render("{q}\n{opts:letters}", row, "prompt") == "Pick one\nA. red\nB. blue"
    assert task_sources.render("{mc:letters}", row, "prompt") == "A. x\nB. y"
    assert task_sources.render("{opts}", row, "prompt") == "red\nblue"
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    assert task_sources.flatten_prompt(chat) == "Be brief.\n\nHi?"
    with pytest.raises(task_sources.BuildError, match="only one user turn"):
        task_sources.flatten_prompt(
            [*chat, {"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--from", "FIX/capitals.jsonl", "--prompt", "{quest}"],
            "names column 'quest'; columns: question, answer",
        ),
        (["--from", "FIX/capitals.jsonl", "--prompt", "query"], "neither a column nor a template"),
        (
            ["--from", "FIX/capitals.jsonl", *MAPPING, "--split", "validation"],
            "no split 'validation'; available: train",
        ),
        (["--from", "FIX/missing.jsonl"], "no such file or folder"),
        (["--from", "FIX/../../test_scorers.py"], "unknown file type '.py'"),
        (
            ["--from", "FIX/capitals.jsonl", *MAPPING, "--scorer", "fuzzy"],
            "unknown scorer 'fuzzy'; valid: exact",
        ),
    ],
)
def test_user_mistakes_are_one_clear_line(args, message, tmp_path, capsys):
    args = [a.replace("FIX", str(FIXTURES)) for a in args]
    assert _new("oops", *args, "--out", str(tmp_path / "oops")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_name_and_out_folder_are_checked(jsonl_task, tmp_path, capsys):
    args = ["--from", str(FIXTURES / "capitals.jsonl"), *MAPPING]
    assert _new("tooluse", *args, "--out", str(tmp_path / "t")) == 1
    assert "built-in task" in capsys.readouterr().err
    assert _new("bad-name", *args, "--out", str(tmp_path / "t")) == 1
    assert "letters, digits and _" in capsys.readouterr().err
    assert _new("capitals_qa", *args, "--out", str(jsonl_task)) == 1
    assert "--force" in capsys.readouterr().err


def test_calibration_scores_go_into_the_readme(tmp_path, tiny_model, monkeypatch):
    """--calibrate measures base and in-context greedy scores (the model load is replaced by the tiny model)."""
    import harness.models

    monkeypatch.setattr(harness.models, "load_model", lambda cfg: tiny_model)
    folder = tmp_path / "calibrated"
    assert (
        _new(
            "calibrated",
            "--from",
            str(FIXTURES / "capitals.jsonl"),
            *MAPPING,
            "--calibrate",
            "3",
            "--max-new-tokens",
            "4",
            "--eval-max-gen-toks",
            "4",
            "--out",
            str(folder),
        )
        == 0
    )
    readme = (folder / "README.md").read_text()
    assert "on the first 3 eval items" in readme and "base (prompt alone)" in readme
    assert len(read_jsonl(folder / "eval.jsonl")) == 3
