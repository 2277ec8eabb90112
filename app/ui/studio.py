"""What every studio view (library, runs, batch, models) shares: storage, the worker pool, the canvas.

Each view is one module of app/ui/views with a `build(studio)` that lays out its own `gr.Tab` inside the app's `gr.Tabs`
and wires its events. Views open workflows in the canvas through `open_in_canvas`, which returns the updates
for `studio.canvas_outputs` (the editor's value and the selected tab).

The views' page-wide styles (tables, galleries) are in studio_static/studio.css, linked into the page's head by
`STUDIO_HEAD` on a component that Gradio renders at page load (the Library's importer).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from pipelines.jobs import WorkerPool
from storage import Storage

CANVAS_TAB = "canvas"
STATIC_DIR = Path(__file__).resolve().parent / "studio_static"
# Page-relative, so it also resolves under a root path; Gradio serves it once STATIC_DIR is a static path.
STUDIO_HEAD = f'<link rel="stylesheet" href="gradio_api/file={html.escape(str(STATIC_DIR / "studio.css"))}">'


@dataclass
class Studio:
    storage: Storage
    pool: WorkerPool
    readable_roots: tuple[Path, ...]  # what a workflow from the browser or the API may read
    file_url: Callable[[str], str]  # an artifact's stored path → the URL the browser loads it from
    editor: gr.HTML  # the canvas; its value is the workflow document shown
    tabs: gr.Tabs
    blocks: gr.Blocks  # the whole page, for page-level events (load with the URL's query, say)

    @property
    def canvas_outputs(self) -> list[Any]:
        return [self.editor, self.tabs]

    @staticmethod
    def open_in_canvas(document: dict[str, Any]) -> tuple[Any, Any]:
        """Updates for `canvas_outputs`: show `document` on the canvas and switch to it."""
        return gr.update(value=document), gr.Tabs(selected=CANVAS_TAB)


def event_field(evt: gr.EventData, name: str) -> Any:
    """One field of the payload a gr.HTML element sent with `trigger(event, {...})`, or None where it sent none.

    Gradio documents reading the payload as attributes of the event (gr.HTML's docstring: `evt.option`) and has
    no public accessor for the whole payload. A payload key that is also an EventData attribute (`target`: the
    component) cannot be read this way, so the page's payloads avoid it (bridge.mjs sends "run up to here"
    as `up_to`)."""
    try:
        return getattr(evt, name)
    except (AttributeError, TypeError):  # TypeError: an event triggered without a payload
        return None
