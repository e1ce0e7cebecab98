"""The GPU check, prepared here for an air-gapped GPU machine (docs/gpu.md): its CPU dry run through the same
script, and the wheel bundle's resolved package list (checked offline from the committed lock files)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from harness.bench import gpu_bundle
from harness.bench.gpu_bundle import closure, needed, normalise, read_lock

ROOT = Path(__file__).resolve().parents[1]
# makes modules look absent, as on the GPU machine: `import` fails as for a missing module, and
# importlib.util.find_spec (how transformers and lm-eval probe optional packages) finds nothing
SITECUSTOMIZE = """
import importlib.util, sys
BLOCKED = {blocked!r}
def blocked(name):
    return name.split(".")[0] in BLOCKED
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if blocked(name):
            raise ModuleNotFoundError(f"No module named {{name!r}} (left out of the GPU bundle)", name=name)
        return None
sys.meta_path.insert(0, Blocker())
_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, package=None: None if blocked(name) else _find_spec(name, package)
"""


def test_closure_follows_dependencies_that_apply_on_the_target():
    meta = {
        "a": ("1.0", ["b>=1", "c; sys_platform == 'win32'", "d; extra == 'x'", "e; python_version < '3.10'"]),
        "b": ("2.0", ["f"]),
        "d": ("1.0", []),
        "f": ("0.1", ["b"]),  # a cycle back to b
    }
    calls: list[list[str]] = []

    def metadata(requirements: list[str]) -> dict:
        calls.append(requirements)
        return {normalise(Requirement(r).name): meta[normalise(Requirement(r).name)] for r in requirements}

    # c: Windows only; d: only with extra x; e: Python < 3.10 (the target runs 3.12)
    assert closure(["a"], metadata) == {"a": "", "b": "a", "f": "b"}
    assert calls == [["a"], ["b>=1"], ["f"]]  # one pip call per level, each name resolved once
    assert closure(["a[x]"], metadata) == {"a": "", "b": "a", "d": "a", "f": "b"}
    assert needed("triton==3.6.0; platform_system == 'Linux'") and not needed("pywin32; os_name == 'nt'")


def test_the_bundle_holds_exactly_what_the_target_lacks_within_the_size_limit():
    lock, target = ROOT / gpu_bundle.LOCK, ROOT / gpu_bundle.TARGET_LOCK
    if not lock.exists() or not target.exists():
        pytest.skip(
            "no resolved bundle committed yet: run `make gpu-check` on a machine without a GPU (PyPI)"
        )
    bundled = {name: (size, by) for name, _, size, by in read_lock(lock)}
    present = {normalise(line.split("==")[0]) for line in target.read_text().splitlines() if line}
    wanted = {normalise(Requirement(r).name) for r in gpu_bundle.WANTED}
    assert wanted <= set(bundled), wanted - set(bundled)  # everything the machine lacks travels ...
    assert not set(bundled) & present, set(bundled) & present  # ... and nothing it has
    for name, (_, by) in bundled.items():  # every wheel is there because a wanted package needs it
        seen = {name}
        while by:
            assert by in bundled or by in wanted, (name, by)
            assert by not in seen, f"cycle in required-by: {name}"
            seen.add(by)
            by = bundled[by][1]
        assert name in wanted or seen & wanted
    assert {"torch", "transformers", "numpy", "pandas"} <= present
    tree = gpu_bundle.tree_bytes(ROOT)
    wheels = sum(size for size, _ in bundled.values())
    assert wheels + tree + 4 * 2**20 <= gpu_bundle.LIMIT_BYTES  # 4 MiB: the model's config and tokenizer


def test_dry_run_of_the_gpu_check_on_the_cpu(tmp_path):
    """`scripts/gpu_check.sh dry-run` with CUDA hidden: every check runs on the CPU path and says so."""
    from harness.models import EMBEDDED_NAME, locate_weights

    model = tmp_path / "model"
    model.mkdir()
    for name in gpu_bundle.MODEL_FILES:  # what the bundle carries: config and tokenizer, no weights
        shutil.copy2(Path(locate_weights(EMBEDDED_NAME)) / name, model / name)
    # the packages the bundle leaves out must not be needed: their modules cannot be imported in this run
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(SITECUSTOMIZE.format(blocked=gpu_bundle.EXCLUDED_MODULES))
    env = {
        **os.environ,
        "PYTHONPATH": str(blocker),
        "CUDA_VISIBLE_DEVICES": "",
        "SKIP_INSTALL": "1",  # this environment has the packages; the wheels are for CPython 3.12
        "PY": sys.executable,
        "MODEL": str(model),
        "OUT": str(tmp_path / "out"),
    }
    probe = subprocess.run([sys.executable, "-c", "import sklearn"], env=env, capture_output=True, text=True)
    assert "left out of the GPU bundle" in probe.stderr  # the blocker is in force
    small = ["--layers", "2", "--hidden", "32", "--max-length", "128", "--steps", "1"]
    small += ["--new-tokens", "4", "--eval-items", "2"]
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "dry-run", *small],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    table = (tmp_path / "out" / "check.md").read_text()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert len(rows) == 1 + 10, table  # the header row and one line per check
    assert "| pass | device: cpu;" in rows["start-up line"]
    assert "| pass | fused" in rows["fused AdamW"]
    assert "| skip | CUDA only" in rows["memory estimate vs reserved"]
    assert "| pass | gloo, 1 steps" in rows["FSDP2, 1 process"]
    assert "| pass | 2 items greedy" in rows["lm-eval HF backend, greedy"]
    assert table.startswith("GPU check on cpu (no CUDA;") and "9 of 10 passed, 1 skipped" in table
    assert (tmp_path / "out" / "check.log").exists()  # third-party lines kept beside the table
    assert "left out of the GPU bundle" not in (tmp_path / "out" / "check.log").read_text()


def test_the_cuda_runtime_is_counted_but_not_looked_into():
    def metadata(requirements: list[str]) -> dict:
        assert all(not r.startswith("nvidia") for r in requirements)  # never resolved
        return {"torch": ("2.11.0", ["nvidia-nccl-cu13==2.28.9; platform_system == 'Linux'", "filelock"])} | (
            {"filelock": ("3.0", [])} if "filelock" in requirements else {}
        )

    assert closure(["torch"], metadata, gpu_bundle.cuda_runtime) == {
        "torch": "",
        "nvidia-nccl-cu13": "torch",
        "filelock": "torch",
    }
