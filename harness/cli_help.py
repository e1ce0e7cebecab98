"""The help texts of `harness` and its commands (printed by harness.cli)."""

TOP_HELP = """usage: harness <command> [args]

Continual-learning experiments on language models: teach a stream of tasks with SFT, SDFT and friends,
evaluate every task after every stage, compare forgetting.

commands:
  run      run an experiment: harness run [hydra overrides] (-m for sweeps)
  report   tables and plots from MLflow: harness report [experiment=NAME] [results_dir=DIR]
  power    base/chance and power tables of a results folder: harness power FOLDER
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
  harness run -v experiment=smoke                     # library log lines on the console too (else a log file)
  harness run model=hf model.name=Qwen/Qwen2.5-7B-Instruct trainer=paper
Hydra's own help: harness run --hydra-help
"""

REPORT_HELP = """usage: harness report [experiment=NAME] [results_dir=DIR] [tracking_uri=URI]

       harness report --folder DIR [--label GROUP=TEXT ...]

Read the runs of one MLflow experiment and write tables (Markdown, CSV, LaTeX), plots and report.html into
<results_dir>/<experiment>/. Reads MLflow only, so runs from a cluster and a laptop mix.
--folder rewrites the report of a results folder from its own files (runs.csv, items.csv.gz, details.csv),
without the MLflow store: new labels (--label sft=Baseline, or by override string), the current statistics.
"""

TASKS_HELP = """usage: harness tasks list | show NAME [-n N] | validate [PATH ...] | probe NAME|PATH [--template T]... [-n N]
       harness tasks new NAME --from SOURCE [--prompt COL] [--demonstration COL] [--answer COL] [--scorer S] ...

  list       built-in tasks: name, category, sizes, metric
  show       a few rendered student and teacher prompts of one task
  validate   schema of every line (file:line errors), train/eval overlap, the lm-eval YAML loads, the scorer runs
  probe      rank teacher templates for a task: how much likelier the teacher finds the demonstration than
             the template's own text (teacher forcing on N train items, the embedded model; seconds)
  new        build a task folder from your data (JSON/JSONL/CSV/parquet file, save_to_disk folder, hub id)
             or the SDFT paper's (--adapter); validates it; `harness tasks new --help` for the options
"""

BENCH_HELP = """usage: harness bench step [--reps N] [--precisions float32,bfloat16] [--rollouts 1,4] [--out DIR]
       harness bench parallel [--processes N] [--modes ddp,fsdp] [--out DIR]

  step       median step time and peak memory of SFT, our SDFT and TRL's SDFTTrainer on one fixed batch, per
             precision and rollout count, plus the decode step against its weight-streaming floor
  parallel   step time and peak memory of 1 process vs N processes (DDP replicas, FSDP shards) on the
             same global batch (`ddp` is an alias)
"""


POWER_HELP = """usage: harness power FOLDER

Print, for a folder written by `harness report` (its runs.csv and items.csv.gz), each stream's base model
and chance levels and its power table: every headline figure's and paired comparison's half-width now, its
variance components (seed, item, seed x item) and the seeds x items that would bring it to +-5 and +-2
points. The same tables are sections of `harness report`.
"""
