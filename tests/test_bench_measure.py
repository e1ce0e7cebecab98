"""The step benchmark's peak-memory window (harness.bench.measure) with glibc's allocator as it comes."""

from __future__ import annotations

import sys

import pytest
import torch

from harness.bench.measure import PeakMemory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_memory_sees_a_buffer_freed_before_the_window_closes() -> None:
    scratch = torch.ones(64 * 2**20 // 4)  # freed before the window: not counted in it
    del scratch
    with PeakMemory(torch.device("cpu")) as mem:
        buffer = torch.ones(256 * 2**20 // 4)  # 256 MiB, every page touched
        del buffer
    assert 240 <= mem.mib <= 400, mem.mib


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_memory_of_an_empty_window_is_small() -> None:
    with PeakMemory(torch.device("cpu")) as mem:
        pass
    assert mem.mib < 32, mem.mib
