"""Flattening: a workflow's subgraph instances inlined and its bypassed nodes wired around, so validation and
planning see one flat graph of runnable nodes.

Nodes from subgraphs are namespaced `outer/inner`. Links into and out of an instance are rewired to the inner
nodes; a link from a bypassed node goes to what that node passes on (ComfyUI's bypass). Problems are reported
as Issues, and which (node, input) links were already reported is remembered so validation does not repeat them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nodes.catalogue import get_node_class
from pipelines.issues import Issue, IssueCode
from pipelines.workflow import ID_SEPARATOR, SUBGRAPH_TYPE, Link, NodeEntry, Workflow
from storage.config import read_settings
from storage.limits import MAX_NAME


@dataclass
class FlatNode:
    """A node after subgraph flattening; `id` is namespaced (`outer/inner`) for nodes from subgraphs."""

    id: str
    type: str
    type_version: int
    params: dict[str, Any]
    inputs: dict[str, Link | list[Link]]
    title: str | None = None


@dataclass
class Flattened:
    nodes: dict[str, FlatNode]
    issues: list[Issue]
    reported: set[tuple[str, str]]  # (node, input) whose link problem flattening already reported
    bypassed: set[str] = field(default_factory=set)  # nodes left out because they are bypassed


def flatten(workflow: Workflow) -> Flattened:
    """Inline every subgraph instance; links into and out of instances are rewired to the inner nodes.

    A workflow over the node or nesting budget (FLOWCANVAS_MAX_NODES, FLOWCANVAS_MAX_SUBGRAPH_DEPTH) is refused
    with one issue before anything is expanded: a few kilobytes of nested instances can name millions of nodes."""
    settings = read_settings()
    over = budget_issue(workflow, settings.max_nodes, settings.max_subgraph_depth)
    if over is not None:
        return Flattened({}, [over], set())
    flattener = _Flattener(workflow)
    flattener.expand(workflow.nodes, prefix="", stack=())
    flattener.feed_instance_inputs()
    flattener.rewire_links()
    return Flattened(flattener.flat, flattener.issues, flattener.reported, set(flattener.bypassed))


class _OverBudget(Exception):
    def __init__(self, issue: Issue) -> None:
        self.issue = issue


def budget_issue(workflow: Workflow, max_nodes: int, max_depth: int) -> Issue | None:
    """The issue refusing a workflow that would flatten to more than `max_nodes` nodes or nest subgraphs deeper
    than `max_depth`, or None. Each subgraph is measured once (its node count and nesting height remembered), and
    measuring stops at the first budget passed, so the cost is bounded by the document's size and the budgets."""
    measured: dict[str, tuple[int, int]] = {}  # subgraph id → (flattened nodes, nesting height)

    def over(field: str, message: str, variable: str) -> _OverBudget:
        hint = f"split the work into smaller workflows, or raise the limit {variable} (README, Limits)"
        return _OverBudget(Issue(code=IssueCode.TOO_LARGE, field=field, message=message, hint=hint))

    def too_deep(path: str) -> _OverBudget:
        return over(
            "subgraphs", f"subgraphs nest deeper than {max_depth} levels ({path})", "FLOWCANVAS_MAX_SUBGRAPH_DEPTH"
        )

    def measure(nodes: dict[str, NodeEntry], depth: int, stack: tuple[str, ...]) -> tuple[int, int]:
        count, height = 0, 0
        for entry in nodes.values():
            sub_id = entry.subgraph
            if entry.type != SUBGRAPH_TYPE or sub_id not in workflow.subgraphs or sub_id in stack:
                count += 1  # unknown and self-containing subgraphs are reported by flattening itself
            else:
                if depth + 1 > max_depth:  # before recursing: the recursion stays within the budget
                    raise too_deep(" → ".join(stack + (sub_id,)))
                if sub_id not in measured:
                    measured[sub_id] = measure(workflow.subgraphs[sub_id].nodes, depth + 1, stack + (sub_id,))
                inner, inner_height = measured[sub_id]
                if depth + 1 + inner_height > max_depth:  # a subgraph measured once, at a shallower depth
                    raise too_deep(f"through {sub_id!r}")
                count += inner
                height = max(height, inner_height + 1)
            if count > max_nodes:
                raise over(
                    "nodes",
                    f"the workflow expands to more than {max_nodes} nodes once its subgraphs are inlined",
                    "FLOWCANVAS_MAX_NODES",
                )
        return count, height

    try:
        measure(workflow.nodes, 0, ())
    except _OverBudget as over:
        return over.issue
    return None


@dataclass
class _Instance:
    """A subgraph instance while flattening: what feeds its inputs, and where its ports lead inside."""

    inputs: dict[str, Link | list[Link]]  # the instance's wired inputs that its subgraph declares
    targets: dict[str, list[tuple[str, str]]]  # input name → the inner (node, input) pairs it feeds
    outputs: dict[str, Link]  # output name → the inner node output behind it


class _Flattener:
    """The steps of `flatten`, sharing what they find: expand nodes, feed instance inputs, rewire links."""

    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow
        self.issues: list[Issue] = []
        self.reported: set[tuple[str, str]] = set()
        self.flat: dict[str, FlatNode] = {}
        self.instances: dict[str, _Instance] = {}
        self.broken: set[str] = set()  # instances that could not be expanded (already reported)
        self.bypassed: dict[str, dict[str, Link | None]] = {}  # node → what each of its outputs passes on
        self.types: dict[str, str] = {}  # node id → type, for messages about bypassed nodes

    def expand(self, nodes: dict[str, NodeEntry], prefix: str, stack: tuple[str, ...]) -> None:
        """Add `nodes` (ids under `prefix`) to the flat graph, recursing into subgraph instances; `stack` is
        the subgraphs being expanded, outermost first, to catch a subgraph that contains itself."""
        for local_id, entry in nodes.items():
            node_id = prefix + local_id
            if len(node_id) > MAX_NAME:
                self.issues.append(
                    Issue(
                        node=node_id[:40] + "…",
                        code=IssueCode.SCHEMA,
                        field="id",
                        message=f"a node id, with the subgraph path before it, is {len(node_id)} characters; "
                        f"at most {MAX_NAME} are stored",
                        hint="shorten the ids of the subgraph instances or of the nodes inside them",
                    )
                )
                continue
            if not local_id or ID_SEPARATOR in local_id:
                self.issues.append(
                    Issue(
                        node=node_id,
                        code=IssueCode.SCHEMA,
                        field="id",
                        message=f"node ids must be non-empty and may not contain {ID_SEPARATOR!r}",
                    )
                )
                continue
            inputs = {name: _prefixed(value, prefix) for name, value in entry.inputs.items()}
            self.types[node_id] = entry.type
            if entry.bypass:
                self._bypass(node_id, entry, inputs)
            elif entry.type != SUBGRAPH_TYPE:
                self.flat[node_id] = FlatNode(
                    node_id, entry.type, entry.type_version, dict(entry.params), inputs, entry.title
                )
            else:
                self._expand_instance(node_id, entry, inputs, stack)

    def _bypass(self, node_id: str, entry: NodeEntry, inputs: dict[str, Link | list[Link]]) -> None:
        if entry.type == SUBGRAPH_TYPE:
            self.issues.append(
                Issue(
                    node=node_id,
                    field="bypass",
                    code=IssueCode.INVALID_VALUE,
                    message="a Subgraph node cannot be bypassed",
                    hint="bypass nodes inside it",
                )
            )
            self.broken.add(node_id)
        else:
            self.bypassed[node_id] = self._passthrough(node_id, entry, inputs)

    def _passthrough(
        self, node_id: str, entry: NodeEntry, inputs: dict[str, Link | list[Link]]
    ) -> dict[str, Link | None]:
        """What a bypassed node's outputs pass on: for each output, the first wired input of the same socket
        type (ComfyUI's bypass); None where it has none."""
        cls = get_node_class(entry.type)
        if cls is None:
            self.issues.append(
                Issue(
                    node=node_id, field="type", code=IssueCode.UNKNOWN_TYPE, message=f"unknown node type {entry.type!r}"
                )
            )
            return {}
        passed: dict[str, Link | None] = {}
        for output in cls.outputs:
            passed[output.name] = None
            for spec in cls.inputs:
                value = inputs.get(spec.name)
                if spec.type == output.type and value not in (None, []):
                    passed[output.name] = value[0] if isinstance(value, list) else value
                    break
        return passed

    def _expand_instance(
        self, node_id: str, entry: NodeEntry, inputs: dict[str, Link | list[Link]], stack: tuple[str, ...]
    ) -> None:
        sub_id = entry.subgraph
        definition = self.workflow.subgraphs.get(sub_id) if sub_id else None
        if definition is None:
            message = (
                f"subgraph {sub_id!r} is not defined in this workflow"
                if sub_id
                else "a Subgraph node needs `subgraph`: the id of its definition"
            )
            self.issues.append(
                Issue(
                    node=node_id,
                    field="subgraph",
                    code=IssueCode.UNKNOWN_SUBGRAPH,
                    message=message,
                    hint=f"defined: {', '.join(self.workflow.subgraphs) or 'none'}",
                )
            )
            self.broken.add(node_id)
            return
        if sub_id in stack:
            self.issues.append(
                Issue(
                    node=node_id,
                    field="subgraph",
                    code=IssueCode.SUBGRAPH_CYCLE,
                    message=f"subgraph {sub_id!r} contains itself ({' → '.join(stack + (sub_id,))})",
                )
            )
            self.broken.add(node_id)
            return
        for param in entry.params:
            self.issues.append(
                Issue(
                    node=node_id,
                    field=param,
                    code=IssueCode.UNKNOWN_PARAM,
                    message="a Subgraph node has no params of its own",
                    hint="set inner params as outer/inner.param",
                )
            )
        inner_prefix = node_id + ID_SEPARATOR
        declared = {port.name: port for port in definition.inputs}
        for name in inputs:
            if name not in declared:
                self.issues.append(
                    Issue(
                        node=node_id,
                        field=name,
                        code=IssueCode.UNKNOWN_INPUT,
                        message=f"subgraph {sub_id!r} has no input {name!r}",
                        hint=f"inputs: {', '.join(declared) or 'none'}",
                    )
                )
        self.instances[node_id] = _Instance(
            inputs={k: v for k, v in inputs.items() if k in declared},
            targets={port.name: [(inner_prefix + t.node, t.input) for t in port.targets] for port in definition.inputs},
            outputs={
                port.name: Link(node=inner_prefix + port.source.node, output=port.source.output)
                for port in definition.outputs
            },
        )
        assert sub_id is not None  # a definition was found under it
        self.expand(definition.nodes, inner_prefix, stack + (sub_id,))

    def feed_instance_inputs(self) -> None:
        """Hand what feeds each instance input to its inner targets, outermost instance first (a target may be
        a nested instance, whose own inputs are fed in turn)."""
        for instance_id in sorted(self.instances, key=lambda i: i.count(ID_SEPARATOR)):
            instance = self.instances[instance_id]
            for name, value in instance.inputs.items():
                for target_id, target_input in instance.targets.get(name, []):
                    if target_id in self.flat:
                        self.flat[target_id].inputs[target_input] = value
                    elif target_id in self.instances:
                        nested = self.instances[target_id]
                        if target_input in nested.targets:
                            nested.inputs[target_input] = value
                        else:
                            self.issues.append(
                                Issue(
                                    node=instance_id,
                                    field=name,
                                    code=IssueCode.UNKNOWN_INPUT,
                                    message=f"subgraph input {name!r} targets {target_id!r}, whose subgraph has no "
                                    f"input {target_input!r}",
                                )
                            )
                    elif target_id not in self.broken:
                        self.issues.append(
                            Issue(
                                node=instance_id,
                                field=name,
                                code=IssueCode.MISSING_NODE,
                                message=f"subgraph input {name!r} targets missing inner node {target_id!r}",
                            )
                        )

    def rewire_links(self) -> None:
        """Point every flat node's links at the nodes that produce the values (through instance outputs and
        bypassed nodes); a link that leads nowhere is reported on the input it feeds."""
        for node in self.flat.values():
            for name, value in list(node.inputs.items()):
                resolved = []
                for link in value if isinstance(value, list) else [value]:
                    if link.node in self.broken:
                        self.reported.add((node.id, name))
                    source, problem = self._producer(link)
                    if problem is not None:
                        self.issues.append(problem.model_copy(update={"node": node.id, "field": name}))
                        self.reported.add((node.id, name))
                    resolved.append(source)
                node.inputs[name] = resolved if isinstance(value, list) else resolved[0]

    def _producer(self, link: Link) -> tuple[Link, Issue | None]:
        """Follow a link through subgraph outputs and bypassed nodes to the node that produces the value."""
        for _ in range(len(self.instances) + len(self.bypassed) + 1):
            if link.node in self.instances:
                mapped = self.instances[link.node].outputs.get(link.output)
                if mapped is None:
                    return link, Issue(
                        code=IssueCode.MISSING_OUTPUT,
                        message=f"subgraph node {link.node!r} has no output {link.output!r}",
                    )
            elif link.node in self.bypassed:
                passed = self.bypassed[link.node]
                if link.output not in passed:
                    return link, Issue(
                        code=IssueCode.MISSING_OUTPUT, message=f"{link.node!r} has no output {link.output!r}"
                    )
                mapped = passed[link.output]
                if mapped is None:
                    return link, Issue(
                        code=IssueCode.BYPASSED_INPUT,
                        message=f"{link.node!r} is bypassed and has no wired input of the type of its output "
                        f"{link.output!r} to pass on",
                        hint=f"wire one into {link.node!r} ({self.types[link.node]}) or stop bypassing it",
                    )
            else:
                return link, None
            link = mapped
        return link, None  # a loop of bypassed nodes: the cycle check reports it


def _prefixed(value: Link | list[Link], prefix: str) -> Link | list[Link]:
    if not prefix:
        return value
    if isinstance(value, list):
        return [Link(node=prefix + link.node, output=link.output) for link in value]
    return Link(node=prefix + value.node, output=value.output)
