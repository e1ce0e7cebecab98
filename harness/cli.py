"""Command line: `harness run | report | tasks | bench`. Config comes from Hydra (`conf/`), overrides as usual."""

from __future__ import annotations

import gc
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omegaconf import DictConfig

from harness.allocator import keep_freed_memory
from harness.cli_help import BENCH_HELP, POWER_HELP, REPORT_HELP, RUN_HELP, TASKS_HELP, TOP_HELP
from harness.config import CONF_DIR
from harness.run.preflight import NOT_HYDRA_GROUPS, USER_ERRORS, check_config_name
from harness.run.signals import (
    close_progress_bars,
    exit_code,
    signal_name,
    stop_on_signals,
)


def _groups_help() -> str:
    lines = []
    for group in sorted(p for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in NOT_HYDRA_GROUPS):
        options = sorted(f.stem for f in group.glob("*.yaml"))
        lines.append(f"  {group.name:<11} {', '.join(options)}")
    return "\n".join(lines) + "\n"


def compose(overrides: list[str], check: bool = True):
    """The resolved config for `overrides`, validated unless `check=False` (used by run, report, tasks, tests).

    Every mistake in the overrides or the composed config is a ValueError of one line: unknown keys and
    group options are caught before Hydra composes (harness.run.preflight.check_overrides); what Hydra itself
    refuses (a string where a number belongs) is cut to its first lines, without Hydra's many-line hints.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from harness.config import register_configs  # lazy: per command
    from harness.run.preflight import check_overrides, hydra_error_line, open_options  # lazy: per command
    from harness.run.validate import validate  # lazy: loads torch through the method registry

    overrides = open_options(overrides)
    check_overrides(overrides)
    register_configs()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise ValueError(hydra_error_line(err)) from None
    if check:
        validate(cfg)
    return cfg


def _check_results_dir(argv: list[str]) -> None:
    """Hydra creates its output folder under results_dir before our code runs and fails there with a
    traceback (an empty value puts it at the filesystem root); check the folder first, creating nothing."""
    values = [a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith("results_dir=")]
    if not values:  # the default
        return
    from harness.run.preflight import check_results_dir  # lazy: per command

    for value in values[-1].split(",") if "," in values[-1] else values[-1:]:  # a sweep: every folder
        check_results_dir(value)


MAX_PRECHECKED_JOBS = (
    64  # sweep jobs composed up front; a larger sweep's later jobs are checked as they start
)


def _sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The override list of every job of a basic sweep (`a=1,2 b=x,y`: four jobs), as Hydra expands it."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if any(o.lstrip("+").startswith("hydra/sweeper=") for o in overrides):
        return []  # another sweeper (optuna, ...) expands its own way
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch][
        :MAX_PRECHECKED_JOBS
    ]


def _swept_keys(overrides: list[str]) -> set[str]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("-")])
    except Exception:  # Hydra reports bad syntax itself
        return set()
    return {o.input_line.split("=", 1)[0] for o in parsed if o.is_sweep_override()}


def _remove_output(folder: Path, results_dir: Path) -> None:
    """Remove Hydra's output folder of a job that never started, and its parents up to results_dir while
    they are empty: a mistake leaves nothing behind."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    parent = folder.parent
    while parent != results_dir and results_dir in parent.parents:
        try:
            parent.rmdir()
        except OSError:  # not empty: other runs live there
            break
        parent = parent.parent


def _run(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(RUN_HELP.format(groups=_groups_help()))
        return 0
    from harness.session import verbose_flag  # lazy: per command

    typed_argv, argv = argv, verbose_flag(argv)
    argv = ["--help" if a == "--hydra-help" else a for a in argv]
    # Hydra's argparse takes -m only before the overrides (`a=1 -m b=1,2` fails); let it go anywhere.
    argv = sorted(argv, key=lambda a: a not in ("-m", "--multirun"))
    multirun = any(a in ("-m", "--multirun") for a in argv)
    overrides = [a for a in argv if not a.startswith("-")]
    _check_results_dir(argv)
    check_config_name(argv)
    if not any(
        a.startswith("-") and a not in ("-m", "--multirun") for a in argv
    ):  # Hydra's flags: Hydra's way
        if _check_before_hydra(overrides, multirun):
            return 0
    return _run_jobs(argv, overrides, multirun, typed_argv)


def _check_before_hydra(overrides: list[str], multirun: bool) -> bool:
    """Everything that can be checked, before Hydra creates an output folder. A sweep's command line is
    checked for every job; each job's config and tasks are checked when it starts, so that one job's mistake
    does not stop the others. True when the command is done (print_config)."""
    from omegaconf import OmegaConf

    for job in _sweep_jobs(overrides) if multirun else [overrides]:
        cfg = compose(job, check=not multirun)
    if multirun:
        return False
    if cfg.print_config:
        print(OmegaConf.to_yaml(cfg, resolve=True))
        return True
    from harness.run.preflight import check_run  # lazy: per command

    check_run(cfg)
    return False


def _run_jobs(argv: list[str], overrides: list[str], multirun: bool, typed_argv: list[str]) -> int:
    """Hydra runs the job (or each job of a sweep); a user-fixable failure is one line, and a sweep goes on."""
    import hydra

    from harness.config import register_configs  # lazy: per command
    from harness.run.preflight import open_options  # lazy: per command
    from harness.session import closing_summary  # lazy: per command

    register_configs()
    failures: list[str] = []
    swept = _swept_keys(overrides) if multirun else set()  # what tells one job from another, for its label
    sweep: dict[str, Any] = {"jobs": 0, "kept": 0, "dir": None, "results": None, "cfg": None, "here": True}

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        _job(cfg, swept, sweep, failures, overrides)

    sys.argv = ["harness run", *open_options(argv)]
    _main()
    if sweep["kept"] and sweep["here"] and sweep["cfg"].report.after_run:
        closing_summary(sweep["cfg"], typed_argv)  # the summary table, report.html, the command
    if failures:
        if sweep["dir"] and not sweep["kept"]:  # every job failed before it started: nothing to keep
            _remove_output(Path(str(sweep["dir"])).resolve(), sweep["results"])
        print(f"harness run: {len(failures)} of {sweep['jobs']} sweep job(s) failed:", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


def _job(
    cfg: DictConfig, swept: set[str], sweep: dict[str, Any], failures: list[str], overrides: list[str]
) -> None:
    """One Hydra job: the experiment, or print_config; a failure that left nothing behind removes its folder."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from harness.config import results_path  # lazy: per command
    from harness.session import job_console, sweep_size  # lazy: per command

    hc = HydraConfig.get()
    output = Path(hc.runtime.output_dir)
    # jobs of the basic launcher run here, one after the other; other launchers (submitit) run them in
    # parallel elsewhere and report a failed job themselves
    in_process = hc.mode == RunMode.MULTIRUN and str(hc.launcher.get("_target_", "")).endswith(
        "BasicLauncher"
    )
    sweep["jobs"] += 1
    sweep["dir"] = hc.sweep.dir if hc.mode == RunMode.MULTIRUN else None
    sweep["results"] = results_path(cfg)
    try:
        if cfg.print_config:
            print(OmegaConf.to_yaml(cfg, resolve=True))
            _remove_output(output, results_path(cfg))
            return
        from harness.run.loop import run_experiment  # lazy: per command

        sweep["cfg"], sweep["here"] = cfg, in_process or hc.mode != RunMode.MULTIRUN
        total = sweep_size(overrides, hc.sweeper.get("params")) if in_process else 1
        with job_console(cfg, hc.job.num + 1 if in_process else 1, total):
            run_experiment(cfg)
        sweep["kept"] += 1
    except Exception as err:
        from harness.run.loop import StageFailedError  # lazy: per command

        if getattr(err, "parent_run_id", None) is None:
            _remove_output(output, results_path(cfg))  # nothing ran: no output folder
        else:
            sweep["kept"] += 1
        if not isinstance(err, (*USER_ERRORS, StageFailedError)):
            raise
        # Hydra would print its own traceback for any exception; a user-fixable problem gets one line.
        if in_process:
            label = ",".join(o for o in hc.overrides.task if o.split("=", 1)[0] in swept) or "defaults"
            print(f"harness run: job {hc.job.num} ({label}): error: {err}", file=sys.stderr)
            failures.append(f"job {hc.job.num} ({label}): {err}")
            return  # the sweep goes on with the next job
        # SystemExit passes through Hydra (it catches Exception only)
        print(f"harness run: error: {err}", file=sys.stderr)
        sys.exit(1)


def _report(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(REPORT_HELP)
        return 0
    from harness.console import quiet_console  # lazy: per command
    from harness.methods import display_name  # lazy: per command (the report's method display names)
    from harness.report.write import write_report  # lazy: per command
    from harness.session import console_log, verbose_flag  # lazy: per command

    if any(a == "--folder" or a.startswith("--folder=") for a in argv):
        return _report_folder(argv)
    cfg = compose(verbose_flag(argv))
    with quiet_console(console_log(cfg), cfg.harness.verbose):
        out = write_report(cfg, display_name)
    print(f"report written to {out}")
    return 0


def _report_folder(argv: list[str]) -> int:
    """`harness report --folder DIR [--label GROUP=TEXT ...]`: the report rewritten from a results folder."""
    from harness.methods import display_name  # lazy: per command
    from harness.report.write import folder_command  # lazy: per command

    print(f"report written to {folder_command(argv, display_name, REPORT_HELP)}")
    return 0


def _power(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or len(argv) > 1:
        print(POWER_HELP)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    from harness.report.folder import power_text  # lazy: per command

    print(power_text(Path(argv[0])), end="")
    return 0


def _tasks(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(TASKS_HELP)
        return 0
    from harness.arguments import OneLineParser, at_least  # lazy: per command
    from harness.tasktools import commands as task_tools  # lazy: per command

    parser = OneLineParser(prog="harness tasks")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list")
    show = sub.add_parser("show")
    show.add_argument("name")
    show.add_argument("-n", type=at_least(1), default=2)
    val = sub.add_parser("validate")
    val.add_argument("paths", nargs="*")
    probe = sub.add_parser("probe")
    probe.add_argument("name")
    probe.add_argument("--template", action="append", help="a template name or format string (repeatable)")
    probe.add_argument("-n", type=at_least(1), default=6)
    from harness.tasktools.new import add_arguments  # lazy: per command

    add_arguments(
        sub.add_parser("new", description="Build a task folder from a data set (harness.tasktools.builder).")
    )
    args = parser.parse_args(argv)
    if args.cmd == "new":
        from harness.tasktools.new import cmd_new  # lazy: loads transformers for the tokenizer

        return cmd_new(args, argv[1:])
    if args.cmd == "probe":
        return task_tools.cmd_probe(args.name, args.template, args.n)
    if args.cmd == "list":
        return task_tools.cmd_list()
    if args.cmd == "show":
        return task_tools.cmd_show(args.name, args.n)
    return task_tools.cmd_validate(args.paths)


# The benchmarks' count options and their smallest valid value (argparse checks only that they are integers).
BENCH_COUNTS = {
    "--reps": 1,
    "--warmup": 0,
    "--processes": 1,
    "--steps": 2,
    "--batch": 1,
    "--new-tokens": 1,
    "--threads": 1,
}


def _check_bench_counts(argv: list[str]) -> None:
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag not in BENCH_COUNTS:
            continue
        text = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
        try:
            number = int(text)
        except ValueError:
            continue  # argparse reports what is not an integer
        if number < BENCH_COUNTS[flag]:
            raise ValueError(f"{flag}={number}: must be >= {BENCH_COUNTS[flag]}")


def _bench(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(BENCH_HELP)
        return 0
    _check_bench_counts(argv[1:])
    if argv[0] == "step":
        from harness.bench.step import main as bench_main  # lazy: per command
    elif argv[0] in ("parallel", "ddp"):
        from harness.bench.parallel import main as bench_main  # lazy: per command
    else:
        print(
            f"harness bench: error: unknown benchmark {argv[0]!r}; available: step, parallel", file=sys.stderr
        )
        return 2
    return bench_main(argv[1:])


COMMANDS = {"run": _run, "report": _report, "power": _power, "tasks": _tasks, "bench": _bench}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(TOP_HELP)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}; valid: {', '.join(COMMANDS)}\n\n{TOP_HELP}", file=sys.stderr)
        return 2
    keep_freed_memory()  # pages faulted in once per process, not once per step (harness.allocator)
    try:
        with stop_on_signals():  # SIGTERM too: the runs are marked KILLED, not left RUNNING
            return COMMANDS[command](rest) or 0
    except USER_ERRORS as err:  # known, user-fixable problems: one clear line instead of a traceback
        print(f"harness {command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: one line, and how to go on
        again = (
            f"; finished stages are kept, resume with: harness run {shlex.join(rest)}"
            if command == "run"
            else ""
        )
        close_progress_bars()
        print(f"harness {command}: stopped by {signal_name(err)}{again}", file=sys.stderr)
        # The interpreter's last garbage collection walks every object lm-eval and torch made (10+ s on a
        # busy machine) before the process can end; a stopped process should end at once.
        gc.freeze()
        return exit_code(err)


if __name__ == "__main__":
    sys.exit(main())
