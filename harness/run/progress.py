"""One progress line per run: which run of the sweep, which stage and step, time so far, time left.

The console shows a single tqdm line while a run goes (`run 2/4 sdft seed 1 | stage 2/3 science, step 5/8 |
01:23 | sweep ~12m left`) and, above it, the one summary line each stage ends with. The sweep's position
comes from the command line (`set_sweep`, called by `harness run` before each job); a run started any
other way is run 1 of 1.

The estimate counts work in units: evaluating a stage is one unit, training it is another, split evenly over
its optimizer steps. The time per unit measured so far in the sweep prices the units left, in this run and
in the runs still to come (each assumed as large as this one).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.config import Config
from harness.methods.base import limit_items, num_steps
from harness.run.stream_plan import StreamPlan


@dataclass
class Sweep:
    """Where the current run sits in its sweep, and what the sweep has cost so far."""

    index: int = 1  # this run, counted from 1
    total: int = 1  # runs in the sweep
    started: float = field(default_factory=time.monotonic)
    units_done: float = 0.0  # work units finished by the sweep's earlier runs


_SWEEP = Sweep()


def set_sweep(index: int, total: int) -> None:
    """`harness run` tells the next run its place: job `index` (from 1) of `total`; the first job of a
    sweep starts its clock."""
    global _SWEEP
    if index <= 1 or _SWEEP.total != total:
        _SWEEP = Sweep(index=index, total=max(total, index))
    else:
        _SWEEP.index, _SWEEP.total = index, max(total, index)


def current_sweep() -> Sweep:
    return _SWEEP


def duration(seconds: float) -> str:
    """`45s`, `12m`, `2h05m`: short enough for one line."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def for_run(cfg: Config, plan: StreamPlan, enabled: bool) -> RunProgress:
    """The progress line of one (method, stream, seed) run, sized by the optimizer steps of its stages."""
    steps = [num_steps(len(limit_items(items, cfg.trainer)), cfg.trainer) for items in plan.train_items]
    return RunProgress(f"{cfg.method.name} seed {cfg.seed}", steps, enabled)


class RunProgress:
    """The run's one progress line; `stage()` and `step()` move it, `write()` prints a line above it."""

    def __init__(
        self, label: str, steps_per_stage: list[int], enabled: bool = True, sweep: Sweep | None = None
    ):
        self.sweep = sweep or _SWEEP
        self.steps = steps_per_stage  # optimizer steps of stage 1..T
        self.units = 1.0 + 2.0 * len(
            steps_per_stage
        )  # stage 0 evaluates; every other stage trains + evaluates
        self.done = 0.0
        self.current = (0, "base", 0)  # stage, its task, its steps
        self.bar: Any = None
        self.label = f"run {self.sweep.index}/{self.sweep.total} {label}"
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=None,
                desc=self.label,
                bar_format="{desc} | {elapsed}",
                file=sys.stderr,
                dynamic_ncols=True,
            )

    def stage(self, stage: int, task: str) -> None:
        """Stage `stage` (training `task`) begins; the stages before it are done (in a resumed run, earlier)."""
        self.done = max(self.done, 2.0 * stage - 1.0) if stage > 0 else 0.0
        steps = self.steps[stage - 1] if stage > 0 else 0
        self.current = (stage, task, steps)
        self._show(0)

    def step(self, step: int) -> None:
        self._show(step)

    def stage_done(self) -> None:
        self.done = 1.0 + 2.0 * self.current[0]
        self._show(self.current[2])

    def left_seconds(self, in_stage: float = 0.0) -> float | None:
        """The sweep's time left at the measured cost per unit; None before anything was measured."""
        done = self.sweep.units_done + self.done + in_stage
        if done <= 0:
            return None
        per_unit = (time.monotonic() - self.sweep.started) / done
        runs_after = self.sweep.total - self.sweep.index
        return per_unit * (self.units - self.done - in_stage + runs_after * self.units)

    def _show(self, step: int) -> None:
        stage, task, steps = self.current
        in_stage = step / steps if steps else 0.0  # training is one unit of the stage
        text = f"{self.label} | stage {stage}/{len(self.steps)} {task}"
        if steps:
            text += f", step {step}/{steps}"
        left = self.left_seconds(in_stage)
        text += f" | sweep ~{duration(left)} left" if left is not None else " | sweep: estimating"
        if self.bar is not None:
            self.bar.set_description_str(text, refresh=True)

    def on_step(self, hook: Callable[[int, dict[str, float]], None] | None) -> Callable[[int, dict], None]:
        """The stage's per-step hook, with this line moved along after it."""

        def both(step: int, record: dict[str, float]) -> None:
            if hook is not None:
                hook(step, record)
            self.step(step)

        return both

    def write(self, line: str) -> None:
        """A line above the progress line (the stage summaries), which is then drawn again below it."""
        if self.bar is None:
            print(line, flush=True)
            return
        self.bar.write(line, file=sys.stdout)

    def close(self) -> None:
        """The run is over: its work counts towards the sweep's estimate for the next run."""
        self.sweep.units_done += self.done
        if self.bar is not None:
            self.bar.close()
