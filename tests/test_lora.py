"""LoRA as an axis (harness/lora.py): adapters injected in place, checked against peft's own PeftModel
forward, merged vs unmerged logits, only adapters training, the teacher sharing the frozen base, and a
checkpoint resume with adapters."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from harness.config import Config, LoraConfig, ModelConfig
from harness.distill.teacher import Teacher
from harness.lora import adapter_parameters, add_adapters, set_merged
from harness.methods import result_relevant, train_stage
from harness.methods.base import StageContext
from harness.models import load_model
from harness.run.checkpoints import load_checkpoint, save_checkpoint
from harness.tasks.spec import Item
from harness.tracking.keys import run_key

ITEMS = [
    Item(prompt="Name a colour of the sky.", demonstration="Blue, on a clear day.", id="a", source="t:1"),
    Item(prompt="Say hello in French.", demonstration="Bonjour !", id="b", source="t:2"),
]
LORA = LoraConfig(r=4, alpha=8.0)


def _tiny(lora: LoraConfig | None = LORA):
    torch.manual_seed(0)
    cfg = ModelConfig(random_init=True, device="cpu", dtype="float32", lora=lora or LoraConfig())
    return load_model(cfg)


def _nonzero_adapters(model, seed: int = 3) -> None:
    """B = 0 at init makes the adapter a no-op; give it weights so comparisons mean something."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter_parameters(model).values():
            p.copy_(0.05 * torch.randn(p.shape, generator=gen))


def _cfg(method: str = "sft", steps: int = 2):
    cfg = OmegaConf.structured(Config)
    cfg.model.max_length = 256
    cfg.method.name = method
    cfg.method.distill.max_new_tokens = 8
    cfg.trainer.batch_size, cfg.trainer.max_steps, cfg.trainer.lr, cfg.trainer.warmup_steps = (
        2,
        steps,
        1e-2,
        0,
    )
    cfg.trainer.epochs = steps
    return cfg


def _ids(tok):
    return tok(["Hello there, how are you?"], return_tensors="pt")["input_ids"]


def test_only_adapters_require_grad_and_start_as_the_base():
    base, tok = _tiny(None)
    model, _ = _tiny()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".lora_")[0].rsplit(".", 1)[1] for n in trainable} == set(LORA.target_modules)
    with torch.no_grad():  # B = 0: the same function as the base model
        assert torch.allclose(model(_ids(tok)).logits, base(_ids(tok)).logits, atol=1e-6)


def test_same_logits_as_peft_and_merged_as_unmerged():
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    model, tok = _tiny()
    _nonzero_adapters(model)
    base, _ = _tiny(None)
    peft_model = get_peft_model(
        base, PeftLoraConfig(r=4, lora_alpha=8.0, target_modules=list(LORA.target_modules))
    )
    theirs = dict(peft_model.named_parameters())
    with torch.no_grad():
        for name, p in adapter_parameters(model).items():
            theirs[f"base_model.model.{name}"].copy_(p)  # peft's wrapper prefixes the same names
    ids = _ids(tok)
    with torch.no_grad():
        ours = model(ids).logits
        assert torch.allclose(ours, peft_model(input_ids=ids).logits, atol=1e-5)
        plain = _tiny(None)[0](ids).logits
        assert (ours - plain).abs().max() > 1e-3  # the adapters really change the function
        set_merged(model, True)
        assert torch.allclose(model(ids).logits, ours, atol=1e-5)
        set_merged(model, False)
        assert torch.allclose(model(ids).logits, ours, atol=1e-6)


@pytest.mark.parametrize("method", ["sft", "sdft", "sft_replay"])
def test_training_changes_only_adapters(method):
    model, tok = _tiny()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ctx = StageContext(stage=1, replay_items=ITEMS[:1] if method == "sft_replay" else [])
    train_stage(model, tok, ITEMS, None, _cfg(method), ctx)
    for name, p in model.named_parameters():
        if "lora_" in name:
            continue
        assert torch.equal(p, before[name]), name
    assert any(not torch.equal(p, before[n]) for n, p in adapter_parameters(model).items())


def test_teacher_shares_the_frozen_base_and_averages_adapters_only():
    model, _ = _tiny()
    teacher = Teacher(model, kind="ema", ema_rate=0.5)
    student = dict(model.named_parameters())
    shared = [n for n, p in teacher.model.named_parameters() if p is student[n]]
    assert shared and all("lora_" not in n for n in shared)
    own = sum(p.numel() for n, p in teacher.model.named_parameters() if p is not student[n])
    assert own == sum(p.numel() for p in adapter_parameters(model).values())  # the adapters, nothing else
    start = {n: p.detach().clone() for n, p in adapter_parameters(teacher.model).items()}
    _nonzero_adapters(model)
    teacher.update()  # phi <- 0.5 theta + 0.5 phi, adapters only
    for name, p in adapter_parameters(teacher.model).items():
        assert torch.allclose(p, 0.5 * adapter_parameters(model)[name] + 0.5 * start[name], atol=1e-7), name


def test_resume_from_a_checkpoint_continues_the_same_adapter(tmp_path):
    model, tok = _tiny()
    train_stage(model, tok, ITEMS, None, _cfg(), StageContext(stage=1))
    save_checkpoint(model, tmp_path, 1, "last")
    resumed, _ = _tiny()
    assert load_checkpoint(resumed, tmp_path, 1)
    for (name, p), q in zip(model.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q), name
    for m in (model, resumed):  # stage 2 from the running model and from the resumed one
        train_stage(m, tok, ITEMS[::-1], None, _cfg(), StageContext(stage=2))
    for (name, p), q in zip(model.named_parameters(), resumed.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), name


def test_run_key_includes_the_lora_settings():
    cfg = OmegaConf.structured(Config)
    cfg.stream.name, cfg.stream.tasks, cfg.method.name = "s", ["dates"], "sft"
    keys = set()
    for r in (0, 8, 16):
        cfg.model.lora.r = r
        keys.add(run_key(result_relevant(OmegaConf.to_container(cfg, resolve=True))))
    assert len(keys) == 3


def test_unknown_target_module_is_one_line():
    model, _ = _tiny(None)
    with pytest.raises(ValueError, match=r"model.lora.target_modules=\['nope'\]"):
        add_adapters(copy.deepcopy(model), LoraConfig(r=2, target_modules=["nope"]))


def test_memory_estimate_counts_adapters_not_a_second_model():
    from harness.run.memory_estimate import Estimate, Setting, Shape, adapter_parameters, estimate

    model, _ = _tiny()
    counted = adapter_parameters(model.config, LORA.r, list(LORA.target_modules))
    assert counted == sum(p.numel() for p in adapter_parameters_of(model))  # what peft really injected
    shape = Shape(params=1000, layers=1, hidden=8, intermediate=16)
    full = Setting(weight_bytes=4, compute_bytes=2, teacher_bytes=4)
    lora = Setting(weight_bytes=4, compute_bytes=2, teacher_bytes=4, trainable=10)
    assert isinstance(estimate(shape, full), Estimate)
    assert estimate(shape, full).static == 1000 * 4 * 4 + 1000 * 4  # weights, grads, 2 moments + teacher
    assert estimate(shape, lora).static == (1010 + 3 * 10) * 4 + 10 * 4  # adapters train, teacher = adapters


def adapter_parameters_of(model):
    return list(adapter_parameters(model).values())


def test_bench_lora_ratios_pair_each_lora_row_with_its_full_row():
    from harness.bench.lora_step import lora_label, lora_ratios

    rows = [
        {"method": "sft", "precision": "float32", "rollouts": 1, "step_s": 2.0, "peak_mib": 400.0},
        {"method": "sdft", "precision": "float32", "rollouts": 1, "step_s": 5.0, "peak_mib": 1000.0},
        {"method": "sdft", "precision": "float32", "rollouts": 4, "step_s": 9.0, "peak_mib": 2000.0},
        {
            "method": lora_label("sft", 8),
            "precision": "float32",
            "rollouts": 1,
            "step_s": 1.0,
            "peak_mib": 100.0,
        },
        {
            "method": lora_label("sdft", 8),
            "precision": "float32",
            "rollouts": 1,
            "step_s": 4.0,
            "peak_mib": 250.0,
        },
    ]
    assert lora_ratios(rows, 8) == {
        "float32": {
            "sft_lora_over_full_time": 0.5,
            "sft_lora_over_full_peak_mem": 0.25,
            "sdft_lora_over_full_time": 0.8,
            "sdft_lora_over_full_peak_mem": 0.25,
        }
    }
