"""The report's group labels (harness.report.labels): display names from the settings, the user's own,
and groups of one method told apart by the knob that differs."""

from __future__ import annotations

import pandas as pd

from harness.methods import display_name
from harness.report.labels import assign_labels, method_section
from harness.report.runs import RunResult, group_runs
from harness.tracking.store import flatten_config

FRAME = pd.DataFrame({"a": [0.0, 1.0]}, index=pd.Index([0, 1], name="stage"))
EMPTY = pd.DataFrame(index=FRAME.index)


def _run(method: str, seed: int, **config) -> RunResult:
    """A run whose params are flattened the way the loop logs them (strings, "None" for null)."""
    section = {"name": method, "label": None, "distill": {"sft_weight": 0.0, "teacher": "ema"}}
    for key, value in config.pop("distill", {}).items():
        section["distill"][key] = value
    section.update(config.pop("extra", {}))
    params = flatten_config({"method": section, "seed": seed, "trainer": {"lr": config.pop("lr", 2e-4)}})
    return RunResult(f"{method}{seed}{params}", method, "demo", str(seed), "m", params, FRAME, EMPTY, EMPTY)


def _labels(runs: list[RunResult], user: dict | None = None) -> dict[str, str]:
    groups = group_runs(runs)
    assign_labels(groups, user, display_name)
    return {g.overrides: g.label for g in groups}


def test_default_labels_are_the_methods_display_names():
    runs = [_run(m, s, distill={"sft_weight": w}) for m, w in (("sft", 0.0), ("sdft", 0.0)) for s in (0, 1)]
    runs += [_run("sdft", s, distill={"sft_weight": 1.0}) for s in (0, 1)]
    runs += [_run("sdft", 0, distill={"sft_weight": 1.0, "teacher": "base"})]
    assert _labels(runs) == {
        "sft": "SFT",
        "sdft (method.distill.sft_weight=0.0, method.distill.teacher=ema)": "SDFT",
        "sdft (method.distill.sft_weight=1.0, method.distill.teacher=ema)": "SDFT + SFT anchor",
        "sdft (method.distill.sft_weight=1.0, method.distill.teacher=base)": "SDFT + SFT anchor (frozen teacher)",
    }


def test_user_labels_win_by_override_string_by_method_name_or_in_the_method_yaml():
    runs = [_run("sdft", 0, distill={"sft_weight": w}) for w in (0.0, 1.0)]
    runs += [_run("sft", 0), _run("dft", 0, extra={"label": "DFT (Wu et al.)"})]
    user = {"sdft (method.distill.sft_weight=1.0)": "anchored SDFT", "sft": "plain SFT"}
    assert _labels(runs, user) == {
        "sdft (method.distill.sft_weight=0.0)": "SDFT",
        "sdft (method.distill.sft_weight=1.0)": "anchored SDFT",
        "sft": "plain SFT",
        "dft": "DFT (Wu et al.)",
    }


def test_two_groups_of_one_method_differing_in_one_knob_get_that_knob():
    runs = [_run("sft", s, lr=lr) for lr in (1e-4, 5e-5) for s in (0, 1)]
    # SDFT with two anchor weights: the display name says "anchor", the weight tells the two apart
    runs += [_run("sdft", 0, distill={"sft_weight": w}) for w in (0.5, 1.0)]
    assert _labels(runs) == {
        "sft (trainer.lr=0.0001)": "SFT (lr=0.0001)",
        "sft (trainer.lr=5e-05)": "SFT (lr=5e-05)",
        "sdft (method.distill.sft_weight=0.5)": "SDFT + SFT anchor (sft_weight=0.5)",
        "sdft (method.distill.sft_weight=1.0)": "SDFT + SFT anchor (sft_weight=1.0)",
    }


def test_the_method_section_is_rebuilt_from_flat_params():
    params = {"method.name": "sdft", "method.label": "None", "method.distill.sft_weight": "1.0", "seed": "0"}
    assert method_section(params) == {"name": "sdft", "label": None, "distill": {"sft_weight": "1.0"}}
