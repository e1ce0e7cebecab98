"""Coverage of the report's 95% intervals on synthetic studies with known effects (issue 25).

For 3, 5 and 10 seeds (120 items per task, a 3-task stream, two methods on the same seeds and items) and two
designs (item variance dominant; seed variance dominant), draws `--reps` synthetic studies
(`harness.report.simulate`) and counts how often each interval covers the true value, for a mean (new-task
accuracy), a paired difference and forgetting (max minus final). The crossed seed x item estimate the report
uses (`harness.report.crossed`) is set beside the percentile bootstrap it replaced (`stats.Bootstrap`).

    PYTHONPATH=$PWD nice -n 19 .venv/bin/python results/stats/coverage.py > results/stats/coverage.md
"""

from __future__ import annotations

import argparse
import time

from harness.report import simulate as sim
from harness.report import stats as st
from harness.report.crossed import Crossed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--boot-reps", type=int, default=400, help="studies for the (slower) bootstrap")
    parser.add_argument("--items", type=int, default=120)
    parser.add_argument("--designs", nargs="+", default=["items", "seeds"], choices=["items", "seeds"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[3, 5, 10])
    parser.add_argument(
        "--first-seed", type=int, default=0, help="added to the simulation seeds (a fresh draw)"
    )
    args = parser.parse_args()
    start = time.time()
    print("# Coverage of 95% intervals on synthetic crossed seed x item data\n")
    print(
        f"{args.reps} synthetic studies per cell for the crossed estimate, {args.boot_reps} for the percentile "
        f"bootstrap (1000 replicates); {args.items} binary items per task; truth = population value of the "
        "design (`harness.report.simulate`). Cells: coverage % (mean half-width in points). Standard error "
        f"of a coverage near 95%: about {100 * (0.95 * 0.05 / args.reps) ** 0.5:.1f} points (crossed), "
        f"{100 * (0.95 * 0.05 / args.boot_reps) ** 0.5:.1f} (bootstrap).\n"
    )
    for spread in args.designs:
        design = sim.stream_design(spread)
        print(f"## Design: {spread} variance dominant\n")
        print("| figure | seeds | crossed (report) | percentile bootstrap (old) |")
        print("|---|---|---|---|")
        for seeds in args.seeds:
            crossed = sim.coverage(
                design, seeds, args.items, args.reps, Crossed, seed=args.first_seed + seeds
            )
            boot = {}
            if seeds == 3:
                boot = sim.coverage(
                    design,
                    seeds,
                    args.items,
                    args.boot_reps,
                    lambda g: st.Bootstrap(g, replicates=1000),
                    seed=args.first_seed + 100 + seeds,
                )
            for name, (cov, half) in crossed.items():
                old = f"{100 * boot[name][0]:.1f} ({100 * boot[name][1]:.1f})" if name in boot else "—"
                print(f"| {name} | {seeds} | {100 * cov:.1f} ({100 * half:.1f}) | {old} |", flush=True)
        print()
    print(f"Wall time {time.time() - start:.0f} s on a shared 2-core CPU.")


if __name__ == "__main__":
    main()
