"""Wall-clock phase timings that mean what they say on an asynchronous device.

CUDA kernels are queued and run later: `time.perf_counter()` after a forward pass measures the time to
*queue* it, and the real cost then lands in whichever later phase first waits for a result (typically the
`.item()` of the loss). A synchronising clock waits for the device's queue first, so gen_s / teacher_s /
student_s / backward_s are the phases' own times. The synchronisation costs a few microseconds per call,
a handful of calls per micro-batch. On the CPU the clock is plain perf_counter.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def synchronized_clock(device: torch.device) -> Callable[[], float]:
    """A perf_counter that first waits for `device` to finish its queued work (CUDA), else perf_counter."""
    if device.type != "cuda":
        return time.perf_counter

    def clock() -> float:
        torch.cuda.synchronize(device)
        return time.perf_counter()

    return clock
