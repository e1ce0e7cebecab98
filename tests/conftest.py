"""Shared fixtures: the real embedded model and a tiny randomly initialised one with the same tokenizer."""

from __future__ import annotations

import os

import pytest
import torch

from harness.allocator import keep_freed_memory

# Tests never reach for the network: our tasks read local files, the model is embedded.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# At most 2 intra-op threads, fewer when OMP_NUM_THREADS says so (a shared machine: oversubscribed OpenMP
# threads spin-wait and slow everything down many times over). Under pytest-xdist every worker is one process
# of its own on one core: one thread each.
_THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2
if os.environ.get("PYTEST_XDIST_WORKER"):
    # the `harness` processes a test starts (CLI runs, kills, sweeps) inherit this: one thread each too,
    # or they would run two OpenMP threads against the other worker on a 2-core machine
    os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(min(_THREADS, os.cpu_count() or 1, int(os.environ.get("OMP_NUM_THREADS", "2"))))
# the tests that train in this process run as `harness` does: freed memory stays in the process
keep_freed_memory()


def pytest_configure(config: pytest.Config) -> None:
    """Convert the embedded model once, in the controlling process, before any xdist worker starts: two
    workers converting at the same time would replace the cache folder under each other's feet."""
    if hasattr(config, "workerinput"):  # an xdist worker: the controller has done it
        return
    from harness.models import EMBEDDED_NAME, locate_weights

    locate_weights(EMBEDDED_NAME)


@pytest.fixture(scope="session")
def real_model():
    """SmolLM2-135M-Instruct from the embedded GGUF (converted once, then read from the cache)."""
    from harness.config import ModelConfig
    from harness.models import load_model

    return load_model(ModelConfig())


@pytest.fixture(scope="session")
def tiny_model():
    """A 2-layer, 64-wide model with SmolLM2's tokenizer: fast, deterministic, learns nothing useful."""
    from harness.config import ModelConfig
    from harness.models import load_model

    torch.manual_seed(0)
    return load_model(ModelConfig(random_init=True, device="cpu", dtype="float32"))
