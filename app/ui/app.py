"""The browser app: the canvas editor with the embedded txt2img workflow open; validate, run, cancel, follow.

No torch here: the catalogue comes from nodes.registry, validation from pipelines.validate, and runs go through
the shared job worker (pipelines.jobs), whose events app.ui.canvas_runs turns into the editor's `run_state`.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder
from PIL import Image, UnidentifiedImageError

from app.api import Api
from app.ui.canvas_runs import CanvasRuns
from app.ui.editor import flow_editor
from app.ui.studio import CANVAS_TAB, Studio, event_field
from app.ui.uploads import GRADIO_CACHE_SECONDS, UploadRefused, store_upload
from app.ui.views import batch, library, models, runs
from nodes.catalogue import catalogue
from nodes.files import confined_path
from pipelines.issues import WorkflowInvalid
from pipelines.jobs import RunRequest, WorkerPool
from pipelines.validate import validate_workflow
from pipelines.workflow import parse_workflow
from storage import Storage, open_storage

REPO = Path(__file__).resolve().parents[2]
STARTER = REPO / "pipelines" / "templates" / "txt2img-embedded.json"
TEMPLATE_IMAGES = REPO / "pipelines" / "templates" / "images"
THUMBNAIL_SIZE = 96
# The studio views, in tab order after the canvas: each module has build(studio).
STUDIO_VIEWS = (library, runs, batch, models)


def workflow_issues(workflow: Any, file_roots: tuple[Path, ...]) -> list[dict[str, Any]]:
    """Every issue with a workflow document (confined to reading inside `file_roots`), as dicts the editor marks
    on nodes and fields."""
    try:
        issues = validate_workflow(parse_workflow(workflow), file_roots=file_roots)
    except WorkflowInvalid as invalid:
        issues = invalid.issues
    return [issue.model_dump(mode="json") for issue in issues]


def _validation(issues: list[dict[str, Any]]) -> dict[str, Any]:
    # A fresh id each time: the same issues twice (say, none) must still reach the editor's watch.
    return {"issues": issues, "id": uuid.uuid4().hex}


def _event_workflow(evt: gr.EventData) -> Any:
    """The workflow document of a canvas event, sent as JSON text (see bridge.mjs workflowText). Anything that
    does not parse is handed to validation as it is, which says what is wrong with it."""
    text = event_field(evt, "workflow")
    try:
        return json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError:
        return text


def thumbnail_data_url(path: Path) -> str | None:
    try:
        with Image.open(path) as image:
            image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
            buffer = io.BytesIO()
            image.convert("RGBA").save(buffer, format="PNG")
    except (FileNotFoundError, UnidentifiedImageError, OSError):
        return None
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def build_app(
    workflow: dict[str, Any] | None = None, *, storage: Storage | None = None, pool: WorkerPool | None = None
) -> gr.Blocks:
    """The app, opened on `workflow` (default: the embedded txt2img starter), running on `pool` (default: a
    worker pool over the default storage, made here)."""
    if workflow is None:
        workflow = json.loads(STARTER.read_text(encoding="utf-8"))
    storage = storage or open_storage()
    pool = pool or WorkerPool(storage)
    uploads = storage.home / "uploads"
    # Output images and uploads are served from where storage keeps them (content-addressed, never rewritten).
    gr.set_static_paths([storage.artifacts.root, uploads])

    def file_url(path: str) -> str:
        return f"/gradio_api/file={storage.artifacts.absolute(path)}"

    canvas_runs = CanvasRuns(storage, pool, file_url)
    # What a workflow from the browser or the API may read: the data folder and the starter templates' images.
    readable_roots = (storage.home, TEMPLATE_IMAGES)
    api = Api(storage, pool, readable_roots)

    def keep_upload(received: str) -> dict[str, Any]:
        """Server function: an upload from Gradio's upload folder, kept in the data folder."""
        try:
            stored = store_upload(Path(received), uploads, Path(get_upload_folder()))
        except UploadRefused as refused:
            return {"error": str(refused)}
        return {"path": str(stored), "thumbnail": thumbnail_data_url(stored)}

    def image_thumbnail(raw: str) -> str | None:
        """Server function: a small preview of an image the canvas names, read only where a run of it may read
        (nothing else is opened)."""
        path = confined_path(str(raw), readable_roots)
        return None if path is None else thumbnail_data_url(path)

    def canvas_validate(evt: gr.EventData) -> Any:
        return gr.update(validation=_validation(workflow_issues(_event_workflow(evt), readable_roots)))

    def canvas_run(evt: gr.EventData) -> Any:
        document = _event_workflow(evt)
        issues = workflow_issues(document, readable_roots)
        target = event_field(evt, "up_to") or None
        if not issues:
            try:
                handle = pool.submit(
                    RunRequest(workflow=parse_workflow(document), target=target, file_roots=readable_roots)
                )
            except WorkflowInvalid as invalid:  # "run up to here" on a node the plan cannot reach, say
                issues = [issue.model_dump(mode="json") for issue in invalid.issues]
        if issues:
            yield gr.update(validation=_validation(issues), run_state={"status": "invalid", "run_id": None})
            return
        yield gr.update(validation=_validation([]))
        for state in canvas_runs.relay(handle):
            yield gr.update(run_state=state)

    def canvas_follow(evt: gr.EventData) -> Any:
        run_id = str(event_field(evt, "run_id") or "")
        for state in canvas_runs.follow(run_id):
            yield gr.update(run_state=state)

    def canvas_cancel(evt: gr.EventData) -> None:
        canvas_runs.cancel(str(event_field(evt, "run_id") or ""))

    # Gradio's temporary copies (uploads, images sent to the page) go an hour after they were made.
    with gr.Blocks(title="FlowCanvas", delete_cache=(GRADIO_CACHE_SECONDS, GRADIO_CACHE_SECONDS)) as demo:
        with gr.Tabs(selected=CANVAS_TAB) as tabs:
            with gr.Tab("Canvas", id=CANVAS_TAB):
                editor = flow_editor(
                    workflow, catalogue(), elem_id="flow-editor", server_functions=[keep_upload, image_thumbnail]
                )
            studio = Studio(storage, pool, readable_roots, file_url, editor, tabs, demo)
            for view in STUDIO_VIEWS:
                view.build(studio)
        # UI-only events (private: the HTTP API has its own endpoints). Relays wait on the worker, not on
        # each other, so they run outside the default one-at-a-time queue slot.
        quiet = dict(outputs=editor, show_progress="hidden", api_visibility="private")
        editor.validate_graph(canvas_validate, **quiet)
        editor.run_graph(canvas_run, concurrency_limit=None, **quiet)
        editor.follow_run(canvas_follow, concurrency_limit=None, **quiet)
        editor.cancel_run(
            canvas_cancel, outputs=None, show_progress="hidden", api_visibility="private", concurrency_limit=None
        )
        api.register()
    return demo
