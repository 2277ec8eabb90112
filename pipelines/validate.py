"""Validation: every problem with a workflow (and its overrides) found at once, as structured Issues.

`check_workflow` flattens the workflow (pipelines.flatten), applies the overrides (pipelines.overrides) and checks
every node, link and exposed field; each node that passes becomes a PlanNode, which pipelines.plan orders into
a Plan. A node's params are upgraded from the type_version they were saved with before they are checked.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
from pydantic import ValidationError

from nodes.catalogue import all_node_classes, get_node_class
from nodes.files import Reads, confined_path, model_source_allowed, refusal, unconfined_path
from nodes.registry import Node, param_choices, param_socket_type
from nodes.types import can_connect
from pipelines.flatten import FlatNode, flatten
from pipelines.issues import Issue, IssueCode
from pipelines.overrides import apply_overrides
from pipelines.workflow import Link, Workflow
from storage.config import read_settings

# pydantic error types, by the issue code they are reported under
_BOUNDS = {
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "too_long",
    "too_short",
    "string_too_long",
    "string_too_short",
    "multiple_of",
}
_CHOICES = {"literal_error", "enum"}


@dataclass(frozen=True)
class PlanNode:
    """A node that passed validation: its class, and its params and links sorted by what feeds them."""

    id: str
    cls: type[Node]
    params: dict[str, Any]  # literal params, upgraded to the current type_version
    wired_params: dict[str, Link]  # params fed by another node's INT/FLOAT/STRING/BOOLEAN output
    inputs: dict[str, Link | list[Link]]
    title: str | None = None


@dataclass
class Checked:
    """What validation found: the issues, the nodes that passed, and the graph of links between flat nodes."""

    issues: list[Issue]
    nodes: dict[str, PlanNode]
    graph: nx.DiGraph


def validate_workflow(
    workflow: Workflow,
    overrides: dict[str, Any] | None = None,
    *,
    target: str | None = None,
    file_roots: tuple[Path, ...] | None = None,
) -> list[Issue]:
    """Every issue with the workflow (and the overrides), without planning."""
    return check_workflow(workflow, overrides, target=target, file_roots=file_roots).issues


def check_workflow(
    workflow: Workflow,
    overrides: dict[str, Any] | None = None,
    *,
    target: str | None = None,
    file_roots: tuple[Path, ...] | None = None,
) -> Checked:
    """Flatten, override and validate. `target`: the node a "run up to here" stops at, which must exist.
    `file_roots`: confine the run (browser and API submissions) to reading inside these folders (nodes.files)."""
    flattened = flatten(workflow)
    issues = list(flattened.issues)
    if any(issue.code == IssueCode.TOO_LARGE for issue in issues):
        return Checked(issues, {}, nx.DiGraph())  # nothing was expanded: there is nothing more to check
    if overrides:
        issues.extend(apply_overrides(workflow, flattened.nodes, overrides, flattened.bypassed))
    checked = validate_flat(
        workflow,
        flattened.nodes,
        target=target,
        reported=flattened.reported,
        bypassed=flattened.bypassed,
        file_roots=file_roots,
    )
    return Checked(issues + checked.issues, checked.nodes, checked.graph)


def validate_flat(
    workflow: Workflow,
    flat: dict[str, FlatNode],
    *,
    target: str | None = None,
    reported: set[tuple[str, str]] = frozenset(),
    bypassed: set[str] = frozenset(),
    file_roots: tuple[Path, ...] | None = None,
) -> Checked:
    """Check every node, link and exposed field (and, for a run confined to `file_roots`, every path and model
    source a param names). `reported`: links whose problem flattening already reported."""
    issues: list[Issue] = []
    planned: dict[str, PlanNode] = {}
    classes: dict[str, type[Node] | None] = {nid: get_node_class(n.type) for nid, n in flat.items()}
    for node_id, node in flat.items():
        checked = _check_node(node, classes, flat, reported, file_roots, issues)
        if checked is not None:
            planned[node_id] = checked
    graph = _link_graph(flat)
    issues.extend(_check_cycles(graph))
    if not any(c is not None and c.output_node for c in classes.values()):
        issues.append(
            Issue(
                code=IssueCode.NO_OUTPUT,
                message="the workflow has no output node",
                hint="add a Save Image or Preview Image node",
            )
        )
    if target is not None and target not in flat:
        why = "it is bypassed" if target in bypassed else "no such node"
        issues.append(Issue(node=target, code=IssueCode.UNKNOWN_TARGET, message=f"cannot run up to {target!r}: {why}"))
    issues.extend(_check_exposed(workflow, flat, classes, bypassed))
    return Checked(issues, planned, graph)


def _check_node(
    node: FlatNode,
    classes: dict[str, type[Node] | None],
    flat: dict[str, FlatNode],
    reported: set[tuple[str, str]],
    file_roots: tuple[Path, ...] | None,
    issues: list[Issue],
) -> PlanNode | None:
    """One node's type, params and links; its PlanNode, or None when its type or version rules it out."""
    node_id = node.id
    cls = classes[node_id]
    if cls is None:
        close = difflib.get_close_matches(node.type, [c.type for c in all_node_classes()], n=3)
        issues.append(
            Issue(
                node=node_id,
                field="type",
                code=IssueCode.UNKNOWN_TYPE,
                message=f"unknown node type {node.type!r}",
                hint=f"did you mean {', '.join(close)}?" if close else "see `python run.py nodes`",
            )
        )
        return None
    params = _upgrade_params(cls, node, issues)
    if params is None:
        return None
    input_specs = {i.name: i for i in cls.inputs}
    fields = cls.Params.model_fields
    wired: dict[str, Link] = {}
    inputs: dict[str, Link | list[Link]] = {}
    for name, value in node.inputs.items():
        links = value if isinstance(value, list) else [value]
        if name in input_specs:
            spec = input_specs[name]
            if isinstance(value, list) and not spec.multi:
                issues.append(
                    Issue(
                        node=node_id,
                        field=name,
                        code=IssueCode.MULTIPLE_LINKS,
                        message=f"input {name!r} takes one link, not a list of {len(value)}",
                    )
                )
                continue
            expected = spec.type
            inputs[name] = value
        elif name in fields and (expected := param_socket_type(fields[name])) is not None:
            if isinstance(value, list):
                issues.append(
                    Issue(
                        node=node_id,
                        field=name,
                        code=IssueCode.MULTIPLE_LINKS,
                        message=f"param {name!r} can be fed by one link, got {len(value)}",
                    )
                )
                continue
            wired[name] = value
        else:
            issues.append(
                Issue(
                    node=node_id,
                    field=name,
                    code=IssueCode.UNKNOWN_INPUT,
                    message=f"{cls.type} has no input {name!r}",
                    hint=f"inputs: {', '.join(input_specs) or 'none'}",
                )
            )
            continue
        if (node_id, name) in reported:
            continue
        for link in links:
            issues.extend(_check_link(node_id, name, link, expected, flat, classes))
    for spec in cls.inputs:
        if not spec.optional and node.inputs.get(spec.name) in (None, []) and (node_id, spec.name) not in reported:
            issues.append(
                Issue(
                    node=node_id,
                    field=spec.name,
                    code=IssueCode.MISSING_INPUT,
                    message=f"required input {spec.name!r} ({spec.type}) is not connected",
                )
            )
    constants = {
        name: value
        for name, link in wired.items()
        if (value := _constant_value(flat.get(link.node), classes.get(link.node))) is not _UNKNOWN
    }
    param_issues = _check_params(node_id, cls, params, wired, constants)
    issues.extend(param_issues)
    refused = {issue.field for issue in param_issues}
    issues.extend(_check_reads(node_id, cls, params, wired, constants, file_roots, refused))
    return PlanNode(node_id, cls, params, wired, inputs, node.title)


def _check_cycles(graph: nx.DiGraph) -> list[Issue]:
    issues = []
    cyclic = [] if nx.is_directed_acyclic_graph(graph) else nx.strongly_connected_components(graph)
    for component in cyclic:
        if len(component) > 1 or any(graph.has_edge(n, n) for n in component):
            members = sorted(component)
            issues.append(
                Issue(
                    node=members[0],
                    code=IssueCode.CYCLE,
                    message=f"these nodes form a cycle: {' → '.join(members)}",
                    hint="remove one of the links between them",
                )
            )
    return issues


def _upgrade_params(cls: type[Node], node: FlatNode, issues: list[Issue]) -> dict[str, Any] | None:
    params = dict(node.params)
    if node.type_version > cls.version:
        issues.append(
            Issue(
                node=node.id,
                field="type_version",
                code=IssueCode.UNSUPPORTED_TYPE_VERSION,
                message=f"{cls.type} version {node.type_version} is newer than this FlowCanvas knows ({cls.version})",
                hint="upgrade FlowCanvas",
            )
        )
        return None
    for version in range(node.type_version, cls.version):
        upgrade = cls.upgrades.get(version)
        if upgrade is None:
            issues.append(
                Issue(
                    node=node.id,
                    field="type_version",
                    code=IssueCode.UNSUPPORTED_TYPE_VERSION,
                    message=f"{cls.type} params saved by version {version} cannot be upgraded to {cls.version}",
                )
            )
            return None
        params = upgrade(params)
    return params


def _check_link(
    node_id: str, name: str, link: Link, expected: Any, flat: dict[str, FlatNode], classes: dict[str, type[Node] | None]
) -> list[Issue]:
    if link.node not in flat:
        return [
            Issue(
                node=node_id,
                field=name,
                code=IssueCode.MISSING_NODE,
                message=f"input {name!r} is linked to node {link.node!r}, which does not exist",
            )
        ]
    source_cls = classes.get(link.node)
    if source_cls is None:
        return []  # the unknown type is reported on the source node itself
    outputs = {o.name: o for o in source_cls.outputs}
    if link.output not in outputs:
        return [
            Issue(
                node=node_id,
                field=name,
                code=IssueCode.MISSING_OUTPUT,
                message=f"{source_cls.type} node {link.node!r} has no output {link.output!r}",
                hint=f"outputs: {', '.join(outputs) or 'none'}",
            )
        ]
    produced = outputs[link.output].type
    if not can_connect(produced, expected):
        return [
            Issue(
                node=node_id,
                field=name,
                code=IssueCode.TYPE_MISMATCH,
                message=f"input {name!r} expects {expected}, but {link.node}.{link.output} gives {produced}",
            )
        ]
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


def _check_params(
    node_id: str, cls: type[Node], params: dict[str, Any], wired: dict[str, Link], constants: dict[str, Any]
) -> list[Issue]:
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
                code = IssueCode.MISSING_PARAM
            elif kind == "extra_forbidden":
                code = IssueCode.UNKNOWN_PARAM
            elif kind in _BOUNDS:
                code = IssueCode.OUT_OF_BOUNDS
            elif kind in _CHOICES:
                code = IssueCode.NOT_IN_CHOICES
            else:
                code = IssueCode.INVALID_VALUE
            info = cls.Params.model_fields.get(field_name or "")
            if code == IssueCode.UNKNOWN_PARAM:
                close = difflib.get_close_matches(field_name or "", list(cls.Params.model_fields), n=1)
                hint = (
                    f"did you mean {close[0]!r}?"
                    if close
                    else f"params: {', '.join(cls.Params.model_fields) or 'none'}"
                )
            elif info is not None and (choices := param_choices(info)) is not None:
                hint = "one of: " + ", ".join(map(str, choices))
            else:
                hint = info.description if info is not None else None
            got = "" if kind in ("missing", "extra_forbidden") else f" (got {item['input']!r})"
            if field_name in constants:
                got += f" (fed by {wired[field_name].node}.{wired[field_name].output})"
            message = item["msg"].removeprefix("Value error, ")  # a validator's own words need no label
            issues.append(Issue(node=node_id, field=field_name, code=code, message=f"{message}{got}", hint=hint))
        return issues
    if set(wired) <= set(constants):
        issues.extend(
            Issue(node=node_id, field=f, code=IssueCode.INVALID_PARAMS, message=m) for f, m in cls.check(validated)
        )
    return issues


def _check_reads(
    node_id: str,
    cls: type[Node],
    params: dict[str, Any],
    wired: dict[str, Link],
    constants: dict[str, Any],
    roots: tuple[Path, ...] | None,
    refused: set[str | None],
) -> list[Issue]:
    """Refuse, before anything reads them, file and folder paths that name nothing, and (for a run confined to
    `roots`) paths and model sources outside what it may read. Fields in `refused` already have an issue."""
    issues = []
    for name, info in cls.Params.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        reads = extra.get("reads")
        value = constants.get(name) if name in wired else params.get(name)
        if reads is None or name in refused or not isinstance(value, str) or not value.strip():
            continue
        if reads == "model":
            if roots is not None and not model_source_allowed(value, roots, read_settings().model_sources):
                issues.append(_refused(node_id, name, value, reads))
            continue
        path = unconfined_path(value) if roots is None else confined_path(value, roots)
        if path is None:
            issues.append(_refused(node_id, name, value, reads))
        elif not (path.is_file() if reads == "file" else path.is_dir()):
            issues.append(
                Issue(
                    node=node_id,
                    field=name,
                    code=IssueCode.MISSING_FILE,
                    message=f"no {reads} at {value!r}",
                    hint="upload it, or check the path: a relative one is read from the data folder"
                    if roots is not None
                    else "check the path: a relative one is read from the working directory",
                )
            )
    return issues


def _refused(node_id: str, field: str, value: str, reads: Reads) -> Issue:
    message, hint = refusal(value, reads)
    return Issue(node=node_id, field=field, code=IssueCode.NOT_ALLOWED, message=message, hint=hint)


def _check_exposed(
    workflow: Workflow, flat: dict[str, FlatNode], classes: dict[str, type[Node] | None], bypassed: set[str]
) -> list[Issue]:
    issues, labels = [], set()
    for exposed in workflow.exposed:
        if exposed.label in labels:
            issues.append(
                Issue(
                    node=exposed.node,
                    field=exposed.param,
                    code=IssueCode.DUPLICATE_LABEL,
                    message=f"two exposed fields are labelled {exposed.label!r}",
                )
            )
        labels.add(exposed.label)
        if exposed.node in bypassed:
            continue  # still addressable; it changes nothing while the node is bypassed
        cls = classes.get(exposed.node)
        if exposed.node not in flat:
            issues.append(
                Issue(
                    node=exposed.node,
                    field=exposed.param,
                    code=IssueCode.UNKNOWN_EXPOSED,
                    message=f"exposed field {exposed.label!r} names missing node {exposed.node!r}",
                )
            )
        elif cls is not None and exposed.param not in cls.Params.model_fields:
            issues.append(
                Issue(
                    node=exposed.node,
                    field=exposed.param,
                    code=IssueCode.UNKNOWN_EXPOSED,
                    message=f"exposed field {exposed.label!r}: {cls.type} has no param {exposed.param!r}",
                )
            )
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
