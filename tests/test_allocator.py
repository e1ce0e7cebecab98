"""harness.allocator: glibc keeps freed memory in the process unless HARNESS_KEEP_FREED_MEMORY=0."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(env_value: str | None) -> list[str]:
    env = {"PATH": "/usr/bin:/bin"}
    if env_value is not None:
        env["HARNESS_KEEP_FREED_MEMORY"] = env_value
    done = subprocess.run(
        [sys.executable, "-c", "from harness.allocator import keep_freed_memory; print(keep_freed_memory())"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_thresholds_are_set_by_default_and_not_when_turned_off() -> None:
    assert _run(None) == ["True"]
    assert _run("0") == ["False"]
