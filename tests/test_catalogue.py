"""The catalogue finds every node the package declares, without a hand-written list of modules (a forgotten line
once dropped nodes silently). The layering of nodes among the other packages is tests/test_layers.py's."""

from __future__ import annotations

import ast
from pathlib import Path

from nodes.catalogue import all_node_classes

ROOT = Path(__file__).resolve().parents[1]


def _declared_node_types() -> set[str]:
    """The type names given to `node(...)` (the decorator, or the solver nodes' factory) anywhere in `nodes`."""
    found: set[str] = set()
    for path in (ROOT / "nodes").rglob("*.py"):
        for item in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(item, ast.Call)
                and isinstance(item.func, ast.Name)
                and item.func.id in ("node", "_solver_node")
                and item.args
                and isinstance(item.args[0], ast.Constant)
                and isinstance(item.args[0].value, str)
            ):
                found.add(item.args[0].value)
    return found


def test_the_catalogue_holds_every_node_declared_in_the_package():
    declared = _declared_node_types()
    assert len(declared) >= 40  # every built-in node, solvers included
    assert declared <= {cls.type for cls in all_node_classes()}
