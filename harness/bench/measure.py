"""How the step benchmark measures (harness.bench.step): process peak memory (RSS high-water mark above a
trimmed heap) and the machine's memory bandwidth, from which harness.bench.step derives the decode floor
(the time to stream the weights once per generated token).

The allocator is not pinned here (the `harness` command sets it as harness.allocator says). An earlier version pinned glibc's mmap threshold at 64 KiB so
that the resident set followed live tensors; that made every large temporary its own mapping, paid for in
page faults on every use, and slowed the timed steps it measured (an SDFT step 1.6x, an SFT backward 2x:
results/bench/profile/README.md). Instead, free heap memory is handed back to the OS (malloc_trim) where a
memory window opens, so the window's baseline is what is live, and the peak includes the allocator's own
slack, which a user's process pays too."""

from __future__ import annotations

import ctypes
import gc
import time
from pathlib import Path
from typing import Any

import torch


def trim_heap() -> None:
    """Return free heap memory to the OS (glibc's malloc_trim; nothing elsewhere)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


class PeakMemory:
    """Peak memory (MiB) above the level at entry (see the module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            trim_heap()  # what earlier work freed would otherwise be reused unseen by the window
            Path("/proc/self/clear_refs").write_text("5")
            self.base = _rss_kib() * 1024
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = _hwm_kib() * 1024
        self.mib = (peak - self.base) / 2**20


def memory_bandwidth(device: torch.device, mib: int = 1024, reps: int = 5) -> float:
    """Bytes per second a large copy moves (read + write), best of `reps`: what decoding can stream at most."""
    src = torch.ones(mib * 2**20 // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        dst.copy_(src)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * src.numel() * src.element_size() / best
