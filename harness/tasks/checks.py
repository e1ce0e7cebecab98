"""The task checks of preflight (harness.run.preflight.check_run): every task folder of the stream (files,
task.yaml, lm-eval YAMLs and their `!function` helpers, task-name collisions) and every suite task name,
each failure one line naming the file (and line) and what is valid. Light imports only, like preflight."""

from __future__ import annotations

import difflib
import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig

from harness.config import Config
from harness.tasks.spec import (
    TASKS_ROOT,
    TaskDataError,
    TaskSpec,
    check_unique_tasks,
    read_jsonl,
    resolve_task,
)

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


def check_stream(cfg: Config | DictConfig) -> list[TaskSpec]:
    """Every stream task resolves and is valid, and no two tasks (or a user's and a built-in one) share a
    name: lm-eval would silently keep one of them and the accuracy matrix would show two columns of one."""
    names = [str(n) for n in cfg.stream.tasks]
    check_unique_tasks(cfg.stream.name, names)
    specs = [resolve_task(n) for n in names]
    for spec in specs:
        check_task(spec)
    check_names(specs)
    return specs


def check_names(specs: list[TaskSpec]) -> None:
    """No two of these tasks, and no user task and a built-in one, define the same lm-eval task name."""
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


def check_suite(cfg: Config | DictConfig, specs: list[TaskSpec]) -> None:
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
