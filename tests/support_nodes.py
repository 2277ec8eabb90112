"""Throwaway node types for engine tests: arithmetic on INTs, a slow stepping node, a failing node, a sink.

`EXECUTIONS` counts how often each node id actually ran (cache hits do not count).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from pydantic import Field

from nodes.registry import Input, Node, NodeContext, NodeError, NodeParams, Output, node
from nodes.types import SocketType

EXECUTIONS: Counter[str] = Counter()
STEP_REACHED = threading.Event()  # set by TestSlow once it has taken its first step


@node("TestConst", category="test", outputs=[Output("value", SocketType.INT)])
class TestConst(Node):
    """Outputs its value (not a primitive: validation cannot see through it)."""

    class Params(NodeParams):
        value: int = 0

    def run(self, ctx: NodeContext, params: Params, **inputs: Any) -> dict[str, Any]:
        EXECUTIONS[ctx.node_id] += 1
        return {"value": params.value}


@node(
    "TestAdd",
    category="test",
    inputs=[Input("a", SocketType.INT), Input("b", SocketType.INT, optional=True)],
    outputs=[Output("value", SocketType.INT)],
)
class TestAdd(Node):
    """a + b + offset."""

    class Params(NodeParams):
        offset: int = Field(0, ge=-1000, le=1000)
        mode: str = "plain"

    def run(self, ctx: NodeContext, params: Params, a: int, b: int = 0) -> dict[str, Any]:
        EXECUTIONS[ctx.node_id] += 1
        return {"value": a + b + params.offset}


@node("TestSlow", category="test", inputs=[Input("a", SocketType.INT)], outputs=[Output("value", SocketType.INT)])
class TestSlow(Node):
    """Steps `steps` times, `delay` seconds each, reporting progress (a cancellation point per step)."""

    class Params(NodeParams):
        steps: int = Field(5, ge=1, le=10_000)
        delay: float = Field(0.01, ge=0, le=10)

    def run(self, ctx: NodeContext, params: Params, a: int) -> dict[str, Any]:
        EXECUTIONS[ctx.node_id] += 1
        for step in range(1, params.steps + 1):
            time.sleep(params.delay)
            STEP_REACHED.set()
            ctx.progress(step, params.steps)
        return {"value": a}


@node("TestFail", category="test", inputs=[Input("a", SocketType.INT)], outputs=[Output("value", SocketType.INT)])
class TestFail(Node):
    """Always fails, with a NodeError (`user=True`) or an unexpected exception saying `message`."""

    class Params(NodeParams):
        user: bool = True
        message: str = "division by zero"

    def run(self, ctx: NodeContext, params: Params, a: int) -> dict[str, Any]:
        if params.user:
            raise NodeError("this node always fails", field="user")
        raise ZeroDivisionError(params.message)


@node("TestSink", category="test", output_node=True, inputs=[Input("value", SocketType.INT)])
class TestSink(Node):
    """An output node that emits its value as a text artifact."""

    class Params(NodeParams):
        pass

    def run(self, ctx: NodeContext, params: Params, value: int) -> dict[str, Any]:
        EXECUTIONS[ctx.node_id] += 1
        ctx.emit_output("value", str(value).encode(), "txt", {"value": value})
        return {}
