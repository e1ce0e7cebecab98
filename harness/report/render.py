"""The report's sections and the three small renderers that turn them into Markdown, LaTeX and HTML.

`harness.report.sections` builds a list of `Section`s once (titles, tables, sentences, figures); nothing in
here computes a number. A table cell is a string, a `stats.Interval` (a score in [0, 1], printed in %), or
a tuple of those (joined with " / ").

How an interval is printed: `80.0 [70.0, 90.0]` = mean and 95% interval (`harness.report.crossed`), in %.
A degenerate interval is never printed as a width: `80.0 (single run)` when there is one run and no
item-level data, `80.0 (no spread)` when the estimated variance is 0 (e.g. all items scored 0).
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.report.stats import Interval

Cell = str | Interval | tuple


@dataclass
class Table:
    header: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    latex: bool = False  # also goes into summary.tex (the paper-layout tables)
    first_row_apart: bool = False  # a rule under the first row (the base model)
    tex_header: list[str] | None = None  # LaTeX's own header (e.g. $\\Delta$), else `header`
    tex_caption: str | None = None  # LaTeX's own caption, else `caption`


@dataclass
class Section:
    title: str
    level: int = 2
    text: list[str] = field(default_factory=list)  # sentences / paragraphs, in order, before the tables
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[Path, str]] = field(default_factory=list)  # (png, caption)
    bullets: list[str] = field(default_factory=list)
    html_extra: str = ""  # HTML-only material (sample generations), already escaped
    notes: list[str] = field(default_factory=list)  # after the tables


# ---- values ---------------------------------------------------------------------------------------
def pct(value: float) -> str:
    return f"{round(100 * value, 1) or 0.0:.1f}"  # `or` turns -0.0 into 0.0


def interval_text(iv: Interval, tex: bool = False, signed: bool = False, bare: bool = False) -> str:
    """`mean [lo, hi]` in %; a degenerate interval says why it has no width (or nothing when `bare`)."""
    if not iv.finite:
        return "--" if tex else "—"
    mean = ("+" if signed and iv.mean > 0 else "") + pct(iv.mean)
    if iv.degenerate:
        if bare:
            return mean
        why = "single run" if iv.n <= 1 and not iv.items else "no spread"
        return f"{mean} ({why})"
    text = f"{mean} [{pct(iv.lo)}, {pct(iv.hi)}]"
    return f"${mean}\\,[{pct(iv.lo)}, {pct(iv.hi)}]$" if tex else text


def cell_text(cell: Cell, tex: bool = False) -> str:
    if isinstance(cell, Interval):
        return interval_text(cell, tex)
    if isinstance(cell, tuple):
        return " / ".join(cell_text(c, tex) for c in cell)
    return str(cell)


def _finite(x: float) -> bool:
    return bool(np.isfinite(x))


# ---- Markdown -----------------------------------------------------------------------------------
def md_table(table: Table) -> str:
    rows = [table.header] + [[cell_text(c) for c in row] for row in table.rows]
    esc = [[c.replace("|", "\\|") for c in row] for row in rows]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "|".join(["---"] * len(table.header)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in esc[1:]]
    return "\n".join(lines)


def markdown(sections: list[Section]) -> str:
    out: list[str] = []
    for s in sections:
        out += ["#" * s.level + " " + s.title, ""]
        if s.bullets:
            out += [f"- {b}" for b in s.bullets] + [""]
        for paragraph in s.text:
            out += [paragraph, ""]
        for t in s.tables:
            if t.caption:
                out += [f"**{t.caption}**", ""]
            out += [md_table(t), ""]
        for note in s.notes:
            out += [note, ""]
        out += [f"![{caption}]({path.name})" for path, caption in s.figures]
        if s.figures:
            out.append("")
    return "\n".join(out)


# ---- LaTeX --------------------------------------------------------------------------------------
def _tex_escape(text: str) -> str:
    return re.sub(r"([_%&#{}])", r"\\\1", text)


def tex_table(table: Table) -> str:
    cols = "l" + "r" * (len(table.header) - 1)

    def fmt(c: str) -> str:  # cells already holding math ($...$) are kept; plain text is escaped
        return c if "$" in c else _tex_escape(c.replace("—", "--"))

    header = table.tex_header or table.header
    caption = table.tex_caption or _tex_escape(table.caption)
    lines = [
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{caption}}}",
        f"\\begin{{tabular}}{{{cols}}}",
        "\\toprule",
        " & ".join(fmt(h) for h in header) + " \\\\",
        "\\midrule",
    ]
    for k, row in enumerate(table.rows):
        lines.append(" & ".join(fmt(cell_text(c, tex=True)) for c in row) + " \\\\")
        if k == 0 and table.first_row_apart:
            lines.append("\\midrule")  # the base model row stands apart, as in the paper
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(lines)


def latex(sections: list[Section]) -> str:
    out = ["% generated by `harness report`; needs \\usepackage{booktabs}", ""]
    out += [tex_table(t) for s in sections for t in s.tables if t.latex]
    return "\n".join(out)


# ---- HTML ---------------------------------------------------------------------------------------
def html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell_text(c))}</td>" for c in row) + "</tr>" for row in table.rows
    )
    caption = f"<caption>{html.escape(table.caption)}</caption>" if table.caption else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_page(title: str, sections: list[Section]) -> str:
    body: list[str] = []
    for s in sections:
        body.append(f"<h{s.level}>{html.escape(s.title)}</h{s.level}>")
        if s.bullets:
            body.append("<ul>" + "".join(f"<li>{html.escape(b)}</li>" for b in s.bullets) + "</ul>")
        body += [f"<p>{html.escape(p)}</p>" for p in s.text]
        body += [html_table(t) for t in s.tables]
        body += [f"<p>{html.escape(n)}</p>" for n in s.notes]
        for path, caption in s.figures:
            data = base64.b64encode(path.read_bytes()).decode()
            body.append(
                f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
        if s.html_extra:
            body.append(s.html_extra)
    return _HTML.format(title=html.escape(title), body="\n".join(body))


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}: continual-learning report</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
caption {{ text-align: left; color: #555; padding-bottom: 0.3em; }}
th, td {{ border-top: 1px solid #ccc; border-bottom: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
thead th {{ border-bottom: 2px solid #444; }}
img {{ max-width: 100%; }} figure {{ margin: 1.5em 0; }} figcaption {{ color: #555; }}
details {{ margin: 0.3em 0; }} pre {{ white-space: pre-wrap; background: #f6f6f6; padding: 0.4em; margin: 0.2em 0; }}
.ok {{ color: #17692b; }} .bad {{ color: #a01818; }}
</style></head><body>
{body}
</body></html>
"""
