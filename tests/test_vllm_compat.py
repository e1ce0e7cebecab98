"""The vLLM / transformers version line at start-up (harness.run.vllm_compat), on declared requirements."""

from __future__ import annotations

from harness.run.vllm_compat import compat_line, supported_range

# the shape of vLLM's Requires-Dist: transformers pinned to a range, other packages, an extra's own pins
REQUIRES = ["torch==2.9.0", "transformers<5,>=4.56.0", "numpy", 'transformers>=4.57; extra == "audio"']


def test_the_declared_range_is_read_without_extras():
    assert supported_range(REQUIRES) == "<5,>=4.56.0"
    assert supported_range(["torch", "numpy"]) == ""


def test_inside_and_outside_the_range():
    line, ok = compat_line("0.11.0", "4.57.1", REQUIRES)
    assert ok and line == "vLLM 0.11.0 with transformers 4.57.1: inside vLLM's supported range <5,>=4.56.0"
    line, ok = compat_line("0.11.0", "5.17.0", REQUIRES)
    assert not ok and "transformers 5.17.0: OUTSIDE vLLM's supported range <5,>=4.56.0" in line
    assert compat_line("0.11.0", "5.17.0", ["torch"]) == (
        "vLLM 0.11.0 with transformers 5.17.0 (vLLM declares no transformers range)",
        True,
    )
