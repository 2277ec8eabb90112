"""The catalogue of built-in nodes: every module of the `nodes` package is imported once, so each node class
registers itself by existing (a new module needs no list to be added to), and the specs are read from
the registry.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import nodes
from nodes.registry import Node, node_spec, registered, registered_classes
from nodes.types import SOCKET_COLOURS
from nodes.vocabulary import hint

_LOADED = False


def load_builtin_nodes() -> None:
    """Import every module under `nodes` (once); importing a module registers the nodes it defines."""
    global _LOADED
    if _LOADED:
        return
    for module in pkgutil.walk_packages(nodes.__path__, prefix="nodes."):
        importlib.import_module(module.name)
    _LOADED = True


def get_node_class(type_name: str) -> type[Node] | None:
    load_builtin_nodes()
    return registered(type_name)


def all_node_classes() -> list[type[Node]]:
    """Every node class, built-in and registered since, by category then type name."""
    load_builtin_nodes()
    return registered_classes()


def catalogue() -> dict[str, Any]:
    """Every node spec, socket colours, and the hint line of each closed-vocabulary model source (shown beside a
    param that declares `vocabulary_from`): what the canvas and `run.py nodes --json` show."""
    from nodes.models.loader import embedded_vocabularies

    return {
        "nodes": [node_spec(cls) for cls in all_node_classes()],
        "socket_colours": {str(k): v for k, v in SOCKET_COLOURS.items()},
        "vocabularies": {source: hint(vocabulary) for source, vocabulary in embedded_vocabularies().items()},
    }
