"""The Library view: starter templates, saved workflows (search, thumbnails, open, save, versions, restore), sharing.

Starters open the tab: a card per `pipelines/templates/*.json` (read at each page load, so a new file is a new card)
with the picture its run made (`pipelines/templates/thumbnails/<file stem>.png`, when there is one; else a tile
saying what model it needs), its name and the first sentence of its description, and two buttons. Selectors, for
tests: the card is `#library-starters [data-template="<file stem>"]`, its buttons `#starter-open-<file stem>`
("Open": on the canvas) and `#starter-add-<file stem>` ("Add to my library").

The canvas edits one document; this view remembers which library workflow (and version) it came from (`link`, per
page), so Save appends a version to that workflow and refuses when someone saved it meanwhile. Save as, a
template added to the library, a duplicate or a shared workflow copied here make new workflows. Every save is a
version; restoring appends the old document as a new version (history is never rewritten). Deleting asks first
and leaves the runs' records in place.

Sharing: each workflow exports as JSON or as a PNG carrying it (its latest output image, or a title card); a file
dropped anywhere on the page (app/ui/studio_static/import_drop.mjs) or picked with Import is recognised by
app/ui/sharing.py: a FlowCanvas workflow opens on the canvas exactly as saved, a ComfyUI or InvokeAI file is
described, anything else gets a clear message, and nothing changes. `?workflow=<id>[&version=N]` opens that
version on a read-only canvas (`#shared-canvas`: the editor for looking only) with "Copy to my library".

Names and descriptions are user text: they go into Gradio text components (shown as text), and the starter cards
and toasts get them escaped (both render HTML).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gradio as gr
from gradio.utils import get_upload_folder
from pydantic import BaseModel

from app.ui.editor import flow_editor
from app.ui.sharing import ImportKind, export_filename, recognise, title_card, workflow_png
from app.ui.studio import STATIC_DIR, STUDIO_HEAD, Studio, event_field
from nodes.catalogue import catalogue
from nodes.files import EMBEDDED_PREFIX, confined_path
from nodes.models.loader import LoadFlowModel, ModelLoadError, resolve_source, source_family
from pipelines.issues import WorkflowInvalid
from pipelines.workflow import Workflow, canonical_json, load_workflow, parse_workflow
from storage import NotFound, StorageError, VersionConflict, WorkflowRecord

LIBRARY_TAB = "library"
TEMPLATES = Path(__file__).resolve().parents[3] / "pipelines" / "templates"
THUMBNAILS = TEMPLATES / "thumbnails"
VERSION_HEADERS = ["version", "saved (UTC)", "message", "changes from the version before"]
VERSION_COLUMN_WIDTHS = ["80px", "150px", "25%", "45%"]  # narrow enough for the details column, headers whole
EXPORTS = "flowcanvas-exports"  # under Gradio's upload folder, which its file route serves
PRIVATE: dict[str, Any] = {"api_visibility": "private", "show_progress": "hidden"}
IDS_NAMED = 4  # how many node ids a change summary names before "and N more"
EMPTY_LIBRARY = "No saved workflows yet — start from a template above."


class CanvasLink(BaseModel):
    """Which library workflow the canvas document came from, and the version it was at then."""

    workflow_id: str
    version: int


class Template(BaseModel):
    path: Path
    workflow: Workflow

    @property
    def stem(self) -> str:
        return self.path.stem


class StarterCard(BaseModel):
    """What a starter's card in the gallery shows."""

    stem: str  # the template's file stem: the card's key in the page and in its events
    title: str
    summary: str  # the description's first sentence
    description: str
    thumbnail: Path | None  # the picture a run of it made, when there is one
    model_note: str  # what model it needs ("embedded model", "needs SD3 weights", …)


# ---------------------------------------------------------------- pure helpers (tested in tests/e2e/test_library_e2e.py)


def _named(ids: list[str]) -> str:
    shown = ", ".join(ids[:IDS_NAMED])
    return shown + (f" and {len(ids) - IDS_NAMED} more" if len(ids) > IDS_NAMED else "")


def change_summary(before: Workflow | None, after: Workflow) -> str:
    """What changed from one version's document to the next, in a line: nodes added and removed, params,
    wiring, moves, and the workflow-level parts."""
    if before is None:
        return f"first version: {len(after.nodes)} nodes"
    parts: list[str] = []
    if before.name != after.name:
        parts.append(f"renamed {before.name!r} to {after.name!r}")
    added = sorted(after.nodes.keys() - before.nodes.keys())
    removed = sorted(before.nodes.keys() - after.nodes.keys())
    if added:
        parts.append(f"added {_named(added)}")
    if removed:
        parts.append(f"removed {_named(removed)}")
    common = sorted(before.nodes.keys() & after.nodes.keys())
    params = [
        f"{node}.{name}"
        for node in common
        for name in sorted(before.nodes[node].params.keys() | after.nodes[node].params.keys())
        if before.nodes[node].params.get(name) != after.nodes[node].params.get(name)
    ]
    if params:
        parts.append(f"params {_named(params)}")
    wired = [node for node in common if before.nodes[node].inputs != after.nodes[node].inputs]
    if wired:
        parts.append(f"wiring of {_named(wired)}")
    other = [
        node
        for node in common
        if before.nodes[node].model_dump(exclude={"params", "inputs", "position"})
        != after.nodes[node].model_dump(exclude={"params", "inputs", "position"})
    ]
    if other:
        parts.append(f"type, title or bypass of {_named(other)}")
    moved = [node for node in common if before.nodes[node].position != after.nodes[node].position]
    if moved:
        parts.append(f"moved {len(moved)} node{'' if len(moved) == 1 else 's'}")
    for part in ("exposed", "subgraphs", "groups", "description", "tags"):
        if getattr(before, part) != getattr(after, part):
            parts.append(f"{part} changed")
    return "; ".join(parts) or "no changes"


def _document_workflow(document: str) -> Workflow | None:
    try:
        return parse_workflow(json.loads(document))
    except (json.JSONDecodeError, WorkflowInvalid):
        return None


def _tags(text: str) -> list[str]:
    seen: dict[str, None] = {}
    for tag in text.split(","):
        if tag.strip():
            seen.setdefault(tag.strip(), None)
    return list(seen)


def _when(record_time: Any) -> str:
    return record_time.strftime("%Y-%m-%d %H:%M")


def _toast(show: Callable[[str], Any], message: str) -> None:
    show(html.escape(message))  # Gradio renders a toast's message as HTML


def load_templates() -> list[Template]:
    """The starter workflows in pipelines/templates, by name (a file that does not load is left out)."""
    found = []
    for path in sorted(TEMPLATES.glob("*.json")):
        try:
            found.append(Template(path=path, workflow=load_workflow(path)))
        except WorkflowInvalid:
            continue
    return sorted(found, key=lambda template: template.workflow.name.casefold())


def _table(headers: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    return {"headers": headers, "data": rows}


FAMILY_NAMES = {"sd3": "SD3", "flux": "FLUX.1"}
# A sentence ends at a stop followed by a capital (so "e.g. 'a red star'" does not end one) or at the end.
_FIRST_SENTENCE = re.compile(r"(.+?[.!?])(?=\s+[A-Z]|\s*$)", re.DOTALL)


def first_sentence(text: str) -> str:
    found = _FIRST_SENTENCE.match(text.strip())
    return found.group(1) if found else text.strip()


def model_note(workflow: Workflow) -> str:
    """What model a workflow's LoadFlowModel nodes need: none, the embedded one, or a family's weights."""
    default_source = LoadFlowModel.Params.model_fields["source"].default
    loaders = [entry.params for entry in workflow.nodes.values() if entry.type == "LoadFlowModel"]
    if not loaders:
        return "no model needed"
    external = [
        params for params in loaders if not str(params.get("source", default_source)).startswith(EMBEDDED_PREFIX)
    ]
    if not external:
        return "embedded model"
    family = str(external[0].get("family", "auto"))
    if family == "auto":
        try:
            family = source_family(resolve_source(str(external[0].get("source", ""))))
        except ModelLoadError:
            family = ""
    return f"needs {FAMILY_NAMES.get(family, 'model')} weights"


def starter_card(template: Template) -> StarterCard:
    thumbnail = THUMBNAILS / f"{template.stem}.png"
    workflow = template.workflow
    return StarterCard(
        stem=template.stem,
        title=workflow.name,
        summary=first_sentence(workflow.description),
        description=workflow.description,
        thumbnail=thumbnail if thumbnail.is_file() else None,
        model_note=model_note(workflow),
    )


def _text(value: str) -> str:
    # Braces too: gr.HTML fills its template as a Handlebars template, which must not read a name as a tag.
    return html.escape(value).replace("{", "&#123;").replace("}", "&#125;")


def starter_gallery_html(cards: list[StarterCard]) -> str:
    """The gallery's markup: one card per starter, every text escaped."""
    items = []
    for card in cards:
        stem = _text(card.stem)
        if card.thumbnail is not None:
            # Page-relative like STUDIO_HEAD; the modification time makes a regenerated picture load afresh.
            source = _text(f"gradio_api/file={card.thumbnail}?v={card.thumbnail.stat().st_mtime_ns}")
            picture = (
                f'<img class="fc-starter-picture" src="{source}" alt="What {_text(card.title)} makes" loading="lazy">'
            )
            note = f'<p class="fc-starter-model">{_text(card.model_note)}</p>'
        else:  # the tile says what model it needs, once
            picture = f'<span class="fc-starter-placeholder">{_text(card.model_note)}</span>'
            note = ""
        items.append(
            f'<article class="fc-starter" role="listitem" data-template="{stem}">'
            f'<div class="fc-starter-thumb">{picture}</div>'
            f'<div class="fc-starter-body">'
            f'<h4 class="fc-starter-title">{_text(card.title)}</h4>'
            f'<p class="fc-starter-summary" title="{_text(card.description)}">{_text(card.summary)}</p>'
            f"{note}"
            f'<div class="fc-starter-actions">'
            f'<button type="button" class="fc-starter-open" data-action="open" id="starter-open-{stem}">Open</button>'
            f'<button type="button" class="fc-starter-add" data-action="add" id="starter-add-{stem}">'
            f"Add to my library</button>"
            f"</div></div></article>"
        )
    return (
        '<section class="fc-starters" aria-label="Start from a template">'
        '<h3 class="fc-starters-heading">Start from a template</h3>'
        f'<div class="fc-starter-grid" role="list">{"".join(items)}</div></section>'
    )


# Buttons hand their card's template to Python; the listener is added once per element (js_on_load may run again
# on the same element), and always uses the latest `trigger`.
STARTER_SCRIPT = """/* events: 'open_template' 'add_template' */
element.fcTrigger = trigger;
if (!element.fcListening) {
  element.fcListening = true;
  element.addEventListener('click', (event) => {
    const button = event.target.closest('button[data-action]');
    const card = button && button.closest('[data-template]');
    if (!card || !element.contains(card)) return;
    element.fcTrigger(button.dataset.action === 'add' ? 'add_template' : 'open_template',
                      { template: card.dataset.template });
  });
}"""

STARTER_CSS = """
.fc-starters-heading { margin: 0 0 var(--spacing-md); font-size: var(--text-lg); font-weight: 600;
  color: var(--body-text-color); }
.fc-starter-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(280px, 1fr));
  gap: var(--spacing-lg); }
.fc-starter { display: flex; gap: var(--spacing-lg); padding: var(--spacing-md); min-width: 0;
  border: 1px solid var(--border-color-primary); border-radius: var(--radius-lg);
  background: var(--block-background-fill); }
.fc-starter:hover { border-color: var(--color-accent); }
.fc-starter-thumb { flex: none; width: 96px; height: 96px; border-radius: var(--radius-md); overflow: hidden;
  background: var(--background-fill-secondary); display: flex; align-items: center; justify-content: center; }
.fc-starter-picture { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
.fc-starter-thumb:has(.fc-starter-placeholder) { border: 1px dashed var(--border-color-primary); }
.fc-starter-placeholder { padding: 6px; text-align: center; font-size: var(--text-sm); line-height: 1.3;
  font-weight: 600; color: var(--body-text-color-subdued); }
.fc-starter-body { display: flex; flex-direction: column; gap: 4px; min-width: 0; flex: 1; }
.fc-starter-title { margin: 0; font-size: var(--text-md); font-weight: 600; color: var(--body-text-color);
  overflow-wrap: anywhere; }
.fc-starter-summary { margin: 0; font-size: var(--text-sm); line-height: 1.35; color: var(--body-text-color);
  display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical; overflow: hidden; }
.fc-starter-model { margin: 0; font-size: var(--text-xs); color: var(--body-text-color-subdued); }
.fc-starter-actions { display: flex; gap: var(--spacing-md); margin-top: auto; }
.fc-starter-actions button { padding: 3px 12px; border-radius: var(--button-small-radius); cursor: pointer;
  font-size: var(--text-sm); border: 1px solid var(--button-secondary-border-color);
  background: var(--button-secondary-background-fill); color: var(--button-secondary-text-color); }
.fc-starter-actions button:hover { background: var(--button-secondary-background-fill-hover); }
.fc-starter-actions .fc-starter-open { border-color: var(--button-primary-border-color);
  background: var(--button-primary-background-fill); color: var(--button-primary-text-color); }
.fc-starter-actions .fc-starter-open:hover { background: var(--button-primary-background-fill-hover); }
"""


# ---------------------------------------------------------------- the view


class LibraryView:
    """The components of the Library tab and their event handlers; each handler returns {component: update}."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self.storage = studio.storage
        self.upload_root = Path(get_upload_folder())
        self.node_catalogue = catalogue()

    # ---------------------------------------------------------------- layout

    def build(self) -> None:
        gr.set_static_paths([STATIC_DIR, THUMBNAILS])
        # render_children: the importer's script must run at page load, whichever tab is open (drops work anywhere).
        with gr.Tab("Library", id=LIBRARY_TAB, render_children=True) as self.tab:
            self.link = gr.State(None)  # CanvasLink as a dict, or None
            self.selected = gr.State(None)  # the id of the workflow shown in the details
            self.listed = gr.State([])  # the ids in the gallery, in its order
            self.shared_ref = gr.State(None)  # {"workflow_id", "version"} of the shared view
            with gr.Group(visible=False, elem_id="library-shared") as self.shared_box:
                self.shared_title = gr.Textbox(
                    label="Shared workflow (read-only)", interactive=False, elem_id="library-shared-title"
                )
                self.shared_description = gr.Textbox(label="Description", interactive=False, lines=2)
                self.shared_canvas = flow_editor(None, self.node_catalogue, readonly=True, elem_id="shared-canvas")
                with gr.Row():
                    self.copy_shared_button = gr.Button(
                        "Copy to my library", size="sm", variant="primary", elem_id="library-copy-shared"
                    )
                    self.close_shared_button = gr.Button("Close", size="sm")
            self.starters = gr.HTML(
                value=starter_gallery_html(self._starter_cards()),
                apply_default_css=False,
                css_template=STARTER_CSS,
                js_on_load=STARTER_SCRIPT,
                elem_id="library-starters",
            )
            gr.Markdown("### My workflows")
            with gr.Row(equal_height=True):
                self.canvas_line = gr.Textbox(
                    label="Canvas",
                    interactive=False,
                    scale=3,
                    value="The canvas document is not saved in the library yet.",
                )
                self.save_button = gr.Button("Save", size="sm", variant="primary", scale=0, elem_id="library-save")
                self.save_as_name = gr.Textbox(
                    label="Save as (name)", scale=2, placeholder="the document's name", elem_id="library-save-as-name"
                )
                self.save_as_button = gr.Button("Save as", size="sm", scale=0, elem_id="library-save-as")
            with gr.Row(equal_height=True):
                self.status = gr.Textbox(label="Status", interactive=False, scale=4, elem_id="library-status")
                self.import_button = gr.UploadButton(
                    "Import JSON or PNG…",
                    file_types=[".json", ".png"],
                    type="filepath",
                    size="sm",
                    scale=0,
                    elem_id="library-import-button",
                )
            self.importer = gr.HTML(
                value=None,
                apply_default_css=False,
                elem_id="library-importer",
                head=STUDIO_HEAD,
                html_template=(
                    '<div class="fc-import"><span class="fc-import-status" role="status">'
                    "Drop a workflow (.json) or a FlowCanvas PNG anywhere on the page to open it."
                    "</span></div>"
                ),
                js_on_load=self._importer_bootstrap(),
            )
            with gr.Row():
                with gr.Column(scale=3):
                    with gr.Row(equal_height=True):
                        self.search = gr.Textbox(
                            label="Search names and descriptions", elem_id="library-search", scale=3
                        )
                        self.tag = gr.Dropdown(label="Tag", choices=[], value=None, scale=2, elem_id="library-tag")
                        self.refresh_button = gr.Button("Refresh", size="sm", scale=0)
                    self.list_note = gr.Markdown(EMPTY_LIBRARY, elem_id="library-list-note")
                    self.gallery = gr.Gallery(
                        label="Workflows",
                        columns=3,
                        height=360,
                        allow_preview=False,
                        fit_columns=False,
                        object_fit="contain",
                        format="png",
                        visible=False,
                        elem_id="library-list",
                    )
                with gr.Column(scale=4), gr.Group(visible=False, elem_id="library-details") as self.details:
                    with gr.Row():
                        self.name = gr.Textbox(label="Name", elem_id="library-name", scale=2)
                        self.tags = gr.Textbox(label="Tags (comma-separated)", elem_id="library-tags", scale=2)
                    self.description = gr.Textbox(label="Description", lines=2, elem_id="library-description")
                    with gr.Row():
                        self.save_meta_button = gr.Button(
                            "Save name, tags and description", size="sm", elem_id="library-save-meta"
                        )
                        self.open_button = gr.Button(
                            "Open in the canvas", size="sm", variant="primary", elem_id="library-open"
                        )
                        self.duplicate_button = gr.Button("Duplicate", size="sm", elem_id="library-duplicate")
                        self.delete_button = gr.Button("Delete…", size="sm", variant="stop", elem_id="library-delete")
                    with gr.Row(visible=False, elem_id="library-confirm-delete") as self.confirm_row:
                        self.confirm_text = gr.Textbox(show_label=False, interactive=False, scale=3)
                        self.confirm_button = gr.Button(
                            "Yes, delete", size="sm", variant="stop", scale=0, elem_id="library-confirm"
                        )
                        self.cancel_delete_button = gr.Button("Keep it", size="sm", scale=0)
                    with gr.Row(equal_height=True):
                        self.download_json = gr.DownloadButton("Export JSON", size="sm", elem_id="library-export-json")
                        self.download_png = gr.DownloadButton("Export PNG", size="sm", elem_id="library-export-png")
                        self.share_link = gr.Textbox(
                            label="Share link (opens a read-only view)",
                            interactive=False,
                            buttons=["copy"],
                            scale=2,
                            elem_id="library-share-link",
                        )
                    self.versions = gr.Dataframe(
                        headers=VERSION_HEADERS,
                        interactive=False,
                        wrap=True,
                        column_widths=VERSION_COLUMN_WIDTHS,
                        label="Versions (newest first; select one)",
                        elem_id="library-versions",
                    )
                    with gr.Row(equal_height=True):
                        self.version = gr.Number(label="Version", precision=0, minimum=1, elem_id="library-version")
                        self.open_version_button = gr.Button(
                            "Open this version in the canvas", size="sm", elem_id="library-open-version"
                        )
                        self.restore_button = gr.Button(
                            "Restore this version", size="sm", interactive=False, elem_id="library-restore"
                        )
        self._wire()

    @staticmethod
    def _importer_bootstrap() -> str:
        url = json.dumps(f"/gradio_api/file={STATIC_DIR / 'import_drop.mjs'}")
        return (
            "/* events: 'import_file' */ "
            "import(((window.gradio_config && window.gradio_config.root) || '').replace(/\\/$/, '') + "
            f"{url}).then((m) => m.install({{ element, trigger, upload }}));"
        )

    @property
    def _outputs(self) -> list[Any]:
        """Every component a handler may update (each returns updates for some of them)."""
        return [
            self.link,
            self.selected,
            self.listed,
            self.shared_ref,
            self.canvas_line,
            self.status,
            self.shared_box,
            self.shared_title,
            self.shared_description,
            self.shared_canvas,
            self.starters,
            self.list_note,
            self.gallery,
            self.tag,
            self.details,
            self.name,
            self.tags,
            self.description,
            self.confirm_row,
            self.confirm_text,
            self.download_json,
            self.download_png,
            self.share_link,
            self.versions,
            self.version,
            self.restore_button,
            *self.studio.canvas_outputs,
        ]

    def _wire(self) -> None:
        outputs = self._outputs
        listing = [self.search, self.tag]
        selection = [self.selected, *listing]
        self.studio.blocks.load(self.on_page_load, inputs=listing, outputs=outputs, **PRIVATE)
        self.tab.select(self.refresh, inputs=selection, outputs=outputs, **PRIVATE)
        self.refresh_button.click(self.refresh, inputs=selection, outputs=outputs, **PRIVATE)
        self.search.input(self.refresh, inputs=selection, outputs=outputs, **PRIVATE)
        self.search.submit(self.refresh, inputs=selection, outputs=outputs, **PRIVATE)
        self.tag.input(self.refresh, inputs=selection, outputs=outputs, **PRIVATE)
        self.gallery.select(self.on_pick, inputs=self.listed, outputs=outputs, **PRIVATE)
        self.save_button.click(self.save, inputs=[self.studio.editor, self.link, *listing], outputs=outputs, **PRIVATE)
        self.save_as_button.click(
            self.save_as, inputs=[self.studio.editor, self.save_as_name, *listing], outputs=outputs, **PRIVATE
        )
        self.save_meta_button.click(
            self.save_meta,
            inputs=[self.selected, self.name, self.tags, self.description, *listing],
            outputs=outputs,
            **PRIVATE,
        )
        self.open_button.click(self.open_current, inputs=self.selected, outputs=outputs, **PRIVATE)
        self.duplicate_button.click(self.duplicate, inputs=selection, outputs=outputs, **PRIVATE)
        self.delete_button.click(self.ask_delete, inputs=self.selected, outputs=outputs, **PRIVATE)
        self.cancel_delete_button.click(
            lambda: {self.confirm_row: gr.update(visible=False)}, outputs=outputs, **PRIVATE
        )
        self.confirm_button.click(self.delete, inputs=[self.selected, self.link, *listing], outputs=outputs, **PRIVATE)
        self.versions.select(self.on_pick_version, outputs=outputs, **PRIVATE)
        self.version.change(self.restorable, inputs=[self.selected, self.version], outputs=outputs, **PRIVATE)
        self.open_version_button.click(
            self.open_version, inputs=[self.selected, self.version], outputs=outputs, **PRIVATE
        )
        self.restore_button.click(
            self.restore, inputs=[self.selected, self.version, *listing], outputs=outputs, **PRIVATE
        )
        self.starters.open_template(self.open_template, outputs=outputs, **PRIVATE)
        self.starters.add_template(self.add_template, inputs=listing, outputs=outputs, **PRIVATE)
        self.importer.import_file(self.import_dropped, outputs=outputs, **PRIVATE)
        self.import_button.upload(self.import_picked, inputs=self.import_button, outputs=outputs, **PRIVATE)
        self.copy_shared_button.click(self.copy_shared, inputs=[self.shared_ref, *listing], outputs=outputs, **PRIVATE)
        self.close_shared_button.click(
            lambda: {self.shared_box: gr.update(visible=False), self.shared_ref: None}, outputs=outputs, **PRIVATE
        )

    # ---------------------------------------------------------------- listing and details

    def _listing(self, search: str, tag: str | None) -> dict[Any, Any]:
        records = self.storage.list_workflows(search=(search or "").strip() or None, tag=tag or None)
        images = self.storage.latest_images(record.id for record in records)
        placeholder = self._placeholder()
        items = []
        for record in records:
            image = images.get(record.id)
            picture = self.storage.artifacts.absolute(image.path) if image is not None else placeholder
            caption = f"{record.name} · v{record.current_version}" + (
                f" · {', '.join(record.tags)}" if record.tags else ""
            )
            items.append((str(picture), caption))
        every = self.storage.list_workflows()
        all_tags = sorted({t for r in every for t in r.tags}, key=str.casefold)
        note = "" if records else (EMPTY_LIBRARY if not every else "No saved workflow matches this search or tag.")
        return {
            self.gallery: gr.update(value=items, selected_index=None, visible=bool(items)),
            self.list_note: gr.update(value=note, visible=bool(note)),
            self.listed: [r.id for r in records],
            self.tag: gr.update(choices=[("any tag", "")] + [(t, t) for t in all_tags], value=tag or ""),
        }

    def _details(self, workflow_id: str | None, request: gr.Request | None = None) -> dict[Any, Any]:
        if workflow_id is None:
            return {self.details: gr.update(visible=False), self.selected: None}
        record = self.storage.get_workflow(workflow_id)
        versions = self.storage.list_versions(workflow_id)
        parsed = [_document_workflow(v.document) for v in versions]
        rows = []
        for index, version in enumerate(versions):
            after = parsed[index]
            before = parsed[index - 1] if index > 0 else None
            changes = (
                "(not readable as a workflow)"
                if after is None or (index > 0 and before is None)
                else change_summary(before, after)
            )
            rows.append([version.version, _when(version.created_at), version.message, changes])
        current = versions[-1]
        json_path, png_path = self._exports(record, current.document)
        return {
            self.selected: record.id,
            self.details: gr.update(visible=True),
            self.name: record.name,
            self.tags: ", ".join(record.tags),
            self.description: record.description,
            self.confirm_row: gr.update(visible=False),
            self.download_json: gr.update(value=str(json_path)),
            self.download_png: gr.update(value=str(png_path)),
            self.share_link: self._share_link(record, request),
            self.versions: _table(VERSION_HEADERS, rows[::-1]),
            self.version: current.version,
            self.restore_button: gr.update(interactive=False),  # the current version: nothing to restore
        }

    def _starter_cards(self) -> list[StarterCard]:
        return [starter_card(template) for template in load_templates()]

    def _placeholder(self) -> Path:
        """The picture shown for a workflow that has no output yet (made once per upload folder)."""
        path = self.upload_root / EXPORTS / "no-output.png"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            title_card("No output yet").save(path, format="PNG")
        return path

    def _exports(self, record: WorkflowRecord, document: str) -> tuple[Path, Path]:
        """The current version as JSON and as a PNG, written where the download buttons serve them from."""
        folder = self.upload_root / EXPORTS / record.id
        folder.mkdir(parents=True, exist_ok=True)
        json_path = folder / export_filename(record.name, record.current_version, "json")
        json_path.write_text(document, encoding="utf-8")
        image = self.storage.latest_images([record.id]).get(record.id)
        picture = self.storage.artifacts.absolute(image.path) if image is not None else None
        png_path = folder / export_filename(record.name, record.current_version, "png")
        png_path.write_bytes(workflow_png(document, record.name, picture))
        return json_path, png_path

    @staticmethod
    def _share_link(record: WorkflowRecord, request: gr.Request | None) -> str:
        query = f"?workflow={record.id}&version={record.current_version}"
        referer = dict(request.headers).get("referer", "") if request is not None else ""
        if not referer:
            return query
        page = urlsplit(referer)
        return page._replace(query="", fragment="").geturl() + query

    def _canvas_line(self, link: CanvasLink | None) -> str:
        if link is None:
            return "The canvas document is not saved in the library yet: Save makes a new workflow of it."
        try:
            record = self.storage.get_workflow(link.workflow_id)
        except NotFound:
            return "The canvas document's workflow was deleted: Save makes a new workflow of it."
        return f"The canvas is editing {record.name!r} (from version {link.version}): Save adds a version."

    def _linked(self, link: CanvasLink | None) -> dict[Any, Any]:
        return {self.link: link.model_dump() if link is not None else None, self.canvas_line: self._canvas_line(link)}

    def _open(self, document: str, link: CanvasLink | None) -> dict[Any, Any]:
        editor, tabs = self.studio.open_in_canvas(json.loads(document))
        return {self.studio.editor: editor, self.studio.tabs: tabs, **self._linked(link)}

    # ---------------------------------------------------------------- handlers

    def on_page_load(self, search: str, tag: str | None, request: gr.Request) -> dict[Any, Any]:
        # Cards afresh: thumbnails made (or templates added) since the server started show on the next load.
        updates = {**self._listing(search, tag), self.starters: starter_gallery_html(self._starter_cards())}
        params = dict(request.query_params)
        if "workflow" in params:
            updates.update(self._shared(params["workflow"], params.get("version")))
        return updates

    def refresh(self, selected: str | None, search: str, tag: str | None, request: gr.Request) -> dict[Any, Any]:
        updates = self._listing(search, tag)
        try:
            updates.update(self._details(selected, request))
        except NotFound:
            updates.update(self._details(None))
        return updates

    def on_pick(self, listed: list[str], evt: gr.SelectData, request: gr.Request) -> dict[Any, Any]:
        index = evt.index if isinstance(evt.index, int) else None
        if index is None or not 0 <= index < len(listed):
            return {}
        try:
            return self._details(listed[index], request)
        except NotFound:
            return {self.status: "That workflow is no longer in the library (deleted elsewhere): Refresh."}

    def save(
        self, document: Any, link: dict[str, Any] | None, search: str, tag: str | None, request: gr.Request
    ) -> dict[Any, Any]:
        workflow = self._canvas_workflow(document)
        if isinstance(workflow, dict):
            return workflow
        linked = CanvasLink.model_validate(link) if link else None
        if linked is None:
            return self._create(workflow, workflow.name, search, tag, request, message="saved from the canvas")
        try:
            record = self.storage.save_workflow_version(
                linked.workflow_id,
                canonical_json(workflow),
                message="saved from the canvas",
                expected_version=linked.version,
            )
        except VersionConflict as conflict:
            return {
                self.status: f"Not saved: this workflow was saved elsewhere since you opened it (it is now at "
                f"version {conflict.current_version}). Use Save as to keep yours as a new "
                "workflow, or open the latest."
            }
        except NotFound:
            return {
                self.status: "Not saved: the workflow was deleted meanwhile. Use Save as to keep it.",
                **self._linked(None),
            }
        return {
            **self._listing(search, tag),
            **self._details(record.id, request),
            **self._linked(CanvasLink(workflow_id=record.id, version=record.current_version)),
            self.status: f"Saved {record.name!r} as version {record.current_version}.",
        }

    def save_as(self, document: Any, name: str, search: str, tag: str | None, request: gr.Request) -> dict[Any, Any]:
        workflow = self._canvas_workflow(document)
        if isinstance(workflow, dict):
            return workflow
        return self._create(workflow, name.strip() or workflow.name, search, tag, request, message="saved as new")

    def _canvas_workflow(self, document: Any) -> Workflow | dict[Any, Any]:
        """The canvas document as a workflow, or the status update saying why it cannot be saved."""
        try:
            return parse_workflow(document)
        except WorkflowInvalid as invalid:
            return {
                self.status: "Not saved: the canvas document is not a valid workflow file: "
                + "; ".join(str(issue) for issue in invalid.issues)
            }

    def _create(
        self, workflow: Workflow, name: str, search: str, tag: str | None, request: gr.Request | None, *, message: str
    ) -> dict[Any, Any]:
        record = self.storage.create_workflow(
            name, canonical_json(workflow), description=workflow.description, tags=workflow.tags, message=message
        )
        return {
            **self._listing(search, tag),
            **self._details(record.id, request),
            **self._linked(CanvasLink(workflow_id=record.id, version=record.current_version)),
            self.status: f"Saved as a new workflow {record.name!r} (version 1).",
        }

    def save_meta(
        self,
        selected: str | None,
        name: str,
        tags: str,
        description: str,
        search: str,
        tag: str | None,
        request: gr.Request,
    ) -> dict[Any, Any]:
        if selected is None:
            return {}
        if not name.strip():
            return {self.status: "Not renamed: a workflow needs a name."}
        record = self.storage.update_workflow_meta(
            selected, name=name.strip(), tags=_tags(tags), description=description
        )
        return {
            **self._listing(search, tag),
            **self._details(record.id, request),
            self.status: f"Saved the name, tags and description of {record.name!r}.",
        }

    def open_current(self, selected: str | None) -> dict[Any, Any]:
        return self.open_version(selected, None)

    def open_version(self, selected: str | None, version: float | None) -> dict[Any, Any]:
        if selected is None:
            return {}
        try:
            record = self.storage.get_workflow(selected)
            chosen = self.storage.get_workflow_version(selected, int(version) if version else None)
        except NotFound as missing:
            return {self.status: f"Not opened: {missing}"}
        # Saving after opening an older version appends after the current one, so the link is to the current.
        updates = self._open(chosen.document, CanvasLink(workflow_id=record.id, version=record.current_version))
        updates[self.status] = f"Opened {record.name!r} version {chosen.version} in the canvas."
        return updates

    def duplicate(self, selected: str | None, search: str, tag: str | None, request: gr.Request) -> dict[Any, Any]:
        if selected is None:
            return {}
        source = self.storage.get_workflow(selected)
        copy = self.storage.duplicate_workflow(selected, f"{source.name} (copy)")
        return {
            **self._listing(search, tag),
            **self._details(copy.id, request),
            self.status: f"Duplicated {source.name!r} as {copy.name!r}.",
        }

    def ask_delete(self, selected: str | None) -> dict[Any, Any]:
        if selected is None:
            return {}
        record = self.storage.get_workflow(selected)
        runs = self.storage.count_runs(selected)
        return {
            self.confirm_row: gr.update(visible=True),
            self.confirm_text: f"Delete {record.name!r} and its {record.current_version} version(s)? "
            f"Its {runs} run(s) keep their records and images.",
        }

    def delete(self, selected: str | None, link: dict[str, Any] | None, search: str, tag: str | None) -> dict[Any, Any]:
        if selected is None:
            return {}
        try:
            record = self.storage.get_workflow(selected)
            self.storage.delete_workflow(selected)
        except NotFound:
            return {self.status: "Already deleted.", **self._details(None)}
        updates = {
            **self._listing(search, tag),
            **self._details(None),
            self.confirm_row: gr.update(visible=False),
            self.status: f"Deleted {record.name!r}; its runs keep their records.",
        }
        if link and link.get("workflow_id") == selected:
            updates.update(self._linked(None))
        return updates

    def on_pick_version(self, evt: gr.SelectData) -> dict[Any, Any]:
        row = evt.row_value if isinstance(getattr(evt, "row_value", None), list) else None
        return {self.version: int(row[0])} if row else {}

    def restorable(self, selected: str | None, version: float | None) -> dict[Any, Any]:
        """The Restore button, on for a version other than the current one."""
        try:
            current = self.storage.get_workflow(selected).current_version if selected else None
        except NotFound:
            current = None
        return {
            self.restore_button: gr.update(
                interactive=current is not None and bool(version) and int(version) != current
            )
        }

    def restore(
        self, selected: str | None, version: float | None, search: str, tag: str | None, request: gr.Request
    ) -> dict[Any, Any]:
        if selected is None or not version:
            return {self.status: "Pick a version to restore first."}
        try:
            if int(version) == self.storage.get_workflow(selected).current_version:
                return {self.status: f"Version {int(version)} is the current version: pick an older one to restore."}
            record = self.storage.restore_version(selected, int(version))
        except NotFound as missing:
            return {self.status: f"Not restored: {missing}"}
        return {
            **self._listing(search, tag),
            **self._details(record.id, request),
            self.status: f"Restored version {int(version)} of {record.name!r} as version "
            f"{record.current_version}; open it to edit.",
        }

    @staticmethod
    def _chosen_template(evt: gr.EventData) -> Template | None:
        """The starter a card's button names (looked up among the template files: the page names no path)."""
        stem = event_field(evt, "template")
        if not isinstance(stem, str):
            return None
        return next((template for template in load_templates() if template.stem == stem), None)

    def open_template(self, evt: gr.EventData) -> dict[Any, Any]:
        template = self._chosen_template(evt)
        if template is None:
            return {self.status: "That template is no longer in pipelines/templates: reload the page."}
        updates = self._open(canonical_json(template.workflow), None)
        updates[self.status] = f"Opened the template {template.workflow.name!r} in the canvas."
        return updates

    def add_template(self, search: str, tag: str | None, evt: gr.EventData, request: gr.Request) -> dict[Any, Any]:
        template = self._chosen_template(evt)
        if template is None:
            return {self.status: "That template is no longer in pipelines/templates: reload the page."}
        workflow = template.workflow
        record = self.storage.create_workflow(
            workflow.name,
            canonical_json(workflow),
            description=workflow.description,
            tags=workflow.tags,
            message=f"from template {template.path.name}",
        )
        message = f"Added the template {workflow.name!r} to the library."
        _toast(gr.Info, message)
        return {**self._listing(search, tag), **self._details(record.id, request), self.status: message}

    # ---------------------------------------------------------------- import and sharing

    def import_dropped(self, evt: gr.EventData) -> dict[Any, Any]:
        name = str(event_field(evt, "name") or "the file")
        raw = event_field(evt, "path")
        if not raw:
            return self._import_refused(f"{name}: too large to be a workflow; nothing was imported.")
        # Only Gradio's upload folder: the browser names the file, so it must not be able to name any other.
        path = confined_path(str(raw), (self.upload_root,))
        if path is None or not path.is_file():
            return self._import_refused(f"{name}: the upload did not arrive; nothing was imported.")
        return self._import(path, name)

    def import_picked(self, picked: str | None) -> dict[Any, Any]:
        if not picked:
            return {}
        path = Path(picked)
        return self._import(path, path.name)

    def _import(self, path: Path, name: str) -> dict[Any, Any]:
        found = recognise(path.read_bytes(), name)
        if found.kind is not ImportKind.FLOWCANVAS or found.workflow is None:
            return self._import_refused(f"{found.message}. Nothing was imported.")
        updates = self._open(canonical_json(found.workflow), None)
        message = f"Opened on the canvas: {found.message}. Save keeps it in the library."
        updates[self.status] = message
        _toast(gr.Info, message)
        return updates

    def _import_refused(self, message: str) -> dict[Any, Any]:
        _toast(gr.Warning, message)
        return {self.status: message}

    def _shared(self, workflow_id: str, version_text: str | None) -> dict[Any, Any]:
        """The read-only view of a shared link's workflow, with the Library tab selected."""
        shown = {self.studio.tabs: gr.Tabs(selected=LIBRARY_TAB), self.shared_box: gr.update(visible=True)}
        try:
            version = int(version_text) if version_text else None
            record = self.storage.get_workflow(workflow_id)
            chosen = self.storage.get_workflow_version(record.id, version)
        except ValueError:
            return {
                **shown,
                self.shared_title: f"The share link's version {version_text!r} is not a number.",
                self.shared_ref: None,
            }
        except (NotFound, StorageError) as missing:
            return {
                **shown,
                self.shared_title: f"This share link's workflow is not in this library: {missing}",
                self.shared_description: "",
                self.shared_canvas: self._shared_canvas(None),
                self.shared_ref: None,
            }
        return {
            **shown,
            self.shared_title: f"{record.name} · version {chosen.version} of {record.current_version}",
            self.shared_description: record.description,
            self.shared_canvas: self._shared_canvas(json.loads(chosen.document)),
            self.shared_ref: {"workflow_id": record.id, "version": chosen.version},
        }

    def _shared_canvas(self, document: dict[str, Any] | None) -> Any:
        # The catalogue again: an update that reaches a gr.HTML before it mounts (page load) replaces its props.
        return gr.update(value=document, catalogue=self.node_catalogue)

    def copy_shared(
        self, shared: dict[str, Any] | None, search: str, tag: str | None, request: gr.Request
    ) -> dict[Any, Any]:
        if not shared:
            return {}
        try:
            source = self.storage.get_workflow(shared["workflow_id"])
            chosen = self.storage.get_workflow_version(source.id, int(shared["version"]))
        except (NotFound, KeyError, ValueError) as missing:
            return {self.status: f"Not copied: {missing}"}
        copy = self.storage.create_workflow(
            f"{source.name} (copy)",
            chosen.document,
            description=source.description,
            tags=source.tags,
            message=f"copied from shared {source.id} version {chosen.version}",
        )
        return {
            **self._listing(search, tag),
            **self._details(copy.id, request),
            self.shared_box: gr.update(visible=False),
            self.shared_ref: None,
            self.status: f"Copied {source.name!r} (version {chosen.version}) to your library as {copy.name!r}.",
        }


def build(studio: Studio) -> None:
    LibraryView(studio).build()
