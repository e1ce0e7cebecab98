"""The report's self-distillation diagnostics (issue #13): logged stage stats and the recitation rate of
evaluation answers, on hand-made runs whose expected values are counted by hand."""

from __future__ import annotations

import gzip

import pandas as pd
import pytest
from omegaconf import OmegaConf

from harness.eval import metrics
from harness.report.diagnostics import diagnostics_rows, task_template
from harness.report.runs import RunResult, group_runs, load_runs
from harness.report.write import write_report
from harness.tasks.spec import TEACHER_TEMPLATES
from harness.tracking.store import ITEMS_ARTIFACT, Tracker, flatten_config

TASKS, SUITE = ["a", "b"], ["g"]
RECITED = "This is an example for a response to the question: 42"  # a 4-gram of the paper template
PLAIN = "The answer is 42"


def _answers(n_recited: int, n: int = 10) -> list[str]:
    return [RECITED] * n_recited + [PLAIN] * (n - n_recited)


def _items(stage: int, answers: dict[str, list[str]]) -> bytes:
    rows = [
        {
            "stage": stage,
            "task": task,
            "doc_id": i,
            "score": 0.0,
            "generation": text,
            "target": "",
            "prompt": "",
        }
        for task, texts in answers.items()
        for i, text in enumerate(texts)
    ]
    return gzip.compress(pd.DataFrame(rows).to_csv(index=False).encode())


# stage -> {task: answers}; the SDFT run recites in 4 of 10 stream answers after stage 1, in 2 of 10 general
# answers, and never after stage 2; the SFT run recites once (the chance level the report shows beside it)
SDFT_ANSWERS = {
    0: {"a": _answers(0), "b": _answers(0), "g": _answers(0)},
    1: {"a": _answers(4), "b": _answers(0), "g": _answers(2)},
    2: {"a": _answers(0), "b": _answers(0), "g": _answers(0)},
}
SFT_ANSWERS = {s: {"a": _answers(1 if s == 1 else 0), "b": _answers(0), "g": _answers(0)} for s in range(3)}
SDFT_TRAIN = {
    1: {"train/mean_kl_first": 0.3, "train/mean_clipped_frac": 0.75, "train/probe_margin": -1.5},
    2: {"train/mean_kl_first": 0.1, "train/mean_clipped_frac": 0.25, "train/probe_margin": 0.5},
}


def _log(tracker: Tracker, method: str, answers: dict, train: dict) -> None:
    cfg = {
        "method": {"name": method},
        "seed": 0,
        "stream": {"name": "s", "tasks": TASKS},
        "model": {"name": "m"},
    }
    params = {**flatten_config(cfg), "stream_tasks": '["a", "b"]', "suite_tasks": '["g"]'}
    parent = tracker.open_parent(
        f"s-{method}", {"method": method, "stream": "s", "seed": 0, "model": "m"}, params
    )
    R = pd.DataFrame(0.0, index=pd.Index(range(3), name="stage"), columns=TASKS)
    G = pd.DataFrame(0.5, index=pd.Index(range(3), name="stage"), columns=SUITE)
    for stage in range(3):
        stage_metrics = {"score/a": 0.0, "score/b": 0.0, "general/g": 0.5, **train.get(stage, {})}
        tracker.log_stage(
            parent,
            stage,
            "base" if stage == 0 else TASKS[stage - 1],
            stage_metrics,
            artifacts={ITEMS_ARTIFACT: _items(stage, answers[stage])},
        )
    tracker.finish_parent(parent, R, G, metrics.all_metrics(R, G))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    results = tmp_path_factory.mktemp("diag")
    tracker = Tracker(f"sqlite:///{results / 'mlflow.db'}", "diag", results / "mlartifacts")
    _log(tracker, "sdft", SDFT_ANSWERS, SDFT_TRAIN)
    _log(tracker, "sft", SFT_ANSWERS, {})
    return results, tracker


def test_rows_count_recitations_and_carry_logged_stats(store):
    _, tracker = store
    groups = group_runs(load_runs(tracker))
    frame = diagnostics_rows(groups, spec_template=lambda task: None).set_index(["method", "stage"])
    sdft1, sdft2, sft1 = frame.loc[("sdft", 1)], frame.loc[("sdft", 2)], frame.loc[("sft", 1)]
    # 4 of the 20 stream answers (tasks a and b) recite the paper template after stage 1, 0 after stage 2
    assert sdft1["eval_recite_stream"] == pytest.approx(4 / 20)
    assert sdft1["eval_recite_general"] == pytest.approx(2 / 10)
    assert sdft2["eval_recite_stream"] == 0.0
    assert sft1["eval_recite_stream"] == pytest.approx(1 / 20)  # the control, against the same template
    assert sdft1["mean_clipped_frac"] == pytest.approx(0.75)
    assert sdft2["probe_margin"] == pytest.approx(0.5)
    assert sdft1["task"] == "a" and sdft2["task"] == "b"
    assert pd.isna(sft1["mean_kl_first"])  # SFT logged no distillation stats


def test_report_shows_the_section_with_the_figures(store):
    results, _ = store
    out = write_report(
        OmegaConf.create({"experiment_name": "diag", "results_dir": str(results), "tracking_uri": None})
    )
    md = (out / "summary.md").read_text()
    section = md[md.index("Self-distillation diagnostics") :]
    sdft_row = next(line for line in section.splitlines() if line.startswith("| SDFT | 1 (a)"))
    assert "| -1.50 |" in sdft_row and "| 75 |" in sdft_row and sdft_row.endswith("| 20 / 20 |")
    sft_row = next(line for line in section.splitlines() if line.startswith("| SFT | 1 (a)"))
    assert sft_row.endswith("| 5 / 0 |")
    assert "Self-distillation diagnostics" in (out / "report.html").read_text()


def test_template_follows_the_method_setting_then_the_task():
    run = RunResult("r", "sdft", "s", "0", "m", {"method.distill.template": "label"}, *[pd.DataFrame()] * 3)
    assert task_template(run, "a", lambda task: None) == TEACHER_TEMPLATES["label"]
    run.params["method.distill.template"] = "None"
    assert task_template(run, "a", lambda task: "plain") == TEACHER_TEMPLATES["plain"]
    assert task_template(run, "a", lambda task: None) == TEACHER_TEMPLATES["paper"]
