"""Paired differences between SFT and SDFT with the SFT anchor on the measures the report's sentence does
not pair (its power section lists every pair; this prints the intervals).

SFT minus the anchored SDFT group (`method.distill.sft_weight=1.0`), same seeds and same items, on:
- tooluse forgetting: its score after stage 1 minus after stage 2 (the only task learned before the last);
- science, the second task's score right after learning it;
- the final general-suite average (the three general tasks, equal weight).
Intervals: the report's crossed seed x item estimate (`harness.report.crossed`, t reference with
Satterthwaite df), computed from this folder's runs.csv and items.csv.gz (`harness.report.folder`).

    PYTHONPATH=$PWD .venv/bin/python results/study/paired.py
"""

from __future__ import annotations

from pathlib import Path

from harness.report import stats as st
from harness.report.folder import load_folder
from harness.report.render import interval_text
from harness.report.streams import StreamStats

A, B = "SFT", "SDFT + SFT anchor"  # the report labels of the two groups (runs.csv)


def main() -> None:
    groups = load_folder(Path(__file__).resolve().parent)
    ss = StreamStats("study", groups, [r for g in groups for r in g.runs])
    forget = st.cl_metric("forgetting", ["tooluse"])
    for g in (A, B):
        print(
            f"{g}: tooluse forgetting per seed",
            [round(100 * float(v), 2) for v in ss.boot.per_run(g, forget)],
        )
    for name, stat in [
        ("tooluse forgetting", forget),
        ("science right after learning it", st.new_score("science")),
        ("final general-suite average", st.general_avg(-1)),
    ]:
        d = ss.boot.difference(A, B, stat)
        verdict = (
            "not distinguishable"
            if not d.excludes_zero
            else ("SFT higher" if d.mean > 0 else "anchored higher")
        )
        print(f"{name}: SFT minus anchored SDFT {interval_text(d, signed=True)} ({verdict})")


if __name__ == "__main__":
    main()
