"""Keep freed memory in the process (glibc's allocator), so pages are faulted in once, not at every step.

On a virtual machine that hands freed guest pages back to its host (free page reporting, as on the machine
the harness is developed on), touching a page again costs a host fault on top of the guest's. glibc by
default returns memory at the top of its heap once more than 128 KiB is free there, and serves buffers
above its (self-adjusting) mmap threshold with fresh mappings that are unmapped when freed. A training step
allocates and frees hundreds of MiB of activations, logits chunks and gradients, so every step pays those
faults again. Measured on the embedded model (results/bench/profile/README.md): SDFT's student pass took
1.9-3.8 s per step after warm-up with glibc's defaults and 1.9-2.0 s with memory kept; the first fused
AdamW step, which allocates its moments, 4.9 s.

`keep_freed_memory` raises the mmap threshold to 32 MiB (glibc's largest self-adjusted value: buffers up to
that come from the heap and are reused) and the trim threshold to 1 GiB. The cost is resident memory: the
process keeps its high-water mark instead of shrinking between phases. HARNESS_KEEP_FREED_MEMORY=0 turns it
off (glibc's defaults); on other C libraries it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2**30


def keep_freed_memory() -> bool:
    """Set glibc's thresholds (see the module docstring); True when they were set."""
    if os.environ.get("HARNESS_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
