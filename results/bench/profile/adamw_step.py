"""One AdamW step over the embedded model's parameters with each of torch's implementations (issue #24).

`python results/bench/profile/adamw_step.py` on an idle machine: seconds per step (median of 5, after one
step that allocates the state) for the per-tensor loop (torch's CPU default), foreach and fused.
"""

from __future__ import annotations

import time

import torch

from harness.config import ModelConfig
from harness.models import load_model


def seconds_per_step(params: list[torch.Tensor], **kind: bool) -> float:
    optimizer = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.999), weight_decay=0.0, **kind)
    optimizer.step()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return sorted(times)[2]


if __name__ == "__main__":
    model, _ = load_model(ModelConfig())
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    for kind in ({}, {"foreach": True}, {"fused": True}):
        print(kind or "per-tensor loop", f"{seconds_per_step(params, **kind):.3f} s")
