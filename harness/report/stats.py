"""Confidence intervals for the report: a percentile bootstrap over runs (seeds), then eval items.

What is resampled
-----------------
A *group* is the runs of one method on one stream; each run holds, for every evaluated task and every
stage, the score of every eval item (the `items.csv.gz` artifact of its stage runs). One bootstrap
replicate:

1. draws the runs with replacement, separately within each task order (an order is a design factor of
   the study, not a sample: every replicate keeps the same runs-per-order layout);
2. draws the items of each task with replacement, once per replicate, and applies that draw to every run
   of the replicate: every run is scored on the same items, so items are *crossed* with seeds, not nested
   in them (an item that is hard for one seed is hard for all), and a shared draw keeps that correlation;
3. rebuilds each drawn run's accuracy matrix R and general matrix G from its drawn items, computes the
   statistic per run (a CL metric, one cell of R, ...) and averages it over the drawn runs.

The 2.5th and 97.5th percentiles of the replicates are the 95% interval; the point estimate is the
statistic on the data as observed. n is the number of independent runs (a base model evaluated once is
n = 1, however many runs share it). A score with no item-level data (runs logged before items were kept)
counts as a single item, so step 2 does nothing for it: the interval then covers seed variation only, and
`Interval.items` says so.

Paired differences
------------------
Every group of a stream is resampled from the same replicate draws: the same item draws always, and the
same run draws for two strata that hold the same seeds in the same order. A difference A - B computed per
replicate is then paired on items and seeds, which removes the shared item difficulty from its spread.
When the seed lists differ, the run draws are independent and the result is flagged unpaired.

Caveat: with 2-3 seeds the seed level of any bootstrap is coarse (3 seeds have 10 distinct resamples);
item-level resampling is what makes small studies informative, and the report always states n.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from harness.eval import metrics

# stat(R, G, tasks) -> one value per run. R: (..., runs, T+1, T), G: (..., runs, T+1, M), the leading axis
# being the bootstrap replicates (absent for the point estimate); `tasks` = the stream tasks in the order
# of R's columns (orders differ between strata). The result has shape (..., runs).
Statistic = Callable[[np.ndarray, np.ndarray, list[str]], np.ndarray]

DEFAULT_REPLICATES = 2000
LEVEL = 0.95


@dataclass
class Scores:
    """Item-level scores of the runs of one group in one task order.

    `columns[name]` has shape (runs, T+1 stages, items): stream tasks (in training order, `tasks`) and
    general-suite tasks (`suite`). `item_level[name]` is False where the scores are one logged mean per
    run and stage (a single pseudo-item) rather than per-item scores.
    """

    order: str
    seeds: list[str]
    tasks: list[str]
    suite: list[str]
    columns: dict[str, np.ndarray]
    item_level: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shapes = {name: a.shape[:2] for name, a in self.columns.items()}
        expected = (len(self.seeds), len(self.tasks) + 1)
        bad = {n: s for n, s in shapes.items() if s != expected}
        if bad:
            raise ValueError(
                f"scores of order {self.order!r}: expected (runs, stages) = {expected}, got {bad}"
            )
        missing = [n for n in [*self.tasks, *self.suite] if n not in self.columns]
        if missing:
            raise ValueError(f"scores of order {self.order!r} lack columns {missing}")

    @property
    def runs(self) -> int:
        return len(self.seeds)

    def matrices(self, means: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """R (..., runs, T+1, T) and G (..., runs, T+1, M) from per-column run means (..., runs, T+1)."""
        lead = next(iter(means.values())).shape
        R = np.stack([means[t] for t in self.tasks], axis=-1)
        G = np.stack([means[m] for m in self.suite], axis=-1) if self.suite else np.zeros((*lead, 0))
        return R, G


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% bootstrap interval; n = independent runs behind it."""

    mean: float
    lo: float
    hi: float
    n: int
    items: bool = True  # item-level resampling was possible for every score involved
    paired: bool = True  # for differences: both sides drawn from the same seeds

    @property
    def finite(self) -> bool:
        return bool(np.isfinite(self.mean))

    @property
    def degenerate(self) -> bool:
        """No spread at all: a single run without items, or every replicate equal (e.g. all items 0)."""
        return not (np.isfinite(self.lo) and np.isfinite(self.hi)) or self.hi - self.lo < 1e-12

    @property
    def excludes_zero(self) -> bool:
        return self.finite and not self.degenerate and (self.lo > 0 or self.hi < 0)

    def covers(self, value: float) -> bool:
        return bool(self.lo <= value <= self.hi)


NAN_INTERVAL = Interval(float("nan"), float("nan"), float("nan"), 0)


class Bootstrap:
    """The replicates of every group of one stream, drawn once and shared (see the module docstring).

    `groups` maps a label to its strata (one `Scores` per task order). The draws use a fixed seed: the
    same data always give the same intervals.
    """

    def __init__(
        self, groups: dict[str, Sequence[Scores]], replicates: int = DEFAULT_REPLICATES, seed: int = 0
    ) -> None:
        self.groups = {label: list(strata) for label, strata in groups.items()}
        self.B = int(replicates)
        rng = np.random.default_rng(seed)
        item_draws: dict[tuple[str, int], np.ndarray] = {}
        run_draws: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}
        self._draws: dict[str, list[dict[str, np.ndarray]]] = {}
        self._run_keys: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
        for label, strata in self.groups.items():
            per_stratum = []
            keys = []
            for s in strata:
                key = (s.order, tuple(s.seeds))
                if key not in run_draws:
                    run_draws[key] = rng.integers(0, s.runs, size=(self.B, s.runs))
                keys.append(key)
                means = {}
                for name, x in s.columns.items():
                    n = x.shape[-1]
                    if (name, n) not in item_draws:
                        # multinomial counts = how often each item is drawn; weights sum to 1 per replicate
                        item_draws[(name, n)] = rng.multinomial(n, np.full(n, 1.0 / n), size=self.B) / n
                    weights = item_draws[(name, n)]
                    resampled = np.einsum("sin,bn->bsi", np.nan_to_num(x), weights)  # (B, runs, stages)
                    if np.isnan(x).any():  # a NaN score stays NaN in every replicate
                        resampled = np.where(np.isnan(x).any(-1)[None], np.nan, resampled)
                    means[name] = np.take_along_axis(resampled, run_draws[key][:, :, None], axis=1)
                per_stratum.append(means)
            self._draws[label] = per_stratum
            self._run_keys[label] = keys

    def _values(self, label: str, stat: Statistic) -> tuple[np.ndarray, np.ndarray]:
        """Per-run statistic on the observed data (runs,) and per replicate (B, runs), all strata joined."""
        points, boots = [], []
        for s, draws in zip(self.groups[label], self._draws[label], strict=True):
            R, G = s.matrices({n: x.mean(axis=-1) for n, x in s.columns.items()})
            points.append(np.broadcast_to(np.asarray(stat(R, G, s.tasks), dtype=float), (s.runs,)))
            Rb, Gb = s.matrices(draws)
            boots.append(np.broadcast_to(np.asarray(stat(Rb, Gb, s.tasks), dtype=float), (self.B, s.runs)))
        return np.concatenate(points), np.concatenate(boots, axis=1)

    def _item_level(self, label: str) -> bool:
        return all(all(s.item_level.get(n, False) for n in s.columns) for s in self.groups[label])

    def interval(self, label: str, stat: Statistic) -> Interval:
        """Mean over the group's runs of `stat`, with its 95% interval."""
        point, boot = self._values(label, stat)
        n = sum(s.runs for s in self.groups[label])
        return _interval(_nanmean(point, 0), _nanmean(boot, 1), n, self._item_level(label))

    def per_run(self, label: str, stat: Statistic) -> np.ndarray:
        """The statistic of every run as observed (for per-seed lines and the runs table)."""
        return self._values(label, stat)[0]

    def difference(self, a: str, b: str, stat: Statistic) -> Interval:
        """Mean of `stat` over a's runs minus over b's runs, from the same replicate draws (paired on items;
        on seeds too when both groups hold the same seeds in each order)."""
        pa, ba = self._values(a, stat)
        pb, bb = self._values(b, stat)
        paired = sorted(self._run_keys[a]) == sorted(self._run_keys[b])
        n = min(sum(s.runs for s in self.groups[g]) for g in (a, b))
        return _interval(
            _nanmean(pa, 0) - _nanmean(pb, 0),
            _nanmean(ba, 1) - _nanmean(bb, 1),
            n,
            self._item_level(a) and self._item_level(b),
            paired,
        )


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray | float:
    with np.errstate(all="ignore"):
        finite = np.isfinite(values)
        total = np.where(finite, values, 0.0).sum(axis=axis)
        count = finite.sum(axis=axis)
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _interval(point: float, boot: np.ndarray, n: int, items: bool, paired: bool = True) -> Interval:
    point = float(point)
    boot = np.asarray(boot, dtype=float)
    boot = boot[np.isfinite(boot)]
    if not np.isfinite(point) or boot.size == 0:
        return Interval(point, float("nan"), float("nan"), n, items, paired)
    tail = 100 * (1 - LEVEL) / 2
    lo, hi = np.percentile(boot, [tail, 100 - tail])
    return Interval(point, float(lo), float(hi), n, items, paired)


# ---- statistics used by the report (each returns one value per run) ------------------------------------
def cell(stage: int, task: str) -> Statistic:
    """R[stage, task]: the score of `task` after `stage`."""
    return lambda R, G, tasks: R[..., stage, tasks.index(task)]


def base_score(task: str) -> Statistic:
    return cell(0, task)


def new_score(task: str) -> Statistic:
    """R[j, j]: the score of `task` right after the stage that trained it, wherever it sits in the order."""
    return lambda R, G, tasks: R[..., tasks.index(task) + 1, tasks.index(task)]


def gain(task: str) -> Statistic:
    """R[j, j] - R[0, j]: what training on `task` added over the base model."""
    return lambda R, G, tasks: R[..., tasks.index(task) + 1, tasks.index(task)] - R[..., 0, tasks.index(task)]


def gain_over(task: str, chance: float | None) -> Statistic:
    """R[j, j] - max(R[0, j], chance): what training on `task` added over the better of the base model and
    the task's chance level (a constant answer's score). Above 0 at 95% = the task was learned."""
    floor = 0.0 if chance is None else float(chance)

    def stat(R: np.ndarray, G: np.ndarray, tasks: list[str]) -> np.ndarray:
        j = tasks.index(task)
        return R[..., j + 1, j] - np.maximum(R[..., 0, j], floor)

    return stat


def general_avg(stage: int) -> Statistic:
    """The general-suite average after `stage` (-1 = the last; NaN without a suite)."""
    return lambda R, G, tasks: (
        G[..., stage, :].mean(axis=-1) if G.shape[-1] else np.full(G.shape[:-2], np.nan)
    )


def general_avg_after(task: str) -> Statistic:
    """The general-suite average right after the stage that trained `task`."""

    def stat(R: np.ndarray, G: np.ndarray, tasks: list[str]) -> np.ndarray:
        return general_avg(tasks.index(task) + 1)(R, G, tasks)

    return stat


def general_cell(stage: int, column: int) -> Statistic:
    return lambda R, G, tasks: G[..., stage, column]


def cl_metric(name: str, learned: Sequence[str] | None = None) -> Statistic:
    """One of `harness.eval.metrics.METRIC_NAMES` per run; BWT and Forgetting over the tasks in `learned` only
    (None = every task)."""

    one = {
        "acc": lambda R, G, mask: metrics.acc_final(R),
        "new_task_acc": lambda R, G, mask: metrics.new_task_accuracy(R),
        "bwt": lambda R, G, mask: metrics.bwt(R, mask),
        "fwt": lambda R, G, mask: metrics.fwt(R),
        "forgetting": lambda R, G, mask: metrics.forgetting(R, mask),
        "general_delta": lambda R, G, mask: metrics.general_delta(G),
    }
    if name not in one:
        raise ValueError(f"unknown metric {name!r}; valid: {', '.join(one)}")

    def stat(R: np.ndarray, G: np.ndarray, tasks: list[str]) -> np.ndarray:
        mask = None if learned is None else [t in learned for t in tasks]
        return np.asarray(one[name](R, G, mask), dtype=float)  # only the metric asked for (speed)

    return stat
