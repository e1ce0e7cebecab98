"""The one progress line per run (harness.run.progress) and the sweep size the command line gives it."""

from __future__ import annotations

import pytest

from harness.run import progress
from harness.run.progress import RunProgress, Sweep, duration
from harness.session import summary_tables, sweep_size


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_estimate_prices_the_units_left_at_the_cost_measured_so_far(monkeypatch):
    clock = Clock(1000.0)
    monkeypatch.setattr(progress.time, "monotonic", clock)
    # run 2 of 3; run 1 finished its 5 units (stage 0 + two stages of train + eval) in the sweep's first 100 s
    sweep = Sweep(index=2, total=3, started=900.0, units_done=5.0)
    line = RunProgress("sdft seed 1", [4, 2], enabled=True, sweep=sweep)
    line.stage(0, "base")
    line.stage_done()  # 1 unit of this run done: 6 units in 100 s
    # left: this run's 4 units + run 3's 5 units, at 100/6 s each = 150 s
    assert line.left_seconds() == pytest.approx(150.0)
    line.stage(1, "tooluse")
    clock.now = 1020.0
    line.step(2)  # half of stage 1's training unit: 6.5 units in 120 s; left 8.5 units
    assert line.left_seconds(0.5) == pytest.approx(120.0 / 6.5 * 8.5)
    text = line.bar.desc
    assert text.startswith("run 2/3 sdft seed 1 | stage 1/2 tooluse, step 2/4 | sweep ~")
    line.stage_done()
    line.close()
    assert sweep.units_done == 5.0 + 3.0  # stage 0 and stage 1 of this run count for the next estimate


def test_a_resumed_run_counts_the_stages_done_before_it():
    line = RunProgress("sft seed 0", [3, 3, 3], enabled=False, sweep=Sweep())
    line.stage(3, "knowledge")  # stages 0..2 done in an earlier attempt: 1 + 2 + 2 units
    assert line.done == 5.0
    assert line.left_seconds() is not None


def test_without_a_bar_stage_lines_still_print(capsys):
    line = RunProgress("sft seed 0", [1], enabled=False, sweep=Sweep())
    line.write("[stage 1: tooluse] tooluse=0.500 | 3s")
    assert capsys.readouterr().out == "[stage 1: tooluse] tooluse=0.500 | 3s\n"


def test_durations_read_short():
    assert [duration(s) for s in (12, 150, 3600 * 2 + 5 * 60)] == ["12s", "2m", "2h05m"]


def test_sweep_size_merges_the_experiments_own_sweep_with_the_command_line():
    params = {"method": "sft,sdft", "seed": "0,1"}  # what experiment=demo sets under hydra.sweeper.params
    assert sweep_size(["experiment=demo"], params) == 4
    assert sweep_size(["experiment=demo", "seed=0,1,2"], params) == 6  # the command line wins
    assert sweep_size(["method=sft"], None) == 1


def test_the_closing_summary_shows_the_method_tables_of_summary_md():
    md = (
        "# Results: experiment `x`\n\n- Model: m\n\nScores in %.\n\n## Stream `demo`\n\nStream `demo`: SFT has ...\n\n"
        "| Method | n | ACC |\n|---|---|---|\n| base model | 1 | — |\n| SFT | 2 | 3.3 [0.0, 8.9] |\n\n"
        "### Accuracy matrix: SFT\n\n| after stage | a |\n|---|---|\n| 0 (base) | 0.0 |\n\n"
        "## Stream `other`\n\n| Method | n | ACC |\n|---|---|---|\n| SDFT | 1 | 1.0 (single run) |\n"
    )
    assert summary_tables(md).splitlines() == [
        "## Stream `demo`",
        "| Method | n | ACC |",
        "|---|---|---|",
        "| base model | 1 | — |",
        "| SFT | 2 | 3.3 [0.0, 8.9] |",
        "",
        "## Stream `other`",
        "| Method | n | ACC |",
        "|---|---|---|",
        "| SDFT | 1 | 1.0 (single run) |",
    ]
