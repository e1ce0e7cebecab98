"""The report's table of base model, chance level and each group's gain over the higher of the two
(`harness.report.baselines` says how chance is measured and what "learned" means)."""

from __future__ import annotations

from harness.report import stats as st
from harness.report.render import Section, Table, interval_text, pct
from harness.report.runs import BASE_LABEL
from harness.report.streams import StreamStats


def baseline_section(ss: StreamStats) -> Section:
    """Per task: the base model, the chance level, and each group's gain over the higher of the two."""
    labels = [g.label for g in ss.groups]
    header = ["task", "base model", "chance (constant answer)"] + [
        f"{lab}: gain over max(base, chance)" for lab in labels
    ]
    rows = []
    for t in ss.tasks:
        chance = ss.chance.get(t)
        row: list = [
            t,
            ss.boot.interval(BASE_LABEL, st.base_score(t)),
            "—" if chance is None else pct(chance),
        ]
        for lab in labels:
            iv = ss.learned[lab][t]
            verdict = "learned" if t in ss.learned_tasks(lab) else "not learned"
            row.append(f"{interval_text(iv, signed=True)} {verdict}")
        rows.append(row)
    note = (
        "A task is *learned* when the 95% interval of (score right after training) - max(base, chance) lies "
        "above 0; chance = the score of the task's best constant answer on the evaluated items "
        "(`harness.eval.chance`), so a format-only gain does not count. — = no declared chance level (0 is used)."
    )
    return Section(
        f"Base model and chance: stream `{ss.stream}`", level=3, text=[note], tables=[Table(header, rows)]
    )
