"""OPD, on-policy distillation from a separate teacher model: the baseline OPSD and SDFT compare against.

The student samples from its own prompt; a *different* model, `method.options.teacher_model`, scores the
same completion tokens under the same prompt (it needs no demonstration: it is meant to know the task), and
the student is distilled towards it with any divergence and support of SDFT (harness.distill). The teacher
is one of:
- a stage checkpoint of this harness (`stage_<i>.safetensors`, or a checkpoint folder holding them: the
  latest stage is taken): weights of the student's own architecture, loaded into a copy of the student.
  On the CPU this is the natural teacher: the same model after SFT on the task;
- a Hugging Face hub id or a local model folder, loaded like `model.name`; it must share the student's
  vocabulary (the divergence compares distributions token by token).
The teacher is frozen for the whole stage; `distill.teacher` and `distill.ema_rate` do not apply, and
`distill.teacher=live` (no teacher at all) is refused.

Memory (`opd_held`, for the start-up estimate, harness.run.memory_estimate): a stage checkpoint's teacher is a
copy of the whole student (frozen LoRA base included); a hub or local teacher counts its own parameters, read
from its config on disk (a hub teacher not yet downloaded is counted at the student's size, with a warning),
in float32 as `load_teacher` loads it. Not supported under FSDP (the teacher is whole).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from harness.batching import chat_prompt_ids, item_name
from harness.config import DistillConfig, MethodConfig, ModelConfig, TrainerConfig
from harness.methods import Held, MethodSpec, StudentSize, method_options, sdft
from harness.methods.base import StageContext, TrainStats
from harness.models import load_model, precision_of, set_precision
from harness.parallel import sharding
from harness.tasks.spec import Item, TaskSpec, student_messages


@dataclass
class OPDOptions:
    teacher_model: str = ""  # hub id, local model folder, stage_<i>.safetensors or a folder of them


@dataclass(frozen=True)
class OPDSettings:
    distill: DistillConfig
    options: OPDOptions


def opd_settings(method: MethodConfig) -> OPDSettings:
    return OPDSettings(method.distill, method_options(method.name, method.options))


def opd_held(settings: OPDSettings, student: StudentSize) -> tuple[Held, ...]:
    """The frozen teacher: a copy of the student (a stage checkpoint), or a model of its own size."""
    source = settings.options.teacher_model
    if not source or stage_checkpoint(source) is not None:  # no source: refused when the stage starts
        return (Held("OPD teacher (a stage checkpoint: a copy of the student)", student.params),)
    # load_teacher loads it in float32; counted at the student's size if its config is not on disk
    return (Held(f"OPD teacher {source}", student.params, value_bytes=4, model=source),)


# no `teacher_copy`: the teacher is not built from distill.teacher (live is refused), it is `held`
METHOD = MethodSpec(name="opd", settings=opd_settings, reads=("distill",), options=OPDOptions, held=opd_held)


def stage_checkpoint(source: str) -> Path | None:
    """The safetensors file of a stage checkpoint named by `source` (a file, or the latest stage in a folder)."""
    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".safetensors":
        return path
    stages = (
        sorted(path.glob("stage_*.safetensors"), key=lambda p: int(p.stem.split("_")[1]))
        if path.is_dir()
        else []
    )
    return stages[-1] if stages else None


def _copy_without_grads(student: torch.nn.Module) -> torch.nn.Module:
    grads = [p.grad for p in student.parameters()]
    for p in student.parameters():
        p.grad = None
    teacher = copy.deepcopy(student)
    for p, g in zip(student.parameters(), grads, strict=True):
        p.grad = g
    return teacher


def load_teacher(source: str, student: torch.nn.Module, tokenizer: Any) -> torch.nn.Module:
    """The frozen teacher named by `source`, on the student's device and in its precision."""
    if not source:
        raise ValueError(
            "method opd needs method.options.teacher_model: a hub id, a local model folder, or a stage "
            "checkpoint (stage_<i>.safetensors or the folder holding them)"
        )
    checkpoint = stage_checkpoint(source)
    if checkpoint is not None:
        from safetensors.torch import load_model as load_weights  # lazy: only for checkpoint teachers

        teacher = _copy_without_grads(student)
        try:
            load_weights(teacher, str(checkpoint), device=str(next(student.parameters()).device))
        except RuntimeError as err:
            raise ValueError(
                f"method.options.teacher_model={source}: {checkpoint} does not fit the student's architecture "
                f"({str(err).splitlines()[0][:200]})"
            ) from None
    else:
        device = next(student.parameters()).device
        try:
            teacher, teacher_tokenizer = load_model(
                ModelConfig(name=source, dtype="float32", device=str(device))
            )
        except (OSError, ValueError) as err:
            raise ValueError(
                f"method.options.teacher_model={source}: not a stage checkpoint, and not loadable as a model "
                f"({str(err).splitlines()[0][:200]})"
            ) from None
        if teacher_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise ValueError(
                f"method.options.teacher_model={source}: its tokenizer's vocabulary differs from the student's; "
                "OPD compares the two distributions token by token, so both need one vocabulary"
            )
        set_precision(teacher, precision_of(student))
    teacher.requires_grad_(False)
    return teacher.eval()


class FrozenTeacher:
    """The Teacher interface (model, update, release) around an external, frozen model."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model: Any = model

    def update(self) -> None:
        """Frozen: nothing follows the student."""

    def release(self) -> None:
        self.model = None


class OPDStep(sdft.DistillStep):
    """SDFT's step whose teacher reads the student's own prompt (an external teacher needs no hint)."""

    def prompts(self, item: Item) -> tuple[list[int], list[int]]:
        key = id(item)
        if key not in self._prompts:
            ids = chat_prompt_ids(self.tokenizer, student_messages(item))
            if len(ids) >= self.max_length:
                raise ValueError(
                    f"item {item_name(item)}: the prompt has {len(ids)} tokens, model.max_length={self.max_length}"
                )
            self._prompts[key] = (ids, ids)
        return self._prompts[key]


def train(
    model: Any,
    tokenizer: Any,
    items: list[Item],
    spec: TaskSpec | None,
    settings: OPDSettings,
    trainer: TrainerConfig,
    ctx: StageContext,
) -> TrainStats:
    d = settings.distill
    if d.teacher == "live":
        raise ValueError(
            "method opd: method.distill.teacher=live would make the student its own teacher; OPD's teacher is "
            "method.options.teacher_model (use teacher: base)"
        )
    if sharding.is_sharded(model):
        raise ValueError(
            "method opd does not support FSDP (its external teacher is a whole copy); use DDP or one process"
        )
    teacher = FrozenTeacher(load_teacher(settings.options.teacher_model, model, tokenizer))
    d = replace(d, probe_items=0)  # SDFT's probe measures a demonstration template this teacher never reads
    return sdft.train(
        model, tokenizer, items, spec, d, trainer, ctx, desc="opd", make_step=OPDStep, teacher=teacher
    )
