"""What a `harness run` session shows around its runs: a quiet console per job, the job's place in the
sweep, and a closing summary (the summary table, where the report is, the command that reproduces it).

The CLI calls these; they hold no Hydra state of their own, so the tests call them directly.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from harness.config import Config, results_path
from harness.console import quiet_console
from harness.run.progress import set_sweep

VERBOSE_FLAGS = ("-v", "--verbose")


def verbose_flag(argv: list[str]) -> list[str]:
    """`-v` anywhere on the command line is the override `harness.verbose=true`."""
    if not any(a in VERBOSE_FLAGS for a in argv):
        return argv
    return [a for a in argv if a not in VERBOSE_FLAGS] + ["harness.verbose=true"]


def console_log(cfg: Config | DictConfig) -> Path:
    """Where third-party log lines go while the console is quiet (harness.console): beside Hydra's run
    folders (git-ignored), one file per experiment, appended."""
    return results_path(cfg) / "runs" / "logs" / f"{cfg.experiment_name}.log"


def sweep_size(overrides: list[str], params: Any) -> int:
    """How many jobs a basic sweep runs: the command line's sweeps over the config's `hydra.sweeper.params`
    (an experiment's own sweep, e.g. experiment=demo), the command line winning for a key in both."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    merged = {k: f"{k}={v}" for k, v in (params or {}).items()}
    merged.update({o.split("=", 1)[0]: o for o in overrides if "=" in o})
    parsed = OverridesParser.create().parse_overrides(list(merged.values()))
    return sum(len(batch) for batch in BasicSweeper.split_arguments(parsed, None))


@contextmanager
def job_console(cfg: Config | DictConfig, index: int, total: int) -> Iterator[None]:
    """The console of job `index` of `total`: its place for the progress line, third-party output in the
    log file (said once, at the first job), everything on the terminal with `harness.verbose`."""
    set_sweep(index, total)
    log_file = console_log(cfg)
    if index == 1 and not cfg.harness.verbose:
        print(f"third-party log lines: {log_file} (`harness run -v` shows them here)", flush=True)
    with quiet_console(log_file, cfg.harness.verbose):
        yield


def summary_tables(markdown: str) -> str:
    """The summary tables of summary.md (the ones whose rows are methods), with their stream headings."""
    out: list[str] = []
    for block in re.split(r"\n(?=## )", markdown):
        heading = block.splitlines()[0] if block.startswith("## ") else ""
        table = re.search(r"^\| Method \|.*?(?=\n\n|\n(?!\|)|\Z)", block, re.S | re.M)
        if table:
            out += [heading, table.group(0), ""] if heading else [table.group(0), ""]
    return "\n".join(out).strip()


def closing_summary(cfg: Config | DictConfig, argv: list[str]) -> None:
    """Write the report of the experiment and print its summary table, where report.html is and the
    command that reproduces the run. A report that cannot be written says why in one line."""
    from harness.methods import display_name  # lazy: the report's method display names
    from harness.report.write import write_report  # lazy: plots and statistics load only here

    try:
        with quiet_console(console_log(cfg), cfg.harness.verbose):
            out = write_report(cfg, display_name)
    except ValueError as err:  # e.g. no complete run yet
        print(f"no report: {err}", file=sys.stderr)
        return
    print("\n" + summary_tables((out / "summary.md").read_text()))
    print(f"\nreport: {out / 'report.html'}")
    print(f"reproduce: harness run {shlex.join(argv)}".rstrip(), flush=True)
