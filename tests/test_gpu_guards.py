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

    torch_dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        yield
    finally:
        torch_dist.destroy_process_group()


def test_fsdp_teacher_copy_takes_the_students_dtype_and_ema_updates(tiny_model, single_process_group):
    """A bf16 student under FSDP used to get a float32 teacher skeleton (built from the config alone), and
    the first EMA update (`_foreach_lerp_` across dtypes) raised."""
    from harness.distill.teacher import Teacher
    from harness.parallel import sharding

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
    from harness.run.readiness import check_suite

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

    from harness.run.readiness import check_suite

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
    from harness.eval.lmeval import make_task_manager
    from harness.tasks.spec import TASKS_ROOT

    first = make_task_manager([TASKS_ROOT], builtin_index=False)
    assert make_task_manager([str(TASKS_ROOT)], builtin_index=False) is first
    assert make_task_manager([TASKS_ROOT, ROOT / "tests"], builtin_index=False) is not first


# --- 4. memory estimate --------------------------------------------------------------------------------

QWEN_7B = dict(
    vocab=152064, hidden=3584, layers=28, intermediate=18944, heads=28, kv_heads=4, tied=False, qkv_bias=True
)
GB80 = 80 * 2**30


def _qwen7b_config():
    from transformers import Qwen2Config

    q = QWEN_7B
    return Qwen2Config(
        vocab_size=q["vocab"],
        hidden_size=q["hidden"],
        num_hidden_layers=q["layers"],
        intermediate_size=q["intermediate"],
        num_attention_heads=q["heads"],
        num_key_value_heads=q["kv_heads"],
        tie_word_embeddings=q["tied"],
    )


def test_parameter_count_from_the_config_matches_the_published_size():
    from harness.run.memory_estimate import parameters_from_dims, shape_of

    shape = shape_of(_qwen7b_config())
    assert shape.params == parameters_from_dims(**QWEN_7B)
    assert shape.params == pytest.approx(7.62e9, rel=0.005)  # Qwen2.5-7B's model card: 7.61B


def test_7b_with_an_ema_teacher_is_refused_on_one_80gb_gpu_and_fits_with_8_process_fsdp():
    from harness.run.memory_estimate import Setting, check, shape_of

    shape = shape_of(_qwen7b_config())
    P = shape.params
    one = Setting(weight_bytes=4, compute_bytes=2, teacher_bytes=4, rows=8, max_length=2048)  # fp32 master
    with pytest.raises(ValueError) as err:
        check(shape, one, GB80)
    message = str(err.value)
    need = (4 * P * 4 + 4 * P) / 2**30  # weights, grads, 2 moments, EMA copy
    assert f"about {need:.1f} GiB per process" in message and f"short by {need - 80:.1f} GiB" in message
    assert "FSDP over" in message and "conf/accelerate/fsdp.yaml" in message
    # the same in bf16 weights: the EMA copy in the compute dtype would not rescue it, a live teacher neither
    eight = Setting(
        weight_bytes=4, compute_bytes=2, teacher_bytes=4, processes=8, sharded=True, rows=1, max_length=2048
    )
    estimate, warning = check(shape, eight, GB80)
    assert estimate.static == pytest.approx((16 * P + 4 * P) / 8)
    assert estimate.evaluation == pytest.approx((4 * P + 4 * P) / 8 + 4 * P)  # + rank 0's gathered copy
    assert warning is None


def test_memory_refusal_suggests_a_live_teacher_when_dropping_the_copy_fits():
    from harness.run.memory_estimate import Setting, check, shape_of

    shape = shape_of(_qwen7b_config())
    P = shape.params
    s = Setting(weight_bytes=4, compute_bytes=2, teacher_bytes=4, rows=0)  # 16P student + 4P copy
    with pytest.raises(ValueError, match="teacher=live") as err:
        check(shape, s, 18 * P)  # the copy does not fit, the student alone does
    assert "teacher=base" not in str(err.value)  # its frozen copy costs what the EMA's does
    with pytest.raises(ValueError) as err:
        check(shape, s, 15 * P)  # not even the student: no teacher setting helps
    assert "teacher=live" not in str(err.value)


def test_check_memory_reads_the_model_config_and_the_run_settings(tmp_path):
    from omegaconf import OmegaConf

    from harness.config import Config
    from harness.run.readiness import check_memory

    _qwen7b_config().save_pretrained(tmp_path)
    cfg = OmegaConf.structured(Config)
    cfg.model.name, cfg.model.dtype, cfg.method.name = str(tmp_path), "float32", "sdft"
    with pytest.raises(ValueError, match="short by"):
        check_memory(cfg, 1, False, True, torch.device("cpu"), device_bytes=GB80)
    assert check_memory(cfg, 8, True, True, torch.device("cpu"), device_bytes=GB80) is None
    assert check_memory(cfg, 1, False, True, torch.device("cpu")) is None  # no GPU: no refusal here


def test_micro_batch_warning_for_single_prompt_micro_batches():
    from harness.run.readiness import micro_batch_warning

    warning = micro_batch_warning(32, 4, 8)
    assert (
        warning
        and "micro-batches of 1" in warning
        and "trainer.grad_accum=1 gives micro-batches of 4" in warning
    )
    assert micro_batch_warning(32, 4, 1) is None and micro_batch_warning(32, 1, 8) is None


def test_adamw_is_fused_on_cuda_and_on_the_cpu():
    from types import SimpleNamespace

    from harness.methods.optim import implementation

    on_gpu = [SimpleNamespace(device=torch.device("cuda", 0))]
    assert implementation(on_gpu)["fused"] is True
    assert implementation([torch.nn.Parameter(torch.zeros(2))])["fused"] is True
    elsewhere = [SimpleNamespace(device=torch.device("meta"))]  # no fused kernel known there: torch's default
    assert "fused" not in implementation(elsewhere)


def test_fused_cpu_adamw_takes_the_textbook_step():
    """Two steps of the optimizer the harness builds, against AdamW written out by hand (decoupled weight
    decay, bias-corrected moments; Loshchilov & Hutter 2019), in float64 for the reference."""
    from types import SimpleNamespace

    from harness.methods.optim import build_optimizer

    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    start = [p.detach().double().clone() for p in model.parameters()]
    trainer = SimpleNamespace(lr=0.01, adam_beta1=0.9, adam_beta2=0.999, weight_decay=0.1)
    optimizer = build_optimizer(model, trainer)
    assert optimizer.defaults["fused"] is True
    grads = [[torch.randn_like(p) for p in model.parameters()] for _ in range(2)]
    for step_grads in grads:
        for p, g in zip(model.parameters(), step_grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
    eps = optimizer.defaults["eps"]
    for i, p in enumerate(model.parameters()):
        w, m, v = start[i], torch.zeros_like(start[i]), torch.zeros_like(start[i])
        for t in (1, 2):
            g = grads[t - 1][i].double()
            w = w * (1 - trainer.lr * trainer.weight_decay)
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            w = w - trainer.lr * (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + eps)
        torch.testing.assert_close(p.detach().double(), w, rtol=1e-6, atol=1e-7)


# --- 5. eval.backend=vllm, against a stub of the vllm package --------------------------------------------


def _stub_vllm(monkeypatch, calls: list):
    """A `vllm` package with just what lm-eval's VLLM wrapper imports; LLM(...) records its arguments and
    the environment the engine would start in."""
    import importlib.metadata
    import os
    import sys
    import types

    from transformers import AutoTokenizer

    class LLM:
        def __init__(self, **kwargs):
            calls.append(
                (
                    "LLM",
                    kwargs,
                    {
                        k: os.environ.get(k)
                        for k in ("CUDA_VISIBLE_DEVICES", "VLLM_ENABLE_V1_MULTIPROCESSING")
                    },
                )
            )
            config = types.SimpleNamespace(max_model_len=kwargs["max_model_len"])
            self.llm_engine = types.SimpleNamespace(model_config=config)

    modules = {
        "vllm": types.SimpleNamespace(
            LLM=LLM, SamplingParams=object, TokensPrompt=dict, __version__="0.33.0"
        ),
        "vllm.lora": types.SimpleNamespace(),
        "vllm.lora.request": types.SimpleNamespace(LoRARequest=object),
        "vllm.tokenizers": types.SimpleNamespace(
            get_tokenizer=lambda name, **kw: AutoTokenizer.from_pretrained(name)
        ),
        "vllm.renderers": types.SimpleNamespace(),
        "vllm.renderers.hf": types.SimpleNamespace(resolve_chat_template=lambda **kw: None),
    }
    import importlib.machinery

    for name, attrs in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(vars(attrs))
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)  # find_spec("vllm") must see it
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "lm_eval.models.vllm_causallms", raising=False)
    real_version = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda name: "0.33.0" if name == "vllm" else real_version(name)
    )


def test_vllm_engine_gets_this_ranks_gpu_a_bounded_context_and_the_stage_snapshot(
    tiny_model, tmp_path, monkeypatch
):
    import os

    from harness.eval import lmeval as evaluation

    calls: list = []
    _stub_vllm(monkeypatch, calls)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(("empty_cache",)))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    model, tok = tiny_model
    snapshots = tmp_path / "results" / "vllm_snapshots" / "exp" / "key"
    first = evaluation.write_snapshot(model, tok, snapshots / "stage_1")
    folder = evaluation.write_snapshot(model, tok, snapshots / "stage_2", dtype="bfloat16")
    assert [p.name for p in snapshots.iterdir()] == [
        "stage_2"
    ] and not first.exists()  # one on disk, never stale
    assert (folder / evaluation.SNAPSHOT_DONE).is_file()
    assert '"bfloat16"' in (folder / "config.json").read_text()  # vLLM runs in the compute dtype asked for

    max_length = 512
    assert model.config.max_position_embeddings > max_length  # the bound must be the one that bites
    context = evaluation._context_length(model, max_length)
    evaluation._vllm_lm(folder, seed=3, gpu_memory=0.3, context=context, device=torch.device("cuda", 1))
    assert [c[0] for c in calls] == ["empty_cache", "LLM"]  # the trainer's cache is handed back first
    _, args, env = calls[1]
    assert args["model"] == str(folder) and args["tokenizer"] == str(folder)
    assert args["max_model_len"] == max_length and args["gpu_memory_utilization"] == 0.3 and args["seed"] == 3
    assert env == {"CUDA_VISIBLE_DEVICES": "5", "VLLM_ENABLE_V1_MULTIPROCESSING": "1"}  # rank's own GPU
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4,5" and "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ


def test_vllm_evaluation_without_a_snapshot_is_refused(tiny_model):
    from harness.eval.lmeval import evaluate

    model, tok = tiny_model
    with pytest.raises(ValueError, match="vllm_snapshot"):
        evaluate(model, tok, ["general_arith"], [], backend="vllm")


# --- 6. neutral sampling settings on load -------------------------------------------------------------------


def test_loaded_models_sample_from_their_own_distribution(tiny_model, tmp_path):
    """A checkpoint whose generation_config carries penalties (as Qwen2.5-Instruct's does) is loaded with
    neutral settings, so greedy generation is the argmax of the model's own logits, step by step."""
    from harness.config import ModelConfig
    from harness.models import load_model

    model, tok = tiny_model
    source = copy.deepcopy(model)
    source.generation_config.update(
        repetition_penalty=1.05, top_k=20, top_p=0.8, temperature=0.7, do_sample=True, no_repeat_ngram_size=2
    )
    source.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, tokenizer = load_model(ModelConfig(name=str(tmp_path), device="cpu", dtype="float32"))
    g = loaded.generation_config
    assert (g.repetition_penalty, g.top_k, g.top_p, g.temperature, g.do_sample, g.no_repeat_ngram_size) == (
        None,
    ) * 6
    assert g.pad_token_id == tokenizer.pad_token_id and g.eos_token_id is not None
    ids = torch.tensor([tokenizer("The sky is blue and the sea is")["input_ids"]])
    out = loaded.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=12,
        do_sample=False,
        eos_token_id=None,
    )
    manual = ids
    with torch.no_grad():
        for _ in range(12):
            manual = torch.cat([manual, loaded(manual).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, manual)


# --- 7. TF32 on CUDA only; weights loaded straight onto the GPU ------------------------------------------------


def test_tf32_is_allowed_on_cuda_only():
    from harness.models import allow_tf32

    saved = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        allow_tf32(torch.device("cpu"))
        assert torch.get_float32_matmul_precision() == "highest"
        allow_tf32(torch.device("cuda", 0))
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(saved)


def test_weights_load_straight_onto_this_processs_gpu():
    from harness.models import placement

    assert placement(torch.device("cuda", 3)) == {"device_map": {"": "cuda:3"}}
    assert placement(torch.device("cpu")) == {}


# --- 8. phase timings synchronise the device; peak memory is what the process holds ------------------------


def test_clock_waits_for_the_gpu(monkeypatch):
    import time

    from harness.timing import synchronized_clock

    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    assert synchronized_clock(torch.device("cpu")) is time.perf_counter
    clock = synchronized_clock(torch.device("cuda", 1))
    clock()
    assert synced == [torch.device("cuda", 1)]


def test_sdft_phase_timings_use_the_synchronising_clock(tiny_model, monkeypatch):
    from omegaconf import OmegaConf

    import harness.methods.base as base
    import harness.methods.sdft as sdft
    from harness.config import Config
    from harness.methods import StageContext, train_stage
    from harness.tasks.spec import Item
    from harness.timing import synchronized_clock

    readings = {"base": 0, "sdft": 0}

    def counting(where):
        def make(device):
            inner = synchronized_clock(device)

            def clock():
                readings[where] += 1
                return inner()

            return clock

        return make

    monkeypatch.setattr(base, "synchronized_clock", counting("base"))
    monkeypatch.setattr(sdft, "synchronized_clock", counting("sdft"))
    cfg = OmegaConf.structured(Config)
    cfg.model.max_length = 256
    cfg.method.distill.update({"max_new_tokens": 4, "skip_tokens": 0, "probe_items": 0})
    cfg.trainer.update({"batch_size": 2, "max_steps": 1, "warmup_steps": 0})
    items = [
        Item(prompt="Say hi.", demonstration="Hi!", id="a", source="t:1"),
        Item(prompt="Say bye.", demonstration="Bye!", id="b", source="t:2"),
    ]
    model, tok = tiny_model
    train_stage(copy.deepcopy(model), tok, items, None, cfg, StageContext())
    assert readings["sdft"] >= 4  # rollout, teacher, student: t0..t3
    assert readings["base"] >= 5  # stage start, step start, backward start/end, step end


def test_gpu_peak_memory_is_the_reserved_peak(monkeypatch):
    from harness.methods.base import peak_memory_mib

    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 3 * 2**20)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 1 * 2**20)
    assert peak_memory_mib(torch.device("cuda", 0)) == 3.0


# --- 9. no silent CPU fallback ---------------------------------------------------------------------------------


def test_auto_device_refuses_a_cuda_build_without_a_usable_gpu(monkeypatch):
    from harness.models import resolve_device

    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"built for CUDA 12.8 but finds no usable GPU.*model.device=cpu"):
        resolve_device("auto")
    assert resolve_device("cpu") == torch.device("cpu")  # asked for explicitly: fine
    monkeypatch.setattr(torch.version, "cuda", None)  # a CPU build: the CPU is what it is for
    assert resolve_device("auto") == torch.device("cpu")


def test_start_up_line_states_device_and_precision():
    from harness.run.readiness import device_line

    assert (
        device_line(torch.device("cpu"), torch.bfloat16, 2, True)
        == "device: cpu; weights bfloat16; 2 processes, FSDP"
    )


# --- 3. mixed precision: at lr 1e-5 the weights and the EMA teacher really move -----------------------------


def test_bf16_sdft_stage_moves_weights_and_ema_teacher_at_paper_learning_rate(monkeypatch):
    """model.dtype=bfloat16 computes in bf16 with float32 master weights. In bf16 storage an update of
    ~1e-5 on a weight of 0.02 rounds away (bf16 resolves 1/256 of a value) and a 1% EMA step likewise, so
    this checks what the paper's lr needs: most weights change, and the teacher is exactly the float32 EMA
    phi <- phi + a (theta - phi) of the student's weights after every step (computed here in float64)."""
    from omegaconf import OmegaConf

    import harness.methods.sdft as sdft
    from harness.config import Config, ModelConfig
    from harness.distill import teacher as teacher_module
    from harness.methods import StageContext, train_stage
    from harness.models import compute_dtype, load_model
    from harness.tasks.spec import Item

    torch.manual_seed(0)
    model, tok = load_model(ModelConfig(random_init=True, device="cpu", dtype="bfloat16"))
    assert compute_dtype(model) == torch.bfloat16
    start = [p.detach().double().clone() for p in model.parameters()]
    seen: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []  # (student, teacher) after each update

    class Recording(teacher_module.Teacher):
        def update(self) -> None:
            super().update()
            seen.append(
                (
                    [p.detach().double().clone() for p in self.student.parameters()],
                    [p.detach().double().clone() for p in self.model.parameters()],
                )
            )
            assert {p.dtype for p in self.model.parameters()} == {torch.float32}

    monkeypatch.setattr(sdft, "Teacher", Recording)
    cfg = OmegaConf.structured(Config)
    cfg.model.max_length = 256
    cfg.method.distill.update({"max_new_tokens": 6, "skip_tokens": 0, "probe_items": 0, "ema_rate": 0.01})
    cfg.trainer.update({"batch_size": 2, "max_steps": 2, "warmup_steps": 0, "lr": 1e-5})
    items = [
        Item(prompt="Name a colour.", demonstration="Blue.", id="a", source="t:1"),
        Item(prompt="Two plus two?", demonstration="Four.", id="b", source="t:2"),
    ]
    train_stage(model, tok, items, None, cfg, StageContext())
    assert len(seen) == 2 and all(p.dtype == torch.float32 for p in model.parameters())
    moved = sum(int((p.detach().double() != s).sum()) for p, s in zip(model.parameters(), start, strict=True))
    total = sum(s.numel() for s in start)
    assert moved / total > 0.5, moved / total  # bf16 storage would leave almost every weight where it was
    phi = [s.clone() for s in start]  # the teacher starts as the student's weights
    for students, teachers in seen:
        phi = [f + 0.01 * (t - f) for f, t in zip(phi, students, strict=True)]
        # float32 storage rounds each EMA step: allow two float32 spacings (2^-23 of the operands'
        # magnitude) per step; a teacher kept in bf16 is off by ~2^-9 relative (~1e4 spacings), or frozen
        gap = max(
            float(((f - t).abs() / ((f.abs() + x.abs()) * 2**-23 + 1e-30)).max())
            for f, t, x in zip(phi, teachers, students, strict=True)
        )
        assert gap <= 2 * len(seen), gap
    drift = max(float((t - s).abs().max()) for t, s in zip(seen[-1][1], start, strict=True))
    assert drift > 0  # the EMA teacher moved off the stage's starting weights


def test_gradient_sum_uses_bounded_buckets_not_one_copy_of_every_gradient():
    """Item 4: the data-parallel gradient sum concatenated all gradients at once (a 7B model's: ~30 GB more).
    Buckets keep every tensor once, in order, never mix dtypes and stay within the limit."""
    from harness.parallel.distributed import gradient_buckets

    grads = [
        torch.zeros(n, dtype=d)
        for n, d in [
            (10, torch.float32),
            (20, torch.float32),
            (5, torch.bfloat16),
            (100, torch.float32),
            (3, torch.float32),
            (4, torch.float32),
        ]
    ]
    buckets = gradient_buckets(grads, max_bytes=128)
    flat = [g for b in buckets for g in b]
    assert len(flat) == len(grads) and all(a is b for a, b in zip(flat, grads, strict=True))
    assert all(len({g.dtype for g in b}) == 1 for b in buckets)
    for bucket in buckets:
        size = sum(g.numel() * g.element_size() for g in bucket)
        assert size <= 128 or len(bucket) == 1  # a tensor larger than the limit travels alone
    assert [len(b) for b in buckets] == [2, 1, 1, 2]
