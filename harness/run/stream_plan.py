"""A stream resolved before anything is trained: its tasks in training order (`stream.order`), every
train item read and length-checked, the eval tasks and lm-eval include paths, and the matrices the loop
assembles from each stage's metrics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harness.config import Config
from harness.run.task_inputs import length_problems
from harness.tasks.spec import (
    TASKS_ROOT,
    Item,
    TaskSpec,
    check_unique_tasks,
    load_train_items,
    resolve_task,
)


@dataclass
class StreamPlan:
    specs: list[TaskSpec]
    train_items: list[list[Item]]
    suite_tasks: list[str]
    include_paths: list[str]


MAX_ENUMERATED_TASKS = 8  # up to 8! = 40320 permutations are listed; beyond, order k is a seeded shuffle


def ordered_tasks(tasks: list[str], order: Any) -> list[str]:
    """The stream's tasks in training order `order`: None or 0 = as listed, "reverse", or k >= 1 = the k-th
    of the other permutations in a shuffle with a fixed seed. Order k is the same in every run and seed (so
    runs of one order aggregate), and orders 0..T!-1 are T! distinct permutations."""
    import itertools

    import numpy as np

    if order is None or (isinstance(order, int) and not isinstance(order, bool) and order == 0):
        return list(tasks)
    if order == "reverse":
        return list(reversed(tasks))
    if not isinstance(order, int) or isinstance(order, bool) or order < 0:
        raise ValueError(
            f"stream.order={order!r} is not known; valid values: null, reverse, or an integer k >= 0 "
            "(0 = as listed, k = the k-th seeded permutation)"
        )
    if len(tasks) > MAX_ENUMERATED_TASKS:
        perm = np.random.default_rng([order, len(tasks)]).permutation(len(tasks))
        return [tasks[i] for i in perm]
    others = list(itertools.permutations(range(len(tasks))))[1:]  # lexicographic; [0] is the identity
    if order > len(others):
        raise ValueError(
            f"stream.order={order}: {len(tasks)} tasks have {len(others) + 1} orders, "
            f"so valid integers are 0..{len(others)}"
        )
    np.random.default_rng(len(tasks)).shuffle(others)  # fixed: order k means the same permutation everywhere
    return [tasks[i] for i in others[order - 1]]


def order_label(order: Any) -> str:
    """The `order` tag of a parent run: "0" for the stream as listed (null or 0), else the option as given."""
    return "0" if order is None else str(order)


def plan_stream(cfg: Config) -> StreamPlan:
    """Resolve tasks and read all training data up front, so bad input fails before any training."""
    names = ordered_tasks(list(cfg.stream.tasks), cfg.stream.order)
    check_unique_tasks(cfg.stream.name, names)
    specs = [resolve_task(n) for n in names]
    # a task both learned and in the general suite would be evaluated twice per stage, under two item
    # counts (eval.limit, eval.suite_limit), and its score would stand in R and in G at once
    both = sorted({t for s in specs for t in s.eval_tasks} & set(cfg.suite.tasks))
    if both:
        raise ValueError(
            f"suite '{cfg.suite.name}' holds {', '.join(both)}, which stream '{cfg.stream.name}' evaluates "
            "as a task it learns: drop it from suite.tasks or from stream.tasks"
        )
    limit = cfg.trainer.max_train_items
    train_items = [load_train_items(spec, limit) for spec in specs]
    # lm-eval indexes include paths recursively: the built-in root covers built-in tasks; only a user's
    # folders elsewhere are added (adding both would register each built-in task twice).
    user_dirs = {str(s.path) for s in specs if TASKS_ROOT not in s.path.parents}
    include = {str(TASKS_ROOT)} | user_dirs | {str(Path(p).resolve()) for p in cfg.suite.include_paths}
    return StreamPlan(specs, train_items, list(cfg.suite.tasks), sorted(include))


def check_lengths(tokenizer: Any, plan: StreamPlan, max_length: int) -> None:
    """Every training item's prompt + demonstration must fit the context, checked before any training.

    Otherwise SFT would silently cut the demonstration (and its end-of-turn token) and a teacher context
    would lose part of it; the error names the item (file:line) so the user can shorten or drop it.
    (Teacher templates add a few more tokens: the distillation methods check those themselves.)
    """
    for items in plan.train_items:
        problems = length_problems(tokenizer, items, max_length)
        if problems:
            raise ValueError(problems[0])


def extra_eval_tasks(plan: StreamPlan) -> list[tuple[str, str]]:
    """(eval task, metric key) for every eval task beyond each stream task's first, e.g. knowledge_ood."""
    return [(name, spec.metric) for spec in plan.specs for name in spec.eval_tasks[1:]]


def _frame(stage_metrics: dict[int, dict[str, float]], keys: list[str], columns: list[str]) -> pd.DataFrame:
    stages = sorted(stage_metrics)
    rows = [[stage_metrics[i].get(k, float("nan")) for k in keys] for i in stages]
    return pd.DataFrame(rows, index=pd.Index(stages, name="stage"), columns=columns)


def matrices(plan: StreamPlan, stage_metrics: dict[int, dict[str, float]]):
    names = [s.name for s in plan.specs]
    R = _frame(stage_metrics, [f"score/{n}" for n in names], names)
    G = _frame(stage_metrics, [f"general/{t}" for t in plan.suite_tasks], plan.suite_tasks)
    extra = extra_eval_tasks(plan)
    X = _frame(stage_metrics, [f"extra/{t}" for t, _ in extra], [t for t, _ in extra])
    return R, G, X
