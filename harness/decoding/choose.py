"""Which decoder a run uses: the static-cache one (harness.decoding.static) or Hugging Face `generate`."""

from __future__ import annotations

from typing import Any

from harness.decoding.packed import packing_unavailable
from harness.decoding.static import unsupported
from harness.parallel import sharding

DECODERS = ("static", "hf")


def pick(model: Any, requested: str) -> tuple[str, str]:
    """(decoder to use, one line saying why): `static` falls back to `hf` where it cannot run."""
    if requested not in DECODERS:
        raise ValueError(f"decoder {requested!r} not known; valid: {', '.join(DECODERS)}")
    if requested == "hf":
        return "hf", "Hugging Face generate (requested)"
    if sharding.is_sharded(model):
        # FSDP: every process must run the same forwards; generate's synced_gpus does that, this loop not
        return "hf", "Hugging Face generate (fallback: the model is FSDP-sharded)"
    reason = unsupported(model)
    if reason is not None:
        return "hf", f"Hugging Face generate (fallback: {reason})"
    why_not = packing_unavailable(model)
    if why_not is None:
        return "static", "static KV cache, weights packed for oneDNN (no torch.compile)"
    return "static", f"static KV cache on F.linear (no packing: {why_not}; no torch.compile)"
