"""The shape of the nodes package: nodes import nothing of the app, the engine or storage, no two of its modules
import each other (directly or round a loop), and the catalogue finds every node without a list of modules."""

from __future__ import annotations

import ast
from pathlib import Path

from nodes.catalogue import all_node_classes

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("app", "pipelines", "storage")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every module of `nodes` and the names it imports (anywhere in it, function bodies included)."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "nodes").rglob("*.py"):
        names: set[str] = set()
        for item in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(item, ast.ImportFrom) and item.module:
                names |= {item.module, *(f"{item.module}.{alias.name}" for alias in item.names)}
            elif isinstance(item, ast.Import):
                names |= {alias.name for alias in item.names}
        found[_module_name(path)] = names
    return found


def test_nodes_import_nothing_of_the_app_the_engine_or_storage():
    offending = {module: sorted(name for name in names if name.split(".")[0] in FORBIDDEN)
                 for module, names in _imports().items()}
    assert {module: names for module, names in offending.items() if names} == {}


def test_no_import_cycle_inside_nodes():
    imports = _imports()
    graph = {module: {name for name in names if name in imports and name != module} for module, names in imports.items()}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " → ".join((*path[path.index(module):], module)))
        if module in done:
            return
        for imported in sorted(graph[module]):
            visit(imported, (*path, module))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())


def _declared_node_types() -> set[str]:
    """The type names given to `node(...)` (the decorator, or the solver nodes' factory) anywhere in `nodes`."""
    found: set[str] = set()
    for path in (ROOT / "nodes").rglob("*.py"):
        for item in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(item, ast.Call) and isinstance(item.func, ast.Name)
                    and item.func.id in ("node", "_solver_node") and item.args
                    and isinstance(item.args[0], ast.Constant) and isinstance(item.args[0].value, str)):
                found.add(item.args[0].value)
    return found


def test_the_catalogue_holds_every_node_declared_in_the_package():
    declared = _declared_node_types()
    assert len(declared) >= 40  # every built-in node, solvers included
    assert declared <= {cls.type for cls in all_node_classes()}
