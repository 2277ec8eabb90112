"""Planning: a validated workflow as the ordered list of nodes a run executes.

build_plan validates (pipelines.validate), keeps only what the requested outputs (or a "run up to here" target)
need, and orders it: output nodes as late as links allow, ties broken by node id so a plan is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from pipelines.issues import WorkflowInvalid
from pipelines.validate import PlanNode, check_workflow
from pipelines.workflow import Workflow


@dataclass
class Plan:
    """Validated nodes in topological order, pruned to what the requested outputs need."""

    nodes: list[PlanNode]
    output_nodes: list[str]
    consumers: dict[str, int] = field(default_factory=dict)  # how many later nodes read each node's outputs


def build_plan(
    workflow: Workflow,
    overrides: dict[str, Any] | None = None,
    *,
    target: str | None = None,
    file_roots: tuple[Path, ...] | None = None,
) -> Plan:
    """Flatten, override, validate (raises WorkflowInvalid with every issue), prune to the ancestors of the
    outputs (or of `target`) and order.

    `file_roots`: confine the run (browser and API submissions) to reading inside these folders (nodes.files)."""
    checked = check_workflow(workflow, overrides, target=target, file_roots=file_roots)
    if checked.issues:
        raise WorkflowInvalid(checked.issues)
    planned, graph = checked.nodes, checked.graph
    sinks = [target] if target is not None else [nid for nid, p in planned.items() if p.cls.output_node]
    keep = set(sinks)
    for sink in sinks:
        keep |= nx.ancestors(graph, sink)
    if len(keep) < len(graph):
        graph = graph.subgraph(keep).copy()  # a copy: sorting through a filtered view is several times slower
    # Output nodes go last where links allow, so the files they write carry the whole run's record (every seed).
    order = list(nx.lexicographical_topological_sort(graph, key=lambda nid: (planned[nid].cls.output_node, nid)))
    consumers = {nid: graph.out_degree(nid) for nid in keep}
    return Plan(
        nodes=[planned[nid] for nid in order], output_nodes=[s for s in order if s in sinks], consumers=consumers
    )
