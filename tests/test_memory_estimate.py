"""The start-up memory estimate counts what each method holds beside the student (MethodSpec.held).

Every figure is checked against a count by hand from a tiny Llama config's dimensions, and the declared
pieces against the tensors the methods really keep (the EWC state, the penalties' autograd graphs).
"""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from omegaconf import OmegaConf
from transformers import LlamaConfig

from harness.config import Config
from harness.methods import StudentSize, needs_teacher_copy
from harness.methods.ewc import EWCSettings, EWCState, consolidate, ewc_held, ewc_penalty
from harness.methods.sft_l2 import L2Settings, l2_held, l2_penalty
from harness.run.memory_estimate import (
    RANK0,
    REPLICAS,
    SHARED,
    Estimate,
    Setting,
    Shape,
    check,
    describe,
    estimate,
    eval_sharing,
)
from harness.run.readiness import check_memory, evaluation_plan, memory_plan
from harness.tasks.spec import Item

CPU = torch.device("cpu")

# vocab 1000, hidden 64, 2 layers, MLP 128, 4 heads of 16, 2 KV heads, untied embeddings:
# per layer q 64x64 + k 64x32 + v 64x32 + o 64x64 = 12288, MLP 3 x 64 x 128 = 24576, two norms 128
STUDENT = dict(
    hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2
)
P = 2 * (12288 + 24576 + 128) + 2 * 1000 * 64 + 64  # + embeddings in and out, final norm
# a different model: hidden 96, 3 layers, MLP 256, 4 heads of 24, 4 KV heads:
# per layer 4 x 96 x 96 = 36864 attention, 3 x 96 x 256 = 73728 MLP, 192 norms
TEACHER = dict(
    hidden_size=96, num_hidden_layers=3, intermediate_size=256, num_attention_heads=4, num_key_value_heads=4
)
P_TEACHER = 3 * (36864 + 73728 + 192) + 2 * 1000 * 96 + 96
STUDENT_STATE = 4 * 4 * P  # float32 weights, gradients, two AdamW moments


def _write(folder, dims: dict) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    LlamaConfig(vocab_size=1000, tie_word_embeddings=False, **dims).save_pretrained(folder)
    return str(folder)


def _cfg(tmp_path, method: str, **options):
    cfg = OmegaConf.structured(Config)
    cfg.model.name, cfg.model.dtype, cfg.method.name = (
        _write(tmp_path / "student", STUDENT),
        "float32",
        method,
    )
    cfg.method.options = options
    return cfg


def _plan(cfg):
    copy_ = needs_teacher_copy(OmegaConf.to_container(cfg.method))
    return memory_plan(cfg, 1, False, copy_, CPU)


def test_hand_count_of_the_tiny_config():
    assert P == 202048 and P_TEACHER == 524448


def test_ewc_counts_fisher_anchor_and_penalty_graph_in_float32(tmp_path):
    shape, setting, notes = _plan(_cfg(tmp_path, "ewc"))
    assert shape.params == P and not notes
    assert setting.held == (
        ("EWC Fisher diagonal", 4.0 * P),
        ("EWC anchor", 4.0 * P),
        ("EWC penalty graph", 4.0 * P),
    )
    assert setting.teacher_bytes == 0 and not setting.shardable
    e = estimate(shape, setting)
    assert e.static == STUDENT_STATE + 3 * 4 * P
    assert e.evaluation == 4 * P + 3 * 4 * P  # the Fisher and anchor stay on the model between stages


def test_ewc_under_lora_holds_the_adapters_only(tmp_path):
    cfg = _cfg(tmp_path, "ewc")
    cfg.model.lora.r = 2
    shape, setting, _ = _plan(cfg)
    # r x (in + out) on q, k, v, o of both layers: 2 x 2 x (128 + 96 + 96 + 128)
    adapters = 2 * 2 * (128 + 96 + 96 + 128)
    assert setting.trainable == adapters
    assert [size for _, size in setting.held] == [4.0 * adapters] * 3
    assert estimate(shape, setting).static == (P + adapters + 3 * adapters) * 4 + 3 * 4 * adapters


def test_declared_ewc_state_is_what_consolidate_keeps(tiny_model):
    model, tok = copy.deepcopy(tiny_model[0]), tiny_model[1]
    items = [Item(prompt="Say hello.", demonstration="Hello!", id="a", source="t:1")]
    state = consolidate(model, tok, items, EWCSettings(fisher_items=0), 64)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    kept = sum(t.numel() * t.element_size() for t in [*state.fisher.values(), *state.anchor.values()])
    declared = ewc_held(EWCSettings(), StudentSize(params=trainable, trainable=trainable))
    assert kept == sum(h.values * h.value_bytes for h in declared if h.what != "EWC penalty graph")


def _saved_bytes(penalty, known: list[torch.Tensor]) -> int:
    """Bytes of the tensors the penalty's autograd graph keeps beyond the weights, anchor and Fisher."""
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[t.data_ptr()] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        penalty()
    old = {t.data_ptr() for t in known}
    return sum(size for ptr, size in saved.items() if ptr not in old)


def test_declared_penalty_graphs_are_what_autograd_keeps():
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))
    n = sum(p.numel() for p in model.parameters())
    anchor = {k: p.detach().clone() for k, p in model.named_parameters()}
    state = EWCState(fisher={k: torch.rand_like(p) for k, p in anchor.items()}, anchor=anchor, stages=1)
    known = [*model.parameters(), *anchor.values(), *state.fisher.values()]
    size = StudentSize(params=n, trainable=n)
    graph = {  # the module is float32: a piece in the weight dtype takes 4 bytes a value
        h.what: h.values * (h.value_bytes or 4)
        for h in ewc_held(EWCSettings(), size) + l2_held(L2Settings(), size)
    }
    assert _saved_bytes(lambda: ewc_penalty(model, state), known) == graph["EWC penalty graph"] == 4 * n
    assert _saved_bytes(lambda: l2_penalty(model, anchor), known) == graph["L2 penalty graph"]


@pytest.mark.parametrize(
    ("method", "held"),
    [
        ("sft_l2", (("L2 anchor", 4.0 * P), ("L2 penalty graph", 4.0 * P))),
        ("lwf", (("LwF previous model", 4.0 * P),)),
        ("joint", (("joint base weights", 4.0 * P),)),
        ("sft", ()),
    ],
)
def test_supervised_methods_declare_their_copies(tmp_path, method, held):
    shape, setting, _ = _plan(_cfg(tmp_path, method))
    assert setting.held == held and setting.teacher_bytes == 0
    assert estimate(shape, setting).static == STUDENT_STATE + sum(size for _, size in held)


def test_lwf_keeps_its_copy_whatever_distill_teacher_says_and_rolls_nothing_out(tmp_path):
    cfg = _cfg(tmp_path, "lwf")
    cfg.method.distill.teacher, cfg.method.distill.num_rollouts = "live", 4
    cfg.trainer.batch_size, cfg.trainer.grad_accum = 8, 1
    _, setting, _ = _plan(cfg)
    assert setting.held == (("LwF previous model", 4.0 * P),)
    assert setting.rows == 8  # demonstrations, not rollouts


def test_a_live_teacher_has_no_copy_but_still_rolls_out(tmp_path):
    cfg = _cfg(tmp_path, "sdft")
    cfg.method.distill.teacher, cfg.method.distill.num_rollouts = "live", 4
    cfg.trainer.batch_size, cfg.trainer.grad_accum = 8, 1
    _, setting, _ = _plan(cfg)
    assert setting.teacher_bytes == 0 and setting.held == () and setting.rows == 32


def test_opd_counts_a_local_teacher_of_another_size_from_its_config(tmp_path):
    teacher = _write(tmp_path / "teacher", TEACHER)
    shape, setting, notes = _plan(_cfg(tmp_path, "opd", teacher_model=teacher))
    assert not notes
    assert setting.held == ((f"OPD teacher {teacher}", 4.0 * P_TEACHER),)
    assert estimate(shape, setting).static == STUDENT_STATE + 4 * P_TEACHER


@pytest.mark.parametrize("name", ["stage_2.safetensors", None])
def test_opd_counts_a_stage_checkpoint_as_a_copy_of_the_student(tmp_path, name):
    folder = tmp_path / "run"
    folder.mkdir()
    for stage in (1, 2):  # only the names matter to the estimate: no weights are read
        (folder / f"stage_{stage}.safetensors").write_bytes(b"")
    source = str(folder / name) if name else str(folder)
    cfg = _cfg(tmp_path, "opd", teacher_model=source)
    cfg.model.lora.r = 2
    _, setting, notes = _plan(cfg)
    adapters = 2 * 2 * (128 + 96 + 96 + 128)
    assert not notes
    # the checkpoint's teacher is a deep copy of the whole student: the frozen base and the adapters
    assert setting.held == (
        ("OPD teacher (a stage checkpoint: a copy of the student)", 4.0 * (P + adapters)),
    )


def test_opd_teacher_not_on_disk_falls_back_to_the_students_size_and_says_so(tmp_path):
    cfg = _cfg(tmp_path, "opd", teacher_model="no-such-org/no-such-model-xyz")
    _, setting, notes = _plan(cfg)
    assert setting.held == (("OPD teacher no-such-org/no-such-model-xyz", 4.0 * P),)
    assert len(notes) == 1 and "could not be read from disk" in notes[0] and "student's size" in notes[0]
    warning = check_memory(cfg, 1, False, False, CPU, device_bytes=2**40)  # fits: the note is the warning
    assert warning == notes[0]
    with pytest.raises(ValueError, match="short by .*could not be read from disk"):
        check_memory(cfg, 1, False, False, CPU, device_bytes=STUDENT_STATE)


def test_describe_names_the_pieces_with_their_sizes():
    shape = Shape(params=2**28, layers=1, hidden=8, intermediate=16)
    setting = Setting(
        weight_bytes=4, compute_bytes=2, teacher_bytes=4, rows=0, held=(("EWC anchor", 2.0**31),)
    )
    e = estimate(shape, setting)
    assert isinstance(e, Estimate)
    assert describe(e).startswith(
        "training state 7.0 GiB (of which teacher copy 1.0 GiB, EWC anchor 2.0 GiB) +"
    )


def test_a_method_that_cannot_shard_is_not_offered_fsdp():
    shape = Shape(params=2**30, layers=1, hidden=8, intermediate=16)
    held = (("EWC anchor", 4.0 * 2**30),)
    for shardable in (True, False):
        s = Setting(weight_bytes=4, compute_bytes=2, teacher_bytes=0, rows=0, held=held, shardable=shardable)
        with pytest.raises(ValueError) as err:
            check(shape, s, 16 * 2**30)  # 16 GiB of student state + 4 GiB held: short
        assert ("FSDP over" in str(err.value)) == shardable


# Evaluation under FSDP: every rank on its own gathered copy (shared), or rank 0 alone.
# SFT, float32, 2 processes: per process the sharded weights stay through evaluation (4 x P / 2 bytes;
# the optimizer is freed by then), and a rank that evaluates adds a whole copy, 4 x P.
RESIDENT = 4 * P / 2
COPY = 4 * P


def _fsdp(per_budget: int, processes: int = 2) -> Setting:
    return Setting(
        weight_bytes=4,
        compute_bytes=4,
        teacher_bytes=0,
        processes=processes,
        sharded=True,
        rows=0,
        per_budget=per_budget,
    )


def test_each_evaluating_rank_counts_its_own_gathered_copy():
    shape = Shape(params=P, layers=2, hidden=64, intermediate=128)
    e = estimate(shape, _fsdp(per_budget=2))
    assert (e.resident, e.eval_copy, e.evaluation) == (RESIDENT, COPY, RESIDENT + COPY)
    shared = eval_sharing(e, _fsdp(per_budget=2), budget_bytes=2 * (RESIDENT + COPY))
    assert (shared.mode, shared.copies, shared.need) == (SHARED, 2, 2 * (RESIDENT + COPY))
    # 4 processes on one host: four copies count against the one budget
    four = _fsdp(per_budget=4, processes=4)
    e4 = estimate(shape, four)
    assert eval_sharing(e4, four, 4 * (4 * P / 4 + COPY)).need == 4 * (4 * P / 4 + COPY)
    # a GPU each: a budget holds one process, its shard and its own copy
    gpu = eval_sharing(e, _fsdp(per_budget=1), budget_bytes=RESIDENT + COPY)
    assert (gpu.mode, gpu.need) == (SHARED, RESIDENT + COPY)


def test_the_budget_chooses_shared_or_rank_0():
    shape = Shape(params=P, layers=2, hidden=64, intermediate=128)
    s = _fsdp(per_budget=2)
    e = estimate(shape, s)
    just_enough = 2 * (RESIDENT + COPY)
    assert eval_sharing(e, s, just_enough).mode == SHARED
    rank0 = eval_sharing(e, s, just_enough - 1)  # one byte short of a second copy
    assert (rank0.mode, rank0.copies, rank0.need) == (RANK0, 1, 2 * RESIDENT + COPY)
    assert eval_sharing(e, s, None).mode == RANK0  # unknown budget: the one copy of before
    assert "memory budget unknown" in eval_sharing(e, s, None).describe()
    unsharded = eval_sharing(estimate(shape, replace(s, sharded=False)), replace(s, sharded=False), 1.0)
    assert unsharded.mode == REPLICAS and unsharded.copies == 0


def test_describe_says_which_evaluation_mode_and_its_copy():
    shape = Shape(params=2**28, layers=1, hidden=8, intermediate=16)  # 1 GiB of float32 weights
    s = _fsdp(per_budget=1)
    e = estimate(shape, s)
    assert describe(e, eval_sharing(e, s, 2**40)).endswith(
        "evaluation 1.5 GiB on each of 2 ranks (shared: a gathered copy of 1.0 GiB per rank)"
    )
    assert describe(e, eval_sharing(e, s, 2**30)).endswith(
        "evaluation 1.5 GiB on rank 0 alone (rank-0 mode: one gathered copy of 1.0 GiB)"
    )


def test_start_up_plan_shares_evaluation_when_the_host_holds_every_copy(tmp_path, monkeypatch):
    """On the CPU every process of the node draws on the host's memory: the plan adds their copies up."""
    cfg = _cfg(tmp_path, "sft")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    need = 2 * (RESIDENT + COPY)
    assert evaluation_plan(cfg, 2, True, False, CPU, budget_bytes=need).mode == SHARED
    assert evaluation_plan(cfg, 2, True, False, CPU, budget_bytes=need - 1).mode == RANK0
    assert evaluation_plan(cfg, 2, False, False, CPU, budget_bytes=1).mode == REPLICAS


@pytest.mark.parametrize(("forced", "mode"), [("rank0", RANK0), ("every_rank", SHARED)])
def test_eval_fsdp_sharing_overrides_the_plan_whatever_the_budget(tmp_path, forced, mode):
    """A user who knows the estimate is wrong picks the mode; without FSDP there is nothing to choose."""
    cfg = _cfg(tmp_path, "sft")
    cfg.eval.fsdp_sharing = forced
    for budget in (1, 2**50):
        plan = evaluation_plan(cfg, 2, True, False, CPU, budget_bytes=budget)
        assert plan.mode == mode
    assert evaluation_plan(cfg, 2, False, False, CPU, budget_bytes=1).mode == REPLICAS
    if forced == "rank0":
        assert plan.describe() == "evaluation on rank 0 alone (eval.fsdp_sharing=rank0)"


def test_an_unknown_fsdp_sharing_is_refused_in_one_line(tmp_path):
    from harness.run.config_checks import check_settings

    cfg = _cfg(tmp_path, "sft")
    cfg.eval.fsdp_sharing = "half"
    with pytest.raises(
        ValueError, match=r"eval.fsdp_sharing='half' is not known; valid values: auto, every_rank"
    ):
        check_settings(cfg)
