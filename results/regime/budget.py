"""Budget curves (issue 26): one stage trained far past the stream budget, scored every k optimizer steps.

    PYTHONPATH=$PWD nice -n 19 python results/regime/budget.py --task caps --method sft [--lr 2e-4]
    PYTHONPATH=$PWD nice -n 19 python results/regime/budget.py --task caps --method sdft

Settings come from `conf/experiment/budget.yaml` (composed like `harness run experiment=budget`), so the
steps, batch, evaluation cadence and sizes are the experiment's; the command line only picks the task, the
method preset (sft | sdft | sdft_anchor = sdft with method.distill.sft_weight=1.0 | sdfb | pbsd | opd), the learning rate and
the seed (`--tag NAME --extra KEY=VALUE` runs a variant, e.g. a rollout temperature, under its own name;
`--save DIR` keeps the trained weights as a stage checkpoint, e.g. the SFT model that `opd` uses as teacher).
Each run writes `runs/<name>.jsonl`, one line per event, flushed as it happens:
- `eval`: the step, the greedy per-item scores on the first `eval.every_steps_items` eval items, and the
  training CPU-seconds and wall-seconds spent up to that step (evaluation time excluded);
- `general`: the general suite (lm-eval, `eval.limit` items per task) at the steps of `--general-at`;
- `train`: every optimizer step's stats (loss, KL, clipped fraction, step seconds);
- `done`: the total wall and CPU time of the run.
A run whose file ends with `done` is skipped when the command is repeated; an unfinished one starts over
(its old file is kept as `<name>.partial.jsonl`, so the points it reached are not lost). `plot.py` draws
the curves.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
PRESETS = {
    "sft": ("sft", []),
    "sdft": ("sdft", []),
    "sdft_anchor": ("sdft", ["method.distill.sft_weight=1.0"]),
    # SDFT's family (docs/family.md): 4 rollouts per prompt each, so 64 steps give SDFT's 1,024 rollouts
    "sdfb": ("sdfb", []),
    "pbsd": ("pbsd", []),
    # an external teacher: pass it with --extra method.options.teacher_model=PATH (e.g. a --save folder)
    "opd": ("opd", []),
}
GENERAL = ["general_mc", "general_ifeval", "general_arith"]


def run_name(args: argparse.Namespace) -> str:
    tag = f"_{args.tag}" if args.tag else ""
    return f"{args.task}_{args.method}_lr{args.lr}_s{args.seed}{tag}"


class Recorder:
    """Appends JSON lines to the run's file and keeps the training clocks (evaluation excluded)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.train_cpu = self.train_wall = 0.0
        self._cpu0, self._wall0 = time.process_time(), time.time()

    def pause(self) -> None:  # training time up to here counts; what follows (evaluation) does not
        self.train_cpu += time.process_time() - self._cpu0
        self.train_wall += time.time() - self._wall0

    def resume(self) -> None:
        self._cpu0, self._wall0 = time.process_time(), time.time()

    def write(self, kind: str, **row) -> None:
        row = {
            "kind": kind,
            **row,
            "train_cpu_s": round(self.train_cpu, 2),
            "train_wall_s": round(self.train_wall, 2),
        }
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


def finished(path: Path) -> bool:
    if not path.is_file():
        return False
    lines = path.read_text(encoding="utf-8").splitlines()
    return bool(lines) and json.loads(lines[-1]).get("kind") == "done"


def general_scores(model, tok, cfg, limit: int) -> dict[str, float]:
    from harness.eval.lmeval import evaluate
    from harness.eval.results import primary_metric
    from harness.tasks.spec import TASKS_ROOT

    res = evaluate(
        model, tok, GENERAL, [str(TASKS_ROOT)], limit=limit, batch_size=cfg.eval.batch_size, log_samples=0
    )
    return {n: primary_metric(res.metrics[n]) for n in GENERAL}


class OutOfTime(Exception):
    """Raised from on_step at the deadline, after the last point was evaluated."""


def make_hook(
    model, tok, spec, docs, cfg, rec: Recorder, general_at: set[int], general_limit: int, deadline: float
):
    """on_step: log the step's stats; every eval.every_steps steps score the fixed eval subset; at the deadline
    score the subset (and the general suite) at the current step and stop."""
    from harness.eval.scoring import greedy_scores

    every = cfg.eval.every_steps

    def evaluate_now(step: int) -> None:
        rec.pause()
        t0 = time.time()
        scores = greedy_scores(model, tok, spec, docs, mode="base", batch_size=cfg.eval.batch_size)
        rec.write(
            "eval",
            step=step,
            score=sum(scores) / len(scores),
            n=len(scores),
            scores=scores,
            eval_wall_s=round(time.time() - t0, 1),
        )
        logging.info("step %d: %.3f on %d items", step, sum(scores) / len(scores), len(scores))
        if step in general_at:
            rec.write(
                "general", step=step, limit=general_limit, **general_scores(model, tok, cfg, general_limit)
            )
        model.train()
        rec.resume()

    def on_step(step: int, record: dict[str, float]) -> None:
        rec.pause()
        rec.write("train", step=step, **{k: float(v) for k, v in record.items()})
        rec.resume()
        late = time.time() >= deadline
        if late:
            general_at.add(step)
        if step % every == 0 or late:
            evaluate_now(step)
        if late:
            raise OutOfTime(step)

    return on_step, evaluate_now


def deadline_ts(text: str) -> float:
    """Today's HH:MM UTC as a timestamp (infinity when empty)."""
    if not text:
        return float("inf")
    import datetime as dt

    hour, minute = (int(x) for x in text.split(":"))
    now = dt.datetime.now(dt.timezone.utc)
    return now.replace(hour=hour, minute=minute, second=0, microsecond=0).timestamp()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", required=True)
    ap.add_argument("--method", choices=sorted(PRESETS), required=True)
    ap.add_argument("--lr", default=None, help="default: the experiment's trainer.lr")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--general-at", default="", help="steps at which to run the general suite, e.g. 0,256")
    ap.add_argument(
        "--deadline", default="", help="UTC HH:MM: evaluate the current step (and the general suite) and stop"
    )
    ap.add_argument("--runs-dir", default=str(HERE / "runs"), help="where the run files go")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--extra", nargs="*", default=[], help="more config overrides")
    ap.add_argument("--tag", default="", help="suffix of the run's name, for a variant set by --extra")
    ap.add_argument(
        "--save", default="", help="folder for the trained weights (stage_1.safetensors), e.g. an OPD teacher"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    from harness.cli import compose
    from harness.methods import train_stage
    from harness.methods.base import StageContext
    from harness.models import load_model
    from harness.tasks.spec import load_train_items, resolve_task

    preset, extra = PRESETS[args.method]
    overrides = ["experiment=budget", f"method={preset}", f"seed={args.seed}", *extra, *args.extra]
    if args.lr:
        overrides.append(f"trainer.lr={args.lr}")
    cfg = compose(overrides)
    args.lr = args.lr or str(cfg.trainer.lr)
    out = Path(args.runs_dir) / f"{run_name(args)}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    if finished(out):
        logging.info("%s is finished; skipped", out)
        return
    if out.is_file():
        out.rename(out.with_suffix(".partial.jsonl"))
    spec = resolve_task(args.task)
    lines = spec.eval_file.read_text(encoding="utf-8").splitlines()
    docs = [json.loads(line) for line in lines if line.strip()][: cfg.eval.every_steps_items]
    model, tok = load_model(cfg.model)
    rec = Recorder(out)
    rec.write("config", overrides=overrides, task=args.task, method=args.method, lr=args.lr, seed=args.seed)
    general_at = {int(s) for s in args.general_at.split(",") if s}
    on_step, evaluate_now = make_hook(
        model, tok, spec, docs, cfg, rec, general_at, cfg.eval.limit, deadline_ts(args.deadline)
    )
    evaluate_now(0)
    torch.manual_seed(args.seed)
    wall0, cpu0 = time.time(), time.process_time()
    ctx = StageContext(stage=1, seed=args.seed, on_step=on_step)
    try:
        stats = train_stage(model, tok, load_train_items(spec), spec, cfg, ctx)
    except OutOfTime as stop:
        rec.write(
            "stopped",
            step=stop.args[0],
            wall_s=round(time.time() - wall0, 1),
            cpu_s=round(time.process_time() - cpu0, 1),
        )
        return
    last = len(stats.steps)
    if last % cfg.eval.every_steps:
        evaluate_now(last)
    if args.save:
        from harness.run.checkpoints import save_checkpoint

        saved = save_checkpoint(model, Path(args.save), stage=1, policy="last")
        rec.write("saved", path=str(saved))
    rec.write(
        "done",
        steps=last,
        wall_s=round(time.time() - wall0, 1),
        cpu_s=round(time.process_time() - cpu0, 1),
        summary={k: float(v) for k, v in stats.summary.items()},
    )


if __name__ == "__main__":
    main()
