"""`harness bench step`'s compute floors: each SFT and SDFT row's phases against their matmul FLOPs over the
matmul throughput measured on the same machine (harness.bench.compute_floor), and the report's table.

Token counts are the fixed batch's own (harness.bench.fixed_batch): the student's and the teacher's chat
prompts as the methods tokenize them, the completions at the row's measured mean length (forced to
`--new-tokens`, so every rollout has it), `rollouts` of them per prompt; SFT's demonstrations as SFT
encodes them. LoRA and TRL rows get no floor (a LoRA backward skips the frozen weights' gradients; TRL's
passes are its own).
"""

from __future__ import annotations

from typing import Any

import torch

from harness.batching import chat_prompt_ids, encode_demonstration
from harness.bench.compute_floor import LMShape, StepTokens, matmul_throughput, sdft_flops, supervised_flops
from harness.bench.fixed_batch import TEMPLATE, items
from harness.methods import StageContext
from harness.tasks.spec import resolve_template, student_messages, teacher_messages


def sdft_tokens(tok: Any, rollouts: int, completion_len: int) -> StepTokens:
    """The fixed batch as one SDFT step sees it: `rollouts` completions of `completion_len` per prompt."""
    template = resolve_template(TEMPLATE)
    batch = items()
    return StepTokens(
        prompts=tuple(len(chat_prompt_ids(tok, student_messages(it))) for it in batch),
        completions=tuple((completion_len,) * rollouts for _ in batch),
        teacher_prompts=tuple(len(chat_prompt_ids(tok, teacher_messages(it, template))) for it in batch),
    )


def sft_tokens(tok: Any) -> StepTokens:
    """The fixed batch as one SFT step sees it: each prompt with its demonstration (and the closing EOS)."""
    max_length = StageContext().max_length  # the context the bench's stages run with (harness.bench.step)
    pairs = [encode_demonstration(tok, it, max_length) for it in items()]
    return StepTokens(prompts=tuple(len(p) for p, _ in pairs), completions=tuple((len(d),) for _, d in pairs))


def matmul_rates(model: Any, tok: Any, compute: torch.dtype, new_tokens: int) -> dict[str, float]:
    """Measured matmul FLOP/s by dtype name: the compute dtype (decoder) and float32 (SDFT's heads, which
    run in float32 whatever the compute dtype), on the decoder's own shape: [the batch's student tokens x
    hidden] @ [hidden x intermediate]."""
    shape = LMShape.of(model.config)
    tokens = sdft_tokens(tok, 1, new_tokens)
    rows = sum(tokens.prompts) + tokens.completion_positions
    device = next(model.parameters()).device
    rates = {}
    for dtype in dict.fromkeys([compute, torch.float32]):
        rates[str(dtype).removeprefix("torch.")] = matmul_throughput(
            rows, shape.hidden, shape.intermediate, dtype, device
        )
    return rates


def row_floor(row: dict[str, Any], shape: LMShape, tok: Any, rates: dict[str, float]) -> dict[str, float]:
    """One row's floors (seconds), FLOPs and measured / floor ratios; empty for rows without a floor."""
    compute, f32 = rates[row["precision"]], rates["float32"]
    if row["method"] == "sft":
        sft = supervised_flops(shape, sft_tokens(tok))
        # SFT's fused head has no float32 floor: it runs in the compute dtype
        step = sft.seconds(compute, compute)
        return {"step_gflop": sft.total / 1e9, "step_floor_s": step, "step_over_floor": row["step_s"] / step}
    if row["method"] != "sdft" or not row.get("completion_len"):
        return {}
    tokens = sdft_tokens(tok, row["rollouts"], round(row["completion_len"]))
    phases = sdft_flops(shape, tokens)
    gen = phases["generate"].seconds(compute, compute)  # generation's head runs under autocast
    teacher = phases["teacher"].seconds(compute, f32)
    student = phases["student"].seconds(compute, f32)
    step = gen + teacher + student
    return {
        "gen_floor_s": gen,
        "teacher_gflop": phases["teacher"].total / 1e9,
        "teacher_floor_s": teacher,
        "teacher_over_floor": row["teacher_s"] / teacher,
        "student_gflop": phases["student"].total / 1e9,
        "student_floor_s": student,
        "student_over_floor": row["student_s"] / student,
        "step_gflop": sum(p.total for p in phases.values()) / 1e9,
        "step_floor_s": step,
        "step_over_floor": row["step_s"] / step,
    }


def add_floors(rows: list[dict[str, Any]], model: Any, tok: Any, rates: dict[str, dict[str, float]]) -> None:
    """Each SFT and SDFT row measured at a precision with measured rates gets its floor (in place)."""
    shape = LMShape.of(model.config)
    for row in rows:
        if row["precision"] in rates:
            row.update(row_floor(row, shape, tok, rates[row["precision"]]))


def floor_markdown(rows: list[dict[str, Any]], rates: dict[str, dict[str, float]]) -> list[str]:
    """The report's compute-floor table (lines of Markdown); none without measured rates."""
    if not rates:
        return []
    measured = "; ".join(
        f"{prec}: " + ", ".join(f"{dtype} {rate / 1e9:.1f}" for dtype, rate in by_dtype.items())
        for prec, by_dtype in rates.items()
    )
    lines = [
        "",
        "Compute floor: each phase's matmul FLOPs (from the model's config and the batch's real token counts; "
        "harness/bench/compute_floor.py) over the matmul throughput measured here, [batch tokens x hidden] @ "
        f"[hidden x intermediate], median of 5, GFLOP/s by precision run and matmul dtype: {measured}. "
        "SDFT's heads count at float32's rate (they run in float32). The step floor adds generation's "
        "compute floor (memory-bound in fact: see the decode floor) to the teacher's and the student's.",
        "",
        "| method | precision | rollouts | decoder | teacher GFLOP | teacher floor s | teacher / floor "
        "| student GFLOP | student floor s | student / floor | step GFLOP | step floor s | step / floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = ("teacher_gflop", "teacher_floor_s", "teacher_over_floor", "student_gflop", "student_floor_s")
    keys += ("student_over_floor", "step_gflop", "step_floor_s", "step_over_floor")
    for r in rows:
        if "step_floor_s" not in r:
            continue
        cells = " | ".join(f"{r[k]:.2f}" if k in r else "-" for k in keys)
        lines.append(
            f"| {r['method']} | {r['precision']} | {r['rollouts']} | {r.get('decoder', '-')} | {cells} |"
        )
    return lines
