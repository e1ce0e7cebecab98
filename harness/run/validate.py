"""The composed config checked once and turned into the schema's dataclasses.

This sits above the schema (harness.config) because one check needs the method registry: the schema is a
leaf that knows no method, and `validate` asks `harness.methods` which names and options exist.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness import config
from harness.config import Config
from harness.eval.passk import check_pass_k
from harness.methods import method_names, method_options, option_values
from harness.run.config_checks import check_ranges, check_settings, check_vllm, one_of

ROLLOUT_SOURCES = ("student", "teacher", "mix")


def validate(cfg: DictConfig | Config) -> None:
    """Checks that types cannot express. Raises ValueError naming the key and the valid values."""
    c: Any = cfg
    # nan passes every range test (nan < 0 and nan > 0 are both False)
    check_finite(asdict(c) if isinstance(c, Config) else OmegaConf.to_container(c, resolve=True))
    check_ranges(c)  # first: the checks below may divide by a checked knob (batch_size % grad_accum)
    check_settings(c)
    one_of("method.name", c.method.name, method_names())
    method_options(c.method.name, c.method.options)
    one_of("method.distill.teacher", c.method.distill.teacher, config.TEACHERS)
    one_of("method.distill.divergence", c.method.distill.divergence, config.DIVERGENCES)
    one_of("method.distill.support", c.method.distill.support, config.SUPPORTS)
    one_of("checkpoints", c.checkpoints, ("all", "last", "none"))
    # the remedy knobs whose valid values are names; their numeric ranges are in config.RANGES
    one_of("method.distill.rollout_source", c.method.distill.rollout_source, ROLLOUT_SOURCES)
    one_of("method.distill.short_rollouts", c.method.distill.short_rollouts, ("warn", "error"))
    one_of("method.distill.decoder", c.method.distill.decoder, ("static", "hf"))
    one_of("eval.decoder", c.eval.decoder, ("static", "hf"))
    if c.trainer.batch_size % c.trainer.grad_accum:
        raise ValueError(
            f"trainer.batch_size={c.trainer.batch_size} is not divisible by trainer.grad_accum={c.trainer.grad_accum}"
        )
    if not c.stream.tasks:
        raise ValueError(f"stream '{c.stream.name}' has no tasks: a stream needs at least one task")
    if not str(c.results_dir or "").strip():
        # Path("") is the current folder: the store, checkpoints and Hydra's folder would land wherever
        # the command happened to start
        raise ValueError("results_dir is empty: give a folder, e.g. results_dir=results")
    one_of("eval.backend", c.eval.backend, config.EVAL_BACKENDS)
    check_pass_k(c.eval.pass_k, c.eval.samples)
    if c.eval.backend == "vllm":
        check_vllm(c)
    if c.model.lora.r > 0 and c.eval.backend == "vllm":
        raise ValueError(
            "model.lora.r>0 with eval.backend=vllm: the vLLM snapshot has no adapters; use eval.backend=hf"
        )


def check_finite(values: Any, prefix: str = "") -> None:
    """Every float of the config (method options included) is a finite number: nan and inf would pass the
    range checks and the run would train on them."""
    if isinstance(values, dict):
        for key, value in values.items():
            check_finite(value, f"{prefix}{key}.")
    elif isinstance(values, list):
        for i, value in enumerate(values):
            check_finite(value, f"{prefix[:-1]}[{i}].")
    elif isinstance(values, float) and not math.isfinite(values):
        raise ValueError(f"{prefix[:-1]}={values}: must be a finite number")


def typed(cfg: DictConfig | Config) -> Config:
    """The composed config as the schema's dataclasses, validated: what the harness passes around after
    Hydra. Conversion happens once, so the values below it are the declared types (no casts needed)."""
    if isinstance(cfg, Config):
        return cfg
    validate(cfg)
    out: Config = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    # every option with its value (the YAML names only those that differ from the method's defaults): the
    # run records them all as params, and its run key does not depend on whether a default was spelled out
    out.method.options = option_values(out.method.name, out.method.options)
    return out
