"""The workflow file: one format that the editor saves, the CLI runs, the HTTP API accepts and a PNG carries.

Pydantic models for the document (docs/architecture.md, "The workflow file"), loading from a file, dict, JSON text or PNG, the
canonical serialisation (stable key order, 2-space indent) and addressing of exposed fields.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    SerializerFunctionWrapHandler,
    StringConstraints,
    ValidationError,
    model_serializer,
)

from pipelines.issues import Issue, IssueCode, WorkflowInvalid
from storage.limits import MAX_NAME, MAX_TEXT, NUL_REFUSED

FORMAT = "flowcanvas.workflow"
CURRENT_VERSION = 1
PNG_WORKFLOW_KEY = "flowcanvas_workflow"
PNG_RUN_KEY = "flowcanvas_run"
SUBGRAPH_TYPE = "Subgraph"
ID_SEPARATOR = "/"  # flattened subgraph nodes are named outer/inner


def _no_nul(value: str) -> str:
    if "\0" in value:
        raise ValueError(NUL_REFUSED)
    return value


# One set of limits for every backend: SQLite would take what PostgreSQL refuses, so both are refused here.
Name = Annotated[str, StringConstraints(max_length=MAX_NAME), AfterValidator(_no_nul)]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT), AfterValidator(_no_nul)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Link(_Model):
    """A wire: which node's which output feeds an input."""

    node: str
    output: str

    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeEntry(_Model):
    type: str = Field(min_length=1, max_length=MAX_NAME)
    type_version: int = Field(1, ge=1, le=2**31 - 1)
    title: Name | None = None
    params: dict[str, JsonValue] = Field(default_factory=dict)
    inputs: dict[str, Link | list[Link]] = Field(default_factory=dict)
    position: tuple[float, float] = (0.0, 0.0)
    subgraph: str | None = None  # for type "Subgraph": the id of an entry in the workflow's `subgraphs`
    # Bypassed nodes do not run: each output passes on the node's first wired input of the same socket type.
    bypass: bool = False

    @model_serializer(mode="wrap")
    def _leave_out_bypass_when_off(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Saved files written before bypass existed stay byte-identical when re-saved.
        data = handler(self)
        if not self.bypass:
            data.pop("bypass", None)
        return data


class ExposedField(_Model):
    """A param made addressable by a label: by `--set`, sweeps, the HTTP API and the form view."""

    node: str
    param: str
    label: str = Field(min_length=1)


class Group(_Model):
    title: str = ""
    nodes: list[str] = Field(default_factory=list)
    color: str | None = None


class InputTarget(_Model):
    node: str
    input: str


class SubgraphInput(_Model):
    name: str = Field(min_length=1)
    type: str
    targets: list[InputTarget] = Field(default_factory=list)


class SubgraphOutput(_Model):
    name: str = Field(min_length=1)
    type: str
    source: Link


class Subgraph(_Model):
    """A stored workflow with declared inputs and outputs, usable as a node (recursive composition)."""

    name: str = ""
    description: str = ""
    nodes: dict[str, NodeEntry] = Field(default_factory=dict)
    inputs: list[SubgraphInput] = Field(default_factory=list)
    outputs: list[SubgraphOutput] = Field(default_factory=list)


class View(_Model):
    x: float = 0.0
    y: float = 0.0
    zoom: float = 1.0


class Workflow(_Model):
    format: Literal["flowcanvas.workflow"] = FORMAT
    version: int = CURRENT_VERSION
    name: Name = "Untitled"
    description: Text = ""
    tags: list[Name] = Field(default_factory=list)
    nodes: dict[Annotated[str, StringConstraints(max_length=MAX_NAME)], NodeEntry] = Field(default_factory=dict)
    exposed: list[ExposedField] = Field(default_factory=list)
    groups: list[Group] = Field(default_factory=list)
    subgraphs: dict[str, Subgraph] = Field(default_factory=dict)
    view: View = Field(default_factory=View)


def _loc(loc: tuple[int | str, ...]) -> tuple[str | None, str | None]:
    """Map a pydantic error location to (node id, field) for a structured issue."""
    parts = [str(p) for p in loc]
    if len(parts) >= 2 and parts[0] == "nodes":
        node_id = parts[1]
        rest = parts[2:]
        if len(rest) >= 2 and rest[0] in ("params", "inputs"):
            return node_id, rest[1]
        return node_id, ".".join(rest) or None
    return None, ".".join(parts) or None


def parse_workflow(data: Any) -> Workflow:
    """Validate a workflow document (a dict); raise WorkflowInvalid with every problem found."""
    if not isinstance(data, dict):
        raise WorkflowInvalid(
            [Issue(code=IssueCode.SCHEMA, message=f"a workflow is a JSON object, got {type(data).__name__}")]
        )
    if data.get("format") != FORMAT:
        found = data.get("format")
        raise WorkflowInvalid(
            [
                Issue(
                    code=IssueCode.SCHEMA,
                    field="format",
                    message=f"not a FlowCanvas workflow: format is {found!r}, expected {FORMAT!r}",
                    hint=_foreign_hint(data),
                )
            ]
        )
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= CURRENT_VERSION:
        raise WorkflowInvalid(
            [
                Issue(
                    code=IssueCode.UNSUPPORTED_VERSION,
                    field="version",
                    message=f"workflow format version {version!r} is not supported (this FlowCanvas reads 1..{CURRENT_VERSION})",
                    hint="upgrade FlowCanvas to open workflows saved by a newer version",
                )
            ]
        )
    try:
        return Workflow.model_validate(data)
    except ValidationError as error:
        issues = []
        for item in error.errors():
            node_id, field = _loc(item["loc"])
            issues.append(Issue(node=node_id, field=field, code=IssueCode.SCHEMA, message=item["msg"]))
        raise WorkflowInvalid(issues) from None


def _foreign_hint(data: dict[str, Any]) -> str | None:
    if "last_node_id" in data or ("nodes" in data and "links" in data):
        return "this looks like a ComfyUI UI workflow; FlowCanvas cannot run ComfyUI graphs"
    if data and all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        return "this looks like a ComfyUI API (prompt) workflow; FlowCanvas cannot run ComfyUI graphs"
    if "edges" in data and "nodes" in data:
        return "this looks like an InvokeAI workflow; FlowCanvas cannot run InvokeAI graphs"
    return None


def canonical_json(workflow: Workflow) -> str:
    """The saved form: stable key order, 2-space indent, trailing newline; equal workflows give equal text."""
    return (
        json.dumps(workflow.model_dump(mode="json", exclude_none=True), sort_keys=True, indent=2, ensure_ascii=False)
        + "\n"
    )


def workflow_from_json(text: str | bytes) -> Workflow:
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise WorkflowInvalid([Issue(code=IssueCode.SCHEMA, message=f"not valid JSON: {error}")]) from None
    except RecursionError:
        raise WorkflowInvalid(
            [Issue(code=IssueCode.SCHEMA, message="the JSON is nested too deeply to be a workflow")]
        ) from None
    return parse_workflow(data)


def workflow_from_png(data: bytes) -> Workflow:
    """Read the workflow a FlowCanvas PNG carries; name what was found in a foreign one."""
    from pipelines.png_text import PNG_SIGNATURE, png_text_chunks

    try:
        if not data.startswith(PNG_SIGNATURE):
            raise ValueError("it does not start with the PNG signature")
        text = png_text_chunks(data)
    except ValueError as error:
        raise WorkflowInvalid([Issue(code=IssueCode.SCHEMA, message=f"not a readable PNG: {error}")]) from None
    if PNG_WORKFLOW_KEY in text:
        return workflow_from_json(text[PNG_WORKFLOW_KEY])
    raise WorkflowInvalid([Issue(code=IssueCode.NO_WORKFLOW, message=describe_foreign_png(text))])


def describe_foreign_png(text: dict[str, str]) -> str:
    """Say what an image without a FlowCanvas workflow carries instead (ComfyUI, InvokeAI, A1111, nothing)."""
    if "workflow" in text or "prompt" in text:
        found = []
        for key in ("workflow", "prompt"):
            if key in text:
                try:
                    parsed = json.loads(text[key])
                    count = len(parsed.get("nodes", [])) if key == "workflow" else len(parsed)
                    found.append(f"a ComfyUI {'UI workflow' if key == 'workflow' else 'API prompt'} with {count} nodes")
                except (json.JSONDecodeError, AttributeError, TypeError):
                    found.append(f"a ComfyUI '{key}' chunk that is not valid JSON")
        return "this PNG carries " + " and ".join(found) + "; FlowCanvas cannot run ComfyUI graphs"
    invoke = [k for k in ("invokeai_workflow", "invokeai_graph", "invokeai_metadata") if k in text]
    if invoke:
        return "this PNG carries InvokeAI metadata (" + ", ".join(invoke) + "); FlowCanvas cannot run InvokeAI graphs"
    if "parameters" in text:
        return "this PNG carries AUTOMATIC1111-style generation parameters, not a workflow"
    return "this PNG carries no workflow"


def load_workflow(source: Workflow | dict[str, Any] | str | bytes | Path) -> Workflow:
    """Load from a Workflow, a dict, JSON text, PNG bytes, or a path to a .json or .png file."""
    if isinstance(source, Workflow):
        return source
    if isinstance(source, dict):
        return parse_workflow(source)
    if isinstance(source, bytes):
        return workflow_from_png(source) if source.startswith(b"\x89PNG") else workflow_from_json(source)
    if isinstance(source, str) and source.lstrip().startswith("{"):
        return workflow_from_json(source)
    path = Path(source)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise WorkflowInvalid(
            [
                Issue(
                    code=IssueCode.UNREADABLE,
                    message=f"cannot read workflow file {str(path)!r}: {error.strerror or error}",
                )
            ]
        ) from None
    return workflow_from_png(data) if data.startswith(b"\x89PNG") else workflow_from_json(data)


def save_workflow(workflow: Workflow, path: Path) -> None:
    """Write the canonical JSON atomically (a crash never leaves a half-written file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(canonical_json(workflow), encoding="utf-8")
    tmp.replace(path)


def resolve_field(workflow: Workflow, name: str) -> tuple[str, str]:
    """Map an exposed field's label, or `node.param`, to (node id, param). Raises KeyError with a hint."""
    for exposed in workflow.exposed:
        if exposed.label == name:
            return exposed.node, exposed.param
    lowered = [e for e in workflow.exposed if e.label.casefold() == name.casefold()]
    if len(lowered) == 1:
        return lowered[0].node, lowered[0].param
    if "." in name:
        node_id, param = name.rsplit(".", 1)
        if node_id in workflow.nodes or ID_SEPARATOR in node_id:
            return node_id, param
    labels = ", ".join(repr(e.label) for e in workflow.exposed) or "none"
    raise KeyError(f"no field {name!r}: use an exposed label ({labels}) or node.param")
