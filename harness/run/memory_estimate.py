"""Will the run fit? A start-up estimate of each process's device memory, from arithmetic alone.

What a training process keeps for a whole stage (P = the model's parameter count, N = processes, T = what
trains: P, or A under LoRA):

| piece | bytes per process |
|---|---|
| student weights | P x weight bytes (the stored dtype: fp32 master weights, or the model's own dtype) |
| gradients | P x weight bytes (same dtype as the weights) |
| AdamW moments (exp_avg, exp_avg_sq) | 2 x P x weight bytes (torch keeps them in the parameter's dtype) |
| teacher copy (`MethodSpec.teacher_copy`, teacher=ema or base) | T x teacher bytes (none for teacher=live) |
| with LoRA (A = adapter parameters) | weights (P + A), gradients and moments 3 x A, teacher copy A only |
| held by the method (`MethodSpec.held`) | as each method declares it, in `Setting.held`: |
| - EWC: Fisher, anchor, the penalty's saved diff | 3 x T x 4 (float32 whatever the weights) |
| - sft_l2: anchor, the penalty's saved diff | T x weight bytes + T x 4 |
| - LwF: the frozen previous model | T x weight bytes |
| - joint: the base weights | T x weight bytes |
| - OPD: its teacher, a stage checkpoint | (P + A) x weight bytes (a copy of the student) |
| - OPD: its teacher, a hub id or model folder | P_t x 4, P_t from the teacher's own config |
| gradient all-reduce bucket (DDP) | bounded by the bucket size, counted |

FSDP divides every row by N but the held state (whole tensors: those methods do not shard). On top of that,
at each stage's evaluation a process that evaluates under FSDP holds a whole gathered copy of the student
while its sharded weights, teacher and held state stay resident (the optimizer is freed by then). Whether
every rank may hold such a copy and evaluate its share (*shared*), or only rank 0 (*rank 0*, the others
wait), is `eval_sharing`'s decision: every copy is counted against the memory budget it draws on (one per
GPU; on the CPU all of a node's processes draw on the same host memory, `Setting.per_budget`).
Activations are estimated roughly (per token per layer: about 10 x hidden + 3 x intermediate values
without gradient checkpointing, the hidden state alone with it), for a micro-batch of `rows` sequences at
the full `model.max_length`: an upper bound, reported as a warning rather than a refusal, since kernels and
real lengths vary. The static state is certain, so a shortfall there refuses the run.

The parameter count comes from the model's config (`AutoConfig`, no weights downloaded), by building the
model on the meta device: exact for any architecture (tied embeddings, biases, MoE).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PretrainedConfig

GIB = 2**30


@dataclass(frozen=True)
class Shape:
    """What the arithmetic needs to know about the model."""

    params: int
    layers: int
    hidden: int
    intermediate: int


@dataclass(frozen=True)
class Setting:
    """What the arithmetic needs to know about the run."""

    weight_bytes: int  # bytes per stored weight (4: fp32 master weights; 2: bf16 weights)
    compute_bytes: int  # bytes per activation value (the compute dtype)
    teacher_bytes: int  # bytes per weight of the teacher's copy; 0 = no copy (live teacher, SFT)
    processes: int = 1
    sharded: bool = False  # FSDP
    gradient_checkpointing: bool = False
    rows: int = 1  # sequences per micro-batch (prompts x rollouts)
    max_length: int = 2048  # tokens per sequence, at most
    ddp_bucket_bytes: int = 0  # the all-reduce bucket of the data-parallel gradient sum
    # parameters that train (LoRA: the adapters, harness/lora.py); None = all. Only these have gradients and
    # AdamW moments, and a teacher copy holds only these (the frozen base is shared with the student)
    trainable: int | None = None
    # what the method keeps beside the student and the teacher copy (harness.methods.Held, sized by the run):
    # (what, bytes per process), counted whole, in the training state and as resident at evaluation (EWC's
    # and joint's stay for the whole run; the others' are freed at the stage's end: an upper bound there)
    held: tuple[tuple[str, float], ...] = ()
    shardable: bool = True  # whether the method trains under FSDP (no FSDP suggestion otherwise)
    # processes drawing on one memory budget: 1 with a GPU each; on the CPU every process of the node shares
    # the host's memory, so their evaluation copies add up there
    per_budget: int = 1


@dataclass(frozen=True)
class Estimate:
    static: float  # bytes per process that are certain: weights, gradients, optimizer, teacher copy, held
    evaluation: float  # bytes on a process while it evaluates (FSDP: resident + a whole gathered copy)
    activations: float  # rough upper bound for one micro-batch
    pieces: tuple[tuple[str, float], ...] = ()  # the teacher copy and the held state within `static`, named
    resident: float = 0.0  # bytes per process that stay through evaluation (sharded weights, teacher, held)
    eval_copy: float = 0.0  # one gathered whole copy of the student (FSDP), per process that holds one

    @property
    def peak(self) -> float:
        return max(self.static + self.activations, self.evaluation)


def estimate(shape: Shape, s: Setting) -> Estimate:
    shard = s.processes if s.sharded else 1
    trains = shape.params if s.trainable is None else shape.params + s.trainable  # adapters add weights
    grads = shape.params if s.trainable is None else s.trainable
    student = (trains + 3 * grads) * s.weight_bytes / shard  # weights, gradients, two AdamW moments
    teacher = grads * s.teacher_bytes / shard
    bucket = 0 if s.sharded or s.processes == 1 else s.ddp_bucket_bytes
    held = sum(b for _, b in s.held)
    static = student + teacher + held + bucket
    resident = trains * s.weight_bytes / shard + teacher + held  # what survives the stage's optimizer
    whole = trains * s.weight_bytes if s.sharded else 0.0  # rank 0's gathered copy for evaluation
    evaluation = resident + whole
    per_token_layer = shape.hidden if s.gradient_checkpointing else 10 * shape.hidden + 3 * shape.intermediate
    tokens = s.rows * s.max_length
    acts = tokens * per_token_layer * shape.layers * s.compute_bytes
    if s.gradient_checkpointing:  # one layer at a time is recomputed with everything kept
        acts += tokens * (10 * shape.hidden + 3 * shape.intermediate) * s.compute_bytes
    pieces = ((("teacher copy", teacher),) if teacher else ()) + s.held
    return Estimate(
        static=static,
        evaluation=evaluation,
        activations=acts,
        pieces=pieces,
        resident=resident,
        eval_copy=whole,
    )


SHARED, RANK0, REPLICAS = "shared", "rank 0", "replicas"


@dataclass(frozen=True)
class EvalSharing:
    """Who evaluates a stage, and what that costs one memory budget."""

    mode: str  # SHARED: every rank a gathered copy and a share; RANK0: rank 0 alone; REPLICAS: not sharded
    copies: int  # processes holding a whole copy at once (FSDP); 0 without FSDP (the replica is the model)
    need: float  # bytes the evaluation takes from one budget (all of its processes together)
    why: str = "a gathered copy on every rank would not fit"  # why RANK0 was chosen

    def describe(self) -> str:
        if self.mode == SHARED:
            return (
                f"evaluation shared: each of {self.copies} ranks holds a gathered copy and scores its share"
            )
        if self.mode == RANK0:
            return f"evaluation on rank 0 alone ({self.why})"
        return "evaluation shared: each process scores its share on its own replica"


def eval_sharing(e: Estimate, s: Setting, budget_bytes: float | None) -> EvalSharing:
    """SHARED where every rank's gathered copy fits the budget(s) beside what stays resident, else RANK0.

    A budget holds `s.per_budget` processes: shared, each of them holds resident + copy; rank 0 alone adds
    one copy to their residents. An unknown budget keeps the cautious RANK0 (one copy, as before sharing)."""
    pool = max(1, s.per_budget)
    if not s.sharded:
        return EvalSharing(REPLICAS, 0, pool * e.evaluation)
    shared = pool * (e.resident + e.eval_copy)
    if budget_bytes is not None and shared <= budget_bytes:
        return EvalSharing(SHARED, s.processes, shared)
    why = "memory budget unknown" if budget_bytes is None else EvalSharing.why
    return EvalSharing(RANK0, 1, pool * e.resident + e.eval_copy, why)


def _gib(x: float) -> str:
    return f"{x / GIB:.1f} GiB"


def describe(e: Estimate, sharing: EvalSharing | None = None) -> str:
    within = ", ".join(f"{what} {_gib(size)}" for what, size in e.pieces)
    state = f"training state {_gib(e.static)}" + (f" (of which {within})" if within else "")
    if sharing is None or sharing.mode == REPLICAS:
        where = "on rank 0" if sharing is None else "per process"
    elif sharing.mode == SHARED:
        where = f"on each of {sharing.copies} ranks (shared: a gathered copy of {_gib(e.eval_copy)} per rank)"
    else:
        where = f"on rank 0 alone (rank-0 mode: one gathered copy of {_gib(e.eval_copy)})"
    return f"{state} + activations up to {_gib(e.activations)} per process; evaluation {_gib(e.evaluation)} {where}"


def check(shape: Shape, setting: Setting, device_bytes: float) -> tuple[Estimate, str | None]:
    """(estimate, warning or None). Raises ValueError when the certain part cannot fit `device_bytes`,
    naming the shortfall and the settings that would fit."""
    e = estimate(shape, setting)
    sharing = eval_sharing(e, setting, device_bytes)
    certain = max(e.static, e.evaluation)
    if certain > device_bytes:
        raise ValueError(
            f"memory: this run needs about {_gib(certain)} per process before activations "
            f"({describe(e, sharing)}), "
            f"the device has {_gib(device_bytes)}: short by {_gib(certain - device_bytes)}. "
            + _suggest(shape, setting, device_bytes)
        )
    if e.peak > device_bytes:
        hint = "" if setting.gradient_checkpointing else "trainer.gradient_checkpointing=true, "
        return e, (
            f"memory: {describe(e, sharing)}, the device has {_gib(device_bytes)}; activations at full "
            f"model.max_length may not fit: consider {hint}a larger trainer.grad_accum (smaller "
            "micro-batches) or a lower model.max_length"
        )
    return e, None


def _fits(shape: Shape, s: Setting, device_bytes: float) -> bool:
    """Whether a suggested setting fits, activations included (a suggestion should not fail next)."""
    return estimate(shape, s).peak <= device_bytes


def _suggest(shape: Shape, s: Setting, device_bytes: float) -> str:
    # teacher=base is no saving: its frozen copy is stored like the EMA's (float32 master weights)
    ideas = []
    if s.teacher_bytes and _fits(shape, replace(s, teacher_bytes=0), device_bytes):
        ideas.append("method.distill.teacher=live (no teacher copy)")
    found = None
    for checkpointing in sorted({s.gradient_checkpointing, True}) if s.shardable else []:
        for n in (2, 4, 8, 16, 32, 64):
            # the global batch is shared out: each process's micro-batch shrinks with more processes
            rows = max(1, -(-s.rows * s.processes // n)) if s.rows else 0
            wider = replace(s, processes=n, sharded=True, rows=rows, gradient_checkpointing=checkpointing)
            if n > s.processes and _fits(shape, wider, device_bytes):
                found = (n, checkpointing)
                break
        if found:
            break
    if found:
        n, checkpointing = found
        extra = (
            " trainer.gradient_checkpointing=true" if checkpointing and not s.gradient_checkpointing else ""
        )
        ideas.append(
            f"FSDP over {n} GPUs: accelerate launch --config_file conf/accelerate/fsdp.yaml "
            f"--num_processes {n} -m harness.cli run ...{extra}"
        )
    if not ideas:
        return "No single setting change fits; use a smaller model or a larger device."
    return "What would fit: " + "; or ".join(ideas) + "."


def shape_of(config: PretrainedConfig) -> Shape:
    """The Shape of a transformers model config: parameters counted on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())  # tied weights are counted once
    text = getattr(config, "text_config", None) or config
    hidden = int(text.hidden_size)
    return Shape(
        params=params,
        layers=int(text.num_hidden_layers),
        hidden=hidden,
        intermediate=int(getattr(text, "intermediate_size", None) or 4 * hidden),
    )


def adapter_parameters(config: PretrainedConfig, r: int, target_modules: list[str]) -> int:
    """LoRA's trainable parameter count: r x (in + out) for every linear layer whose name ends in one of
    `target_modules` (peft's suffix match), counted on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(
        r * (m.in_features + m.out_features)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in target_modules
    )


def parameters_from_dims(
    vocab: int,
    hidden: int,
    layers: int,
    intermediate: int,
    heads: int,
    kv_heads: int,
    tied: bool = False,
    qkv_bias: bool = False,
) -> int:
    """Parameter count of a Llama/Qwen-style decoder from its dimensions (a cross-check of `shape_of`)."""
    head_dim = hidden // heads
    attention = hidden * head_dim * (heads + 2 * kv_heads) + heads * head_dim * hidden
    if qkv_bias:
        attention += head_dim * (heads + 2 * kv_heads)
    mlp = 3 * hidden * intermediate
    norms = 2 * hidden
    embeddings = vocab * hidden * (1 if tied else 2)
    return layers * (attention + mlp + norms) + embeddings + hidden


def processes_needed(shape: Shape, s: Setting, device_bytes: float) -> int | None:
    """The smallest FSDP process count whose certain memory fits (None if not even 1024)."""
    for n in range(1, 1025):
        if _fits(shape, replace(s, processes=n, sharded=n > 1), device_bytes):
            return n
    return None
