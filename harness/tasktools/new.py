"""The command line of `harness tasks new` (the options, their parsing and the command itself); the
building is harness.tasktools.builder, the reading of sources harness.tasktools.sources."""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from harness import scorers
from harness.arguments import at_least
from harness.tasks.spec import TEACHER_TEMPLATES
from harness.tasktools.builder import (
    CATEGORIES,
    DEFAULT_UNTIL,
    TaskSettings,
    build,
    check_name,
    check_scorer_options,
)
from harness.tasktools.paper_data import ADAPTERS
from harness.tasktools.sources import BuildError, columns_adapter, select

# --- command line ----------------------------------------------------------------------------------------


def _option_value(text: str) -> Any:
    """Scorer option values: integers, floats and true/false are typed; anything else stays text."""
    if re.fullmatch(r"[-+]?\d+", text):
        return int(text)
    if re.fullmatch(r"[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?", text):
        return float(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def parse_options(pairs: list[str]) -> dict[str, Any]:
    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise BuildError(
                f"--scorer-option {pair!r}: expected KEY=VALUE, e.g. rel_tol=0.01 or pattern='Answer: (.+)'"
            )
        key, value = pair.split("=", 1)
        options[key.strip()] = _option_value(value)
    return options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="task name (also its lm-eval task name): letters, digits, _")
    _source_arguments(parser)
    _column_arguments(parser)
    _task_arguments(parser)
    _output_arguments(parser)


def _source_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("source")
    src.add_argument(
        "--from", dest="source", help="JSON/JSONL/CSV/TSV/parquet file, save_to_disk folder, or hub id"
    )
    src.add_argument("--config", help="hub data set configuration")
    src.add_argument(
        "--split", help="split of --from that gives the train items (default: train, or the only one)"
    )
    src.add_argument("--eval-from", dest="eval_source", help="a second source for the eval items")
    src.add_argument("--eval-config", help="configuration of --eval-from")
    src.add_argument(
        "--eval-split", help="existing split for the eval items (of --eval-from if given, else --from)"
    )
    src.add_argument(
        "--eval-fraction",
        type=float,
        default=0.2,
        help="without an eval split: this seeded random share of the rows is held out (default 0.2)",
    )
    src.add_argument("--seed", type=at_least(0), default=0)
    src.add_argument("--limit", type=at_least(1), help="at most N train items")
    src.add_argument("--eval-limit", type=at_least(1), help="at most N eval items")
    src.add_argument(
        "--dedupe", action="store_true", help="drop rows whose prompt repeats (case/space-insensitive)"
    )
    src.add_argument(
        "--adapter",
        default="columns",
        choices=["columns", *ADAPTERS],
        help="columns: map columns below; others: the SDFT paper's data sets (harness.tasktools.paper_data)",
    )


def _column_arguments(parser: argparse.ArgumentParser) -> None:
    cols = parser.add_argument_group(
        "column mapping (a column name, or a template like '{question}\\n{choices:letters}')"
    )
    cols.add_argument("--prompt", default="prompt")
    cols.add_argument("--demonstration", default="demonstration")
    cols.add_argument(
        "--answer", default=None, help="what the scorer compares with (default: the demonstration)"
    )
    cols.add_argument("--privileged", default=None, help="teacher-only context (optional)")


def _task_arguments(parser: argparse.ArgumentParser) -> None:
    task = parser.add_argument_group("task")
    task.add_argument("--scorer", default=None, help=f"one of {', '.join(scorers.SCORERS)} (default: exact)")
    task.add_argument(
        "--scorer-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="e.g. rel_tol=0.01, pattern='Answer: (.+)', letters=ABCD (repeatable)",
    )
    task.add_argument("--category", default="skill", choices=CATEGORIES)
    task.add_argument("--description", default="")
    task.add_argument(
        "--teacher-template", default=None, help=f"{', '.join(TEACHER_TEMPLATES)} or a format string"
    )
    task.add_argument("--skip-tokens", type=at_least(0), default=None)
    task.add_argument(
        "--max-new-tokens",
        type=at_least(1),
        default=None,
        help="rollout length (default: from the demonstrations)",
    )
    task.add_argument("--eval-max-gen-toks", type=at_least(1), default=None)
    task.add_argument(
        "--until", action="append", default=None, help="stop string for evaluation (repeatable)"
    )


def _output_arguments(parser: argparse.ArgumentParser) -> None:
    out = parser.add_argument_group("output")
    out.add_argument("--out", default=None, help="folder to write (default: ./NAME)")
    out.add_argument("--force", action="store_true", help="overwrite a non-empty --out folder")
    out.add_argument(
        "--calibrate",
        type=at_least(0),
        default=0,
        metavar="N",
        help="also measure base and in-context greedy scores on N eval items (loads --model: slow)",
    )
    out.add_argument(
        "--model", default="smollm2-135m-instruct", help="model for --calibrate and token lengths"
    )


def cmd_new(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    """`harness tasks new`: read, map, split, write, validate (and calibrate); 0 when the folder is valid."""

    check_name(args.name)
    if args.adapter == "columns":  # an adapter brings its own scorer: its options are checked with them
        check_scorer_options(args.scorer or "exact", parse_options(args.scorer_option))
    folder = Path(args.out or args.name).expanduser().resolve()
    if args.adapter != "columns":
        built = ADAPTERS[args.adapter](args)
    else:
        if not args.source:
            raise BuildError("--from SOURCE is required (a file, a save_to_disk folder or a hub id)")
        built = columns_adapter(args)
    settings = TaskSettings(
        name=args.name,
        category=args.category,
        description=args.description or built.description,
        scorer=args.scorer or built.scorer,
        scorer_options={**built.scorer_options, **parse_options(args.scorer_option)},
        teacher_template=args.teacher_template or built.teacher_template,
        skip_tokens=args.skip_tokens,
        max_new_tokens=args.max_new_tokens,
        eval_max_gen_toks=args.eval_max_gen_toks,
        until=args.until or list(DEFAULT_UNTIL),
    )
    selection = select(
        built.train, built.eval, args.eval_fraction, args.seed, args.limit, args.eval_limit, args.dedupe
    )
    tokenizer = _tokenizer(args.model)
    command = "harness tasks new " + " ".join(shlex.quote(a) for a in argv) if argv else None
    problems = build(
        folder,
        settings,
        selection,
        built.source_lines,
        command,
        tokenizer,
        args.calibrate,
        args.model,
        args.force,
    )
    print(
        f"wrote {folder}: {len(selection.train)} train, {len(selection.eval)} eval items; scorer {settings.scorer}"
    )
    for note in selection.notes:
        print(f"  note: {note}")
    if problems:
        print(f"FAIL {folder}: {len(problems)} problem(s) (also in its README):", file=sys.stderr)
        for p in problems[:20]:
            print(f"  {p}", file=sys.stderr)
        return 1
    print(f"ok   {folder} is valid; run it with: harness run stream.tasks=[{folder}]")
    return 0


def _tokenizer(model: str) -> Any | None:
    """The model's tokenizer for generation lengths; a character estimate when it cannot be loaded."""
    try:
        from harness.models import load_tokenizer  # lazy: loads torch only when needed

        return load_tokenizer(model)
    except Exception as err:  # offline hub id, missing files: lengths fall back to an estimate
        print(
            f"  note: tokenizer of {model!r} not available ({type(err).__name__}); lengths estimated from "
            "characters",
            file=sys.stderr,
        )
        return None
