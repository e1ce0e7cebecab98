"""Bad input as a new user types it: every mistake is one line on stderr (plus at most a `hint:` line) naming
the key or file, exit code 1, no traceback, and nothing left behind: the model never loads, MLflow is never
opened, results_dir stays empty (no Hydra output folder either).

Most cases run in process through the CLI's `main` (seconds each); a few run as real `harness` processes.
Failures that happen after the model loaded (an over-long item, a non-finite loss) are in tests/test_faults.py.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from mlflow import MlflowClient

from harness.cli import main
from harness.tasks.spec import TASKS_ROOT

FAST = [
    "model=tiny",
    "method=sft",
    "suite=none",
    "stream.name=one",
    "stream.tasks=[tooluse]",
    "trainer.max_steps=2",
    "trainer.batch_size=4",
    "trainer.warmup_steps=1",
    "trainer.max_train_items=8",
    "eval.limit=2",
    "eval.batch_size=4",
    "eval.max_gen_toks=4",
    "eval.in_context_items=0",
]
GOOD = json.dumps({"prompt": "Say hi.", "demonstration": "hi"})


class Reached(BaseException):
    """Raised where a bad input must never get to; a BaseException so that no handler swallows it."""


def _refuse(*_args, **_kwargs):
    raise Reached("a bad input got as far as loading the model or opening MLflow for writing")


@pytest.fixture
def guarded(monkeypatch):
    """The model loader refuses to run: a case that reaches it fails the test."""
    import harness.models
    import harness.run.loop

    monkeypatch.setattr(harness.models, "load_model", _refuse)
    monkeypatch.setattr(harness.run.loop, "load_model", _refuse)  # the loop's own reference to it


def _user_task(root: Path, rename: bool = True) -> Path:
    """A copy of the built-in tooluse task under its own name (or, with rename=False, keeping the name)."""
    folder = root / "mytask"
    shutil.copytree(TASKS_ROOT / "tooluse", folder)
    if rename:
        meta = (folder / "task.yaml").read_text().replace("name: tooluse", "name: mytask")
        (folder / "task.yaml").write_text(meta.replace("eval_tasks: [tooluse]", "eval_tasks: [mytask]"))
        (folder / "mytask.yaml").write_text(
            (folder / "tooluse.yaml").read_text().replace("task: tooluse", "task: mytask")
        )
        (folder / "tooluse.yaml").unlink()
    return folder


# Each maker prepares files under tmp and returns (command, args, expected regex on stderr).
def _yaml_syntax(tmp: Path):
    folder = _user_task(tmp)
    (folder / "task.yaml").write_text("name: mytask\neval_tasks: [mytask\nmetric: exact_match\n")
    return "run", [f"stream.tasks=[{folder}]"], rf"{folder / 'task.yaml'}:\d+: YAML syntax error"


def _missing_process_results(tmp: Path):
    folder = _user_task(tmp)
    yaml_file = folder / "mytask.yaml"
    yaml_file.write_text(yaml_file.read_text().replace("utils.process_results", "utils.process_resultz"))
    return (
        "run",
        [f"stream.tasks=[{folder}]"],
        (
            rf"{yaml_file}:\d+: process_results: !function "
            r"utils.process_resultz: utils.py defines no function"
        ),
    )


def _non_utf8(tmp: Path):
    folder = _user_task(tmp)
    (folder / "train.jsonl").write_bytes(
        GOOD.encode() + b"\n" + '{"prompt": "caf\u00e9"}'.encode("latin-1") + b"\n"
    )
    return "run", [f"stream.tasks=[{folder}]"], rf"{folder / 'train.jsonl'}:2: not UTF-8 text"


def _malformed_json(tmp: Path):
    folder = _user_task(tmp)
    (folder / "train.jsonl").write_text(GOOD + '\n{"prompt": "x", "demonstration": "unterminated')
    # json's own message ends with "at"; ours must not read "at at"
    return (
        "run",
        [f"stream.tasks=[{folder}]"],
        (
            rf"{folder / 'train.jsonl'}:2: malformed JSON: "
            r"Unterminated string starting at \(column \d+\)$"
        ),
    )


def _collision(tmp: Path):
    folder = _user_task(tmp, rename=False)  # a copied folder that keeps the built-in task's name
    return "run", [f"stream.tasks=[{folder}]"], rf"{folder}: task name 'tooluse' is also a built-in task"


def _missing_field(tmp: Path):
    folder = _user_task(tmp)
    (folder / "train.jsonl").write_text(GOOD + "\n" + json.dumps({"demonstration": "y"}) + "\n")
    return (
        "run",
        [f"stream.tasks=[{folder}]"],
        rf"{folder / 'train.jsonl'}:2: missing field\(s\) \['prompt'\]",
    )


def _empty_train(tmp: Path):
    folder = _user_task(tmp)
    (folder / "train.jsonl").write_text("")
    return "run", [f"stream.tasks=[{folder}]"], rf"{folder / 'train.jsonl'}: no items \(the file is empty\)"


def _no_eval_file(tmp: Path):
    folder = _user_task(tmp)
    (folder / "eval.jsonl").unlink()
    return "run", [f"stream.tasks=[{folder}]"], rf"{folder / 'eval.jsonl'}: file not found"


def _eval_task_undefined(tmp: Path):
    folder = _user_task(tmp)
    (folder / "task.yaml").write_text(
        (folder / "task.yaml").read_text().replace("eval_tasks: [mytask]", "eval_tasks: [mytasc]")
    )
    return (
        "run",
        [f"stream.tasks=[{folder}]"],
        rf"{folder / 'task.yaml'}: eval_tasks names 'mytasc', but no lm-eval",
    )


def _unwritable_results(tmp: Path):
    blocker = tmp / "a-file"
    blocker.write_text("")
    return (
        "run",
        [f"results_dir={blocker / 'results'}"],
        rf"results_dir {blocker / 'results'} is not writable",
    )


def _task_yaml(extra: str, expected: str):
    """A user task whose task.yaml gains one bad setting (appended: the last value of a key wins in YAML)."""

    def make(tmp: Path):
        folder = _user_task(tmp)
        meta = folder / "task.yaml"
        meta.write_text(meta.read_text() + extra + "\n")
        return "run", [f"stream.tasks=[{folder}]"], expected.format(file=meta)

    return make


def _scorer(body: str, expected: str):
    """A user task whose utils.py score() is replaced by `body` (one line of Python)."""

    def make(tmp: Path):
        folder = _user_task(tmp)
        utils = folder / "utils.py"
        utils.write_text(utils.read_text() + f"\n\ndef score(response, doc):\n    {body}\n")
        return "run", [f"stream.tasks=[{folder}]"], expected.format(file=folder / "eval.jsonl")

    return make


def _long_item(tmp: Path):
    folder = _user_task(tmp)
    long_item = json.dumps({"prompt": "Repeat.", "demonstration": "word " * 2500, "id": "too-long"})
    (folder / "train.jsonl").write_text(GOOD + "\n" + long_item + "\n")
    return (
        "run",
        [f"stream.tasks=[{folder}]"],
        rf"item {folder / 'train.jsonl'}:2 id=too-long: prompt \+ demonstration have \d+ tokens, more than "
        r"model.max_length=\d+",  # run: the tiny model's 1024; tasks validate: the default 2048
    )


@pytest.fixture(scope="module")
def store_bytes(tmp_path_factory) -> bytes:
    """The bytes of a fresh MLflow SQLite store (with MLflow's schema), to break in several ways."""
    from harness.tracking.store import Tracker

    folder = tmp_path_factory.mktemp("store")
    Tracker(f"sqlite:///{folder / 'mlflow.db'}", "default", folder / "mlartifacts")
    return (folder / "mlflow.db").read_bytes()


def _broken_store(command: str, damage):
    """A store elsewhere (results_dir must stay absent), damaged by `damage(bytes) -> bytes`."""

    def make(tmp: Path, data: bytes):
        db = tmp / "store" / "mlflow.db"
        db.parent.mkdir()
        db.write_bytes(damage(data))
        return command, [f"tracking_uri=sqlite:///{db}"], rf"{db}: not a readable MLflow store .*mv {db}"

    make.needs_store = True
    return make


NEW_TASK = ("new", "mytask", "--from", "{src}", "--out", "{out}")  # `harness tasks new` on the case's source


def _tasks(*args: str, expected: str, source: str | None = GOOD + "\n"):
    """`harness tasks ...`; {src} in args is a small JSONL source (or a file holding `source`), {out} the
    folder `tasks new` would write: under results_dir, which must stay absent."""

    def make(tmp: Path):
        src = tmp / "source.jsonl"
        src.write_text(source or "")
        out = tmp / "results" / "newtask"
        return "tasks", [a.format(src=src, out=out) for a in args], expected.format(src=src)

    return make


def _cli(*args: str, expected: str):
    return lambda tmp: ("run", list(args), expected)


def _report(*args: str, expected: str):
    return lambda tmp: ("report", list(args), expected)


def _bench(*args: str, expected: str):
    return lambda tmp: ("bench", list(args), expected)


def _model_folder(*files: str, expected: str):
    def make(tmp: Path):
        folder = tmp / "my-model"
        folder.mkdir()
        for name in files:
            (folder / name).write_text("{}")
        return "run", ["model=hf", f"model.name={folder}"], expected.format(folder=folder)

    return make


CASES = {
    # ---- the inputs of the issue that were accepted, crashed, failed late or confused ----
    "batch-size-negative": _cli("trainer.batch_size=-1", expected=r"trainer.batch_size=-1: must be >= 1"),
    "epochs-zero": _cli("trainer.epochs=0", expected=r"trainer.epochs=0(\.0)?: must be > 0"),
    "max-steps-negative": _cli("trainer.max_steps=-5", expected=r"trainer.max_steps=-5: must be >= 1"),
    "batch-size-zero": _cli("trainer.batch_size=0", expected=r"trainer.batch_size=0: must be >= 1"),
    "grad-accum-zero": _cli("trainer.grad_accum=0", expected=r"trainer.grad_accum=0: must be >= 1"),
    "task-yaml-syntax": _yaml_syntax,
    "tracking-uri-scheme": _cli(
        "tracking_uri=foo://bar", expected=r"tracking_uri=foo://bar: scheme 'foo' .*sqlite"
    ),
    "device-tpu": _cli(
        "model.device=tpu", expected=r"model.device='tpu' is not known; valid values: auto, cpu, cuda"
    ),
    "report-unknown-overlay": _report(
        "experiment=nosuch", expected=r"experiment=nosuch: Could not find 'experiment/nosuch'.*smoke"
    ),
    "suite-builtin-without-index": _cli(
        "suite.tasks=[arc_easy]",
        expected=r"suite.tasks: 'arc_easy' is an lm-eval built-in task.*\n"
        r"  hint: add suite.builtin_index=true",
    ),
    "missing-process-results": _missing_process_results,
    "dtype-foo": _cli(
        "model.dtype=foo", expected=r"model.dtype='foo' is not known; valid values: auto, float32"
    ),
    "model-path-missing": _cli(
        "model=hf", "model.name=/nonexistent", expected=r"model.name=/nonexistent: no such folder"
    ),
    "model-name-typo": _cli(
        "model.name=smollm2-135m-instuct", expected=r"did you mean model.name=smollm2-135m-instruct\?"
    ),
    "jsonl-not-utf8": _non_utf8,
    "malformed-json": _malformed_json,
    "plus-key-outside-schema": _cli(
        "+trainer.lrr=1",
        expected=r"\+trainer.lrr=1: '\+' adds keys outside the schema.*"
        r"did you mean trainer.lr\?",
    ),
    "unknown-key": _cli(
        "trainer.lrr=1",
        expected=r"trainer.lrr: no such key in trainer \(did you mean trainer.lr\?\); "
        r"valid keys: .*batch_size",
    ),
    "task-name-collision": _collision,
    # ---- more mistakes this round catches ----
    "wrong-type": _cli(
        "trainer.batch_size=abc", expected=r"trainer.batch_size=abc.*could not be converted to Integer"
    ),
    "override-syntax": _cli("stream.tasks=[a,", expected=r"cannot parse override 'stream.tasks=\[a,'"),
    "plus-existing-key": _cli(
        "+trainer.lr=1", expected=r"\+trainer.lr=1: trainer.lr is already in the config"
    ),
    "device-cuda-absent": _cli(
        "model.device=cuda:7", expected=r"model.device=cuda:7: (no CUDA device|\d+ CUDA device)"
    ),
    "seed-negative": _cli("seed=-1", expected=r"seed=-1: must be in \[0, 4294967295\]"),
    "eval-limit-zero": _cli("eval.limit=0", expected=r"eval.limit=0: must be >= 1"),
    "suite-unknown-task": _cli(
        "suite.tasks=[general_mcq]",
        expected=r"suite.tasks: no task 'general_mcq'.*"
        r"did you mean general_mc\?",
    ),
    "suite-typo-with-index": _cli(
        "suite.tasks=[hellaswagg]",
        "suite.builtin_index=true",
        expected=r"suite.tasks: no task 'hellaswagg' .*did you mean hellaswag\?",
    ),
    "suite-include-missing": _cli(
        "suite.tasks=[general_mc]",
        "suite.include_paths=[/nonexistent/suite]",
        expected=r"suite.include_paths: /nonexistent/suite: no such folder",
    ),
    "eval-file-missing": _no_eval_file,
    "eval-task-undefined": _eval_task_undefined,
    "report-unknown-key": _report(
        "experiment_nme=x",
        expected=r"experiment_nme: no such key at the top level "
        r"\(did you mean experiment_name\?\)",
    ),
    # ---- the ones that already worked, kept working ----
    "method-option-unknown": _cli("method=nosuch", expected=r"Could not find 'method/nosuch'.*sft_replay"),
    "suite-option-unknown": _cli("suite=nosuch", expected=r"Could not find 'suite/nosuch'.*general"),
    "method-name-unknown": _cli(
        "method.name=nosuch", expected=r"method.name='nosuch' is not known; valid values: "
    ),
    "task-unknown": _cli(
        "stream.tasks=[nosuch]", expected=r"unknown task 'nosuch': built-in tasks are .*tooluse"
    ),
    "task-repeated": _cli(
        "stream.tasks=[tooluse,tooluse]", expected=r"stream 'one' repeats task\(s\) \['tooluse'\]"
    ),
    "stream-empty": _cli("stream.tasks=[]", expected=r"stream 'one' has no tasks"),
    "missing-prompt": _missing_field,
    "empty-train-file": _empty_train,
    "ema-rate-zero": _cli(
        "method.distill.ema_rate=0", expected=r"method.distill.ema_rate=0(\.0)?: must be in \(0, 1\]"
    ),
    "divergence-unknown": _cli(
        "method.distill.divergence=kl", expected=r"method.distill.divergence='kl'.*forward"
    ),
    "batch-not-divisible": _cli(
        "trainer.batch_size=4",
        "trainer.grad_accum=3",
        expected=r"trainer.batch_size=4 is not divisible by trainer.grad_accum=3",
    ),
    "lr-zero": _cli("trainer.lr=0", expected=r"trainer.lr=0(\.0)?: must be > 0"),
    # ---- round three: values that used to start a real run ----
    "lr-nan": _cli("trainer.lr=nan", expected=r"trainer.lr=nan: must be a finite number"),
    "grad-norm-inf": _cli(
        "trainer.max_grad_norm=inf", expected=r"trainer.max_grad_norm=inf: must be a finite"
    ),
    "method-option-nan": _cli(
        "method=sft_l2", "method.options.weight=nan", expected=r"method.options.weight=nan: must be a finite"
    ),
    "results-dir-empty": lambda tmp: ("run", ["results_dir="], r"results_dir is empty"),
    "task-yaml-max-new-tokens-text": _task_yaml(
        "max_new_tokens: lots", r"{file}:\d+: max_new_tokens: 'lots' must be an integer >= 1"
    ),
    "task-yaml-max-new-tokens-negative": _task_yaml(
        "max_new_tokens: -5", r"{file}:\d+: max_new_tokens: -5 must be an integer >= 1"
    ),
    "task-yaml-skip-tokens-float": _task_yaml(
        "skip_tokens: 1.5", r"{file}:\d+: skip_tokens: 1.5 must be an integer >= 0"
    ),
    "task-yaml-category": _task_yaml(
        "category: banana", r"{file}:\d+: category: 'banana' is not known; valid: skill, knowledge, general"
    ),
    "task-yaml-template-name": _task_yaml(
        "teacher_template: plian", r"{file}:\d+: teacher_template: teacher template 'plian' is neither"
    ),
    "task-yaml-template-field": _task_yaml(
        "teacher_template: '{demonstration} {answer}'", r"{file}:\d+: .*unknown field\(s\) \['answer'\]"
    ),
    "task-yaml-eval-tasks-type": _task_yaml(
        "eval_tasks: mytask", r"{file}:\d+: eval_tasks: 'mytask' must be a list"
    ),
    "scorer-raises": _scorer(
        "raise KeyError('answer')", r"{file}:1: score\(demonstration, doc\) raised KeyError: 'answer'"
    ),
    "scorer-rejects-demonstration": _scorer(
        "return 0.0", r"{file}:1: score\(demonstration, doc\) = 0.0, expected 1.0 \(and \d+ more"
    ),
    "demonstration-too-long": _long_item,
    "max-length-tiny": _cli(
        "model.max_length=10",
        expected=r"item .*tooluse/train.jsonl:1.*: prompt \+ demonstration have \d+ tokens, more than "
        r"model.max_length=10",
    ),
    "store-header-wiped": _broken_store("run", lambda data: b"\0" * 100 + data[100:]),
    "store-truncated": _broken_store("run", lambda data: data[: len(data) // 2]),
    "report-store-header-wiped": _broken_store("report", lambda data: b"\0" * 100 + data[100:]),
    "report-store-truncated": _broken_store("report", lambda data: data[: len(data) // 2]),
    "tasks-new-option-type": _tasks(
        *NEW_TASK,
        "--scorer",
        "numeric",
        "--scorer-option",
        "rel_tol=abc",
        expected=r"--scorer-option rel_tol='abc': scorer 'numeric' wants a number",
    ),
    "tasks-new-option-unknown": _tasks(
        *NEW_TASK,
        "--scorer",
        "numeric",
        "--scorer-option",
        "rel_tl=0.1",
        expected=r"--scorer-option rel_tl=0.1: scorer 'numeric' takes rel_tol \(default 0.01\)",
    ),
    "tasks-new-regex-pattern": _tasks(
        *NEW_TASK,
        "--scorer",
        "regex",
        "--scorer-option",
        "pattern=(unclosed",
        expected=r"--scorer-option pattern='\(unclosed': not a valid regex",
    ),
    "tasks-new-empty-source": _tasks(*NEW_TASK, expected=r"{src}: empty file", source=""),
    "tasks-new-limit-zero": _tasks(
        *NEW_TASK,
        "--limit",
        "0",
        expected=r"harness tasks new: error: argument --limit: must be an integer >= 1, got 0\n  hint: ",
    ),
    "tasks-new-calibrate-negative": _tasks(
        *NEW_TASK,
        "--calibrate",
        "-1",
        expected=r"argument --calibrate: must be an integer >= 0, got -1",
    ),
    "tasks-show-n-negative": _tasks(
        "show", "tooluse", "-n", "-1", expected=r"argument -n: must be an integer >= 1"
    ),
    "tasks-probe-n-zero": _tasks(
        "probe", "tooluse", "-n", "0", expected=r"argument -n: must be an integer >= 1"
    ),
    "tasks-unknown-flag": _tasks("list", "--nosuch", expected=r"unrecognized arguments: --nosuch\n  hint: "),
    "bench-rollouts-zero": _bench(
        "step", "--rollouts", "0", expected=r"argument --rollouts: must be an integer >= 1, got 0"
    ),
    "bench-unknown-flag": _bench(
        "step", "--nosuch", expected=r"harness bench step: error: unrecognized arguments"
    ),
    "config-name-unknown": _cli(
        "--config-name", "nosuch", expected=r"--config-name nosuch: no conf/nosuch.yaml.*\n  hint: .*smoke"
    ),
    "method-template-unknown": _cli(
        "method=sdft", "method.distill.template=plian", expected=r"method.distill.template: teacher template"
    ),
    "replay-fraction-one": _cli(
        "method=sft_replay",
        "method.options.replay_fraction=1",
        expected=r"method.options.replay_fraction=1(\.0)?: must be in \[0, 1\)",
    ),
    "eval-backend-unknown": _cli(
        "eval.backend=tgi", expected=r"eval.backend='tgi' is not known; valid values: hf, vllm"
    ),
    "hub-id-offline": _cli(
        "model=hf",
        "model.name=no/such-model",
        expected=r"model.name=no/such-model: not in the local Hugging Face cache",
    ),
    "tracking-server-down": _cli(
        "tracking_uri=http://127.0.0.1:9",
        expected=r"MLflow tracking server http://127.0.0.1:9 is not reachable",
    ),
    "results-dir-unwritable": _unwritable_results,
    "report-no-store": _report(expected=r"no MLflow store at .*mlflow.db"),
    "model-folder-no-config": _model_folder(expected=r"model.name={folder}: the folder has no config.json"),
    "model-folder-no-tokenizer": _model_folder(
        "config.json", expected=r"model.name={folder}: the folder has no tokenizer"
    ),
    "bench-reps-zero": _bench("step", "--reps", "0", expected=r"--reps=0: must be >= 1"),
    "bench-unknown": _bench("nosuch", expected=r"unknown benchmark 'nosuch'"),
}


# command lines argparse refuses (exit code 2, its convention), the rest are refused values (exit code 1)
USAGE_ERRORS = {
    "bench-unknown",
    "bench-rollouts-zero",
    "bench-unknown-flag",
    "tasks-new-limit-zero",
    "tasks-new-calibrate-negative",
    "tasks-show-n-negative",
    "tasks-probe-n-zero",
    "tasks-unknown-flag",
}


def _assert_one_clear_line(stderr: str, expected: str) -> None:
    import re

    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2, f"expected one line (plus a hint), got:\n{stderr}"
    if len(lines) == 2:
        assert lines[1].startswith("  hint: "), stderr
    assert lines[0].startswith("harness ") and ": error: " in lines[0], stderr
    assert re.search(expected, stderr.rstrip("\n"), flags=re.M), f"{expected!r} not in:\n{stderr}"
    assert " at at " not in stderr


def _left_behind(results: Path) -> list[Path]:
    return sorted(results.rglob("*")) if results.exists() else []


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_is_one_line_and_leaves_nothing(case, tmp_path, guarded, capsys, monkeypatch, request):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    results = tmp_path / "results"  # not created: a refused run must not create it either
    maker = CASES[case]
    extra = [request.getfixturevalue("store_bytes")] if getattr(maker, "needs_store", False) else []
    command, args, expected = maker(tmp_path, *extra)
    if (
        command == "run"
    ):  # `report` opens MLflow read-only (and refuses a missing store); `run` must not open it
        import harness.tracking.store

        monkeypatch.setattr(harness.tracking.store, "Tracker", _refuse)
    argv = {
        "run": [command, *FAST, f"results_dir={results}", *args],
        "report": [command, f"results_dir={results}", *args],
        "bench": [command, *args],
        "tasks": [command, *args],
    }[command]
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's way out
        code = exit.code
    err = capsys.readouterr().err
    assert code == (2 if case in USAGE_ERRORS else 1)  # 2: a command line argparse refuses
    _assert_one_clear_line(err, expected)
    assert not results.exists(), "a mistake must leave no results folder, MLflow store or Hydra output folder"


FOLDER_CASES = [
    c
    for c in CASES
    if c.startswith(("task-yaml", "scorer", "demonstration", "jsonl", "malformed", "missing"))
] + ["eval-file-missing", "eval-task-undefined", "task-name-collision", "empty-train-file"]


@pytest.mark.parametrize("case", FOLDER_CASES, ids=FOLDER_CASES)
def test_tasks_validate_refuses_what_run_refuses(case, tmp_path, capsys):
    """`harness tasks validate FOLDER` and `harness run stream.tasks=[FOLDER]` agree on every bad folder of
    the table: validate names the same problem (it prints every problem, run the first)."""
    import re

    _command, args, expected = CASES[case](tmp_path)
    folder = args[0].removeprefix("stream.tasks=[").removesuffix("]")
    capsys.readouterr()
    assert main(["tasks", "validate", folder]) == 1
    out = capsys.readouterr().out
    assert "Traceback" not in out
    first = expected.split(r"\(and")[0].rstrip()  # run adds a pointer to `tasks validate` for the rest
    assert re.search(first, out, flags=re.M), f"{first!r} not in:\n{out}"


def test_every_numeric_knob_has_a_range():
    """A new numeric setting must say which values it takes (harness.config.RANGES); and every entry of
    RANGES names a real setting."""
    from harness.config import RANGES, Config

    def numeric(cls: type, prefix: str = "") -> list[str]:
        keys = []
        for name, tp in typing.get_type_hints(cls).items():
            inner = next((a for a in (tp, *typing.get_args(tp)) if dataclasses.is_dataclass(a)), None)
            if inner is not None:
                keys += numeric(inner, f"{prefix}{name}.")
            elif {int, float} & {tp, *typing.get_args(tp)}:
                keys.append(f"{prefix}{name}")
        return keys

    keys = numeric(Config)
    assert "trainer.batch_size" in keys and "method.distill.ema_rate" in keys  # the walk finds nested knobs
    assert sorted(set(keys) - set(RANGES)) == [], "numeric knobs without a range in harness.config.RANGES"
    assert sorted(set(RANGES) - set(keys)) == [], "RANGES names settings the schema does not have"


@pytest.mark.parametrize(
    ("value", "admitted"),
    [(0.0, False), (1e-9, True), (1.0, True), (1.0000001, False)],
)
def test_range_bounds_are_honoured(value, admitted):
    from harness.config import Range

    unit_open_low = Range(0, 1, low_open=True)
    assert unit_open_low.admits(value) is admitted
    assert unit_open_low.describe() == "in (0, 1]"
    assert Range(1).admits(1) and not Range(1).admits(0) and Range(1).describe() == ">= 1"


def test_tasks_validate_reports_yaml_syntax_error_with_line(tmp_path, capsys):
    folder = _user_task(tmp_path)
    (folder / "task.yaml").write_text("name: mytask\neval_tasks: [mytask\nmetric: exact_match\n")
    assert main(["tasks", "validate", str(folder)]) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    assert f"{folder / 'task.yaml'}:" in out.out and "YAML syntax error" in out.out


# ---- real processes: the console script, Hydra's own startup, sweeps -------------------------------------


def _harness(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "trainer.batch_size=0"], r"trainer.batch_size=0: must be >= 1"),
        (["run", "+trainer.lrr=1"], r"'\+' adds keys outside the schema"),
        (["report", "experiment=nosuch"], r"Could not find 'experiment/nosuch'"),
        (["run", "model.device=tpu"], r"model.device='tpu' is not known"),
    ],
    ids=["batch-size-zero", "plus-key", "report-overlay", "device"],
)
def test_bad_input_in_a_real_process(tmp_path, args, expected):
    results = tmp_path / "results"
    extra = FAST if args[0] == "run" else []
    proc = _harness(args[0], *extra, f"results_dir={results}", *args[1:])
    assert proc.returncode == 1
    _assert_one_clear_line(proc.stderr, expected)
    assert _left_behind(results) == []


def test_print_config_leaves_no_output_folder(tmp_path):
    results = tmp_path / "results"
    proc = _harness("run", *FAST, f"results_dir={results}", "print_config=true")
    assert proc.returncode == 0, proc.stderr
    assert "batch_size: 4" in proc.stdout
    assert _left_behind(results) == []


def test_one_bad_sweep_job_does_not_stop_the_others(tmp_path):
    """Job 0 is a user error (caught when it starts), job 1 runs: the sweep ends 1 and lists job 0."""
    results = tmp_path / "results"
    proc = _harness("run", "-m", *FAST, f"results_dir={results}", "trainer.batch_size=0,4", timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "harness run: 1 of 2 sweep job(s) failed:" in proc.stderr
    assert "job 0 (trainer.batch_size=0): trainer.batch_size=0: must be >= 1" in proc.stderr
    client = MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    exp = client.get_experiment_by_name("default")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("harness.role") == "parent"]
    assert [p.data.params["trainer.batch_size"] for p in parents] == ["4"]
    assert parents[0].info.status == "FINISHED"
    assert all(r.info.status != "RUNNING" for r in runs)
    # the failed job's output folder is gone, the good one's stays
    jobs = [p for p in (results / "runs" / "hydra-multirun").glob("*/*") if p.is_dir() and p.name.isdigit()]
    assert [p.name for p in jobs] == ["1"]
