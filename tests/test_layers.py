"""The layers import downwards only (app → pipelines → nodes, storage beneath all), and no modules of app/ or
pipelines/ import each other in a circle, counting imports made inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

REPO = Path(__file__).resolve().parent.parent
LAYERS = {"storage": 0, "nodes": 1, "pipelines": 2, "app": 3}
CHECKED = ("app", "pipelines")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every project module a file imports (`from a.b import c` counts a.b, and a.b.c where that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in LAYERS}


def project_modules() -> dict[str, set[str]]:
    files = [path for package in CHECKED for path in (REPO / package).rglob("*.py")]
    modules = {module_name(path): imported_modules(path) for path in files}
    return {name: {i for i in imports if i in modules or i.split(".")[0] not in CHECKED}
            for name, imports in modules.items()}


def test_no_layer_imports_a_layer_above_it() -> None:
    upward = [f"{module} imports {imported}" for module, imports in project_modules().items() for imported in imports
              if LAYERS[imported.split(".")[0]] > LAYERS[module.split(".")[0]]]
    assert upward == []


def test_no_import_circles_in_app_and_pipelines() -> None:
    graph = nx.DiGraph()
    for module, imports in project_modules().items():
        graph.add_edges_from((module, imported) for imported in imports if imported.split(".")[0] in CHECKED)
    assert list(nx.simple_cycles(graph)) == []
