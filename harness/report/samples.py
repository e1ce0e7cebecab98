"""Sample generations for the HTML report: the first few eval items per task and stage of one run per group."""

from __future__ import annotations

import html

from harness.report.runs import seed_order
from harness.report.streams import StreamStats

SAMPLES_PER_TASK = 3  # generations shown per task, stage and group in the HTML


def generations_html(ss: StreamStats) -> str:
    out = []
    for g in ss.groups:
        run = next((r for r in sorted(g.runs, key=lambda r: seed_order(r.seed)) if r.items is not None), None)
        if run is None:
            continue
        out.append(
            f"<details><summary>Sample generations: {html.escape(g.label)} (seed {html.escape(run.seed)}, "
            f"order {html.escape(run.order)})</summary>"
        )
        for stage in sorted(run.items["stage"].unique()):
            for task in run.tasks:
                sub = run.items[(run.items["stage"] == stage) & (run.items["task"] == task)]
                sub = sub.sort_values("doc_id").head(SAMPLES_PER_TASK)
                if sub.empty:
                    continue
                out.append(f"<h4>after stage {stage}, task {html.escape(task)}</h4>")
                for _, row in sub.iterrows():
                    mark = "ok" if float(row["score"]) >= 1 else "bad"
                    prompt = str(row.get("prompt", ""))[-400:]
                    out.append(
                        f"<details><summary class='{mark}'>item {row['doc_id']}: score {row['score']:g}"
                        f"</summary><pre>…{html.escape(prompt)}</pre><b>generation</b>"
                        f"<pre>{html.escape(str(row['generation']))}</pre><b>target</b>"
                        f"<pre>{html.escape(str(row['target']))}</pre></details>"
                    )
        out.append("</details>")
    return "\n".join(out)
