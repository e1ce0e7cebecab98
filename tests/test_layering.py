"""The package's layering, drawn from the source with `ast` (no third-party import-graph tool needed).

Each top-level module or subpackage of `harness/` sits on a layer; an import may point only down the list
below, or within the same unit. Inside a unit, modules must not import each other in a circle. Imports of
harness code inside a function are allowed only where the line says why (`# lazy: ...`): everything else
sits at the top of its module, where a reader (and this test) can see it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "harness"

# lowest first; units on one line are siblings and must not import each other
LAYERS: list[tuple[str, ...]] = [
    ("__init__", "allocator", "arguments", "cli_help", "durable", "scorers", "timing", "config", "console"),
    ("tasks", "parallel", "lora"),
    ("models", "batching"),
    ("decoding",),
    ("eval",),
    ("tracking",),
    ("distill",),
    ("methods",),
    ("run", "report"),
    ("tasktools", "bench", "session"),
    ("cli",),
]
LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(name: str, modules: set[str]) -> str | None:
    """The longest prefix of a dotted name that is a module of the package."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """module -> the harness modules it imports; and the function-level imports without a reason."""
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    edges: dict[str, set[str]] = defaultdict(set)
    unexplained: list[str] = []
    for f in files:
        mod = module_name(f)
        package = mod if f.name == "__init__.py" else mod.rpartition(".")[0]
        lines = f.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        top_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            else:
                continue
            found = {resolve(t, modules) for t in targets if t.startswith("harness")} - {None, mod}
            if not found:
                continue
            edges[mod] |= found  # type: ignore[arg-type]
            nested = id(node) not in top_level and not _under_type_checking(tree, node)
            said = any("# lazy:" in line for line in lines[node.lineno - 1 : node.end_lineno])
            if nested and not said:
                unexplained.append(f"{f.relative_to(PACKAGE.parent)}:{node.lineno}")
    return edges, unexplained


def _under_type_checking(tree: ast.Module, target: ast.AST) -> bool:
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            if any(child is target for child in ast.walk(node)):
                return True
    return False


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(edges):
        if v not in index:
            visit(v)
    return found


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in edges.items():
        for dst in targets:
            a, b = unit_of(src), unit_of(dst)
            if a == b or b == "__init__":
                continue
            if LAYER_OF[b] >= LAYER_OF[a]:
                bad.append(f"{src} -> {dst}")
    return sorted(bad)


def test_every_unit_has_a_layer():
    units = {unit_of(module_name(f)) for f in PACKAGE.rglob("*.py")}
    assert units <= set(LAYER_OF), f"place these in LAYERS: {sorted(units - set(LAYER_OF))}"


def test_no_import_circles():
    edges, _ = import_graph()
    assert cycles(edges) == []


def test_no_upward_or_sideways_imports():
    edges, _ = import_graph()
    assert upward_imports(edges) == []


def test_function_level_imports_say_why():
    _, unexplained = import_graph()
    assert unexplained == []


def test_the_checks_can_fail():
    """The checkers themselves, on a hand-made graph with one circle and one upward arrow."""
    edges = {"harness.config": {"harness.methods.base"}, "harness.methods.base": {"harness.config"}}
    assert cycles(edges) == [["harness.config", "harness.methods.base"]]
    assert upward_imports(edges) == ["harness.config -> harness.methods.base"]


def test_the_report_imports_no_training_code():
    """The report reads what tracking wrote (and pure functions of eval and tasks), so it runs on a machine
    that only holds the MLflow store; docs/ARCHITECTURE.md states this rule."""
    training = {"distill", "methods", "run", "models", "parallel", "batching"}
    edges, _ = import_graph()
    bad = sorted(
        f"{module} -> {target}"
        for module, targets in edges.items()
        if unit_of(module) == "report"
        for target in targets
        if unit_of(target) in training
    )
    assert bad == []
