"""The browser app: the canvas editor with the embedded txt2img workflow open, and validation.

No torch here: the catalogue comes from nodes.registry and validation from pipelines.graph.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import gradio as gr

from app.ui.editor import flow_editor
from nodes.registry import catalogue
from pipelines.graph import validate_workflow
from pipelines.issues import WorkflowInvalid
from pipelines.workflow import parse_workflow

STARTER = Path(__file__).resolve().parents[2] / "pipelines" / "templates" / "txt2img-embedded.json"


def workflow_issues(workflow: Any) -> list[dict[str, Any]]:
    """Every issue with a workflow document, as dicts the editor marks on nodes and fields."""
    try:
        issues = validate_workflow(parse_workflow(workflow))
    except WorkflowInvalid as invalid:
        issues = invalid.issues
    return [issue.model_dump() for issue in issues]


def _validate(workflow: Any) -> Any:
    # A fresh id each time: the same issues twice (say, none) must still reach the editor's watch.
    return gr.update(validation={"issues": workflow_issues(workflow), "id": uuid.uuid4().hex})


def build_app(workflow: dict[str, Any] | None = None) -> gr.Blocks:
    """The app, opened on `workflow` (default: the embedded txt2img starter)."""
    if workflow is None:
        workflow = json.loads(STARTER.read_text(encoding="utf-8"))
    with gr.Blocks(title="FlowCanvas") as demo:
        with gr.Row():
            validate = gr.Button("Validate", variant="secondary", size="sm", scale=0, min_width=90, elem_id="fc-validate")
            # Running (Run, Cancel, per-node progress, previews, outputs panel) goes here, through the shared job worker.
        editor = flow_editor(workflow, catalogue(), elem_id="flow-editor")
        validate.click(_validate, inputs=editor, outputs=editor, show_progress="hidden", api_visibility="private")
    return demo
