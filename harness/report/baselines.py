"""Chance levels: the floor, beside the base model, that a gain must clear to count as learning.

A task counts as learned by a group when the 95% interval of R[j, j] - max(R[0, j], chance) lies above 0:
a gain that a constant, well-formatted answer would also give (a format gain) is not learning. The chance
level is measured as `task.yaml`'s declared one was (`harness.eval.chance`: the best constant answer), but on
the eval items the runs evaluated (the first `eval.limit`): on the first 80 science items the best constant
answer is `<answer>4</answer>` (10%), on all 400 another one (6%). A task that declares no level (a user's
folder, a test's invented task) uses 0, i.e. the base model alone.
"""

from __future__ import annotations

from harness.report.runs import RunResult
from harness.tasks.spec import resolve_task


def chance_levels(tasks: list[str], runs: list[RunResult]) -> dict[str, float | None]:
    """Per stream task, its chance level on the evaluated items; None where the task declares none."""
    out: dict[str, float | None] = {}
    for t in tasks:
        try:
            spec = resolve_task(t)
        except (ValueError, OSError):
            out[t] = None
            continue
        if spec.chance is None:
            out[t] = None
            continue
        sizes = [r.eval_sizes[t] for r in runs if t in r.eval_sizes]
        from harness.eval.chance import eval_docs, measure_chance  # lazy: it loads task scorers (and torch)

        # the best constant answer of the items evaluated: on a subset it can differ from the declared one
        try:
            out[t] = measure_chance(spec, eval_docs(spec)[: min(sizes) if sizes else None]).score
        except (ValueError, OSError, KeyError):  # no usable eval items or scorer here: fall back to the base
            out[t] = None
    return out
