"""The checks of a composed config that its types cannot express: numeric ranges (config.RANGES), names
that follow a pattern, the vLLM backend's needs. harness.run.validate runs them with the registry's checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from omegaconf import DictConfig

from harness.config import (
    DEVICE_PATTERN,
    DEVICES,
    DTYPES,
    FSDP_SHARING,
    RANGES,
    TRACKING_SCHEMES,
    Config,
)


def _lookup(c: Config | DictConfig, dotted: str) -> Any:
    """The value at a dotted key of a DictConfig or a Config object; KeyError when the schema lacks it."""
    for part in dotted.split("."):
        if isinstance(c, DictConfig):
            if part not in c:
                raise KeyError(dotted)
            c = c[part]
        else:
            c = getattr(c, part)
    return c


def check_ranges(c: Config | DictConfig) -> None:
    """Every knob of RANGES within its range (a key this schema lacks is skipped: another schema version)."""
    for key, allowed in RANGES.items():
        try:
            value = _lookup(c, key)
        except (KeyError, AttributeError):
            continue
        if value is None or isinstance(value, bool):
            continue
        # a list knob (eval.pass_k): every element within the range
        values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
        if not all(allowed.admits(v) for v in values):
            raise ValueError(f"{key}={value}: must be {allowed.describe()}")


def check_settings(c: Config | DictConfig) -> None:
    """The string knobs whose valid values are a pattern rather than a list in the schema."""
    device = str(c.model.device)
    if not DEVICE_PATTERN.fullmatch(device):
        raise ValueError(f"model.device={device!r} is not known; valid values: {DEVICES}")
    one_of("model.dtype", str(c.model.dtype), DTYPES)
    one_of("eval.fsdp_sharing", str(c.eval.fsdp_sharing), FSDP_SHARING)
    if not str(c.model.name).strip():
        raise ValueError("model.name is empty: give the embedded default, a hub id (ORG/NAME) or a folder")
    if not str(c.experiment_name).strip():
        raise ValueError("experiment_name is empty")
    if c.tracking_uri:
        scheme = urlparse(str(c.tracking_uri)).scheme.split("+")[0]
        if scheme and scheme not in TRACKING_SCHEMES:
            raise ValueError(
                f"tracking_uri={c.tracking_uri}: scheme {scheme!r} is not one MLflow tracks to; "
                f"valid schemes: {', '.join(TRACKING_SCHEMES)} (or null: SQLite under results_dir)"
            )
    bad = [t for t in c.suite.tasks if not str(t).strip()]
    if bad or any(not str(t).strip() for t in c.stream.tasks):
        raise ValueError("stream.tasks and suite.tasks may not hold empty names")


def check_vllm(c: Config | DictConfig) -> None:
    """The vLLM backend needs the extra and a GPU; say so before any model is loaded."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise ValueError(
            "eval.backend=vllm needs the vllm package: pip install -e '.[vllm]' (GPU machines); "
            "or eval.backend=hf"
        )
    if str(c.model.device) == "cpu":
        raise ValueError(
            "eval.backend=vllm runs on a GPU; model.device=cpu asks for the CPU: use eval.backend=hf"
        )


def one_of(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{key}={value!r} is not known; valid values: {', '.join(valid)}")
