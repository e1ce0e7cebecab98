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
