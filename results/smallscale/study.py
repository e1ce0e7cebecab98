"""Equal-budget study: SFT vs paper SDFT vs SDFT with each remedy, on tooluse, one process.

Every setting starts from the same base weights, trains one stage on the same first `--items` tooluse train
items with the same seed, batch, learning rate and number of steps, and is evaluated greedily on the same
`--eval` tooluse eval items with the task's own scorer (harness.eval.scoring, the path the in-context score uses).
The base model and each teacher template's in-context score are evaluated once. Results: one JSON line per
setting in `results.jsonl` (summary stats, per-step stats, eval answers), appended as each setting ends.

    .venv/bin/python results/smallscale/study.py --out results/smallscale [--only NAME ...] [--general]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

SETTINGS: dict[str, tuple[str, list[str]]] = {
    # name: (method preset, extra overrides); every SDFT remedy alone on top of the `sdft` preset
    "sft": ("sft", []),
    "sdft_paper": ("sdft_paper", []),  # paper template, 3 skipped tokens, the task's 72-token rollouts
    "sdft": ("sdft", []),  # the task's settings: plain template, skip 0, 72 tokens
    "mask_clipped": ("sdft", ["method.distill.mask_clipped=true"]),
    "label_template": ("sdft", ["method.distill.template=label"]),
    "teacher_rollouts": ("sdft", ["method.distill.rollout_source=teacher"]),
    "sft_anchor": ("sdft", ["method.distill.sft_weight=1.0"]),
    "sft_warmup": ("sdft", ["method.distill.sft_warmup_steps=4"]),
    "temp_0.7": ("sdft", ["method.distill.sample_temperature=0.7"]),
}


class Collect(logging.Handler):
    """Keeps the sample rollouts the SDFT step logs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if "rollout (" in msg:
            self.lines.append(msg)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="results/smallscale")
    parser.add_argument("--only", nargs="*", help="settings to run (default: all)")
    parser.add_argument(
        "--extra", nargs="*", default=[], help="NAME=PRESET:override,override (a combination)"
    )
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", default="2e-4")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval", type=int, default=40)
    parser.add_argument("--general", action="store_true", help="also the general suite (lm-eval) per setting")
    args = parser.parse_args()
    torch.set_num_threads(2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    collect = Collect()
    logging.getLogger("harness").addHandler(collect)

    from harness.cli import compose
    from harness.eval.recitation import recitation_rate
    from harness.eval.scoring import greedy_responses, load_scorer
    from harness.methods import train_stage
    from harness.methods.base import StageContext
    from harness.models import load_model
    from harness.tasks.spec import TASKS_ROOT, TEACHER_TEMPLATES, load_train_items, resolve_task

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = dict(SETTINGS)
    for spec_text in args.extra:
        name, _, rest = spec_text.partition("=")
        preset, _, overrides = rest.partition(":")
        settings[name] = (preset, [o for o in overrides.split(",") if o])
    names = args.only or list(settings)
    common = [
        f"trainer.lr={args.lr}",
        f"trainer.batch_size={args.batch}",
        "trainer.epochs=2",
        f"trainer.max_train_items={args.items}",
        "trainer.warmup_steps=2",
        f"seed={args.seed}",
    ]
    spec = resolve_task("tooluse")
    docs = [json.loads(line) for line in spec.eval_file.read_text().splitlines() if line.strip()][: args.eval]
    scorer = load_scorer(spec)
    items = load_train_items(spec)
    cfg0 = compose(["method=sdft", *common])
    model, tok = load_model(cfg0.model)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}

    def evaluate_tooluse(mode: str = "base", template: str | None = None) -> tuple[float, list[str]]:
        responses = greedy_responses(model, tok, spec, docs, mode, template=template)
        return sum(scorer(r, d) for r, d in zip(responses, docs, strict=True)) / len(docs), responses

    def general() -> dict[str, float]:
        from harness.eval.lmeval import evaluate
        from harness.eval.results import primary_metric

        names_ = ["general_mc", "general_ifeval", "general_arith"]
        res = evaluate(model, tok, names_, [str(TASKS_ROOT)], limit=args.eval, batch_size=16, log_samples=0)
        scores = {n: primary_metric(res.metrics[n]) for n in names_}
        scores["avg"] = sum(scores.values()) / len(names_)
        return scores

    base_file = out / "base.json"
    if base_file.is_file():
        base = json.loads(base_file.read_text())
    else:
        t0 = time.time()
        acc, responses = evaluate_tooluse()
        base = {"tooluse": acc, "answers": responses, "in_context": {}}
        for template in ("plain", "paper", "label"):
            ic, ic_resp = evaluate_tooluse("in_context", template)
            base["in_context"][template] = ic
            base[f"in_context_answers_{template}"] = ic_resp[:5]
        base["general"] = general()
        base["seconds"] = time.time() - t0
        base_file.write_text(json.dumps(base, indent=1))
    logging.info(
        "base: tooluse %.3f, in-context %s, general %s",
        base["tooluse"],
        base["in_context"],
        base.get("general"),
    )

    for name in names:
        preset, extra = settings[name]
        cfg = compose([f"method={preset}", *common, *extra])
        model.load_state_dict(base_state)
        collect.lines.clear()
        torch.manual_seed(args.seed)
        t0 = time.time()
        stats = train_stage(model, tok, items, spec, cfg, StageContext(stage=1, seed=args.seed))
        train_s = time.time() - t0
        acc, responses = evaluate_tooluse()
        template = TEACHER_TEMPLATES[cfg.method.distill.template or spec.teacher_template or "paper"]
        row = {
            "setting": name,
            "preset": preset,
            "overrides": extra,
            "common": common,
            "tooluse": acc,
            "train_s": train_s,
            "recite_eval_own": recitation_rate(responses, template),
            "recite_eval_plain": recitation_rate(responses, TEACHER_TEMPLATES["plain"]),
            "recite_eval_paper": recitation_rate(responses, TEACHER_TEMPLATES["paper"]),
            "summary": stats.summary,
            "steps": stats.steps,
            "rollouts": list(collect.lines),
            "answers": responses,
        }
        if args.general:
            row["general"] = general()
        with (out / "results.jsonl").open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        logging.info(
            "setting %s: tooluse %.3f, recitation %.2f, clipped %.2f, %.0f s",
            name,
            acc,
            row["recite_eval_own"],
            stats.summary.get("mean_clipped_frac", float("nan")),
            train_s,
        )


if __name__ == "__main__":
    main()
