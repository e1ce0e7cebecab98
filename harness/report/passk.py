"""The report's pass@k table: for every group and stage, each stream task's pass@k (harness/eval/passk.py),
the mean over the group's runs. Absent when no run logged pass@k (`eval.pass_k` empty)."""

from __future__ import annotations

import re

import numpy as np

from harness.report.render import Section, Table, pct
from harness.report.streams import StreamStats

KEY = re.compile(r"pass_at_(\d+)/(.+)")


def passk_columns(ss: StreamStats) -> list[tuple[int, str]]:
    """(k, task) pairs logged by any run of the stream, tasks in stream order, then k ascending."""
    found = {
        (int(m.group(1)), m.group(2))
        for g in ss.groups
        for r in g.runs
        for stage in r.pass_k.values()
        for key in stage
        if (m := KEY.fullmatch(key))
    }
    order = {t: i for i, t in enumerate(ss.tasks)}
    return sorted(found, key=lambda kt: (order.get(kt[1], len(order)), kt[1], kt[0]))


def passk_section(ss: StreamStats) -> Section | None:
    columns = passk_columns(ss)
    if not columns:
        return None
    header = ["Method", "after stage"] + [f"{t} pass@{k}" for k, t in columns]
    rows = []
    for g in ss.groups:
        stages = sorted({s for r in g.runs for s in r.pass_k})
        for stage in stages:
            cells = []
            for k, t in columns:
                values = [r.pass_k.get(stage, {}).get(f"pass_at_{k}/{t}", np.nan) for r in g.runs]
                mean = float(np.nanmean(values)) if np.isfinite(values).any() else np.nan
                cells.append(pct(mean) if np.isfinite(mean) else "—")
            rows.append([g.label, str(stage), *cells])
    return Section(
        f"pass@k: stream `{ss.stream}`",
        level=3,
        tables=[Table(header, rows)],
        notes=[
            "% ; unbiased estimator of Chen et al. 2021 from eval.samples sampled answers per item, "
            "mean over the group's runs"
        ],
    )
