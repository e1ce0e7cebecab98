"""Whether the installed vLLM supports the installed transformers, said before any weights load.

vLLM pins the transformers versions it was built against (its own `Requires-Dist`); a newer transformers
often loads but breaks at the first generation, minutes into a run. When `eval.backend=vllm`, the start-up
prints one line naming both versions and the range vLLM declares, and a warning when transformers is outside it.
"""

from __future__ import annotations

from importlib import metadata

from packaging.requirements import Requirement
from packaging.version import Version


def supported_range(vllm_requires: list[str]) -> str:
    """The transformers specifier among vLLM's requirements ("" when vLLM declares none)."""
    for line in vllm_requires:
        req = Requirement(line)
        if req.name.lower() == "transformers" and (req.marker is None or req.marker.evaluate({"extra": ""})):
            return str(req.specifier)
    return ""


def compat_line(vllm: str, transformers: str, vllm_requires: list[str]) -> tuple[str, bool]:
    """(the start-up line, whether transformers is inside vLLM's declared range)."""
    spec = supported_range(vllm_requires)
    if not spec:
        return f"vLLM {vllm} with transformers {transformers} (vLLM declares no transformers range)", True
    from packaging.specifiers import SpecifierSet

    ok = Version(transformers) in SpecifierSet(spec)
    verdict = "inside" if ok else "OUTSIDE"
    return f"vLLM {vllm} with transformers {transformers}: {verdict} vLLM's supported range {spec}", ok


def check_installed() -> tuple[str, bool] | None:
    """The line for the installed packages; None when vLLM is not installed (preflight refuses that)."""
    try:
        vllm = metadata.version("vllm")
    except metadata.PackageNotFoundError:
        return None
    return compat_line(vllm, metadata.version("transformers"), metadata.requires("vllm") or [])
