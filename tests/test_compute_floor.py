"""The compute floor's FLOP count (harness.bench.compute_floor) against torch's own FLOP counter.

torch.utils.flop_counter.FlopCounterMode counts 2*m*n*k for every matmul aten op that actually runs, from
the shapes it sees: an independent count of the same quantity, taken on real forwards and backwards of tiny
randomly initialised Llama-family models, through the harness's own code paths (completion_hidden, the
fused head, distillation_loss, SupervisedStep). Where the executed shapes are the floor's shapes, the counts
agree exactly (TOLERANCE only absorbs float division). What FlopCounterMode counts differently, and how the
tests line the two up:

- attention: with a mask, SDPA on CPU runs `_scaled_dot_product_flash_attention_for_cpu`, which has no FLOP
  formula (counted as 0); eager attention runs plain matmuls, counted. The models here run eager.
- causality: a kernel (and FlopCounterMode's formulas) multiplies the whole query x key rectangle; the floor
  counts the causal triangle. Compared with `causal=False`, which counts the rectangles.
- `addmm_` (in place, how the fused head accumulates its float32 weight gradient) has no formula either;
  registered here with torch's own `addmm` formula (custom_mapping).
- rotary embeddings, norms, softmax and the embedding lookup: no matmul FLOPs on either side.
- the flash SDPA backward formula counts a recomputation of the scores (5 matmuls, not 4); eager backward
  does not recompute, nor does the floor.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import LlamaConfig, LlamaForCausalLM

from harness.batching import completion_hidden, encode_demonstration, join
from harness.bench.compute_floor import (
    LMShape,
    Segment,
    StepTokens,
    decoder_flops,
    head_flops,
    sdft_flops,
    supervised_flops,
)
from harness.bench.step_floor import add_floors, sdft_tokens
from harness.bench.step_report import markdown
from harness.distill.loss import DistillSettings, distillation_loss
from harness.methods.sft import SupervisedStep
from harness.tasks.spec import Item

# Exact agreement is expected (integers on both sides, the same 2*m*n*k convention); the tolerance is float
# rounding only. Any modelled term missing or counted twice is far above it: the smallest, one layer's k
# projection, is ~1% of a pass here.
TOLERANCE = 1e-9


def _addmm_inplace(bias_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of `addmm_`, torch's `addmm` formula (FlopCounterMode has none for the in-place variant)."""
    (m, k), (_, n) = a_shape, b_shape
    return 2 * m * n * k


def _count(fn) -> int:
    """Matmul FLOPs of everything `fn` runs (forward and, if it calls it, backward)."""
    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: _addmm_inplace}) as counter:
        fn()
    return counter.get_total_flops()


def _close(counted: int, modelled: int) -> bool:
    return abs(counted - modelled) <= TOLERANCE * max(counted, modelled)


@pytest.fixture
def llama() -> LlamaForCausalLM:
    """Grouped KV heads, a head_dim that is not hidden / heads, a distinct intermediate size, an untied head:
    every dimension the count reads differs, so a swapped one shows."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=320,
        hidden_size=48,
        intermediate_size=80,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=20,
        tie_word_embeddings=False,
        attn_implementation="eager",
    )
    return LlamaForCausalLM(config)


@pytest.fixture
def tiny(tiny_model):
    """The harness's tiny model (SmolLM2's architecture and tokenizer, tied head), eager attention, a copy."""
    model, tok = tiny_model
    model = copy.deepcopy(model)
    model.set_attn_implementation("eager")
    return model, tok


def test_shape_reads_the_config(llama):
    shape = LMShape.of(llama.config)
    assert (shape.layers, shape.hidden, shape.intermediate) == (2, 48, 80)
    assert (shape.heads, shape.kv_heads, shape.head_dim, shape.vocab, shape.tied_head) == (
        4,
        2,
        20,
        320,
        False,
    )


def test_decoder_and_head_forward_match_the_flop_counter(llama):
    shape, ids = LMShape.of(llama.config), torch.randint(0, 320, (3, 11))
    mask = torch.ones_like(ids)
    decoder = _count(lambda: llama.model(input_ids=ids, attention_mask=mask))
    assert _close(decoder, decoder_flops(shape, [Segment(0, 11)] * 3, causal=False))
    whole = _count(lambda: llama(input_ids=ids, attention_mask=mask))  # the head on all 33 positions
    assert _close(whole, decoder_flops(shape, [Segment(0, 11)] * 3, causal=False) + head_flops(shape, 33))


def test_forward_and_backward_is_three_forwards(llama):
    shape, ids = LMShape.of(llama.config), torch.randint(0, 320, (2, 9))
    counted = _count(lambda: llama(input_ids=ids).logits.sum().backward())
    forward = decoder_flops(shape, [Segment(0, 9)] * 2, causal=False) + head_flops(shape, 18)
    assert _close(counted, 3 * forward)


def test_causal_counts_the_triangle(llama):
    shape = LMShape.of(llama.config)
    full = decoder_flops(shape, [Segment(5, 4)], causal=False)
    causal = decoder_flops(shape, [Segment(5, 4)])
    # 4 queries after 5 cached keys: 4 x 9 pairs in the rectangle, 4 x 5 + (1 + 2 + 3 + 4) in the triangle
    assert full - causal == shape.layers * shape.pair_flops() * (36 - 30)


def _rows(prompt: int, completion: int, prompts: int, rollouts: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Token ids and masks of `prompts` distinct prompts, each repeated for its `rollouts` rows (no padding)."""
    g = torch.Generator().manual_seed(seed)
    p_ids = torch.randint(5, 300, (prompts, prompt), generator=g).repeat_interleave(rollouts, 0)
    c_ids = torch.randint(5, 300, (prompts * rollouts, completion), generator=g)
    return p_ids, torch.ones_like(p_ids), c_ids, torch.ones_like(c_ids)


def test_sdft_teacher_and_student_passes_match_the_flop_counter(tiny):
    """DistillStep's own calls (teacher_hidden, _student_loss, run_stage's backward) on 2 prompts x 2
    rollouts: shared prompts, the fused head in chunks of 5, the teacher's head inside the student's loss."""
    student, _ = tiny
    teacher = copy.deepcopy(student).requires_grad_(False)
    shape = LMShape.of(student.config)
    s_ids, s_mask, c_ids, c_mask = _rows(7, 6, prompts=2, rollouts=2, seed=0)
    t_ids, t_mask, _, _ = _rows(12, 6, prompts=2, rollouts=2, seed=1)
    with torch.no_grad():
        held: list[torch.Tensor] = []
        teacher_count = _count(
            lambda: held.append(completion_hidden(teacher, join(t_ids, t_mask, c_ids, c_mask)))
        )

    def student_pass() -> None:
        hidden = completion_hidden(student, join(s_ids, s_mask, c_ids, c_mask))
        head, t_head = student.get_output_embeddings(), teacher.get_output_embeddings()
        settings = DistillSettings(skip_tokens=3, chunk_size=5)
        distillation_loss(hidden, held[0], head, t_head, c_ids, c_mask, settings)[0].backward()

    student_count = _count(student_pass)
    tokens = StepTokens(prompts=(7, 7), completions=((6, 6), (6, 6)), teacher_prompts=(12, 12))
    phases = sdft_flops(shape, tokens, causal=False)
    assert _close(teacher_count, phases["teacher"].total)
    assert _close(student_count, phases["student"].total)


def test_sft_pass_matches_the_flop_counter(tiny):
    """SupervisedStep and its backward on two copies of one item (one shared prompt, two demonstrations)."""
    model, tok = tiny
    batch = [Item(prompt="Name a colour.", demonstration="Blue, like the sky.", id=str(i)) for i in (0, 1)]
    prompt, demo = encode_demonstration(tok, batch[0], 2048)
    step = SupervisedStep(model, tok, chunk_size=4, max_length=2048)
    counted = _count(lambda: step(batch, batch)[0].backward())
    tokens = StepTokens(prompts=(len(prompt),), completions=((len(demo), len(demo)),))
    assert _close(counted, supervised_flops(LMShape.of(model.config), tokens, causal=False).total)


def _loss_pass(head: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, chunk: int):
    """distillation_loss and its backward on random hidden states, `head` as both models' head."""
    hidden = torch.randn(*ids.shape, head.in_features, requires_grad=True)
    teacher = torch.randn(*ids.shape, head.in_features)
    settings = DistillSettings(skip_tokens=3, chunk_size=chunk)
    return lambda: distillation_loss(hidden, teacher, head, head, ids, mask, settings)[0].backward()


def test_head_flops_follow_completion_positions_only(tiny):
    """The loss runs the heads on real completion positions, never on prompt or padding positions, and
    its backward recomputes nothing: 3 student head matmuls + 1 teacher's per position, whatever the chunk."""
    model, _ = tiny
    shape = LMShape.of(model.config)
    lengths = [5, 2, 7]  # right-padded to 7: 21 slots, 14 real positions
    mask = (torch.arange(7).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)).long()
    ids = torch.randint(5, 300, (3, 7)) * mask
    head = model.get_output_embeddings()
    counts = [_count(_loss_pass(head, ids, mask, chunk)) for chunk in (1, 4, 128)]
    assert counts == [4 * head_flops(shape, 14)] * 3
    # the floor's head term: the same, and blind to prompt lengths; the decoder's is not
    short = sdft_flops(shape, StepTokens((4, 4, 4), tuple((n,) for n in lengths), (9, 9, 9)))["student"]
    long = sdft_flops(shape, StepTokens((40, 40, 40), tuple((n,) for n in lengths), (90, 90, 90)))["student"]
    assert short.head == long.head == counts[0]
    assert long.decoder > short.decoder


def test_bench_rows_get_floors_and_the_report_a_table(tiny):
    """harness bench step's wiring on made-up timings (nothing timed): SFT and SDFT rows get floors from the
    fixed batch's token counts, TRL and LoRA rows none, and the report keeps its tables and adds one."""
    model, tok = tiny
    base = {"precision": "float32", "decoder": "-", "peak_mib": 1.0}
    rows = [
        {**base, "method": "sft", "rollouts": 1, "step_s": 2.0},
        {**base, "method": "sdft", "rollouts": 4, "decoder": "static", "step_s": 9.0, "gen_s": 3.0}
        | {"teacher_s": 1.0, "student_s": 5.0, "completion_len": 16.0},
        {**base, "method": "trl", "rollouts": 4, "step_s": 8.0},
        {**base, "method": "sdft+lora8", "rollouts": 1, "step_s": 4.0, "teacher_s": 1.0, "student_s": 2.0},
    ]
    rates = {"float32": {"float32": 1e9}}
    add_floors(rows, model, tok, rates)
    sft, sdft, trl, lora = rows
    tokens = sdft_tokens(tok, 4, 16)
    assert tokens.completions == ((16,) * 4,) * 8
    assert all(t > s for t, s in zip(tokens.teacher_prompts, tokens.prompts, strict=True))
    phases = sdft_flops(LMShape.of(model.config), tokens)
    assert sdft["teacher_floor_s"] == pytest.approx(phases["teacher"].total / 1e9)
    assert sdft["student_over_floor"] == pytest.approx(5.0 / (phases["student"].total / 1e9))
    assert sdft["step_floor_s"] == pytest.approx(sum(p.total for p in phases.values()) / 1e9)
    assert sft["step_over_floor"] == pytest.approx(2.0 / sft["step_floor_s"]) and "teacher_floor_s" not in sft
    assert "step_floor_s" not in trl and "step_floor_s" not in lora
    payload = {
        "command": "harness bench step",
        "machine": "test",
        "batch": 8,
        "new_tokens": 16,
        "warmup": 0,
        "reps": 1,
        "default_precision": "float32",
        "default_precision_reason": "test",
        "ratios": {},
        "decode_floor": {},
        "matmul_flops_per_s": rates,
        "results": rows,
    }
    text = markdown(payload)
    assert "| method | precision | rollouts | decoder | step s |" in text  # the existing table stays
    table = [line for line in text.splitlines() if line.startswith(("| sft |", "| sdft |"))]
    assert len(table) == 4  # each row once in the main table, SFT and SDFT once more in the floor table
    assert f"| {sdft['student_over_floor']:.2f} |" in table[-1]
