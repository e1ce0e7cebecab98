"""Command line: `harness run | report | tasks | bench`. Config comes from Hydra (`conf/`), overrides as usual."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

TOP_HELP = """usage: harness <command> [args]

Continual-learning experiments on language models: teach a stream of tasks with SFT, SDFT and friends,
evaluate every task after every stage, compare forgetting.

commands:
  run      run an experiment: harness run [hydra overrides] (-m for sweeps)
  report   tables and plots from MLflow: harness report [experiment=NAME] [results_dir=DIR]
  tasks    built-in tasks: harness tasks list | show NAME | validate [PATH...]
  bench    benchmarks: harness bench step

`harness <command> --help` for details.
"""

RUN_HELP = """usage: harness run [-m] [KEY=VALUE ...]

Compose conf/config.yaml with Hydra overrides and run the continual-learning loop: stage 0 evaluates the
untouched model; each stream task is then trained with the chosen method and every task and the general
suite are evaluated. Results go to MLflow under results_dir (SQLite by default).

config groups (pick one option each, e.g. method=sft):
{groups}
examples:
  harness run experiment=smoke
  harness run method=sft stream=reverse seed=1
  harness run -m method=sft,sdft seed=0,1,2          # a sweep: one parent run per combination
  harness run print_config=true                       # show the resolved config and exit
  harness run model=hf model.name=Qwen/Qwen2.5-7B-Instruct trainer=paper
Hydra's own help: harness run --hydra-help
"""

REPORT_HELP = """usage: harness report [experiment=NAME] [results_dir=DIR] [tracking_uri=URI]

Read the runs of one MLflow experiment and write tables (Markdown, CSV, LaTeX), plots and report.html into
<results_dir>/<experiment>/. Reads MLflow only, so runs from a cluster and a laptop mix.
"""

TASKS_HELP = """usage: harness tasks list | show NAME [-n N] | validate [PATH ...]
       harness tasks new NAME --from SOURCE [--prompt COL] [--demonstration COL] [--answer COL] [--scorer S] ...

  list       built-in tasks: name, category, sizes, metric
  show       a few rendered student and teacher prompts of one task
  validate   schema of every line (file:line errors), train/eval overlap, the lm-eval YAML loads, the scorer runs
  new        build a task folder from your data (JSON/JSONL/CSV/parquet file, save_to_disk folder, hub id)
             or the SDFT paper's (--adapter); validates it; `harness tasks new --help` for the options
"""

BENCH_HELP = """usage: harness bench step [--reps N] [--out DIR] | parallel [--processes N] [--modes ddp,fsdp] [--out DIR]

  step       median step time and peak memory of SFT, our SDFT and TRL's SDFTTrainer on one fixed batch
  parallel   step time and peak memory of 1 process vs N processes (DDP replicas, FSDP shards) on the
             same global batch (`ddp` is an alias)
"""


NOT_HYDRA_GROUPS = ("accelerate",)  # conf/accelerate holds accelerate's own config files

# Known, user-fixable problems (bad config, bad task data, unreachable server): one clear line, no traceback.
USER_ERRORS = (ValueError, FileNotFoundError, ModuleNotFoundError, ConnectionError)


def _groups_help() -> str:
    lines = []
    for group in sorted(p for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in NOT_HYDRA_GROUPS):
        options = sorted(f.stem for f in group.glob("*.yaml"))
        lines.append(f"  {group.name:<11} {', '.join(options)}")
    return "\n".join(lines) + "\n"


def compose(overrides: list[str]):
    """The resolved config for `overrides`, validated (used by report, tasks, tests)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from harness.config import register_configs, validate

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides)
    validate(cfg)
    return cfg


def _check_results_dir(argv: list[str]) -> None:
    """Hydra creates its output folder under results_dir before our code runs and fails there with a
    traceback; check the folder first so that an unwritable one gets one clear line (the loop checks again)."""
    values = [a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith("results_dir=")]
    if not values or "," in values[-1]:  # the default, or a sweep over folders: left to the loop
        return
    from harness.config import ensure_writable

    ensure_writable(Path(values[-1]).expanduser().resolve())


def _run(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(RUN_HELP.format(groups=_groups_help()))
        return 0
    argv = ["--help" if a == "--hydra-help" else a for a in argv]
    # Hydra's argparse takes -m only before the overrides (`a=1 -m b=1,2` fails); let it go anywhere.
    argv = sorted(argv, key=lambda a: a not in ("-m", "--multirun"))
    _check_results_dir(argv)
    import hydra
    from omegaconf import DictConfig, OmegaConf

    from harness.config import register_configs, validate

    register_configs()

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        try:
            validate(cfg)
            if cfg.print_config:
                print(OmegaConf.to_yaml(cfg, resolve=True))
                return
            from harness.loop import run_experiment  # heavy (torch): not for print_config

            run_experiment(cfg)
        except Exception as err:
            from harness.loop import StageFailedError

            if not isinstance(err, (*USER_ERRORS, StageFailedError)):
                raise
            # Hydra would print its own traceback for any exception; a user-fixable problem gets one line.
            # SystemExit passes through Hydra (it catches Exception only) and stops a sweep like an error.
            print(f"harness run: error: {err}", file=sys.stderr)
            sys.exit(1)

    sys.argv = ["harness run", *argv]
    _main()
    return 0


def _report(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(REPORT_HELP)
        return 0
    from harness.report import write_report

    out = write_report(compose(argv))
    print(f"report written to {out}")
    return 0


def _tasks(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(TASKS_HELP)
        return 0
    from harness import task_tools

    parser = argparse.ArgumentParser(prog="harness tasks")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list")
    show = sub.add_parser("show")
    show.add_argument("name")
    show.add_argument("-n", type=int, default=2)
    val = sub.add_parser("validate")
    val.add_argument("paths", nargs="*")
    from harness.task_builder import add_arguments

    add_arguments(sub.add_parser("new", description="Build a task folder from a data set (harness.task_builder)."))
    args = parser.parse_args(argv)
    if args.cmd == "new":
        return task_tools.cmd_new(args, argv[1:])
    if args.cmd == "list":
        return task_tools.cmd_list()
    if args.cmd == "show":
        return task_tools.cmd_show(args.name, args.n)
    return task_tools.cmd_validate(args.paths)


def _bench(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(BENCH_HELP)
        return 0
    if argv[0] == "step":
        from harness.bench_step import main as bench_main
    elif argv[0] in ("parallel", "ddp"):
        from harness.bench_parallel import main as bench_main
    else:
        print(f"unknown benchmark {argv[0]!r}; available: step, parallel", file=sys.stderr)
        return 2
    return bench_main(argv[1:])


COMMANDS = {"run": _run, "report": _report, "tasks": _tasks, "bench": _bench}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(TOP_HELP)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}; valid: {', '.join(COMMANDS)}\n\n{TOP_HELP}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[command](rest) or 0
    except USER_ERRORS as err:  # known, user-fixable problems: one clear line instead of a traceback
        print(f"harness {command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
