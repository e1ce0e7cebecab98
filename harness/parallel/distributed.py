"""Data parallelism across processes started by `accelerate launch` (or `torchrun`, or `mpirun`).

Every process holds a full replica of the student (and of its teacher). A training step's global batch is
cut into `world * grad_accum` micro-batches; process r works on micro-batches r*grad_accum .. (r+1)*grad_accum-1,
so the rollouts are sharded and a 2-process run with grad_accum=a sees exactly the micro-batches of a
1-process run with grad_accum=2a. The micro-batch losses are already normalised by the *global* batch
(its token count for SFT, its sequence count for SDFT), so the gradients are summed across processes, not
averaged: the sum equals the single-process gradient of the same global batch. Clipping, the optimizer step
and the EMA teacher update then run on identical numbers on every process, which keeps the replicas equal;
`check_in_sync` verifies that at the end of every stage.

Evaluation is dealt out by task and by greedy batch (harness.parallel.shares, harness.run.stage_eval); only the main process (rank 0) talks to MLflow, writes
checkpoints and prints. Without a launcher (WORLD_SIZE unset or 1) every call here is a no-op.

With an FSDP launch config (`uses_fsdp`), the process group and micro-batch sharding are the same, but the
weights are sharded instead of replicated (harness.parallel.sharding): FSDP reduces the gradients itself, and the
replica checks do not apply.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

# Processes wait for each other at collectives while the slowest evaluates its share of a stage's tasks
# or rank 0 logs: give it hours, not the default 30 minutes.
BARRIER_TIMEOUT = timedelta(hours=12)


WORLD_SIZE_VARS = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")  # torchrun, MPI


def launched_world_size() -> int:
    for var in WORLD_SIZE_VARS:
        if os.environ.get(var):
            return int(os.environ[var])
    return 1


def check_launch() -> None:
    """`accelerate launch --cpu --num_processes N` starts N processes only through MPI (`mpirun`); without
    it accelerate silently starts one. It then still sets MASTER_ADDR: refuse rather than run a 1-process
    job the user believes is N."""
    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    if cpu and os.environ.get("MASTER_ADDR") and launched_world_size() <= 1:
        raise ValueError(
            "accelerate launch --cpu --num_processes N started a single process: accelerate's multi-CPU "
            "launch needs MPI (mpirun). Use torchrun underneath instead: accelerate launch --config_file "
            "conf/accelerate/ddp.yaml --num_processes N -m harness.cli run ... (gloo on a machine "
            "without GPUs), or drop --num_processes for a single-process run."
        )


def uses_fsdp() -> bool:
    """accelerate sets this when its config (or `--use_fsdp`) asks for FSDP."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true", "yes")


@dataclass
class Replicas:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    sharded: bool = False  # FSDP: each process holds a shard of the weights, not a replica
    # whether every process holds whole weights at evaluation and scores its share (harness.parallel.shares):
    # true for replicas; under FSDP the loop sets it from the start-up memory plan (a gathered copy per
    # rank), and false leaves rank 0 to evaluate alone on the one gathered copy
    eval_everywhere: bool = True

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def broadcast(self, obj: Any) -> Any:
        """rank 0's `obj` on every process (any picklable object)."""
        if not self.active:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every process's `obj`, in rank order, on every process."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def sum_gradients(self, model: torch.nn.Module) -> None:
        """grad <- sum over processes, in flat buckets of at most GRADIENT_BUCKET_BYTES per collective (few
        collectives, not one per tensor, and never a second copy of all gradients: a 7B model's would be 30 GB).

        A process whose shard of the step was empty contributes zeros.
        """
        if not self.active or self.sharded:  # FSDP reduce-scatters gradients during backward
            return
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        for bucket in gradient_buckets([p.grad for p in params], GRADIENT_BUCKET_BYTES):
            flat = torch.cat([g.reshape(-1) for g in bucket])
            torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
            offset = 0
            for g in bucket:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()

    def check_in_sync(self, model: torch.nn.Module, what: str) -> None:
        """Raise if the replicas' weights differ (a sum and a position-weighted sum per process)."""
        if not self.active or self.sharded:  # shards differ by design
            return
        fingerprint = parameter_fingerprint(model)
        prints = self.gather(fingerprint)
        if any(p != prints[0] for p in prints):
            raise RuntimeError(
                f"{what}: the weights differ between processes (fingerprints per rank: {prints}); "
                "data-parallel replicas must stay identical"
            )


def parameter_fingerprint(model: torch.nn.Module) -> tuple[float, float]:
    """Two float64 sums over all weights; equal replicas give equal values, bit for bit."""
    total, weighted = 0.0, 0.0
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            x = p.detach().double()
            total += float(x.sum())
            weighted += float(x.abs().sum()) * (i + 1)
    return total, weighted


_REPLICAS: Replicas | None = None


def replicas() -> Replicas:
    """This process's place among the data-parallel replicas; sets up the process group on first call."""
    global _REPLICAS
    if _REPLICAS is not None:
        return _REPLICAS
    check_launch()
    if launched_world_size() <= 1:
        _REPLICAS = Replicas()
        return _REPLICAS
    if not torch.distributed.is_initialized():
        from accelerate import PartialState

        PartialState(timeout=BARRIER_TIMEOUT)  # gloo on CPU, nccl on GPU, from the launcher's env vars
    _REPLICAS = Replicas(
        rank=torch.distributed.get_rank(),
        world=torch.distributed.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        sharded=uses_fsdp(),
        eval_everywhere=not uses_fsdp(),
    )
    return _REPLICAS


def micro_batches(batch: list, accum: int, world: int) -> list[list]:
    """The global batch cut into `world * accum` consecutive micro-batches (trailing ones may be empty)."""
    parts = world * accum
    size = -(-len(batch) // parts) if batch else 0
    return [batch[i * size : (i + 1) * size] for i in range(parts)]


# Gradients are summed in flat buckets of this size: large enough that a collective's fixed cost is small,
# small enough that the temporary buffer is a rounding error next to the model (PyTorch DDP uses 25 MiB).
GRADIENT_BUCKET_BYTES = 64 * 2**20


def gradient_buckets(grads: list[torch.Tensor], max_bytes: int) -> list[list[torch.Tensor]]:
    """Consecutive runs of same-dtype tensors of at most `max_bytes` together (a larger tensor alone)."""
    buckets: list[list[torch.Tensor]] = []
    size = 0
    for g in grads:
        nbytes = g.numel() * g.element_size()
        if buckets and buckets[-1][0].dtype == g.dtype and size + nbytes <= max_bytes:
            buckets[-1].append(g)
            size += nbytes
        else:
            buckets.append([g])
            size = nbytes
    return buckets
