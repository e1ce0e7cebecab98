"""Fully sharded data parallelism (FSDP2, `torch.distributed.fsdp.fully_shard`) for the student and teacher.

Under `accelerate launch --config_file conf/accelerate/fsdp.yaml` every process holds 1/N of each weight
(and of its gradient and AdamW state) instead of a full replica. The sharding plan: every decoder layer is
its own unit (all-gathered just before its forward, freed after it), and one root unit holds the rest
(embeddings, final norm, LM head) of the student and, for an EMA/base teacher, of the teacher's copy
(allocated shard by shard, never whole).

Why a root module that only runs a function: our LM head is applied outside the model's forward, chunked
and fused with the loss (harness.distill.fused_head), and SDFT calls three models' pieces in one step
(rollout, teacher decoder, student decoder + both heads). FSDP gathers a unit's weights only inside that
unit's forward. `run(student, fn, ...)` calls `fn` *inside* the root's forward, so the root weights are whole for the
duration, every layer gathers itself as usual, and backward (called on the returned loss, outside) runs
FSDP's reduce-scatter for every unit including the root. Methods need no FSDP code of their own.

Three things differ from the data-parallel path (harness.parallel.distributed):
- gradients are reduce-scattered as an *average* (gloo cannot pre-scale a sum); our losses are normalised
  by the global batch, so the loss is scaled by the world size before backward (`gradient_scale`);
- every process must run the same number of forward passes: rollouts use `generate(synced_gpus=True)`,
  and no micro-batch of the global batch may be empty (validated at start-up, harness.run.loop);
- evaluation, the in-context check and checkpoints need whole weights: `gathered_copy` assembles a plain
  copy of the student on every process where the start-up memory plan allows it (each then evaluates its
  share, harness.parallel.shares), else on rank 0 alone (the other processes take part in the gather, then wait).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

# Where `shard` leaves the FSDP root: on the student module itself, so the sharding state lives and dies
# with the model it describes (a sweep's next job loads a new, unsharded model; nothing to reset).
_ROOT_ATTR = "_harness_sharded_root"


class ShardedRoot(torch.nn.Module):
    """The FSDP root: owns the student (and the teacher's copy) and runs any function inside its forward."""

    def __init__(self, student: torch.nn.Module, teacher: torch.nn.Module | None) -> None:
        super().__init__()
        self.student = student
        self.teacher = teacher

    def forward(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)


def reshard_after_forward() -> bool:
    """accelerate passes `fsdp_reshard_after_forward` as FSDP_RESHARD_AFTER_FORWARD (a bool for FSDP2, a
    sharding strategy name for FSDP1's config keys); free gathered layer weights after forward unless told not to."""
    value = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").strip().upper()
    return value not in ("FALSE", "0", "NO", "SHARD_GRAD_OP", "NO_SHARD")


def _decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    decoder = getattr(model, model.base_model_prefix)
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise ValueError(
            f"FSDP: {type(model).__name__} has no `{model.base_model_prefix}.layers`; the harness "
            "shards decoder-only models whose layers are listed there (Llama, Qwen, SmolLM, Mistral ...)"
        )
    return list(layers)


def shard(student: torch.nn.Module, with_teacher: bool) -> ShardedRoot:
    """Shard `student` in place across the process group; `with_teacher` adds a sharded teacher copy.

    The teacher copy is built on the meta device and sharded the same way as the student before any
    memory is allocated for it, so that it never exists whole; its shards line up with the student's, and
    `Teacher` fills them from the student's shards at the start of every stage (EMA updates are then local).
    """
    from torch.distributed.fsdp import fully_shard

    device = _device_of(student)
    teacher = None
    if with_teacher:
        with torch.device("meta"):
            teacher = type(student)(copy.deepcopy(student.config))
        # A skeleton built from the config takes the config's/default dtype, not the student's (a bf16
        # student got a float32 teacher, and the first EMA lerp across dtypes raised): match tensor by tensor.
        _match_dtypes(teacher, student)
        teacher.requires_grad_(False).eval()
    reshard = reshard_after_forward()
    for model in (student, teacher):
        if model is None:
            continue
        for layer in _decoder_layers(model):
            fully_shard(layer, reshard_after_forward=reshard)
    root = ShardedRoot(student, teacher)
    fully_shard(root, reshard_after_forward=reshard)
    if teacher is not None:
        teacher.to_empty(device=device)  # allocates this process's shards only; weights come from `Teacher`
        _copy_unsaved_buffers(student, teacher)
        teacher.generation_config = copy.deepcopy(student.generation_config)
    # a plain attribute, not a submodule: the root already holds the student (no cycle in `modules()`)
    object.__setattr__(student, _ROOT_ATTR, root)
    return root


def _match_dtypes(target: torch.nn.Module, source: torch.nn.Module) -> None:
    """Give every parameter and buffer of `target` (on the meta device: free) its `source` twin's dtype."""
    sources = dict(source.named_parameters())
    for name, param in target.named_parameters():
        param.data = param.data.to(sources[name].dtype)
    buffers = dict(source.named_buffers())
    for module_name, module in target.named_modules():
        for attr, buffer in list(module._buffers.items()):
            twin = buffers.get(f"{module_name}.{attr}" if module_name else attr)
            if buffer is not None and twin is not None:
                module._buffers[attr] = buffer.to(twin.dtype)


def _copy_unsaved_buffers(source: torch.nn.Module, target: torch.nn.Module) -> None:
    """Buffers are not sharded and not part of the weights (rotary frequencies): take the source's values."""
    buffers = dict(source.named_buffers())
    with torch.no_grad():
        for name, buffer in target.named_buffers():
            buffer.copy_(buffers[name])


def root_of(student: torch.nn.Module) -> ShardedRoot | None:
    """The FSDP root `shard` built around `student` (None: not sharded)."""
    return getattr(student, _ROOT_ATTR, None)


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether any of `model`'s modules is an FSDP unit (the student or its sharded teacher copy)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return False
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in model.modules())


def run(student: torch.nn.Module, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)`, inside the FSDP root's forward when `student` is sharded."""
    root = root_of(student)
    if root is None:
        return fn(*args, **kwargs)
    return root(fn, *args, **kwargs)


@contextmanager
def whole_during_generation(model: torch.nn.Module) -> Iterator[None]:
    """Keep `model`'s layers gathered from their first forward until the end of the block.

    Sampling runs one forward per new token; by default each would gather every layer again (measured on
    2 CPU processes: SDFT steps 4x slower than DDP). Gathering once per rollout costs one whole copy of the
    decoder's weights for the duration of `generate`, the same as the evaluation copy, and is freed after.
    """
    if not is_sharded(model):
        yield
        return
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        restore = reshard_after_forward()
        for unit in units:
            unit.reshard()
            unit.set_reshard_after_forward(restore, recurse=False)


def gradient_scale(student: torch.nn.Module) -> float:
    """Multiplier on the loss before backward: FSDP averages gradients over processes, we want their sum."""
    if root_of(student) is None:
        return 1.0
    return float(torch.distributed.get_world_size())


def teacher_copy(student: torch.nn.Module) -> torch.nn.Module | None:
    """The sharded teacher weights `shard` allocated beside `student` (None: not sharded, or no copy)."""
    root = root_of(student)
    return None if root is None else root.teacher


def to_float(value: torch.Tensor) -> float:
    """A scalar that may be a DTensor (e.g. clip_grad_norm_ over sharded gradients) as a Python float."""
    full = getattr(value, "full_tensor", None)
    return float(full() if full is not None else value)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's part of a tensor: a DTensor's shard, or the tensor itself."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def local_fraction(model: torch.nn.Module) -> float:
    """Share of the model's weights stored on this process (1.0 unsharded, about 1/N under FSDP)."""
    stored = sum(local(p).numel() for p in model.parameters())
    return stored / max(1, sum(p.numel() for p in model.parameters()))


def gathered_copy(
    student: torch.nn.Module, is_main: bool, everywhere: bool = False
) -> torch.nn.Module | None:
    """A plain (unsharded) copy of the student's current weights: on rank 0 only (None elsewhere), or with
    `everywhere` on every process (evaluation shared by all ranks, harness.run.stage_eval).

    A collective: every process must call it, with the same `everywhere`. The weights are assigned to a
    model skeleton built on the meta device, so no second random initialisation is paid for. For rank 0
    alone they are gathered to host memory (the other ranks' devices never see a whole copy); for every
    rank they are all-gathered on the device itself, where the copy lives anyway (N host copies of a large
    model at once would fill a node's memory).
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=not everywhere)
    state = get_model_state_dict(student, options=options)
    if not (is_main or everywhere):
        return None
    device = _device_of(student)
    with torch.device("meta"):
        plain = type(student)(copy.deepcopy(student.config))
    plain.load_state_dict(state, assign=True, strict=True)
    plain.tie_weights()  # assign=True replaces tensors one by one: re-point a tied head at the embeddings
    # Buffers outside the state dict (rotary frequencies) are still on meta: allocate, then take the
    # student's (FSDP leaves buffers whole on every process).
    for module in plain.modules():
        for attr, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.is_meta:
                module._buffers[attr] = torch.empty_like(buffer, device="cpu")
    _copy_unsaved_buffers(student, plain)
    plain.generation_config = copy.deepcopy(student.generation_config)
    return plain.to(device).eval()


def _device_of(model: torch.nn.Module) -> torch.device:
    return local(next(model.parameters())).device
