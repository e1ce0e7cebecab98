"""Everything a user can get wrong, checked before the model loads or MLflow is touched.

Two entry points, both raising `ValueError` (or `TaskDataError`, `ConnectionError`) whose message is one line
(plus at most a `hint:` line) naming the key or file:line and the valid values:

- `check_overrides(overrides)`: the command line itself, before Hydra composes anything: unknown keys (with
  the valid keys of their group), `+key` outside the schema (Hydra would add it silently), unknown options
  of a config group, malformed override syntax.
- `check_run(cfg)`: the composed config: `config.validate` (choices and numeric ranges), the tracking
  server, the device, the model name or path, every task of the stream (files, YAML, lm-eval YAMLs and
  their `!function` helpers, task-name collisions) and every suite task name.

Only light imports here (no lm-eval, no MLflow): a mistake costs the user seconds, not a model load.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from harness.config import Config, tracking_uri, validate
from harness.tasks import TASKS_ROOT, TaskDataError, TaskSpec, read_jsonl, resolve_task

# Known, user-fixable problems (bad config, bad task data, unreachable server): one clear line, no traceback.
USER_ERRORS = (ValueError, FileNotFoundError, ModuleNotFoundError, ConnectionError)

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
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


def check_run(cfg: Any) -> None:
    """Every check of the module docstring, for one composed config. Cheap on a second call."""
    key = OmegaConf.to_yaml(cfg, resolve=True) if isinstance(cfg, DictConfig) else None
    if key is not None and key in _checked:
        return
    validate(cfg)
    check_tracking(cfg)
    check_device(str(cfg.model.device))
    check_model(cfg.model)
    specs = check_stream(cfg)
    check_suite(cfg, specs)
    if key is not None:
        _checked.add(key)


def check_tracking(cfg: Any) -> None:
    """A tracking server answers (in seconds, not after MLflow's minutes of retries)."""
    from urllib.parse import urlparse

    uri = tracking_uri(cfg)
    if urlparse(uri).scheme in ("http", "https"):
        from harness.tracking import check_reachable

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


def check_model(model: Any) -> None:
    """`model.name` is the embedded model, a model folder, or a hub id that is cached or downloadable.

    Offline, transformers would retry the hub for about a minute before failing with a message about repo
    id syntax; a folder that does not exist would be reported as a malformed repo id.
    """
    from harness.models import EMBEDDED_NAME

    name = str(model.name)
    if name == EMBEDDED_NAME:
        return
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"model.name={name}: a file, not a model folder (config.json and weights)")
        if not (path / "config.json").is_file():
            raise ValueError(
                f"model.name={name}: the folder has no config.json; a Hugging Face model folder "
                "holds config.json, the weights and the tokenizer (save_pretrained writes them)"
            )
        if not any(
            (path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
        ):
            raise ValueError(
                f"model.name={name}: the folder has no tokenizer (tokenizer.json or "
                "tokenizer_config.json); save the tokenizer beside the model (tokenizer.save_pretrained)"
            )
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


def _hub_cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # a malformed id: not cached
        return False


# ---- tasks ---------------------------------------------------------------------------------------------


class _FunctionRef(str):
    """A YAML `!function module.name` reference, remembered with its line."""

    line: int


def _function_ctor(loader: yaml.SafeLoader, node: yaml.Node) -> _FunctionRef:
    ref = _FunctionRef(loader.construct_scalar(node))  # type: ignore[arg-type]
    ref.line = node.start_mark.line + 1
    return ref


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!function", _function_ctor)


def read_yaml(path: Path) -> Any:
    """A YAML file (lm-eval's `!function` tags kept as references); syntax errors say file:line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise TaskDataError(f"{path}: not UTF-8 text (byte {err.start})") from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader with one extra tag)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        what = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise TaskDataError(f"{where}: YAML syntax error: {what}") from None


def _function_refs(obj: Any, key: str = "") -> Iterator[tuple[str, _FunctionRef]]:
    if isinstance(obj, _FunctionRef):
        yield key, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _function_refs(v, str(k))
    elif isinstance(obj, list):
        for v in obj:
            yield from _function_refs(v, key)


def _check_function(path: Path, key: str, ref: _FunctionRef) -> None:
    """`!function utils.process_results` names a function of utils.py beside the YAML (as lm-eval reads it)."""
    module_name, _, func = str(ref).rpartition(".")
    where = f"{path}:{ref.line}: {key}: !function {ref}"
    module_file = path.parent / f"{module_name.replace('.', '/')}.py"
    if not module_name or not module_file.is_file():
        if module_name and importlib.util.find_spec(module_name.split(".")[0]) is not None:
            return  # an importable package's function: lm-eval imports it
        raise TaskDataError(f"{where}: no file {module_file.name} beside the YAML")
    spec = importlib.util.spec_from_file_location(f"_harness_preflight_{abs(hash(module_file))}", module_file)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as err:
        raise TaskDataError(
            f"{where}: {module_file.name} does not import: {type(err).__name__}: {err}"
        ) from None
    if not callable(getattr(module, func, None)):
        defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise TaskDataError(
            f"{where}: {module_file.name} defines no function {func!r}; it has: {', '.join(defined)}"
        )


def lm_eval_yamls(folder: Path) -> list[Path]:
    """The lm-eval YAMLs of a task folder (lm-eval indexes folders recursively; task.yaml is ours)."""
    return sorted(p for p in folder.rglob("*.yaml") if p.name != "task.yaml")


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def defined_names(folder: Path, check: bool = False) -> dict[str, Path]:
    """lm-eval task/group/tag name -> the YAML that defines it, for every lm-eval YAML under `folder`.
    With `check`, YAML syntax and `!function` references are verified too."""
    found: dict[str, Path] = {}
    for path in lm_eval_yamls(folder):
        data = read_yaml(path) if check else _quiet_yaml(path)
        if not isinstance(data, dict):
            if check:
                raise TaskDataError(f"{path}: an lm-eval task YAML must be a mapping (task: NAME, ...)")
            continue
        if check:
            for key, ref in _function_refs(data):
                _check_function(path, key, ref)
        for field in ("task", "group", "tag"):
            for name in _names(data.get(field)):
                found.setdefault(name, path)
    return found


def _quiet_yaml(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        return None


def builtin_lm_eval_names() -> dict[str, Path]:
    """lm-eval task names defined by the harness's own tasks/ folder."""
    return defined_names(TASKS_ROOT)


def lm_eval_index_names() -> set[str]:
    """Task, group and tag names of lm-eval's own index, from its YAML files (a text scan: under a second,
    where building lm-eval's index takes ~15 s on a laptop CPU)."""
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        return set()
    root = Path(next(iter(spec.submodule_search_locations))) / "tasks"
    pattern = re.compile(rb"^(?:task|group|tag):\s*['\"]?([\w.\-]+)", re.M)
    names: set[str] = set()
    for path in root.rglob("*.yaml"):
        names.update(m.decode() for m in pattern.findall(path.read_bytes()))
    return names


def check_task(spec: TaskSpec) -> None:
    """One stream task's folder: train and eval data, lm-eval YAMLs and their helpers, eval task names."""
    read_jsonl(spec.train_file)
    if not spec.eval_file.is_file():
        raise TaskDataError(f"{spec.eval_file}: file not found (held-out items, scored after every stage)")
    read_jsonl(spec.eval_file, require=("prompt",))
    if not spec.eval_tasks:
        raise TaskDataError(f"{spec.path / 'task.yaml'}: eval_tasks is empty")
    defined = defined_names(spec.path, check=True)
    for name in spec.eval_tasks:
        if name not in defined:
            raise TaskDataError(
                f"{spec.path / 'task.yaml'}: eval_tasks names {name!r}, but no lm-eval YAML in "
                f"{spec.path} defines it (task: {name}); defined: {', '.join(defined) or 'none'}"
            )


def check_stream(cfg: Any) -> list[TaskSpec]:
    """Every stream task resolves and is valid, and no two tasks (or a user's and a built-in one) share a
    name: lm-eval would silently keep one of them and the accuracy matrix would show two columns of one."""
    names = [str(n) for n in cfg.stream.tasks]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(
            f"stream '{cfg.stream.name}' repeats task(s) {repeated}: a task may appear once per stream "
            "(the accuracy matrix has one column per task); copy the folder under another name to revisit it"
        )
    specs = [resolve_task(n) for n in names]
    for spec in specs:
        check_task(spec)
    builtin = builtin_lm_eval_names()
    owner: dict[str, Path] = {}
    for spec in specs:
        user = TASKS_ROOT not in spec.path.parents
        for name in [spec.name, *spec.eval_tasks]:
            if name in owner and owner[name] != spec.path:
                raise ValueError(
                    f"stream.tasks: {owner[name]} and {spec.path} both define a task named {name!r}; "
                    "rename one (name/eval_tasks in task.yaml and `task:` in its lm-eval YAML)"
                )
            owner[name] = spec.path
            if user and name in builtin and builtin[name].parent != spec.path:
                raise ValueError(
                    f"{spec.path}: task name {name!r} is also a built-in task ({builtin[name].parent}); lm-eval "
                    f"would silently use one of the two: rename it in {spec.path / 'task.yaml'} (name, "
                    "eval_tasks) and in its lm-eval YAML (task:)"
                )
    return specs


def check_suite(cfg: Any, specs: list[TaskSpec]) -> None:
    """Every suite task is defined where the evaluation will look: tasks/, the stream's folders,
    suite.include_paths, and lm-eval's own index only with suite.builtin_index=true."""
    wanted = [str(t) for t in cfg.suite.tasks]
    if not wanted:
        return
    folders = [TASKS_ROOT, *(s.path for s in specs if TASKS_ROOT not in s.path.parents)]
    for p in cfg.suite.include_paths:
        folder = Path(str(p)).expanduser()
        if not folder.is_dir():
            raise ValueError(f"suite.include_paths: {p}: no such folder")
        folders.append(folder)
    known: dict[str, Path] = {}
    for folder in folders:
        known.update(defined_names(folder))
    missing = [t for t in wanted if t not in known]
    if not missing:
        for folder in folders[1:]:  # the user's suite folders: their helpers must resolve too
            defined_names(folder, check=True)
        return
    index = lm_eval_index_names() if missing else set()
    for name in missing:
        if name in index:
            if cfg.suite.builtin_index:
                continue
            raise ValueError(
                f"suite.tasks: {name!r} is an lm-eval built-in task, and suite.builtin_index=false\n"
                "  hint: add suite.builtin_index=true (lm-eval's own index; its data is downloaded "
                "on first use)"
            )
        if cfg.suite.builtin_index and name in _full_lm_eval_index():
            continue  # defined in a way the text scan does not see (rare): lm-eval knows it
        close = difflib.get_close_matches(name, [*known, *(index if cfg.suite.builtin_index else ())], n=1)
        guess = f" (did you mean {close[0]}?)" if close else ""
        where = "tasks/, suite.include_paths" + (" or lm-eval's index" if cfg.suite.builtin_index else "")
        raise ValueError(
            f"suite.tasks: no task {name!r} in {where}{guess}; known here: {', '.join(sorted(known))}"
        )


def _full_lm_eval_index() -> set[str]:
    """lm-eval's own index, built the slow way (~15 s here): consulted only before refusing a name the text
    scan did not find, so that a valid suite is never refused."""
    from lm_eval.tasks import TaskManager

    return set(TaskManager(include_defaults=True).all_tasks)
