"""The layers hold: app → pipelines → nodes, with storage beneath, and no module imports itself in a circle.

Read from the source with ast (every import, at module level or inside a function), so a new upward import or a
new circle fails here whatever it is; there is no list of exceptions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "pipelines", "nodes", "storage")
# What each layer may import of the others.
MAY_IMPORT = {
    "app": {"pipelines", "nodes", "storage"},
    "pipelines": {"nodes", "storage"},
    "nodes": set(),
    "storage": set(),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The project modules a file imports (`from a.b import c` counts a.b.c when that is a module, else a.b)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names)
    return {module for module in found if module.split(".")[0] in PACKAGES}


def import_graph() -> nx.DiGraph:
    files = [path for package in PACKAGES for path in (REPO / package).rglob("*.py")]
    modules = {module_name(path) for path in files}
    graph = nx.DiGraph()
    for path in files:
        source = module_name(path)
        graph.add_node(source)
        for target in imported_modules(path, modules):
            # `import a.b.c` also runs a and a.b: a package's __init__ counts as imported only when named.
            if target != source:
                graph.add_edge(source, target)
    return graph


def test_no_layer_imports_upward_or_sideways():
    crossings = sorted(
        f"{source} imports {target}"
        for source, target in import_graph().edges
        if source.split(".")[0] != target.split(".")[0] and target.split(".")[0] not in MAY_IMPORT[source.split(".")[0]]
    )
    assert crossings == []


def test_no_import_circles():
    circles = [
        sorted(component) for component in nx.strongly_connected_components(import_graph()) if len(component) > 1
    ]
    assert circles == []
