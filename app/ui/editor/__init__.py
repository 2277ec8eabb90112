"""The node-canvas editor as a plain `gr.HTML` (see docs/architecture.md, "The studio UI").

The component's value is the workflow document itself (docs/architecture.md, "The workflow file"). Its JavaScript lives in `static/` as ES
modules written for this project, served by Gradio's static-file route; `js_on_load` only imports `bridge.mjs`
and calls `mount`. Custom props: `catalogue` (nodes.catalogue.catalogue()); `validation`, sent with
`gr.update(validation={"issues": [...], "id": ...})`: issues as dicts `{node, field, code, message, hint}`,
marked on the nodes (a new `id` each time, since a prop set to an equal value does not reach the editor); and
`run_state` (app.ui.canvas_runs.RunState), shown on the nodes and in the outputs panel.

Events the editor triggers, each with a dict payload: `validate_graph` {workflow}, `run_graph` {workflow,
target}, `follow_run` {run_id} and `cancel_run` {run_id}. Gradio makes an event listener of a name only when it
appears in quotes in `js_on_load`, so the bootstrap names them in a comment; the props' names must not appear
there (a quoted prop name turns into a listener too).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gradio as gr

STATIC_DIR = Path(__file__).resolve().parent / "static"

# A fixed skeleton: it names no prop, so Gradio never re-renders it over the DOM the modules build. READONLY is
# replaced by ` data-readonly` in a read-only canvas (flow_editor's `readonly`).
SKELETON = """
<div class="fc-root" tabindex="0"READONLY>
  <div class="fc-toolbar">
    <button type="button" class="fc-cmd-new" title="Start from an empty canvas (undoable)">New</button>
    <button type="button" class="fc-cmd-fit" title="Fit the view to the nodes (.)">Fit</button>
    <button type="button" class="fc-cmd-undo" title="Undo (Ctrl+Z)">Undo</button>
    <button type="button" class="fc-cmd-redo" title="Redo (Ctrl+Shift+Z, Ctrl+Y)">Redo</button>
    <span class="fc-sep"></span>
    <button type="button" class="fc-cmd-validate" title="Check the workflow without running it">Validate</button>
    <button type="button" class="fc-cmd-run fc-primary" title="Run the workflow (Ctrl+Enter)">Run</button>
    <button type="button" class="fc-cmd-cancel" title="Cancel the run (Ctrl+.)" disabled>Cancel</button>
    <span class="fc-status" role="status"></span>
    <button type="button" class="fc-cmd-help" title="Keyboard shortcuts (?)">?</button>
  </div>
  <div class="fc-body">
    <aside class="fc-palette">
      <input class="fc-search" type="search" placeholder="Search nodes" aria-label="Search nodes">
      <div class="fc-palette-list"></div>
    </aside>
    <div class="fc-canvas">
      <div class="fc-world"><svg class="fc-wires"></svg></div>
      <nav class="fc-scope" aria-label="Open subgraphs" hidden></nav>
      <div class="fc-empty" hidden>Drag nodes here from the palette, or double-click to search.</div>
      <div class="fc-marquee" hidden></div>
      <div class="fc-quickadd" hidden>
        <input type="search" placeholder="Add a node" aria-label="Add a node">
        <div class="fc-quick-results"></div>
      </div>
      <div class="fc-menu" role="menu" hidden></div>
      <div class="fc-dialog" role="dialog" aria-modal="true" aria-label="Dropped image" hidden></div>
    </div>
    <aside class="fc-outputs-panel" aria-label="Outputs">
      <div class="fc-panel-title">Outputs</div>
      <div class="fc-output-list"><div class="fc-output-empty">Run the workflow to see its images here.</div></div>
    </aside>
  </div>
  <div class="fc-help" role="dialog" aria-label="Keyboard shortcuts" hidden></div>
</div>
"""

# Listed so gr.HTML makes event listeners of them (see the module docstring).
EVENTS = ("validate_graph", "run_graph", "follow_run", "cancel_run")


def _bootstrap() -> str:
    """The one-line js_on_load: import the bridge from the static route (under the app's root path) and mount."""
    url = json.dumps(f"/gradio_api/file={STATIC_DIR / 'bridge.mjs'}")
    events = " ".join(f"'{name}'" for name in EVENTS)
    return (
        f"/* events: {events} */ "
        "import(((window.gradio_config && window.gradio_config.root) || '').replace(/\\/$/, '') + "
        f"{url}).then((m) => m.mount({{ element, trigger, props, server, upload, watch }}));"
    )


def flow_editor(
    value: dict[str, Any] | None, catalogue: dict[str, Any], *, readonly: bool = False, **kwargs: Any
) -> gr.HTML:
    """A canvas editing `value` (a workflow document, or None for an empty one) against `catalogue`.

    `readonly`: the same canvas for looking only (a shared workflow): no palette, no edit or run commands, widgets
    disabled, pan, zoom and Fit kept; it neither reads nor writes the browser's draft and follows no run. Several
    editors may share a page; the first one's root is the debug hook's. Extra keyword arguments go to `gr.HTML`
    (elem_id, visible, …).
    """
    gr.set_static_paths([STATIC_DIR])
    return gr.HTML(
        value=value,
        html_template=SKELETON.replace("READONLY", " data-readonly" if readonly else ""),
        js_on_load=_bootstrap(),
        apply_default_css=False,
        catalogue=catalogue,
        validation={"issues": [], "id": None},
        run_state={"status": None, "run_id": None},
        **kwargs,
    )
