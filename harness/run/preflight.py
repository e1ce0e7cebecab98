"""Everything a user can get wrong, checked before the model loads or MLflow is touched.

Two entry points, both raising `ValueError` (or `TaskDataError`, `ConnectionError`) whose message is one line
(plus at most a `hint:` line) naming the key or file:line and the valid values:

- `check_overrides(overrides)`: the command line itself, before Hydra composes anything: unknown keys (with
  the valid keys of their group), `+key` outside the schema (Hydra would add it silently), unknown options
  of a config group, malformed override syntax.
- `check_run(cfg)`: the composed config: `run.validate` (choices and numeric ranges), the tracking
  server, the device, the model name or path, every task of the stream (files, YAML, lm-eval YAMLs and
  their `!function` helpers, task-name collisions) and every suite task name.

Only light imports here (no lm-eval, no MLflow): a mistake costs the user seconds, not a model load.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness.config import CONF_DIR, Config, ModelConfig, tracking_uri
from harness.durable import DiskFullError
from harness.models import EMBEDDED_NAME, load_tokenizer
from harness.run.task_inputs import check_tasks
from harness.run.validate import validate
from harness.tasks.checks import check_stream, check_suite
from harness.tasks.spec import template_problem
from harness.tracking.health import check_store

# Known, user-fixable problems (bad config, bad task data, unreachable server): one clear line, no traceback.
USER_ERRORS = (ValueError, FileNotFoundError, ModuleNotFoundError, ConnectionError, DiskFullError)

NOT_HYDRA_GROUPS = ("accelerate",)  # conf/accelerate holds accelerate's own config files, not a Hydra group


# ---- the command line ----------------------------------------------------------------------------------


def config_groups() -> dict[str, list[str]]:
    """Hydra config group -> its options (conf/<group>/*.yaml)."""
    return {
        group.name: sorted(f.stem for f in group.glob("*.yaml"))
        for group in sorted(CONF_DIR.iterdir())
        if group.is_dir() and group.name not in NOT_HYDRA_GROUPS and group.name != "hydra"
    }


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _dataclass_of(tp: Any) -> type | None:
    """The dataclass inside `tp` (also `X | None`), else None."""
    if dataclasses.is_dataclass(tp):
        return tp  # type: ignore[return-value]
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg  # type: ignore[return-value]
    return None


def _is_open(tp: Any) -> bool:
    """Whether any sub-key is allowed below a field of this type (a free-form mapping)."""
    origin = typing.get_origin(tp)
    return tp is Any or tp is dict or origin is dict or any(_is_open(a) for a in typing.get_args(tp))


def schema_problem(key: str, schema: type = Config) -> str | None:
    """Why the dotted `key` is not in the schema (None when it is, or when it lies below a free-form field)."""
    cls, parts = schema, key.split(".")
    for depth, part in enumerate(parts):
        types = _field_types(cls)
        group = ".".join(parts[:depth]) or None
        if part not in types:
            valid = sorted(types)
            close = difflib.get_close_matches(part, valid, n=1)
            where = f"in {group}" if group else "at the top level"
            guess = f" (did you mean {'.'.join([*parts[:depth], close[0]])}?)" if close else ""
            return f"{key}: no such key {where}{guess}; valid keys: {', '.join(valid)}"
        tp = types[part]
        if depth == len(parts) - 1 or _is_open(tp):
            return None
        inner = _dataclass_of(tp)
        if inner is None:
            return f"{key}: {'.'.join(parts[: depth + 1])} is a value, not a group of keys"
        cls = inner
    return None


def _parse(override: str) -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(override)
    except Exception as err:  # Hydra's grammar errors (HydraException, antlr errors)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"cannot parse override {override!r}: {first} "
            "(syntax: https://hydra.cc/docs/advanced/override_grammar/basic)"
        ) from None


def _values(override: Any) -> list[Any] | None:
    """The option(s) an override selects; None for range/glob sweeps (left to Hydra)."""
    from hydra.core.override_parser.types import ValueType

    if override.value_type == ValueType.ELEMENT:
        return [override.value()]
    if override.value_type in (ValueType.SIMPLE_CHOICE_SWEEP, ValueType.CHOICE_SWEEP):
        return list(override.sweep_string_iterator())
    return None


OPTIONS_PREFIX = "method.options."


def open_options(argv: list[str]) -> list[str]:
    """`method.options.KEY=V` as `++method.options.KEY=V`: a method's YAML names only the options that differ
    from its dataclass's defaults, so the key may be absent from the composed mapping, and Hydra sets a key
    that is absent only when told to add it. The method's dataclass checks the key at start-up."""
    return [f"++{a}" if a.startswith(OPTIONS_PREFIX) else a for a in argv]


def check_overrides(overrides: list[str]) -> None:
    """Refuse, before Hydra composes, what Hydra would accept silently or explain in many lines."""
    from hydra.core.override_parser.types import OverrideType

    groups = config_groups()
    for text in overrides:
        if text.startswith("-"):  # a flag (-m, --cfg ...), Hydra's business
            continue
        override = _parse(text)
        key = override.key_or_group
        if key.startswith("hydra") or override.type == OverrideType.DEL or override.package or "[" in key:
            continue  # Hydra's own settings, deletions, packages, list indices: left to Hydra
        if key in groups:
            values = _values(override)
            for value in values or []:
                if value is not None and str(value) not in groups[key]:
                    raise ValueError(
                        f"{key}={value}: Could not find '{key}/{value}' (conf/{key}/{value}.yaml); "
                        f"Available options in '{key}': {', '.join(groups[key])}"
                    )
            continue
        problem = schema_problem(key)
        adding = override.type in (OverrideType.ADD, OverrideType.FORCE_ADD)
        if problem and adding:
            # Hydra would add the key outside the schema and nothing would ever read it
            raise ValueError(f"{text}: '+' adds keys outside the schema, which nothing reads; {problem}")
        if problem:
            raise ValueError(problem)
        if override.type == OverrideType.ADD:
            raise ValueError(f"{text}: {key} is already in the config; drop the '+': {text.lstrip('+')}")


def check_config_name(argv: list[str]) -> None:
    """Hydra's `--config-name X` (`-cn X`) must name a YAML at the top of conf/; Hydra's own error spans a
    dozen lines about search paths. (Experiments are chosen with `experiment=NAME`.)"""
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if flag not in ("--config-name", "-cn"):
            continue
        value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
        names = sorted(p.stem for p in CONF_DIR.glob("*.yaml"))
        if value not in names:
            experiments = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
            raise ValueError(
                f"--config-name {value}: no conf/{value}.yaml (available: {', '.join(names)})\n"
                f"  hint: an experiment is chosen with experiment=NAME: {', '.join(experiments)}"
            )


def hydra_error_line(err: BaseException) -> str:
    """One line from a Hydra/OmegaConf error message (they span several lines and end with a hint about
    HYDRA_FULL_ERROR that is of no use to a user)."""
    lines = []
    while err is not None:  # Hydra wraps OmegaConf's error, which holds the reason
        lines += [
            line.strip() for line in str(err).splitlines() if line.strip() and line.strip() not in lines
        ]
        err = err.__cause__
    noise = (
        "full_key:",
        "reference_type",
        "object_type",
        "Set the environment variable HYDRA_FULL_ERROR",
        "See https://hydra.cc",
    )
    lines = [line for line in lines if not line.startswith(noise)] or [type(err).__name__]
    out, listing = lines[0], lines[0].endswith(":")
    for line in lines[1:]:
        # the lines after one ending in ':' are a list (e.g. a group's options): comma-separated
        out += (" " if out.endswith(":") else ", " if listing else "; ") + line
        listing = listing or line.endswith(":")
    return out


# ---- the composed config -------------------------------------------------------------------------------

_checked: set[str] = set()  # configs already checked in this process (the CLI checks, then the loop again)


def check_run(cfg: Config | DictConfig) -> None:
    """Every check of the module docstring, for one composed config. Cheap on a second call."""
    key = OmegaConf.to_yaml(cfg, resolve=True) if isinstance(cfg, DictConfig) else None
    if key is not None and key in _checked:
        return
    validate(cfg)
    check_results_dir(str(cfg.results_dir))
    template = cfg.method.distill.template
    if template is not None and template_problem(str(template)):
        raise ValueError(f"method.distill.template: {template_problem(str(template))}")
    check_tracking(cfg)
    check_device(cfg.model.device)
    check_model(cfg.model)
    specs = check_stream(cfg)
    check_suite(cfg, specs)
    check_tasks(specs, tokenizer_of(cfg.model), cfg.model.max_length, cfg.trainer.max_train_items)
    if key is not None:
        _checked.add(key)


def check_results_dir(value: str) -> Path:
    """`results_dir` is named and could be created and written, checked without creating anything: a
    refused run leaves no empty folder behind. Returns the absolute folder."""
    if not value.strip():
        raise ValueError("results_dir is empty: give a folder, e.g. results_dir=results")
    folder = Path(value).expanduser().resolve()
    existing = folder
    while not existing.exists():  # the nearest folder that exists is where the new ones would be made
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(
            f"results_dir {folder} is not writable ({existing} is a file); set results_dir=... to a writable folder"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"results_dir {folder} is not writable (no write permission in {existing}); "
            "set results_dir=... to a writable folder"
        )
    return folder


def tokenizer_of(model: Any) -> Any:
    """The model's tokenizer alone (well under a second), for the length checks before the weights load."""
    try:
        return load_tokenizer(str(model.name), model.cache_dir)
    except Exception as err:  # transformers raises many types for files it cannot use
        first = next((ln.strip() for ln in str(err).splitlines() if ln.strip()), type(err).__name__)
        raise ValueError(f"model.name={model.name!r}: its tokenizer could not be loaded: {first}") from None


def check_tracking(cfg: Config | DictConfig) -> None:
    """A local store is not corrupted; a tracking server answers (in seconds, not after MLflow's minutes of
    retries)."""
    from urllib.parse import urlparse

    uri = tracking_uri(cfg)
    check_store(uri)
    if urlparse(uri).scheme in ("http", "https"):
        from harness.tracking.store import check_reachable  # lazy: loads mlflow, pandas only when needed

        check_reachable(uri)


def check_device(device: str) -> None:
    """The requested accelerator exists on this machine (the name itself is checked by `validate`)."""
    if device in ("auto", "cpu"):
        return
    import torch

    if device.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= count:
            seen = f"{count} CUDA device(s) visible" if count else "no CUDA device visible"
            raise ValueError(f"model.device={device}: {seen} on this machine; use model.device=auto or cpu")
    elif device == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            "model.device=mps: Apple's MPS backend is not available here; use model.device=auto or cpu"
        )


def _offline() -> bool:
    return any(
        os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def check_model(model: ModelConfig) -> None:
    """`model.name` is the embedded model, a model folder, or a hub id that is cached or downloadable.

    Offline, transformers would retry the hub for about a minute before failing with a message about repo
    id syntax; a folder that does not exist would be reported as a malformed repo id.
    """

    name = str(model.name)
    if name == EMBEDDED_NAME:
        return
    path = Path(name).expanduser()
    if path.exists():
        _check_model_folder(name, path)
        return
    if (
        name.startswith(("/", "./", "../", "~"))
        or name.count("/") > 1
        or name.endswith("/")
        or os.sep in name[:1]
    ):
        raise ValueError(f"model.name={name}: no such folder")
    close = difflib.get_close_matches(name.lower(), [EMBEDDED_NAME], n=1, cutoff=0.8)
    cached = _hub_cached(name)
    if close and not cached:
        raise ValueError(
            f"model.name={name}: not a folder and not the embedded model; did you mean model.name={close[0]}?"
        )
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise ValueError(
            f"model.name={name!r}: no such folder, and not a hub id (ORG/NAME of letters, digits, "
            f"'-', '_', '.'); or the embedded model: model.name={EMBEDDED_NAME}"
        ) from None
    if cached:
        return
    if _offline():
        raise ValueError(
            f"model.name={name}: not in the local Hugging Face cache, and HF_HUB_OFFLINE is set; "
            "download it first (hf download ORG/NAME), or give a local folder"
        )
    if not _hub_reachable():
        raise ValueError(
            f"model.name={name}: not in the local Hugging Face cache, and the hub cannot be reached; "
            "download it on a machine with network, give a local folder, or use the embedded model"
        )


def _check_model_folder(name: str, path: Path) -> None:
    if not path.is_dir():
        raise ValueError(f"model.name={name}: a file, not a model folder (config.json and weights)")
    if not (path / "config.json").is_file():
        raise ValueError(
            f"model.name={name}: the folder has no config.json; a Hugging Face model folder "
            "holds config.json, the weights and the tokenizer (save_pretrained writes them)"
        )
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise ValueError(
            f"model.name={name}: the folder has no tokenizer (tokenizer.json or "
            "tokenizer_config.json); save the tokenizer beside the model (tokenizer.save_pretrained)"
        )


def _hub_cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # a malformed id: not cached
        return False
