"""Primitive nodes: constants that can be wired into any param of their type (and exposed as fields)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from nodes.fields import seed_field
from nodes.registry import Node, NodeContext, NodeParams, Output, node
from nodes.types import SocketType


@node("Int", category="primitives", outputs=[Output("value", SocketType.INT)])
class IntNode(Node):
    """A whole number to wire into any INT param."""

    constant_param = "value"

    class Params(NodeParams):
        value: int = Field(0, description="The number.")

    def run(self, ctx: NodeContext, params: Params, **inputs: Any) -> dict[str, Any]:
        return {"value": params.value}


@node("Float", category="primitives", outputs=[Output("value", SocketType.FLOAT)])
class FloatNode(Node):
    """A decimal number to wire into any FLOAT param."""

    constant_param = "value"

    class Params(NodeParams):
        value: float = Field(0.0, description="The number.", json_schema_extra={"step": 0.01})

    def run(self, ctx: NodeContext, params: Params, **inputs: Any) -> dict[str, Any]:
        return {"value": params.value}


@node("String", category="primitives", outputs=[Output("value", SocketType.STRING)])
class StringNode(Node):
    """A piece of text (a prompt, a caption) to wire into any STRING param."""

    constant_param = "value"

    class Params(NodeParams):
        value: str = Field("", description="The text.", json_schema_extra={"widget": "multiline"})

    def run(self, ctx: NodeContext, params: Params, **inputs: Any) -> dict[str, Any]:
        return {"value": params.value}


@node("Boolean", category="primitives", outputs=[Output("value", SocketType.BOOLEAN)])
class BooleanNode(Node):
    """An on/off switch to wire into any BOOLEAN param."""

    constant_param = "value"

    class Params(NodeParams):
        value: bool = Field(False, description="On or off.")

    def run(self, ctx: NodeContext, params: Params, **inputs: Any) -> dict[str, Any]:
        return {"value": params.value}


@node("Seed", category="primitives", outputs=[Output("seed", SocketType.INT)])
class SeedNode(Node):
    """A random seed; the same seed on the same device gives the same image. Recorded with every run."""

    constant_param = "seed"

    class Params(NodeParams):
        seed: int = seed_field(0, "The seed value.")

    def run(self, ctx: NodeContext, params: Params, **inputs: Any) -> dict[str, Any]:
        ctx.record_seed("seed", params.seed)
        return {"seed": params.seed}
