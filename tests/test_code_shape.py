"""The shape of the package, read from its source (AST): small modules, short functions, typed configs.

No module in harness/ over MAX_MODULE_LINES lines, no function (or method) over MAX_FUNCTION_LINES lines
(from `def` to its last line: signature and docstring included), and no parameter named like a config annotated `Any`:
a function takes the typed section it needs (harness.config), so a reader can follow a setting to its use.
"""

from __future__ import annotations

import ast
from pathlib import Path

import harness

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
CONFIG_NAMES = ("cfg", "config", "settings")
PACKAGE = Path(harness.__file__).parent


def _modules() -> list[tuple[str, str]]:
    return [(str(p.relative_to(PACKAGE.parent)), p.read_text()) for p in sorted(PACKAGE.rglob("*.py"))]


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def long_modules(sources: list[tuple[str, str]], limit: int = MAX_MODULE_LINES) -> list[str]:
    return [f"{name}: {n} lines" for name, text in sources if (n := len(text.splitlines())) > limit]


def long_functions(sources: list[tuple[str, str]], limit: int = MAX_FUNCTION_LINES) -> list[str]:
    out = []
    for name, text in sources:
        for fn in _functions(ast.parse(text)):
            length = fn.end_lineno - fn.lineno + 1
            if length > limit:
                out.append(f"{name}:{fn.lineno} {fn.name}: {length} lines")
    return out


def any_configs(sources: list[tuple[str, str]]) -> list[str]:
    out = []
    for name, text in sources:
        for fn in _functions(ast.parse(text)):
            args = fn.args
            for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
                if arg.arg in CONFIG_NAMES and arg.annotation is not None:
                    if ast.unparse(arg.annotation).strip("'\"") in ("Any", "typing.Any"):
                        out.append(f"{name}:{fn.lineno} {fn.name}({arg.arg}: Any)")
    return out


def test_no_module_is_over_400_lines():
    assert long_modules(_modules()) == []


def test_no_function_is_over_60_lines():
    assert long_functions(_modules()) == []


def test_no_config_parameter_is_typed_any():
    assert any_configs(_modules()) == []


def test_the_checks_see_what_they_are_meant_to():
    """Each check flags a hand-made offender and passes its fixed twin (the checks are not vacuous)."""
    body = "\n".join(f"    x = {i}" for i in range(60))
    long = f"@decorator\ndef f(cfg: Config):\n{body}\n"  # 61 lines from `def`
    assert long_functions([("m.py", long)]) == ["m.py:2 f: 61 lines"]
    assert long_functions([("m.py", long.replace("    x = 59\n", ""))]) == []
    assert long_modules([("m.py", "x = 1\n" * 401)]) == ["m.py: 401 lines"]
    assert long_modules([("m.py", "x = 1\n" * 400)]) == []
    typed_any = "class C:\n    def g(self, settings: 'Any', *, config: Any = None, other: Any = 1): ...\n"
    assert any_configs([("m.py", typed_any)]) == ["m.py:2 g(settings: Any)", "m.py:2 g(config: Any)"]
    assert any_configs([("m.py", "def g(cfg: Config, other: Any): ...\n")]) == []
