"""The built-in task library: data, generators, validation, lm-eval loading (tiny model), user task folders."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from harness.tasks.spec import TASKS_ROOT, TaskDataError, builtin_task_names, read_jsonl, resolve_task
from harness.tasktools import commands as task_tools

STREAM_TASKS = ["tooluse", "science", "knowledge", "dates", "caps"]
GENERAL_TASKS = ["general_mc", "general_ifeval", "general_arith"]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(f"_gen_{path.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tokenizer():
    from harness.models import load_tokenizer

    return load_tokenizer()


def test_builtin_names_cover_configs():
    assert set(STREAM_TASKS + GENERAL_TASKS) <= set(builtin_task_names())


@pytest.mark.parametrize("name", STREAM_TASKS + GENERAL_TASKS)
def test_builtin_task_validates(name):
    assert task_tools.validate_task(name) == []


def test_cli_validate_returns_zero_for_builtins(capsys):
    assert task_tools.cmd_validate([]) == 0
    assert "8/8 task(s) valid" in capsys.readouterr().out


@pytest.mark.parametrize("name", STREAM_TASKS)
def test_stream_sizes_and_no_overlap(name):
    folder = TASKS_ROOT / name
    train = _rows(folder / "train.jsonl")
    assert len(train) >= 200
    train_prompts = {r["prompt"] for r in train}
    assert len(train_prompts) == len(train), "duplicate train prompts"
    for eval_file in sorted(folder.glob("eval*.jsonl")):
        evals = _rows(eval_file)
        assert len(evals) >= 100, eval_file
        assert not train_prompts & {r["prompt"] for r in evals}, f"{eval_file} overlaps train"


def test_general_suite_size():
    assert sum(len(_rows(TASKS_ROOT / n / "eval.jsonl")) for n in GENERAL_TASKS) >= 600  # issue 25


@pytest.mark.parametrize("name", ["tooluse", "science", "dates", "knowledge", "caps"])
def test_generated_stream_tasks_have_400_eval_items(name):
    # issue 25: enough items that the item part of an interval is small
    assert len(_rows(TASKS_ROOT / name / "eval.jsonl")) >= 400


def test_knowledge_eval_asks_every_fact_in_a_wording_of_its_own():
    """Items 0-255 ask each of the 256 train facts once, items 256+ ask a fact again in another wording;
    the first 128 items are the original set (older runs stay comparable)."""
    train = _rows(TASKS_ROOT / "knowledge" / "train.jsonl")
    evals = _rows(TASKS_ROOT / "knowledge" / "eval.jsonl")
    facts = {r["id"].removeprefix("knowledge-train-") for r in train}
    first = [r["id"].removeprefix("knowledge-eval-") for r in evals[:256]]
    assert sorted(first) == sorted(facts)
    wording = {r["id"].removeprefix("knowledge-eval-"): r["prompt"] for r in evals[:256]}
    for r in evals[256:]:
        fact = r["id"].removeprefix("knowledge-eval-").removesuffix("-b")
        assert r["id"].endswith("-b") and fact in facts and r["prompt"] != wording[fact]
    assert evals[0]["id"] == "knowledge-eval-0-person" and evals[127]["id"].startswith("knowledge-eval-63-")


@pytest.mark.parametrize("name", STREAM_TASKS + GENERAL_TASKS)
def test_generator_is_deterministic_and_matches_files(name):
    """The committed data is exactly what generate.py builds (so it can be rebuilt and extended)."""
    gen = _module(TASKS_ROOT / name / "generate.py")
    built = gen.build()
    if name == "knowledge":
        corpus, train, eval_id, eval_ood = built
        expected = {
            "train.jsonl": train,
            "eval.jsonl": eval_id,
            "eval_ood.jsonl": eval_ood,
            "corpus.jsonl": corpus,
        }
    elif name in GENERAL_TASKS:
        expected = {"eval.jsonl": built}
    else:
        expected = {"train.jsonl": built[0], "eval.jsonl": built[1]}
    for filename, rows in expected.items():
        assert _rows(TASKS_ROOT / name / filename) == json.loads(json.dumps(rows)), filename
    assert gen.build() == built


@pytest.mark.parametrize("name", STREAM_TASKS)
def test_demonstrations_are_short(name, tokenizer):
    """Rollout and eval lengths cover the longest demonstration, and demonstrations stay short (CPU cost)."""
    tok = tokenizer
    longest = max(len(tok(r["demonstration"])["input_ids"]) for r in _rows(TASKS_ROOT / name / "train.jsonl"))
    spec = resolve_task(name)
    assert longest <= 64
    assert spec.max_new_tokens >= longest and spec.eval_max_gen_toks >= longest


def test_lm_eval_runs_every_task_offline_with_tiny_model(tiny_model):
    """Every YAML through simple_evaluate (chat template on), offline, a handful of items each."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    model, tok = tiny_model
    folders = [str(TASKS_ROOT / n) for n in STREAM_TASKS + GENERAL_TASKS]
    tm = TaskManager(include_path=folders, include_defaults=False)
    names = [t for n in STREAM_TASKS + GENERAL_TASKS for t in resolve_task(n).eval_tasks]
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=8, max_length=512)
    # a random model never stops by itself: cap generation so the test stays fast
    res = simple_evaluate(
        lm,
        tasks=names,
        task_manager=tm,
        apply_chat_template=True,
        limit=3,
        gen_kwargs="max_gen_toks=8",
        log_samples=False,
    )
    for name in names:
        metric = resolve_task(name if name != "knowledge_ood" else "knowledge").metric
        value = res["results"][name][f"{metric},none"]
        assert 0.0 <= value <= 1.0, (name, value)


# --- user task folders -----------------------------------------------------------------------------------

USER_UTILS = """
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

def load_split(data_files="eval.jsonl", **_):
    import datasets
    rows = [json.loads(x) for x in (HERE / data_files).read_text().splitlines() if x.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})

def score(response, doc):
    return float(response.strip().lower() == doc["answer"].lower())

def process_results(doc, results):
    return {"exact_match": score(results[0], doc)}
"""

USER_YAML = """task: my_colors
dataset_path: json
custom_dataset: !function utils.load_split
dataset_kwargs:
  data_files: eval.jsonl
test_split: test
output_type: generate_until
doc_to_text: prompt
doc_to_target: demonstration
process_results: !function utils.process_results
generation_kwargs: {until: ["\\n"], do_sample: false, max_gen_toks: 4}
metric_list: [{metric: exact_match, aggregation: mean, higher_is_better: true}]
"""


def make_user_task(root: Path, eval_prompts: list[str] | None = None) -> Path:
    folder = root / "my_colors"
    folder.mkdir()
    things = [("grass", "green"), ("snow", "white"), ("sky", "blue"), ("coal", "black"), ("blood", "red")]
    train = [{"prompt": f"Color of {t}?", "demonstration": c, "answer": c} for t, c in things[:3]]
    prompts = eval_prompts or [f"What color is {t}?" for t, _ in things[3:]]
    evals = [
        {"prompt": p, "demonstration": c, "answer": c} for p, (_, c) in zip(prompts, things[3:], strict=False)
    ]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (folder / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evals))
    (folder / "task.yaml").write_text("category: skill\neval_tasks: [my_colors]\nteacher_template: plain\n")
    (folder / "utils.py").write_text(USER_UTILS)
    (folder / "my_colors.yaml").write_text(USER_YAML)
    return folder


def test_stream_may_name_a_task_by_path(tmp_path):
    folder = make_user_task(tmp_path)
    spec = resolve_task(str(folder))
    assert spec.name == "my_colors" and spec.path == folder.resolve()
    assert len(read_jsonl(spec.train_file)) == 3
    assert task_tools.validate_task(str(folder)) == []
    assert task_tools.cmd_validate([str(folder)]) == 0


def test_validate_reports_overlap_and_bad_demonstrations(tmp_path, capsys):
    folder = make_user_task(tmp_path, eval_prompts=["Color of grass?", "What color is snow?"])
    problems = task_tools.validate_task(str(folder))
    assert any("eval.jsonl:1: eval prompt also in train" in p for p in problems)
    # the second eval item's demonstration ("red" for "snow"...) still scores 1.0: only the overlap is wrong
    assert len([p for p in problems if "overlap" in p or "also in train" in p]) == 1
    assert task_tools.cmd_validate([str(folder)]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_malformed_jsonl_names_file_and_line(tmp_path):
    folder = make_user_task(tmp_path)
    lines = (folder / "train.jsonl").read_text().splitlines()
    lines[1] = '{"prompt": "broken", "demonstration": '  # line 2: truncated JSON
    lines.append('{"prompt": "no demo"}')  # line 4: missing field
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(TaskDataError, match=r"train\.jsonl:2: malformed JSON"):
        read_jsonl(folder / "train.jsonl")
    problems = task_tools.validate_task(str(folder))
    assert any(p.startswith(f"{folder / 'train.jsonl'}:2: malformed JSON") for p in problems)
    assert any(p.startswith(f"{folder / 'train.jsonl'}:4: missing field") for p in problems)


def test_unknown_task_lists_valid_names():
    with pytest.raises(ValueError, match="tooluse"):
        resolve_task("no_such_task_here")
    assert task_tools.validate_task("no_such_task_here")


def test_list_and_show(capsys):
    assert task_tools.cmd_list() == 0
    out = capsys.readouterr().out
    assert "knowledge" in out and "eval_ood=120" in out
    assert task_tools.cmd_show("knowledge", 1) == 0
    out = capsys.readouterr().out
    assert "--- teacher prompt ---" in out and "<|im_start|>user" in out
    # the teacher sees the passage (privileged) and the demonstration; the student sees neither
    student, teacher = out.split("--- teacher prompt ---")
    passage = _rows(TASKS_ROOT / "knowledge" / "train.jsonl")[0]["privileged"]
    assert passage in teacher and passage not in student


@pytest.mark.parametrize("name", STREAM_TASKS + GENERAL_TASKS)
def test_yaml_generation_length_matches_task_yaml(name):
    """The lm-eval YAML and task.yaml agree on the evaluation generation length."""
    from harness.eval.scoring import lm_eval_task_config

    spec = resolve_task(name)
    for task in spec.eval_tasks:
        config = lm_eval_task_config(spec, task)
        assert config, f"no YAML for {task}"
        if config["output_type"] == "generate_until":
            assert config["generation_kwargs"]["max_gen_toks"] == spec.eval_max_gen_toks
            assert config["generation_kwargs"]["do_sample"] is False
