"""From a workflow to an execution plan: subgraph flattening, overrides, validation with structured issues, pruning.

Validation reports every problem at once as `Issue(node, field, code, message, hint)`; bad input never
produces a traceback. Codes: schema, unknown_type, unsupported_type_version, unknown_param,
missing_param, out_of_bounds, not_in_choices, invalid_value, invalid_params, unknown_input,
missing_input, multiple_links, missing_node, missing_output, type_mismatch, cycle, no_output,
unknown_target, unknown_subgraph, subgraph_cycle, unknown_exposed, duplicate_label, unknown_field,
duplicate_field.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
from pydantic import TypeAdapter, ValidationError

from nodes.catalogue import all_node_classes, get_node_class
from nodes.files import confined_path, model_source_allowed, refusal
from nodes.registry import Node, param_choices, param_socket_type
from nodes.types import can_connect
from pipelines.issues import Issue, WorkflowInvalid
from pipelines.workflow import ID_SEPARATOR, SUBGRAPH_TYPE, Link, NodeEntry, Workflow, resolve_field

_BOUNDS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "too_long", "too_short",
           "string_too_long", "string_too_short", "multiple_of"}
_CHOICES = {"literal_error", "enum"}


@dataclass
class FlatNode:
    """A node after subgraph flattening; `id` is namespaced (`outer/inner`) for nodes from subgraphs."""

    id: str
    type: str
    type_version: int
    params: dict[str, Any]
    inputs: dict[str, Link | list[Link]]
    title: str | None = None


@dataclass(frozen=True)
class PlanNode:
    id: str
    cls: type[Node]
    params: dict[str, Any]  # literal params, upgraded to the current type_version
    wired_params: dict[str, Link]  # params fed by another node's INT/FLOAT/STRING/BOOLEAN output
    inputs: dict[str, Link | list[Link]]
    title: str | None = None


@dataclass
class Plan:
    """Validated nodes in topological order, pruned to what the requested outputs need."""

    nodes: list[PlanNode]
    output_nodes: list[str]
    consumers: dict[str, int] = field(default_factory=dict)  # how many later nodes read each node's outputs


# ---------------------------------------------------------------- flattening

@dataclass
class Flattened:
    nodes: dict[str, FlatNode]
    issues: list[Issue]
    reported: set[tuple[str, str]]  # (node, input) whose link problem flattening already reported
    bypassed: set[str] = field(default_factory=set)  # nodes left out because they are bypassed


def _passthrough(node_id: str, entry: NodeEntry, inputs: dict[str, Link | list[Link]],
                 issues: list[Issue]) -> dict[str, Link | None]:
    """What a bypassed node's outputs pass on: for each output, the first wired input of the same socket type
    (ComfyUI's bypass); None where it has none."""
    cls = get_node_class(entry.type)
    if cls is None:
        issues.append(Issue(node=node_id, field="type", code="unknown_type", message=f"unknown node type {entry.type!r}"))
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


def flatten(workflow: Workflow) -> Flattened:
    """Inline every subgraph instance; links into and out of instances are rewired to the inner nodes."""
    issues: list[Issue] = []
    reported: set[tuple[str, str]] = set()
    broken: set[str] = set()  # instances that could not be expanded (already reported)
    flat: dict[str, FlatNode] = {}
    instance_inputs: dict[str, dict[str, Link | list[Link]]] = {}
    instance_targets: dict[str, dict[str, list[tuple[str, str]]]] = {}
    instance_outputs: dict[str, dict[str, Link]] = {}
    bypassed: dict[str, dict[str, Link | None]] = {}
    types: dict[str, str] = {}  # node id → type, for messages about bypassed nodes

    def expand(nodes: dict[str, NodeEntry], prefix: str, stack: tuple[str, ...]) -> None:
        for local_id, entry in nodes.items():
            node_id = prefix + local_id
            if not local_id or ID_SEPARATOR in local_id:
                issues.append(Issue(node=node_id, code="schema", field="id",
                                    message=f"node ids must be non-empty and may not contain {ID_SEPARATOR!r}"))
                continue
            inputs = {name: _prefixed(value, prefix) for name, value in entry.inputs.items()}
            types[node_id] = entry.type
            if entry.bypass:
                if entry.type == SUBGRAPH_TYPE:
                    issues.append(Issue(node=node_id, field="bypass", code="invalid_value",
                                        message="a Subgraph node cannot be bypassed", hint="bypass nodes inside it"))
                    broken.add(node_id)
                else:
                    bypassed[node_id] = _passthrough(node_id, entry, inputs, issues)
                continue
            if entry.type != SUBGRAPH_TYPE:
                flat[node_id] = FlatNode(node_id, entry.type, entry.type_version, dict(entry.params), inputs, entry.title)
                continue
            sub_id = entry.subgraph
            definition = workflow.subgraphs.get(sub_id) if sub_id else None
            if definition is None:
                message = (f"subgraph {sub_id!r} is not defined in this workflow" if sub_id
                           else "a Subgraph node needs `subgraph`: the id of its definition")
                issues.append(Issue(node=node_id, field="subgraph", code="unknown_subgraph", message=message,
                                    hint=f"defined: {', '.join(workflow.subgraphs) or 'none'}"))
                broken.add(node_id)
                continue
            if sub_id in stack:
                issues.append(Issue(node=node_id, field="subgraph", code="subgraph_cycle",
                                    message=f"subgraph {sub_id!r} contains itself ({' → '.join(stack + (sub_id,))})"))
                broken.add(node_id)
                continue
            for param in entry.params:
                issues.append(Issue(node=node_id, field=param, code="unknown_param",
                                    message="a Subgraph node has no params of its own",
                                    hint="set inner params as outer/inner.param"))
            inner_prefix = node_id + ID_SEPARATOR
            declared = {port.name: port for port in definition.inputs}
            for name in inputs:
                if name not in declared:
                    issues.append(Issue(node=node_id, field=name, code="unknown_input",
                                        message=f"subgraph {sub_id!r} has no input {name!r}",
                                        hint=f"inputs: {', '.join(declared) or 'none'}"))
            instance_inputs[node_id] = {k: v for k, v in inputs.items() if k in declared}
            instance_targets[node_id] = {
                port.name: [(inner_prefix + t.node, t.input) for t in port.targets] for port in definition.inputs
            }
            instance_outputs[node_id] = {
                port.name: Link(node=inner_prefix + port.source.node, output=port.source.output)
                for port in definition.outputs
            }
            expand(definition.nodes, inner_prefix, stack + (sub_id,))

    expand(workflow.nodes, "", ())

    # Feed instance inputs to their inner targets, outermost first (a target may be a nested instance).
    for instance in sorted(instance_inputs, key=lambda i: i.count(ID_SEPARATOR)):
        for name, value in instance_inputs[instance].items():
            for target_id, target_input in instance_targets[instance].get(name, []):
                if target_id in flat:
                    flat[target_id].inputs[target_input] = value
                elif target_id in instance_inputs:
                    if target_input in instance_targets[target_id]:
                        instance_inputs[target_id][target_input] = value
                    else:
                        issues.append(Issue(node=instance, field=name, code="unknown_input",
                                            message=f"subgraph input {name!r} targets {target_id!r}, whose subgraph "
                                                    f"has no input {target_input!r}"))
                elif target_id in broken:
                    continue
                else:
                    issues.append(Issue(node=instance, field=name, code="missing_node",
                                        message=f"subgraph input {name!r} targets missing inner node {target_id!r}"))

    def resolve(link: Link) -> tuple[Link, Issue | None]:
        """Follow a link through subgraph outputs and bypassed nodes to the node that produces the value."""
        for _ in range(len(instance_outputs) + len(bypassed) + 1):
            if link.node in instance_outputs:
                mapped = instance_outputs[link.node].get(link.output)
                if mapped is None:
                    return link, Issue(code="missing_output",
                                       message=f"subgraph node {link.node!r} has no output {link.output!r}")
            elif link.node in bypassed:
                passed = bypassed[link.node]
                if link.output not in passed:
                    return link, Issue(code="missing_output", message=f"{link.node!r} has no output {link.output!r}")
                mapped = passed[link.output]
                if mapped is None:
                    return link, Issue(code="bypassed_input", message=(
                        f"{link.node!r} is bypassed and has no wired input of the type of its output "
                        f"{link.output!r} to pass on"), hint=f"wire one into {link.node!r} ({types[link.node]}) or "
                                                             f"stop bypassing it")
            else:
                return link, None
            link = mapped
        return link, None  # a loop of bypassed nodes: the cycle check reports it

    for node in flat.values():
        for name, value in list(node.inputs.items()):
            links = value if isinstance(value, list) else [value]
            resolved = []
            for link in links:
                if link.node in broken:
                    reported.add((node.id, name))
                target, problem = resolve(link)
                if problem is not None:
                    issues.append(problem.model_copy(update={"node": node.id, "field": name}))
                    reported.add((node.id, name))
                resolved.append(target)
            node.inputs[name] = resolved if isinstance(value, list) else resolved[0]
    return Flattened(flat, issues, reported, set(bypassed))


def _prefixed(value: Link | list[Link], prefix: str) -> Link | list[Link]:
    if not prefix:
        return value
    if isinstance(value, list):
        return [Link(node=prefix + link.node, output=link.output) for link in value]
    return Link(node=prefix + value.node, output=value.output)


# ---------------------------------------------------------------- overrides

def apply_overrides(workflow: Workflow, flat: dict[str, FlatNode], overrides: dict[str, Any],
                    bypassed: set[str] = frozenset()) -> list[Issue]:
    """Set each `label` or `node.param` override on the flat nodes, coerced to the param's type when possible
    (an override of a bypassed node's param is accepted and changes nothing)."""
    issues = []
    named: dict[tuple[str, str], str] = {}
    for name, raw in overrides.items():
        try:
            node_id, param = resolve_field(workflow, name)
        except KeyError as error:
            issues.append(Issue(field=name, code="unknown_field", message=str(error.args[0])))
            continue
        if (node_id, param) in named:
            issues.append(Issue(node=node_id, field=param, code="duplicate_field",
                                message=f"{name!r} and {named[node_id, param]!r} both set {node_id}.{param}",
                                hint="set or sweep each field under one name"))
            continue
        named[node_id, param] = name
        node = flat.get(node_id)
        if node_id in bypassed:
            continue
        if node is None:
            issues.append(Issue(node=node_id, field=param, code="unknown_field", message=f"{name!r}: no node {node_id!r}"))
            continue
        node.params[param] = coerce_param(node.type, param, raw)
        node.inputs.pop(param, None)  # an override replaces a wire into that param
    return issues


def coerce_param(type_name: str, param: str, raw: Any) -> Any:
    """Convert a value given as text (CLI, CSV) to the param's type; leave it for validation to report if not."""
    cls = get_node_class(type_name)
    info = cls.Params.model_fields.get(param) if cls else None
    if info is None or not isinstance(raw, str):
        return raw
    try:
        return TypeAdapter(info.annotation).validate_python(raw)
    except ValidationError:
        return raw


# ---------------------------------------------------------------- validation

def validate_flat(workflow: Workflow, flat: dict[str, FlatNode], *, target: str | None = None,
                  reported: set[tuple[str, str]] = frozenset(), bypassed: set[str] = frozenset(),
                  file_roots: tuple[Path, ...] | None = None) -> tuple[list[Issue], dict[str, PlanNode], nx.DiGraph]:
    """Check every node, link and exposed field (and, for a run confined to `file_roots`, every path and model
    source a param names); returns the issues, the planned nodes and the link graph."""
    issues: list[Issue] = []
    planned: dict[str, PlanNode] = {}
    classes: dict[str, type[Node] | None] = {nid: get_node_class(n.type) for nid, n in flat.items()}

    for node_id, node in flat.items():
        cls = classes[node_id]
        if cls is None:
            close = difflib.get_close_matches(node.type, [c.type for c in all_node_classes()], n=3)
            issues.append(Issue(node=node_id, field="type", code="unknown_type",
                                message=f"unknown node type {node.type!r}",
                                hint=f"did you mean {', '.join(close)}?" if close else "see `python run.py nodes`"))
            continue
        params = _upgrade_params(cls, node, issues)
        if params is None:
            continue
        input_specs = {i.name: i for i in cls.inputs}
        fields = cls.Params.model_fields
        wired: dict[str, Link] = {}
        inputs: dict[str, Link | list[Link]] = {}
        for name, value in node.inputs.items():
            links = value if isinstance(value, list) else [value]
            if name in input_specs:
                spec = input_specs[name]
                if isinstance(value, list) and not spec.multi:
                    issues.append(Issue(node=node_id, field=name, code="multiple_links",
                                        message=f"input {name!r} takes one link, not a list of {len(value)}"))
                    continue
                expected = spec.type
                inputs[name] = value
            elif name in fields and (expected := param_socket_type(fields[name])) is not None:
                if isinstance(value, list):
                    issues.append(Issue(node=node_id, field=name, code="multiple_links",
                                        message=f"param {name!r} can be fed by one link, got {len(value)}"))
                    continue
                wired[name] = value
            else:
                issues.append(Issue(node=node_id, field=name, code="unknown_input",
                                    message=f"{cls.type} has no input {name!r}",
                                    hint=f"inputs: {', '.join(input_specs) or 'none'}"))
                continue
            if (node_id, name) in reported:
                continue
            for link in links:
                issues.extend(_check_link(node_id, name, link, expected, flat, classes))
        for spec in cls.inputs:
            if not spec.optional and node.inputs.get(spec.name) in (None, []) and (node_id, spec.name) not in reported:
                issues.append(Issue(node=node_id, field=spec.name, code="missing_input",
                                    message=f"required input {spec.name!r} ({spec.type}) is not connected"))
        constants = {name: value for name, link in wired.items()
                     if (value := _constant_value(flat.get(link.node), classes.get(link.node))) is not _UNKNOWN}
        issues.extend(_check_params(node_id, cls, params, wired, constants))
        if file_roots is not None:
            issues.extend(_check_reads(node_id, cls, params, wired, constants, file_roots))
        planned[node_id] = PlanNode(node_id, cls, params, wired, inputs, node.title)

    graph = _link_graph(flat)
    cyclic = [] if nx.is_directed_acyclic_graph(graph) else nx.strongly_connected_components(graph)
    for component in cyclic:
        if len(component) > 1 or any(graph.has_edge(n, n) for n in component):
            members = sorted(component)
            issues.append(Issue(node=members[0], code="cycle",
                                message=f"these nodes form a cycle: {' → '.join(members)}",
                                hint="remove one of the links between them"))
    if not any(c is not None and c.output_node for c in classes.values()):
        issues.append(Issue(code="no_output", message="the workflow has no output node",
                            hint="add a Save Image or Preview Image node"))
    if target is not None and target not in flat:
        why = "it is bypassed" if target in bypassed else "no such node"
        issues.append(Issue(node=target, code="unknown_target", message=f"cannot run up to {target!r}: {why}"))
    issues.extend(_check_exposed(workflow, flat, classes, bypassed))
    return issues, planned, graph


def _upgrade_params(cls: type[Node], node: FlatNode, issues: list[Issue]) -> dict[str, Any] | None:
    params = dict(node.params)
    if node.type_version > cls.version:
        issues.append(Issue(node=node.id, field="type_version", code="unsupported_type_version",
                            message=f"{cls.type} version {node.type_version} is newer than this FlowCanvas knows ({cls.version})",
                            hint="upgrade FlowCanvas"))
        return None
    for version in range(node.type_version, cls.version):
        upgrade = cls.upgrades.get(version)
        if upgrade is None:
            issues.append(Issue(node=node.id, field="type_version", code="unsupported_type_version",
                                message=f"{cls.type} params saved by version {version} cannot be upgraded to {cls.version}"))
            return None
        params = upgrade(params)
    return params


def _check_link(node_id: str, name: str, link: Link, expected: Any, flat: dict[str, FlatNode],
                classes: dict[str, type[Node] | None]) -> list[Issue]:
    if link.node not in flat:
        return [Issue(node=node_id, field=name, code="missing_node",
                      message=f"input {name!r} is linked to node {link.node!r}, which does not exist")]
    source_cls = classes.get(link.node)
    if source_cls is None:
        return []  # the unknown type is reported on the source node itself
    outputs = {o.name: o for o in source_cls.outputs}
    if link.output not in outputs:
        return [Issue(node=node_id, field=name, code="missing_output",
                      message=f"{source_cls.type} node {link.node!r} has no output {link.output!r}",
                      hint=f"outputs: {', '.join(outputs) or 'none'}")]
    produced = outputs[link.output].type
    if not can_connect(produced, expected):
        return [Issue(node=node_id, field=name, code="type_mismatch",
                      message=f"input {name!r} expects {expected}, but {link.node}.{link.output} gives {produced}")]
    return []


_UNKNOWN = object()


def _constant_value(source: FlatNode | None, cls: type[Node] | None) -> Any:
    """The value a primitive source will output, known before running (or _UNKNOWN)."""
    if source is None or cls is None or cls.constant_param is None or source.inputs:
        return _UNKNOWN
    if cls.constant_param in source.params:
        return source.params[cls.constant_param]
    info = cls.Params.model_fields.get(cls.constant_param)
    return _UNKNOWN if info is None or info.is_required() else info.get_default(call_default_factory=True)


def _check_params(node_id: str, cls: type[Node], params: dict[str, Any], wired: dict[str, Link],
                  constants: dict[str, Any]) -> list[Issue]:
    """Check literal params, and wired params whose value is a primitive's constant, against the spec."""
    issues = []
    values = {k: v for k, v in params.items() if k not in wired} | constants
    try:
        validated = cls.Params.model_validate(values)
    except ValidationError as error:
        for item in error.errors():
            field_name = str(item["loc"][0]) if item["loc"] else None
            kind = item["type"]
            if kind == "missing" and field_name in wired:
                continue  # fed at run time by a node whose value is not known yet
            if kind == "missing":
                code = "missing_param"
            elif kind == "extra_forbidden":
                code = "unknown_param"
            elif kind in _BOUNDS:
                code = "out_of_bounds"
            elif kind in _CHOICES:
                code = "not_in_choices"
            else:
                code = "invalid_value"
            info = cls.Params.model_fields.get(field_name or "")
            if code == "unknown_param":
                close = difflib.get_close_matches(field_name or "", list(cls.Params.model_fields), n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"params: {', '.join(cls.Params.model_fields) or 'none'}"
            elif info is not None and (choices := param_choices(info)) is not None:
                hint = "one of: " + ", ".join(map(str, choices))
            else:
                hint = info.description if info is not None else None
            got = "" if kind in ("missing", "extra_forbidden") else f" (got {item['input']!r})"
            if field_name in constants:
                got += f" (fed by {wired[field_name].node}.{wired[field_name].output})"
            issues.append(Issue(node=node_id, field=field_name, code=code, message=f"{item['msg']}{got}", hint=hint))
        return issues
    if set(wired) <= set(constants):
        issues.extend(Issue(node=node_id, field=f, code="invalid_params", message=m) for f, m in cls.check(validated))
    return issues


def _check_reads(node_id: str, cls: type[Node], params: dict[str, Any], wired: dict[str, Link],
                 constants: dict[str, Any], roots: tuple[Path, ...]) -> list[Issue]:
    """Refuse paths and model sources outside what a confined run may read, before anything reads them."""
    issues = []
    for name, info in cls.Params.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        reads = extra.get("reads")
        value = constants.get(name) if name in wired else params.get(name)
        if reads is None or not isinstance(value, str) or not value.strip():
            continue
        allowed = (model_source_allowed(value, roots) if reads == "model"
                   else confined_path(value, roots) is not None)
        if not allowed:
            message, hint = refusal(value, reads)
            issues.append(Issue(node=node_id, field=name, code="not_allowed", message=message, hint=hint))
    return issues


def _check_exposed(workflow: Workflow, flat: dict[str, FlatNode], classes: dict[str, type[Node] | None],
                   bypassed: set[str]) -> list[Issue]:
    issues, labels = [], set()
    for exposed in workflow.exposed:
        if exposed.label in labels:
            issues.append(Issue(node=exposed.node, field=exposed.param, code="duplicate_label",
                                message=f"two exposed fields are labelled {exposed.label!r}"))
        labels.add(exposed.label)
        if exposed.node in bypassed:
            continue  # still addressable; it changes nothing while the node is bypassed
        cls = classes.get(exposed.node)
        if exposed.node not in flat:
            issues.append(Issue(node=exposed.node, field=exposed.param, code="unknown_exposed",
                                message=f"exposed field {exposed.label!r} names missing node {exposed.node!r}"))
        elif cls is not None and exposed.param not in cls.Params.model_fields:
            issues.append(Issue(node=exposed.node, field=exposed.param, code="unknown_exposed",
                                message=f"exposed field {exposed.label!r}: {cls.type} has no param {exposed.param!r}"))
    return issues


def _link_graph(flat: dict[str, FlatNode]) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(flat)
    for node in flat.values():
        for value in node.inputs.values():
            for link in value if isinstance(value, list) else [value]:
                if link.node in flat:
                    graph.add_edge(link.node, node.id)
    return graph


# ---------------------------------------------------------------- planning

def validate_workflow(workflow: Workflow, overrides: dict[str, Any] | None = None, *, target: str | None = None,
                      file_roots: tuple[Path, ...] | None = None) -> list[Issue]:
    """Every issue with the workflow (and the overrides), without planning."""
    try:
        build_plan(workflow, overrides, target=target, file_roots=file_roots)
    except WorkflowInvalid as invalid:
        return invalid.issues
    return []


def build_plan(workflow: Workflow, overrides: dict[str, Any] | None = None, *, target: str | None = None,
               file_roots: tuple[Path, ...] | None = None) -> Plan:
    """Flatten, override, validate, prune to the ancestors of the outputs (or of `target`) and order.

    `file_roots`: confine the run (browser and API submissions) to reading inside these folders (nodes.files)."""
    flattened = flatten(workflow)
    flat, issues = flattened.nodes, flattened.issues
    if overrides:
        issues.extend(apply_overrides(workflow, flat, overrides, flattened.bypassed))
    validation_issues, planned, graph = validate_flat(workflow, flat, target=target, reported=flattened.reported,
                                                      bypassed=flattened.bypassed, file_roots=file_roots)
    issues.extend(validation_issues)
    if issues:
        raise WorkflowInvalid(issues)
    sinks = [target] if target is not None else [nid for nid, p in planned.items() if p.cls.output_node]
    keep = set(sinks)
    for sink in sinks:
        keep |= nx.ancestors(graph, sink)
    if len(keep) < len(graph):
        graph = graph.subgraph(keep).copy()  # a copy: sorting through a filtered view is several times slower
    # Output nodes go last where links allow, so the files they write carry the whole run's record (every seed).
    order = list(nx.lexicographical_topological_sort(graph, key=lambda nid: (planned[nid].cls.output_node, nid)))
    consumers = {nid: graph.out_degree(nid) for nid in keep}
    return Plan(nodes=[planned[nid] for nid in order], output_nodes=[s for s in order if s in sinks], consumers=consumers)


def substitute_overrides(workflow: Workflow, overrides: dict[str, Any]) -> Workflow:
    """The workflow with overrides written into its params: what an output PNG carries, so reopening it
    reproduces that image. Overrides of nodes inside subgraphs stay in the run record only."""
    if not overrides:
        return workflow
    nodes = {nid: entry.model_copy(deep=True) for nid, entry in workflow.nodes.items()}
    for name, raw in overrides.items():
        node_id, param = resolve_field(workflow, name)
        entry = nodes.get(node_id)
        if entry is not None:
            entry.params[param] = coerce_param(entry.type, param, raw)
            entry.inputs.pop(param, None)
    return workflow.model_copy(update={"nodes": nodes})


def coerce_overrides(workflow: Workflow, overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides with text values converted to their params' types (what a run records as its values)."""
    flat = flatten(workflow).nodes
    coerced = {}
    for name, raw in overrides.items():
        try:
            node_id, param = resolve_field(workflow, name)
        except KeyError:
            coerced[name] = raw  # reported by validation
            continue
        node = flat.get(node_id)
        coerced[name] = coerce_param(node.type, param, raw) if node else raw
    return coerced
