"""Engine benchmark: executor overhead per node and validate+schedule time, side by side with the bare work.

    python bench/engine.py [--nodes 200] [--big 1000] [--repeat 20]

1. A 200-node graph of trivial nodes (each adds its inputs): the executor (cold cache, then warm cache)
   against calling the same node functions in a plain loop. Overhead per node = (executor − loop) / nodes.
2. A 1000-node graph: parse + validate + prune + topological order (`build_plan`), goal < 50 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nodes.registry import Input, Node, NodeContext, NodeParams, Output, node  # noqa: E402
from nodes.types import SocketType  # noqa: E402
from pipelines.executor import Executor, OutputCache  # noqa: E402
from pipelines.plan import build_plan  # noqa: E402
from pipelines.workflow import load_workflow  # noqa: E402


@node(
    "BenchAdd",
    category="bench",
    inputs=[Input("a", SocketType.INT, optional=True), Input("b", SocketType.INT, optional=True)],
    outputs=[Output("value", SocketType.INT)],
)
class BenchAdd(Node):
    """a + b + offset: the cheapest possible node."""

    class Params(NodeParams):
        offset: int = 1

    def run(self, ctx: NodeContext, params: Params, a: int = 0, b: int = 0) -> dict[str, Any]:
        return {"value": a + b + params.offset}


@node("BenchSink", category="bench", output_node=True, inputs=[Input("value", SocketType.INT)])
class BenchSink(Node):
    """Output node that keeps nothing."""

    class Params(NodeParams):
        pass

    def run(self, ctx: NodeContext, params: Params, value: int) -> dict[str, Any]:
        return {}


def layered_graph(count: int) -> dict[str, Any]:
    """`count` BenchAdd nodes, each reading the two nodes before it (a DAG with 2 links per node), one sink."""
    nodes: dict[str, Any] = {}
    for i in range(count):
        inputs = {}
        if i >= 1:
            inputs["a"] = {"node": f"n{i - 1}", "output": "value"}
        if i >= 2:
            inputs["b"] = {"node": f"n{i - 2}", "output": "value"}
        nodes[f"n{i}"] = {
            "type": "BenchAdd",
            "params": {"offset": i % 7},
            "inputs": inputs,
            "position": [i * 10.0, 0.0],
        }
    nodes["sink"] = {"type": "BenchSink", "inputs": {"value": {"node": f"n{count - 1}", "output": "value"}}}
    return {"format": "flowcanvas.workflow", "version": 1, "name": "bench", "nodes": nodes}


def bare_loop(plan: Any) -> int:
    """The same work without the engine: call each node's function in order with its inputs."""
    values: dict[str, int] = {}
    ctx = NodeContext(node_id="x", node_type="BenchAdd", device="cpu")
    for planned in plan.nodes:
        if planned.cls is BenchSink:
            continue
        inputs = {name: values[link.node] for name, link in planned.inputs.items()}
        values[planned.id] = planned.cls().run(ctx, planned.cls.Params(**planned.params), **inputs)["value"]
    return len(values)


def median_seconds(function: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--big", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    document = layered_graph(args.nodes)
    plan = build_plan(load_workflow(document))
    nodes = len(plan.nodes)
    loop = median_seconds(lambda: bare_loop(plan), args.repeat)
    cold = median_seconds(lambda: Executor(cache=OutputCache()).execute(plan, run_id="bench"), args.repeat)
    warm_executor = Executor()
    warm_executor.execute(plan, run_id="warm-up")
    warm = median_seconds(lambda: warm_executor.execute(plan, run_id="bench"), args.repeat)

    big = layered_graph(args.big)
    schedule = median_seconds(lambda: build_plan(load_workflow(big)), max(5, args.repeat // 2))

    print(f"executor on {nodes} trivial nodes (median of {args.repeat}):")
    print(f"  plain loop over the node functions : {loop * 1e3:8.2f} ms  ({loop / nodes * 1e6:7.1f} µs/node)")
    print(
        f"  executor, cold cache (all run)     : {cold * 1e3:8.2f} ms  ({cold / nodes * 1e6:7.1f} µs/node)"
        f"  ratio to loop {cold / loop:5.1f}x"
    )
    print(
        f"  executor, warm cache (all cached)  : {warm * 1e3:8.2f} ms  ({warm / nodes * 1e6:7.1f} µs/node)"
        f"  ratio to loop {warm / loop:5.1f}x"
    )
    print(
        f"  executor overhead per node         : {(cold - loop) / nodes * 1e6:8.1f} µs (cold), "
        f"{(warm - loop) / nodes * 1e6:.1f} µs (warm)"
    )
    print(
        f"validate + schedule, {args.big + 1}-node graph: {schedule * 1e3:.1f} ms "
        f"(goal < 50 ms: {schedule * 1e3 / 50:.2f} of the goal)"
    )


if __name__ == "__main__":
    main()
