"""Budget curves from results/regime/runs/*.jsonl: accuracy against optimizer steps and training CPU-seconds,
with 95% intervals, "steps to reach X%", and the general suite where it was measured.

    PYTHONPATH=$PWD python results/regime/plot.py [--reach 0.5 0.8] [--out results/regime]

Intervals: percentile bootstrap over the eval items (2000 draws, fixed seed); a difference between two
runs at the same step is bootstrapped paired on items (the subset is the same fixed one at every point).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load_runs(folder: Path) -> dict[str, list[dict]]:
    runs = {}
    for path in sorted(folder.glob("*.jsonl")):
        if path.name.endswith(".partial.jsonl"):
            continue
        runs[path.stem] = [
            json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
        ]
    return runs


def bootstrap(scores: list[float], draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = random.Random(seed)
    n = len(scores)
    means = sorted(sum(scores[rng.randrange(n)] for _ in range(n)) / n for _ in range(draws))
    return means[int(0.025 * draws)], means[int(0.975 * draws) - 1]


def paired_diff(
    a: list[float], b: list[float], draws: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of a - b and its percentile interval, resampling items (a and b score the same items)."""
    rng = random.Random(seed)
    d = [x - y for x, y in zip(a, b, strict=True)]
    n = len(d)
    means = sorted(sum(d[rng.randrange(n)] for _ in range(n)) / n for _ in range(draws))
    return sum(d) / n, means[int(0.025 * draws)], means[int(0.975 * draws) - 1]


def curve(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["kind"] == "eval"]


def steps_to_reach(points: list[dict], level: float) -> int | None:
    return next((p["step"] for p in points if p["score"] >= level), None)


def gains(runs: dict[str, list[dict]]) -> list[str]:
    """Each point minus the run's own step 0 (the base model), paired on items."""
    out = ["", "| run | step | gain over step 0 [95% CI] |", "|---|---|---|"]
    for name, rows in runs.items():
        pts = curve(rows)
        for p in pts[1:]:
            mean, lo, hi = paired_diff(p["scores"], pts[0]["scores"])
            out.append(f"| {name} | {p['step']} | {mean:+.3f} [{lo:+.3f}, {hi:+.3f}] |")
    return out


def differences(runs: dict[str, list[dict]]) -> list[str]:
    """Every other run of a task minus its SFT run, at the steps both scored, paired on items."""
    out = ["", "| run - sft run | step | difference [95% CI] |", "|---|---|---|"]
    for name, rows in runs.items():
        task = name.split("_", 1)[0]
        base = next((n for n in runs if n.startswith(f"{task}_sft_lr")), None)
        if base is None or base == name:
            continue
        theirs = {p["step"]: p["scores"] for p in curve(runs[base])}
        for p in curve(rows):
            if p["step"] in theirs and len(theirs[p["step"]]) == len(p["scores"]):
                mean, lo, hi = paired_diff(p["scores"], theirs[p["step"]])
                out.append(f"| {name} - {base} | {p['step']} | {mean:+.3f} [{lo:+.3f}, {hi:+.3f}] |")
    return out


GENERAL = ("general_mc", "general_ifeval", "general_arith")


def binomial_diff(p1: float, p0: float, n: int) -> tuple[float, float]:
    """95% interval of p1 - p0 for two proportions of n binary items each, treated as independent samples:
    conservative here, where both score the same items (a paired interval would be narrower)."""
    se = (p1 * (1 - p1) / n + p0 * (1 - p0) / n) ** 0.5
    return p1 - p0 - 1.96 * se, p1 - p0 + 1.96 * se


def general_table(runs: dict[str, list[dict]]) -> list[str]:
    """The general suite where it was measured, and its change from the base model (the step-0 measurement,
    made once: the base model is the same for every run)."""
    general = [(name, r) for name, rows in runs.items() for r in rows if r["kind"] == "general"]
    if not general:
        return []
    base = next((r for _, r in general if r["step"] == 0), None)
    head = " | ".join(f"{g} (change [95% CI])" for g in GENERAL)
    lines = ["", f"| run | step | {head} | mean change | n per task |", "|---|---|---|---|---|---|---|"]
    for name, r in general:
        cells, changes = [], []
        for g in GENERAL:
            if base is None or r["step"] == 0:
                cells.append(f"{r[g]:.3f}")
                continue
            lo, hi = binomial_diff(r[g], base[g], r["limit"])
            changes.append(r[g] - base[g])
            cells.append(f"{r[g]:.3f} ({r[g] - base[g]:+.3f} [{lo:+.3f}, {hi:+.3f}])")
        mean = f"{sum(changes) / len(changes):+.3f}" if changes else "base"
        lines.append(f"| {name} | {r['step']} | {' | '.join(cells)} | {mean} | {r['limit']} |")
    return lines


WINDOW = 64  # optimizer steps per row of the diagnostics table


def diagnostics(runs: dict[str, list[dict]]) -> list[str]:
    """SDFT's diagnostics along the curve, averaged over windows of WINDOW steps: per-token KL (student to
    teacher on the student's rollouts), the share of rollouts clipped at the length cap, rollout length,
    the share of rollouts reciting the teacher's template, and the training loss (any method)."""
    keys = ("loss", "kl", "clipped_frac", "completion_len", "recite_frac")
    lines = ["", "| run | steps | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for name, rows in runs.items():
        train = [r for r in rows if r["kind"] == "train"]
        for start in range(0, len(train), WINDOW):
            window = train[start : start + WINDOW]
            cells = []
            for k in keys:
                vals = [r[k] for r in window if k in r]
                cells.append(f"{sum(vals) / len(vals):.3f}" if vals else "-")
            lines.append(f"| {name} | {window[0]['step']}-{window[-1]['step']} | {' | '.join(cells)} |")
    return lines


def table(runs: dict[str, list[dict]], reach: list[float]) -> str:
    head = "| run | step | acc [95% CI] | train CPU-s | train wall-s |"
    lines = [head, "|---|---|---|---|---|"]
    for name, rows in runs.items():
        for p in curve(rows):
            lo, hi = bootstrap(p["scores"])
            lines.append(
                f"| {name} | {p['step']} | {p['score']:.3f} [{lo:.3f}, {hi:.3f}] | {p['train_cpu_s']:.0f} | "
                f"{p['train_wall_s']:.0f} |"
            )
    lines += [
        "",
        "| run | " + " | ".join(f"steps to {x:.0%}" for x in reach) + " | last step | done |",
        "|---|" + "---|" * (len(reach) + 2),
    ]
    for name, rows in runs.items():
        pts = curve(rows)
        got = [steps_to_reach(pts, x) for x in reach]
        cells = " | ".join("not reached" if g is None else str(g) for g in got)
        done = any(r["kind"] == "done" for r in rows)
        lines.append(f"| {name} | {cells} | {pts[-1]['step'] if pts else '-'} | {'yes' if done else 'no'} |")
    lines += gains(runs)
    lines += differences(runs)
    lines += general_table(runs)
    lines += diagnostics(runs)
    return "\n".join(lines)


def task_of(name: str) -> str:
    return name.split("_", 1)[0]


def draw(runs: dict[str, list[dict]], out: Path) -> None:
    """One row of panels per task: accuracy against optimizer steps and against training CPU-seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({task_of(n) for n, rows in runs.items() if curve(rows)})
    # one colour per variant (the name without its task) in every panel, so SFT is SFT's colour everywhere
    variants = sorted({n.removeprefix(task_of(n) + "_") for n in runs})
    colour = {v: plt.get_cmap("tab10")(i % 10) for i, v in enumerate(variants)}
    fig, grid = plt.subplots(len(tasks), 2, figsize=(11, 3.6 * len(tasks)), squeeze=False)
    for axes, task in zip(grid, tasks, strict=True):
        for name, rows in runs.items():
            pts = curve(rows)
            if task_of(name) != task or not pts:
                continue
            ci = [bootstrap(p["scores"]) for p in pts]
            variant = name.removeprefix(task + "_")
            for ax, key in zip(axes, ("step", "train_cpu_s"), strict=True):
                x = [p[key] for p in pts]
                ax.plot(x, [p["score"] for p in pts], marker="o", label=variant, color=colour[variant])
                ax.fill_between(x, [c[0] for c in ci], [c[1] for c in ci], alpha=0.15, color=colour[variant])
        axes[0].set_title(f"{task}: accuracy on a fixed eval subset (95% CI)", fontsize=10)
        axes[0].set_xlabel("optimizer step (batch 4)")
        axes[1].set_xlabel("training CPU-seconds (shared machine)")
        axes[0].set_ylabel("greedy accuracy")
        axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "budget_curves.png", dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default=str(HERE / "runs"))
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--reach", nargs="*", type=float, default=[0.5, 0.8])
    args = ap.parse_args()
    runs = load_runs(Path(args.runs))
    text = table(runs, args.reach)
    (Path(args.out) / "curves.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    draw(runs, Path(args.out))


if __name__ == "__main__":
    main()
