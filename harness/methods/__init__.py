"""Training methods: one module per method, found by a registry (docs/ARCHITECTURE.md "Adding a method").

A method is a module in this package that defines `METHOD = MethodSpec(...)` and a `train(...)` function
with the shared signature `train(model, tokenizer, items, spec, settings, trainer, ctx)`: `settings` is the
method's own typed settings (built by `MethodSpec.settings` from the `method:` section), `trainer` the
`trainer:` section, `ctx` the stage (harness.methods.base.StageContext); a method never sees the whole
config. `conf/method/<name>.yaml` selects it by `name:`. Nothing else lists methods:
the registry imports every module of the package once and keeps those that declare a `METHOD`, so adding
a method is one .py, one .yaml and its test.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from functools import cache
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness.config import Config, MethodConfig
from harness.methods.base import NonFiniteLossError, StageContext, TrainStats


@dataclass(frozen=True)
class StudentSize:
    """The student's parameter counts, from its config (no weights), for `MethodSpec.held`."""

    params: int  # every parameter: the model's own plus any LoRA adapters
    trainable: int  # those that train: all of them, or the adapters alone under LoRA (harness/lora.py)


@dataclass(frozen=True)
class Held:
    """One piece of device state a method keeps through a stage (`MethodSpec.held`), in values.

    what: how the estimate names it ("EWC Fisher diagonal").
    values: how many numbers it holds.
    value_bytes: bytes per value; None = the student's stored weight dtype (float32 master weights).
    model: a whole other model (hub id or local folder): the estimate counts that model's own parameters,
        read from its config on disk (no weights, no download); when the config cannot be read, `values`
        stands in, and should then be the student's size: the start-up warning says it was.
    """

    what: str
    values: int
    value_bytes: int | None = None
    model: str | None = None


@dataclass(frozen=True)
class MethodSpec:
    """What the loop needs to know about a method, declared in the method's own module.

    reads: the keys under `method.` (dotted, e.g. "distill" or "distill.loss_chunk_size") whose values can
        change this method's results; the run key hashes only these, so a sweep over a knob the method
        ignores does not train it twice.
    teacher_copy: whether the method distils from the teacher harness.distill.teacher builds from
        `distill.teacher` (an EMA or frozen copy of what trains; FSDP shards it with the student and `live`
        turns it off, see `needs_teacher_copy`). Any other state is declared in `held`.
    options: a dataclass for the free-form `method.options` mapping of this method (None: it takes none);
        its own fields' types and defaults are the method's schema, declared once there (the YAML names
        only what differs), and checked at start-up. Fields it inherits from a family's settings (e.g.
        SupervisedSettings.loss_chunk_size) are not options: `settings` fills them from their section.
    settings: builds the method's own settings object from the typed `method:` section; it may read only
        the keys in `reads` and `options` (tests/test_registry.py checks this for every method), so the run
        key covers everything the method can see.
    supports_fsdp: whether the method can train fully sharded; the loop refuses one that cannot at start-up
        (before any weights load) instead of failing inside the first stage.
    display: the name a report shows ("SFT", "SDFT + SFT anchor"): a fixed string, or a function of the
        settings object; None = the name in capitals.
    held: what else the method keeps on the device through a stage, beside the student's weights, gradients
        and AdamW moments (which every method has) and the `teacher_copy`: a function of the settings object
        and the student's size (`StudentSize`) returning `Held` pieces (an anchor, a Fisher diagonal, a
        frozen model, a tensor an autograd graph keeps until backward). The start-up memory estimate
        (harness.run.memory_estimate) adds them up; None = nothing more.
    """

    name: str
    settings: Callable[[MethodConfig], Any]
    reads: tuple[str, ...] = ()
    teacher_copy: bool = False
    options: type | None = None
    supports_fsdp: bool = True
    display: str | Callable[[Any], str] | None = None
    held: Callable[[Any, StudentSize], tuple[Held, ...]] | None = None


@cache
def registry() -> dict[str, tuple[MethodSpec, str]]:
    """name -> (spec, module path) for every module of this package that declares `METHOD`."""
    found: dict[str, tuple[MethodSpec, str]] = {}
    for info in pkgutil.iter_modules(__path__):
        module_path = f"{__name__}.{info.name}"
        spec = getattr(importlib.import_module(module_path), "METHOD", None)
        if isinstance(spec, MethodSpec):
            if spec.name in found:
                raise RuntimeError(
                    f"method name {spec.name!r} declared by {module_path} and {found[spec.name][1]}"
                )
            found[spec.name] = (spec, module_path)
    return dict(sorted(found.items()))


def method_names() -> tuple[str, ...]:
    return tuple(registry())


def method_spec(name: str) -> MethodSpec:
    """The spec of method `name`; unknown names list the valid ones."""
    if name not in registry():
        raise ValueError(f"method {name!r} is not known; valid methods: {', '.join(method_names())}")
    return registry()[name][0]


def get_method(name: str) -> Callable[..., TrainStats]:
    """The `train` function of method `name`; unknown names list the valid ones."""
    method_spec(name)
    return importlib.import_module(registry()[name][1]).train


def train_stage(
    model: Any, tokenizer: Any, items: list, spec: Any, cfg: Config | DictConfig, ctx: StageContext
) -> TrainStats:
    """Train one stage with the method `cfg.method.name`: the config is split into what the method may see:
    its own settings, the trainer section, and the model's context length (in `ctx`). The loop passes the
    typed Config; tests and benchmarks may pass the schema's OmegaConf node, whose two sections are typed here."""
    from dataclasses import replace

    method, trainer = _typed_section(cfg.method), _typed_section(cfg.trainer)
    settings = method_spec(method.name).settings(method)
    ctx = replace(ctx, max_length=cfg.model.max_length)
    return get_method(method.name)(model, tokenizer, items, spec, settings, trainer, ctx)


def _typed_section(section: Any) -> Any:
    return OmegaConf.to_object(section) if isinstance(section, DictConfig) else section


def option_names(options: type) -> list[str]:
    """The fields an options dataclass declares itself; inherited ones (a family's settings) are not options."""
    inherited = {f.name for base in options.__mro__[1:] if is_dataclass(base) for f in fields(base)}
    return [f.name for f in fields(options) if f.name not in inherited]


def display_name(method: Mapping[str, Any]) -> str:
    """The display name of a `method:` section (a plain mapping; values may be the strings MLflow stored,
    which the schema converts): its `label` if set, else what the method's `display` builds from its settings.
    A section this schema cannot read (a run logged by another version) gets the name in capitals."""
    from omegaconf import OmegaConf

    from harness.config import MethodConfig  # lazy: only the report needs the schema here

    if method.get("label") not in (None, "", "None"):
        return str(method["label"])
    spec = method_spec(method["name"])
    if spec.display is None or isinstance(spec.display, str):
        return spec.display or spec.name.upper()
    try:
        typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(MethodConfig), dict(method)))
        return spec.display(spec.settings(typed))
    except Exception:  # noqa: BLE001 (a name is still owed to the reader; the plain one will do)
        return spec.name.upper()


def method_options(name: str, options: Mapping[str, Any] | None) -> Any:
    """`method.options` checked against the method's own dataclass: a typed object (None if it takes none).

    Raises ValueError naming the unknown key or the bad value and the valid keys.
    """
    spec = method_spec(name)
    given = dict(options or {})
    if spec.options is None:
        if given:
            raise ValueError(f"method.options={given}: method {name!r} takes no options")
        return None
    valid = option_names(spec.options)
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ValueError(
            f"method.options.{unknown[0]} is not an option of {name!r}; valid: {', '.join(valid)}"
        )
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(spec.options), given))
    except Exception as err:  # OmegaConf's type errors name the key; keep their first line
        raise ValueError(f"method.options for {name!r}: {str(err).splitlines()[0]}") from None


def option_values(name: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every option of method `name` with its value, defaults filled in: what a run records and hashes, so
    that naming a default in the YAML or leaving it out gives the same run key and the same logged params."""
    typed = method_options(name, options)
    if typed is None:
        return {}
    return {key: getattr(typed, key) for key in option_names(type(typed))}


def check_shardable(name: str, sharded: bool) -> None:
    """Refuse, at start-up, a fully sharded (FSDP) run of a method that cannot train sharded."""
    if sharded and not method_spec(name).supports_fsdp:
        shardable = [n for n, (spec, _) in registry().items() if spec.supports_fsdp]
        raise ValueError(
            f"method {name!r} does not support FSDP; launch it with DDP (conf/accelerate/ddp.yaml) or one "
            f"process, or pick a method that shards: {', '.join(shardable)}"
        )


def needs_teacher_copy(method: Mapping[str, Any]) -> bool:
    """Whether the method distils from a second set of weights (an EMA or frozen teacher)."""
    spec = method_spec(method["name"])
    return spec.teacher_copy and method.get("distill", {}).get("teacher") != "live"


def held_state(method: MethodConfig, student: StudentSize) -> tuple[Held, ...]:
    """What the method of a `method:` section declares it keeps beside the student (see MethodSpec.held)."""
    spec = method_spec(method.name)
    return spec.held(spec.settings(method), student) if spec.held else ()


def rollouts_per_prompt(method: MethodConfig) -> int:
    """Sequences trained per prompt: `distill.num_rollouts` for a method that reads the `distill` section
    (the rollout family, whatever its teacher), else 1 (the demonstration)."""
    return method.distill.num_rollouts if "distill" in method_spec(method.name).reads else 1


def result_relevant(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the resolved config whose `method` section keeps only what the method reads (plus its name
    and options): the input of the run key."""
    out = dict(config)
    method = dict(config.get("method", {}))
    spec = method_spec(method["name"])
    kept: dict[str, Any] = {"name": method["name"], "options": method.get("options") or {}}
    for path in spec.reads:
        head, _, tail = path.partition(".")
        if head not in method:
            continue
        if not tail:
            kept[head] = method[head]
        else:
            kept.setdefault(head, {})[tail] = method[head][tail]
    out["method"] = kept
    return out


__all__ = [
    "Held",
    "MethodSpec",
    "NonFiniteLossError",
    "StageContext",
    "TrainStats",
    "check_shardable",
    "display_name",
    "get_method",
    "held_state",
    "method_names",
    "method_options",
    "option_names",
    "option_values",
    "method_spec",
    "needs_teacher_copy",
    "registry",
    "result_relevant",
    "rollouts_per_prompt",
    "StudentSize",
    "train_stage",
]
