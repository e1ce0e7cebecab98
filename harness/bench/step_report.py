"""`harness bench step`'s figures from its measured rows: the ratios and the Markdown report."""

from __future__ import annotations

from typing import Any

from harness.bench.decode import decode_markdown
from harness.bench.step_floor import floor_markdown


def ratios(
    rows: list[dict[str, Any]], precisions: list[str], rollouts: list[int], decoders: list[str] | None = None
) -> dict[str, dict[str, float]]:
    """Per precision and rollout count: SDFT (first decoder) over TRL (time, peak memory), over SFT (time) and
    over SDFT with each other decoder; per precision: generation time of n rollouts over one (`gen_<n>_over_1`)."""
    decoders = decoders or ["static"]

    def find(method: str, prec: str, n: int, decoder: str | None = None) -> dict[str, Any] | None:
        want = decoder or (decoders[0] if method == "sdft" else None)
        return next(
            (
                r
                for r in rows
                if r["method"] == method
                and r["precision"] == prec
                and r["rollouts"] == n
                and (want is None or r.get("decoder", "static") == want)
            ),
            None,
        )

    table: dict[str, dict[str, float]] = {}
    for prec in precisions:
        for n in rollouts:
            sdft, trl, sft = find("sdft", prec, n), find("trl", prec, n), find("sft", prec, 1)
            entry: dict[str, float] = {}
            if sdft and trl:
                entry["sdft_over_trl_time"] = sdft["step_s"] / trl["step_s"]
                entry["sdft_over_trl_peak_mem"] = sdft["peak_mib"] / trl["peak_mib"]
            if sdft and sft:
                entry["sdft_over_sft_time"] = sdft["step_s"] / sft["step_s"]
            for other in decoders[1:]:
                alt = find("sdft", prec, n, other)
                if sdft and alt:
                    entry[f"sdft_{decoders[0]}_over_{other}_time"] = sdft["step_s"] / alt["step_s"]
                    if "gen_s" in sdft and "gen_s" in alt:
                        entry[f"gen_{decoders[0]}_over_{other}"] = sdft["gen_s"] / alt["gen_s"]
            one = find("sdft", prec, 1)
            if sdft and one and n > 1:
                for key in ("gen_s", "teacher_s", "student_s", "step_s"):
                    if key in sdft and key in one:
                        entry[f"{key.removesuffix('_s')}_{n}_over_1"] = sdft[key] / one[key]
            if entry:
                table[f"{prec}/r{n}"] = entry
    return table


def markdown(p: dict[str, Any]) -> str:
    lines = [
        "# Step benchmark: SFT vs our SDFT vs TRL's SDFTTrainer",
        "",
        f"Command: `{p['command']}`  ",
        f"Machine: {p['machine']}  ",
        f"Batch: {p['batch']} prompts x rollouts, {p['new_tokens']} new tokens (forced), "
        f"{p['warmup']} warm-up + {p['reps']} timed steps, medians. Peak memory: above the loaded student "
        "(see harness/bench/step.py).  ",
        f"Default precision here (model.dtype=auto): {p['default_precision']} ({p['default_precision_reason']})",
        "",
        "| method | precision | rollouts | decoder | step s | generate s | teacher s | student s | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in p["results"]:
        cells = [f"{r[k]:.2f}" if k in r else "-" for k in ("gen_s", "teacher_s", "student_s")]
        lines.append(
            f"| {r['method']} | {r['precision']} | {r['rollouts']} | {r.get('decoder', '-')} | {r['step_s']:.2f} "
            f"| {' | '.join(cells)} "
            f"| {r['peak_mib']:.0f} |"
        )
    lines += ["", f"Headline ({p['default_precision']}, 1 rollout):", ""]
    for key in ("sdft_over_sft_time", "sdft_over_trl_time", "sdft_over_trl_peak_mem"):
        if key in p:
            lines.append(f"- {key}: {p[key]:.2f}")
    lines += ["", "| precision / rollouts | ratio | value |", "|---|---|---|"]
    for setting, entry in p["ratios"].items():
        for key, value in entry.items():
            lines.append(f"| {setting} | {key} | {value:.2f} |")
    for prec, entry in p.get("lora_ratios", {}).items():  # --lora-r: adapters vs full fine-tuning
        lines += [f"| {prec} (LoRA r={p['lora_r']}) | {key} | {value:.2f} |" for key, value in entry.items()]
    lines += decode_markdown(p["decode_floor"], p.get("eval", {}))
    lines += floor_markdown(p["results"], p.get("matmul_flops_per_s", {}))
    return "\n".join(lines) + "\n"
