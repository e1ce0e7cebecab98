"""CPU guards for the GPU path: each test here pins one thing that only a GPU run would otherwise reveal.

No GPU was available while this was written, so everything that differs on a GPU (device placement,
CUDA-only calls, sharded bf16 weights, the vLLM engine, lm-eval's own tasks) is checked by running the same
code on the CPU with the CUDA-specific piece observed through a stub, or by pure arithmetic.
"""

from __future__ import annotations

import copy

import pytest
import torch


@pytest.fixture
def single_process_group(tmp_path):
    """A 1-process gloo group: FSDP2's `fully_shard` runs in this process (every shard is the whole tensor,
    but the module structure, DTensor parameters and dtype handling are those of an N-process run)."""
    import torch.distributed as torch_dist

    from harness import sharding

    torch_dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        yield
    finally:
        sharding.release()
        torch_dist.destroy_process_group()


def test_fsdp_teacher_copy_takes_the_students_dtype_and_ema_updates(tiny_model, single_process_group):
    """A bf16 student under FSDP used to get a float32 teacher skeleton (built from the config alone), and
    the first EMA update (`_foreach_lerp_` across dtypes) raised."""
    from harness import sharding
    from harness.distill.teacher import Teacher

    model, _ = tiny_model
    student = copy.deepcopy(model).to(torch.bfloat16)
    sharding.shard(student, with_teacher=True)
    teacher = Teacher(student, "ema", 0.5)
    t_dtypes = {p.dtype for p in teacher.model.parameters()}
    s_dtypes = {p.dtype for p in student.parameters()}
    assert t_dtypes == s_dtypes == {torch.bfloat16}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)  # the student moved; the teacher must follow half way at rate 0.5
    before = [sharding.local(p).detach().float().clone() for p in teacher.model.parameters()]
    teacher.update()
    after = [sharding.local(p).detach().float() for p in teacher.model.parameters()]
    moved = [float((a - b).mean()) for a, b in zip(after, before, strict=True)]
    assert all(m == pytest.approx(0.5, abs=0.05) for m in moved), moved



# --- 2. suite=paper: lm-eval names exist offline, code execution is an opt-in, missing extras are named ----

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def _paper_suite():
    from omegaconf import OmegaConf

    return OmegaConf.load(ROOT / "conf" / "suite" / "paper.yaml")


def test_paper_suite_uses_the_instruct_humaneval_and_the_paper_extra_brings_ifeval_deps():
    import tomllib

    suite = _paper_suite()
    assert "humaneval_instruct" in suite.tasks and "humaneval" not in suite.tasks  # chat template applied
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.replace(" ", "").startswith("lm-eval[ifeval]") for req in extras["paper"])


def test_paper_suite_refuses_code_execution_unless_allowed(monkeypatch):
    from harness.readiness import check_suite

    monkeypatch.delenv("HF_ALLOW_CODE_EVAL", raising=False)
    suite = _paper_suite()
    with pytest.raises(ValueError, match=r"\['humaneval_instruct'\].*eval.allow_code_execution=true"):
        check_suite(list(suite.tasks), [], bool(suite.builtin_index), allow_code_execution=False)


def test_paper_suite_resolves_offline_and_names_what_is_missing(monkeypatch):
    """Every name is in lm-eval's index; the helpers of the tasks whose dependencies exist here import
    (MMLU's 57 subjects included); IFEval without its extra and HumanEval without its metric give one message
    naming the package and the fix."""
    import sys

    import evaluate

    from harness.readiness import check_suite

    suite = _paper_suite()
    fine = [t for t in suite.tasks if t not in ("humaneval_instruct", "ifeval")]
    leaves = check_suite(fine, [], True, allow_code_execution=False)
    assert {"hellaswag", "truthfulqa_mc1", "winogrande", "mmlu_anatomy"} <= set(leaves) and len(leaves) >= 60
    # The extra's package missing whatever this machine has installed; the metric unreachable (offline).
    monkeypatch.setitem(sys.modules, "langdetect", None)
    for name in [m for m in sys.modules if m.startswith(("lm_eval.tasks.ifeval", "lm_eval.tasks.humaneval"))]:
        monkeypatch.delitem(sys.modules, name)

    def offline(*args, **kwargs):
        raise FileNotFoundError("Couldn't find a module script for code_eval (offline)")

    monkeypatch.setattr(evaluate, "load", offline)
    monkeypatch.delenv("HF_ALLOW_CODE_EVAL", raising=False)
    with pytest.raises(ValueError) as err:
        check_suite(list(suite.tasks), [], True, allow_code_execution=True)
    message = str(err.value)
    assert "task ifeval" in message and "`langdetect`" in message and "pip install -e '.[paper]'" in message
    assert "task humaneval_instruct" in message and "FileNotFoundError" in message
    assert "\n" not in message
    import os

    assert os.environ.get("HF_ALLOW_CODE_EVAL") == "1"  # set before HumanEval's helpers ran


def test_task_manager_is_built_once_per_include_paths():
    from harness.evaluation import make_task_manager
    from harness.tasks import TASKS_ROOT

    first = make_task_manager([TASKS_ROOT], builtin_index=False)
    assert make_task_manager([str(TASKS_ROOT)], builtin_index=False) is first
    assert make_task_manager([TASKS_ROOT, ROOT / "tests"], builtin_index=False) is not first


# --- 4. memory estimate --------------------------------------------------------------------------------

QWEN_7B = dict(vocab=152064, hidden=3584, layers=28, intermediate=18944, heads=28, kv_heads=4, tied=False,
               qkv_bias=True)
GB80 = 80 * 2**30


def _qwen7b_config():
    from transformers import Qwen2Config

    q = QWEN_7B
    return Qwen2Config(vocab_size=q["vocab"], hidden_size=q["hidden"], num_hidden_layers=q["layers"],
                       intermediate_size=q["intermediate"], num_attention_heads=q["heads"],
                       num_key_value_heads=q["kv_heads"], tie_word_embeddings=q["tied"])


def test_parameter_count_from_the_config_matches_the_published_size():
    from harness.memory_estimate import parameters_from_dims, shape_of

    shape = shape_of(_qwen7b_config())
    assert shape.params == parameters_from_dims(**QWEN_7B)
    assert shape.params == pytest.approx(7.62e9, rel=0.005)  # Qwen2.5-7B's model card: 7.61B


def test_7b_with_an_ema_teacher_is_refused_on_one_80gb_gpu_and_fits_with_8_process_fsdp():
    from harness.memory_estimate import Setting, check, shape_of

    shape = shape_of(_qwen7b_config())
    P = shape.params
    one = Setting(weight_bytes=4, compute_bytes=2, teacher_bytes=4, rows=8, max_length=2048)  # fp32 master
    with pytest.raises(ValueError) as err:
        check(shape, one, GB80, "ema")
    message = str(err.value)
    need = (4 * P * 4 + 4 * P) / 2**30  # weights, grads, 2 moments, EMA copy
    assert f"about {need:.1f} GiB per process" in message and f"short by {need - 80:.1f} GiB" in message
    assert "FSDP over" in message and "conf/accelerate/fsdp.yaml" in message
    # the same in bf16 weights: the EMA copy in the compute dtype would not rescue it, a live teacher neither
    eight = Setting(weight_bytes=4, compute_bytes=2, teacher_bytes=4, processes=8, sharded=True, rows=1,
                    max_length=2048)
    estimate, warning = check(shape, eight, GB80, "ema")
    assert estimate.static == pytest.approx((16 * P + 4 * P) / 8)
    assert estimate.evaluation == pytest.approx((4 * P + 4 * P) / 8 + 4 * P)  # + rank 0's gathered copy
    assert warning is None


def test_memory_refusal_suggests_a_base_teacher_when_that_fits():
    from harness.memory_estimate import Setting, check, shape_of

    shape = shape_of(_qwen7b_config())
    P = shape.params
    device = 12 * P + 3 * P  # bf16 everything = 10P; fp32 EMA copy +4P; bf16 copy +2P: 12P fits, 14P does not
    s = Setting(weight_bytes=2, compute_bytes=2, teacher_bytes=6, rows=0)
    with pytest.raises(ValueError, match="teacher=base"):
        check(shape, s, device - 3 * P, "ema")


def test_check_memory_reads_the_model_config_and_the_run_settings(tmp_path):
    from omegaconf import OmegaConf

    from harness.config import Config
    from harness.readiness import check_memory

    _qwen7b_config().save_pretrained(tmp_path)
    cfg = OmegaConf.structured(Config)
    cfg.model.name, cfg.model.dtype, cfg.method.name = str(tmp_path), "float32", "sdft"
    with pytest.raises(ValueError, match="short by"):
        check_memory(cfg, 1, False, True, torch.device("cpu"), device_bytes=GB80)
    assert check_memory(cfg, 8, True, True, torch.device("cpu"), device_bytes=GB80) is None
    assert check_memory(cfg, 1, False, True, torch.device("cpu")) is None  # no GPU: no refusal here


def test_micro_batch_warning_for_single_prompt_micro_batches():
    from harness.readiness import micro_batch_warning

    warning = micro_batch_warning(32, 4, 8)
    assert warning and "micro-batches of 1" in warning and "trainer.grad_accum=1 gives micro-batches of 4" in warning
    assert micro_batch_warning(32, 4, 1) is None and micro_batch_warning(32, 1, 8) is None


def test_adamw_is_fused_on_cuda_only():
    from types import SimpleNamespace

    from harness.optim import implementation

    on_gpu = [SimpleNamespace(device=torch.device("cuda", 0))]
    assert implementation(on_gpu)["fused"] is True
    assert "fused" not in implementation([torch.nn.Parameter(torch.zeros(2))])
