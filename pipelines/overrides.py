"""Overrides: values set by an exposed field's label or by `node.param` (`--set`, sweeps, CSV jobs, the HTTP API,
the Batch tab), applied to a flattened workflow, coerced from text to their params' types, and written back
into a workflow document for the PNGs a run saves."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from nodes.catalogue import get_node_class
from pipelines.flatten import FlatNode, flatten
from pipelines.issues import Issue, IssueCode
from pipelines.workflow import Workflow, resolve_field


def apply_overrides(
    workflow: Workflow, flat: dict[str, FlatNode], overrides: dict[str, Any], bypassed: set[str] = frozenset()
) -> list[Issue]:
    """Set each `label` or `node.param` override on the flat nodes, coerced to the param's type when possible
    (an override of a bypassed node's param is accepted and changes nothing)."""
    issues = []
    named: dict[tuple[str, str], str] = {}
    for name, raw in overrides.items():
        try:
            node_id, param = resolve_field(workflow, name)
        except KeyError as error:
            issues.append(Issue(field=name, code=IssueCode.UNKNOWN_FIELD, message=str(error.args[0])))
            continue
        if (node_id, param) in named:
            issues.append(
                Issue(
                    node=node_id,
                    field=param,
                    code=IssueCode.DUPLICATE_FIELD,
                    message=f"{name!r} and {named[node_id, param]!r} both set {node_id}.{param}",
                    hint="set or sweep each field under one name",
                )
            )
            continue
        named[node_id, param] = name
        node = flat.get(node_id)
        if node_id in bypassed:
            continue
        if node is None:
            issues.append(
                Issue(node=node_id, field=param, code=IssueCode.UNKNOWN_FIELD, message=f"{name!r}: no node {node_id!r}")
            )
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
