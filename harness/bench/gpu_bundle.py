"""The wheel bundle an air-gapped GPU machine needs: exactly the packages it lacks, for its platform.

The target (docs/gpu.md) has Python 3.12 with torch 2.11, transformers 5.17, accelerate, peft, pandas,
pyarrow and scipy, and whatever those depend on (the closure of `TARGET_ROOTS`). It lacks what `WANTED`
names. The bundle is the dependency closure of `WANTED` minus what the target has (a package the target has
is not looked into: it is installed with its own dependencies), both closures resolved for the target's
platform from the packages' metadata alone (`pip install --dry-run --no-deps --report`, one call per level
of the closure: no wheel is downloaded to resolve). Then the bundle's wheels are downloaded (`--only-binary=:all:`, cp312,
manylinux x86-64); the few packages PyPI has only as source (pure Python) are built into wheels here.

`python -m harness.bench.gpu_bundle OUT` writes OUT/wheels/, OUT/model/ (config and tokenizer of the
embedded model, no weights) and OUT/bundle.lock (name, version, bytes, required by): the lock is what the
tests check offline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

# what the GPU machine lacks, at the versions tested here; mlflow as its skinny client plus the SQL store
MLFLOW_VERSION = "3.17.2"
WANTED = (
    "hydra-core==1.3.8",
    "omegaconf==2.3.1",
    "lm-eval==0.4.13",
    f"mlflow-skinny=={MLFLOW_VERSION}",
    "sqlalchemy",
    "alembic",
    "datasets==5.2.0",
    "gguf==0.19.0",
)
TARGET_ROOTS = (
    "torch==2.11.*",
    "transformers==5.17.*",
    "accelerate",
    "peft",
    "pandas",
    "pyarrow",
    "scipy",
)
PLATFORM_FLAGS = (
    "--only-binary=:all:",
    "--python-version=3.12",
    "--implementation=cp",
    "--platform=manylinux2014_x86_64",
    "--platform=manylinux_2_28_x86_64",
)
# on PyPI as source only (pure Python): built into wheels here, before resolving, so the resolver finds them
SOURCE_ONLY = ("antlr4-python3-runtime==4.9.3", "sqlitedict", "word2number")
# lm-eval's requirements that none of the harness's paths imports (lm-eval imports them inside the metric
# functions that use them: f1/mcc, ROUGE): left out with everything only they bring (nltk, joblib, ...), 12 MiB
# of the 50. The CPU dry run in tests/test_gpu_check.py runs with their modules blocked, so a path that
# starts needing them fails there.
EXCLUDED = ("scikit-learn", "rouge-score")
EXCLUDED_MODULES = ("sklearn", "rouge_score", "nltk", "absl", "joblib", "threadpoolctl", "narwhals")
# what the target's own packages may be built for (only their metadata is read: CUDA's wheels need newer glibc)
TARGET_PLATFORMS = tuple(f"--platform=manylinux_2_{v}_x86_64" for v in (17, 27, 28, 31, 34, 35, 39))
LIMIT_BYTES = 50 * 2**20  # the bundle and the working tree together
LOCK = "scripts/gpu_bundle.lock"  # the resolved bundle, committed
TARGET_LOCK = "scripts/gpu_target.lock"  # what the target has (the closure of TARGET_ROOTS), committed
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)

Metadata = dict[str, tuple[str, list[str]]]  # normalised name -> (version, Requires-Dist)


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def target_environment() -> dict[str, str]:
    """PEP 508 marker values of the target: CPython 3.12 on Linux x86-64."""
    env = default_environment()
    env.update(
        python_version="3.12",
        python_full_version="3.12.0",
        implementation_name="cpython",
        platform_python_implementation="CPython",
        sys_platform="linux",
        platform_system="Linux",
        platform_machine="x86_64",
        os_name="posix",
    )
    return env


def needed(requirement: str, extras: Iterable[str] = ()) -> bool:
    """Whether a Requires-Dist line applies on the target (its marker, for the extras asked for)."""
    req = Requirement(requirement)
    if req.marker is None:
        return True
    env = target_environment()
    return any(req.marker.evaluate({**env, "extra": e}) for e in (*extras, ""))


def closure(
    roots: Iterable[str],
    metadata: Callable[[list[str]], Metadata],
    leaf: Callable[[str], bool] = lambda n: False,
) -> dict[str, str]:
    """name -> the name that first required it ("" for a root), over every dependency that applies on the
    target. `metadata` resolves a batch of requirement strings (one level of the closure) to their metadata;
    names for which `leaf` is true are counted but not looked into."""
    parent: dict[str, str] = {}
    level = [(r, "") for r in roots]
    while level:
        fresh: list[tuple[str, str]] = []
        for r, p in level:
            name = normalise(Requirement(r).name)
            if name not in parent:  # the first requirement of a name wins (its specifier, its parent)
                parent[name] = p
                if not leaf(name):
                    fresh.append((r, p))
        if not fresh:
            break
        found = metadata([r for r, _ in fresh])
        level = []
        for r, _ in fresh:
            req = Requirement(r)
            name = normalise(req.name)
            for dep in found[name][1]:
                if needed(dep, req.extras):
                    level.append((str(Requirement(dep)).split(";")[0], name))
    return parent


def cuda_runtime(name: str) -> bool:
    """torch's CUDA libraries: on the target by definition, and not worth resolving (PyPI lacks some pins)."""
    return name.startswith(("nvidia-", "cuda-")) or name == "triton"


def bundle_names(wanted: dict[str, str], present: dict[str, str]) -> dict[str, str]:
    """The wanted closure minus what the target has (name -> required by)."""
    return {name: by for name, by in wanted.items() if name not in present}


def pip_metadata(
    requirements: list[str], local_wheels: Path | None = None, platforms: tuple[str, ...] = ()
) -> Metadata:
    """One `pip install --dry-run --no-deps --report` for the target platform: versions and Requires-Dist."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-deps"]
        command += ["--ignore-installed", "--report", str(report), "--target", str(Path(tmp) / "t")]
        command += [
            *PLATFORM_FLAGS,
            *platforms,
            *(["--find-links", str(local_wheels)] if local_wheels else []),
        ]
        subprocess.run(command + requirements, check=True, env={**os.environ, "PIP_CONSTRAINT": ""})
        items = json.loads(report.read_text())["install"]
    return {
        normalise(i["metadata"]["name"]): (i["metadata"]["version"], i["metadata"].get("requires_dist") or [])
        for i in items
    }


def build_source_only(names: list[str], folder: Path) -> None:
    """Wheels of packages PyPI has only as source; they must come out pure Python (py3-none-any)."""
    for name in names:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "--no-binary=:all:",
                "-w",
                str(folder),
                name,
            ],
            check=True,
        )
    impure = [w.name for w in folder.glob("*.whl") if not w.name.endswith("-py3-none-any.whl")]
    if impure:
        raise RuntimeError(f"source-only packages built into platform wheels, which cannot travel: {impure}")


def tree_bytes(root: Path) -> int:
    """Bytes of the working tree as it travels: the files git tracks or would track (not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    return sum((root / f.decode()).stat().st_size for f in listed if f and (root / f.decode()).is_file())


def write_lock(path: Path, bundle: dict[str, str], versions: dict[str, str], wheels: Path) -> list[str]:
    """`name==version bytes required-by` per bundled wheel, sorted: what the tests read offline."""
    lines = []
    for name in sorted(bundle):
        wheel = next(w for w in wheels.glob("*.whl") if normalise(w.name.split("-")[0]) == name)
        lines.append(f"{name}=={versions[name]} {wheel.stat().st_size} {bundle[name] or '-'}")
    path.write_text("\n".join(lines) + "\n")
    return lines


def read_lock(path: Path) -> list[tuple[str, str, int, str]]:
    """(name, version, bytes, required by) per line of a bundle.lock."""
    out = []
    for line in path.read_text().splitlines():
        pinned, size, by = line.split()
        name, version = pinned.split("==")
        out.append((name, version, int(size), "" if by == "-" else by))
    return out


def main(argv: list[str] | None = None) -> int:
    from harness.models import EMBEDDED_NAME, locate_weights  # lazy: torch, only to find the tokenizer

    out = Path((argv or sys.argv[1:] or ["gpu_bundle"])[0]).resolve()
    wheels, model = out / "wheels", out / "model"
    shutil.rmtree(out, ignore_errors=True)
    wheels.mkdir(parents=True)
    model.mkdir()
    build_source_only(list(SOURCE_ONLY), wheels)
    versions: dict[str, str] = {}

    def resolver(platforms: tuple[str, ...]) -> Callable[[list[str]], Metadata]:
        def metadata(requirements: list[str]) -> Metadata:
            found = pip_metadata(requirements, wheels, platforms)
            versions.update({name: version for name, (version, _) in found.items()})
            return found

        return metadata

    present = closure(TARGET_ROOTS, resolver(TARGET_PLATFORMS), cuda_runtime)
    # what the target has is a leaf: installed with its own dependencies, whatever a newer version would want
    wanted = closure(WANTED, resolver(()), lambda name: name in EXCLUDED or name in present)
    bundle = bundle_names({n: by for n, by in wanted.items() if n not in EXCLUDED}, present)
    for wheel in wheels.glob("*.whl"):  # source-only packages the closure did not reach
        if normalise(wheel.name.split("-")[0]) not in bundle:
            wheel.unlink()
    built = {normalise(w.name.split("-")[0]) for w in wheels.glob("*.whl")}
    pins = [f"{name}=={versions[name]}" for name in sorted(bundle) if name not in built]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(wheels)]
    subprocess.run(
        command + list(PLATFORM_FLAGS) + pins, check=True, env={**os.environ, "PIP_CONSTRAINT": ""}
    )
    source = Path(locate_weights(EMBEDDED_NAME))
    for name in MODEL_FILES:
        shutil.copy2(source / name, model / name)
    repo = Path(__file__).resolve().parents[2]
    write_lock(out / "bundle.lock", bundle, versions, wheels)
    shutil.copy2(out / "bundle.lock", repo / LOCK)  # tracked: the tests check it without the network
    (repo / TARGET_LOCK).write_text("".join(f"{n}=={versions.get(n, '*')}\n" for n in sorted(present)))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    tree = tree_bytes(repo)
    print(
        f"bundle: {len(bundle)} wheels + model config/tokenizer = {size / 2**20:.1f} MiB; working tree "
        f"{tree / 2**20:.1f} MiB; together {(size + tree) / 2**20:.1f} MiB of {LIMIT_BYTES / 2**20:.0f} MiB"
    )
    return 0 if size + tree <= LIMIT_BYTES else 1


if __name__ == "__main__":
    sys.exit(main())
