"""Structured problems with a workflow: `{node, field, code, message, hint}`, reported all at once.

Bad input never produces a traceback: loading (pipelines.workflow), flattening, overrides and validation each
report what they find as Issues, and `WorkflowInvalid` carries every one of them to the caller.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class IssueCode(StrEnum):
    """What kind of problem an Issue is. The values are what API payloads, the CLI's `--json` and the editor
    (app/ui/editor/static/graph.mjs) read, so they never change."""

    # loading the document (pipelines.workflow, app.commands)
    SCHEMA = "schema"  # not a workflow document, or a malformed part of one
    UNSUPPORTED_VERSION = "unsupported_version"  # a workflow format version this FlowCanvas cannot read
    UNREADABLE = "unreadable"  # no such file, or no library workflow by that reference
    NO_WORKFLOW = "no_workflow"  # a PNG that carries no FlowCanvas workflow
    INVALID_INPUT = "invalid_input"  # a bad command-line argument (the CLI's `--json` errors)
    # flattening subgraphs and bypassed nodes (pipelines.flatten)
    UNKNOWN_SUBGRAPH = "unknown_subgraph"
    SUBGRAPH_CYCLE = "subgraph_cycle"
    BYPASSED_INPUT = "bypassed_input"  # a bypassed node has no input of its output's type to pass on
    TOO_LARGE = "too_large"  # over a budget (flattened nodes, subgraph depth), refused before any work
    # overrides: `--set`, sweeps, API values (pipelines.overrides)
    UNKNOWN_FIELD = "unknown_field"
    DUPLICATE_FIELD = "duplicate_field"
    # nodes and their params (pipelines.validate)
    UNKNOWN_TYPE = "unknown_type"
    UNSUPPORTED_TYPE_VERSION = "unsupported_type_version"
    UNKNOWN_PARAM = "unknown_param"
    MISSING_PARAM = "missing_param"
    OUT_OF_BOUNDS = "out_of_bounds"
    NOT_IN_CHOICES = "not_in_choices"
    INVALID_VALUE = "invalid_value"
    INVALID_PARAMS = "invalid_params"  # params valid one by one, refused together by the node's check()
    NOT_ALLOWED = "not_allowed"  # a path or model source outside what a confined run may read
    MISSING_FILE = "missing_file"  # a file or folder param that names nothing on disk
    # links
    UNKNOWN_INPUT = "unknown_input"
    MISSING_INPUT = "missing_input"
    MULTIPLE_LINKS = "multiple_links"
    MISSING_NODE = "missing_node"
    MISSING_OUTPUT = "missing_output"
    TYPE_MISMATCH = "type_mismatch"
    # the graph as a whole
    CYCLE = "cycle"
    NO_OUTPUT = "no_output"
    UNKNOWN_TARGET = "unknown_target"  # "run up to here" on a node that is not there (or bypassed)
    UNKNOWN_EXPOSED = "unknown_exposed"
    DUPLICATE_LABEL = "duplicate_label"


class Issue(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: IssueCode
    message: str
    node: str | None = None
    field: str | None = None
    hint: str | None = None

    def __str__(self) -> str:
        where = ".".join(p for p in (self.node, self.field) if p)
        text = f"[{self.code}] {where + ': ' if where else ''}{self.message}"
        return f"{text} (hint: {self.hint})" if self.hint else text


class WorkflowInvalid(Exception):
    """A workflow (or overrides) failed validation; carries every issue found."""

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__("; ".join(str(i) for i in issues))
        self.issues = issues
