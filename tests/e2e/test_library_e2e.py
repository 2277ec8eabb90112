"""The Library view and sharing in a real browser (Playwright driving Debian's Chromium against the Gradio app),
plus the version change summary and the starter cards it shows.

One app and one browser context for the module (as one user's browser). Documents go onto the canvas through the
editor's debug hook (`document.querySelector('.fc-root').flowcanvas`, see tests/test_canvas_e2e.py) and come back
from it the same way; the library's records are read from the app's storage.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, PngImagePlugin

from app.ui.views import library
from app.ui.views.library import change_summary, first_sentence, load_templates, starter_card, starter_gallery_html
from pipelines.workflow import PNG_WORKFLOW_KEY, canonical_json, load_workflow, parse_workflow
from storage import NotFound, RunStatus
from storage.records import NewArtifact
from tests.conftest import running_app
from tests.studio_e2e import CHROMIUM, EDITOR, broken_header_words, chromium, drop_file_at
from tests.studio_e2e import open_page as open_editor_page

try:
    from playwright.sync_api import expect
except ImportError:  # the browser tests skip (see `context`); the summary test still runs
    expect = None

TEMPLATES = Path(__file__).resolve().parents[2] / "pipelines" / "templates"
SWATCH = TEMPLATES / "swatch.json"
HOSTILE = "<img src=x onerror=alert(1)>"
DIALOGS: list[str] = []


def swatch(name: str, color: str = "#3b82f6") -> dict[str, Any]:
    document = json.loads(SWATCH.read_text(encoding="utf-8"))
    document["name"] = name
    document["nodes"]["swatch"]["params"]["color"] = color
    return document


def canonical(document: dict[str, Any]) -> str:
    return canonical_json(parse_workflow(document))


# ---------------------------------------------------------------- the change summary (no browser)


def test_change_summary_names_what_changed() -> None:
    before = load_workflow(SWATCH)
    assert change_summary(None, before) == "first version: 2 nodes"
    assert change_summary(before, before) == "no changes"
    edited = swatch("Renamed", color="#000000")
    edited["nodes"]["swatch"]["position"] = [999, 999]
    edited["nodes"]["extra"] = {"type": "EmptyImage", "params": {}}
    del edited["nodes"]["save"]
    summary = change_summary(before, parse_workflow(edited))
    assert summary == (
        "renamed 'Colour swatch' to 'Renamed'; added extra; removed save; params swatch.color; moved 1 node"
    )


# ---------------------------------------------------------------- the starter cards (no browser)


def test_every_template_file_is_a_card_saying_what_model_it_needs() -> None:
    cards = {card.stem: card for card in map(starter_card, load_templates())}
    assert set(cards) == {path.stem for path in TEMPLATES.glob("*.json")}
    assert {
        stem: cards[stem].model_note
        for stem in ("txt2img-sd3", "img2img-sd3", "txt2img-flux", "txt2img-embedded", "swatch")
    } == {
        "txt2img-sd3": "needs SD3 weights",
        "img2img-sd3": "needs SD3 weights",
        "txt2img-flux": "needs FLUX.1 weights",
        "txt2img-embedded": "embedded model",
        "swatch": "no model needed",
    }
    assert cards["swatch"].summary == (
        "A solid-colour image: the smallest workflow, handy for trying sweeps and the CLI."
    )
    page = starter_gallery_html(list(cards.values()))
    for stem in cards:
        assert f'data-template="{stem}"' in page and f'id="starter-open-{stem}"' in page
        assert f'id="starter-add-{stem}"' in page


def test_a_card_shows_the_thumbnail_when_there_is_one_and_escapes_its_text(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(library, "THUMBNAILS", tmp_path)
    Image.new("RGB", (64, 64), "#22c55e").save(tmp_path / "swatch.png")
    [swatch_template] = [t for t in load_templates() if t.stem == "swatch"]
    card = starter_card(swatch_template)
    assert card.thumbnail == tmp_path / "swatch.png"
    assert f"gradio_api/file={tmp_path / 'swatch.png'}?v=" in starter_gallery_html([card])
    hostile = card.model_copy(update={"title": HOSTILE, "summary": "{{value}} <b>bold</b>"})
    shown = starter_gallery_html([hostile])
    assert HOSTILE not in shown and "<b>" not in shown and "{{" not in shown
    assert "&lt;img src=x onerror=alert(1)&gt;" in shown


def test_the_first_sentence_does_not_end_at_an_abbreviation() -> None:
    assert first_sentence("Describe one shape, e.g. 'a red star'. Then run it.") == (
        "Describe one shape, e.g. 'a red star'."
    )
    assert first_sentence("No stop at all") == "No stop at all"


# ---------------------------------------------------------------- the browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with running_app(tmp_path_factory.mktemp("library-data")) as running:
        yield running


@pytest.fixture(scope="module")
def context(server):
    if expect is None:
        pytest.skip("playwright is in requirements-test.txt")
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (tests/run.sh installs it)")
    with chromium() as browser:
        yield browser.new_context(viewport={"width": 1366, "height": 900}, accept_downloads=True)


def open_page(context, url: str):
    return open_editor_page(context, url, DIALOGS)


@pytest.fixture(scope="module")
def page(context, server):
    return open_page(context, server[0])


def field(page, elem_id: str):
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def status(page):
    return field(page, "library-status")


def show_tab(page, label: str) -> None:
    page.locator("button[role=tab]", has_text=label).click()


def put_on_canvas(page, document: dict[str, Any]) -> None:
    page.evaluate(f"(w) => {{ {EDITOR}.load(w); {EDITOR}.commit(); }}", document)
    page.wait_for_function(f"{EDITOR}.graph.nodeIds().length === {len(document['nodes'])}")


def canvas_document(page) -> str:
    return canonical(page.evaluate(f"{EDITOR}.graph.toWorkflow()"))


def wait_for_canvas(page, document: str) -> None:
    """Wait until the canvas shows `document` (canonical text) and the Canvas tab is open."""
    expected = json.loads(document)
    page.wait_for_function(
        f"{EDITOR}.graph.toWorkflow().name === {json.dumps(expected['name'])} && "
        f"{EDITOR}.graph.nodeIds().length === {len(expected['nodes'])}"
    )
    expect(page.locator("button[role=tab][aria-selected=true]")).to_have_text("Canvas")
    assert canvas_document(page) == document


def pick(page, name: str, search: str | None = None) -> None:
    """Find a workflow by searching (its name by default), select it in the gallery, wait for its details."""
    show_tab(page, "Library")
    field(page, "library-search").fill(search or name)
    field(page, "library-search").press("Enter")
    items = page.locator("#library-list .thumbnail-item")
    expect(items).to_have_count(1)
    expect(items.first).to_contain_text(name)
    items.first.click()
    expect(field(page, "library-name")).to_have_value(name)


def version_row(page, version: int):
    """The versions table's row of `version` (as the accessibility tree has it: the table also keeps hidden rows
    for measuring)."""
    return (
        page.locator("#library-versions")
        .get_by_role("row")
        .filter(has=page.get_by_role("gridcell", name=str(version), exact=True))
    )


def png_bytes(text: dict[str, str] | None = None, size: tuple[int, int] = (8, 8)) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.new("RGB", size, "#22c55e").save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def test_the_library_opens_on_starter_cards_and_one_opens_on_the_canvas(page, server) -> None:
    show_tab(page, "Library")
    card = page.locator('#library-starters [data-template="edit-flowedit"]')
    expect(card).to_be_in_viewport()  # at the top of the tab, with nothing to open first
    expect(card).to_contain_text("Edit with FlowEdit")
    expect(card).to_contain_text("Edit an image by prompt with FlowEdit")
    expect(page.locator("#library-starters [data-template]")).to_have_count(len(list(TEMPLATES.glob("*.json"))))
    expect(page.locator("#library-list-note")).to_have_text("No saved workflows yet — start from a template above.")
    page.click("#starter-open-edit-flowedit")
    wait_for_canvas(page, canonical_json(load_workflow(TEMPLATES / "edit-flowedit.json")))
    expect(status(page)).to_have_value("Opened the template 'Edit with FlowEdit' in the canvas.")


def test_save_reload_find_and_reopen(page, server) -> None:
    _, storage = server
    document = swatch("Lighthouse study", color="#ef4444")
    put_on_canvas(page, document)
    show_tab(page, "Library")
    page.click("#library-save")
    expect(status(page)).to_have_value("Saved as a new workflow 'Lighthouse study' (version 1).")
    [record] = [r for r in storage.list_workflows() if r.name == "Lighthouse study"]
    assert storage.get_workflow_version(record.id).document == canonical(document)

    page.reload()
    page.wait_for_function("document.querySelector('.fc-root')?.flowcanvas !== undefined")
    page.click(".fc-cmd-new")  # the canvas shows something else before the workflow is reopened
    pick(page, "Lighthouse study", search="lighthouse")
    page.click("#library-open")
    wait_for_canvas(page, storage.get_workflow_version(record.id).document)
    expect(field(page, "library-status")).to_have_value("Opened 'Lighthouse study' version 1 in the canvas.")

    # Linked now: Save appends a version instead of making another workflow.
    page.evaluate(f"{EDITOR}.edit((g) => g.setParam('swatch', 'width', 96))")
    show_tab(page, "Library")
    page.click("#library-save")
    expect(status(page)).to_have_value("Saved 'Lighthouse study' as version 2.")
    assert [r.current_version for r in storage.list_workflows() if r.name == "Lighthouse study"] == [2]

    # An opened workflow becomes this browser's draft: a reload shows it, not what the canvas held before.
    show_tab(page, "Canvas")
    page.click(".fc-cmd-new")
    pick(page, "Lighthouse study")
    page.click("#library-open")
    wait_for_canvas(page, storage.get_workflow_version(record.id).document)
    page.reload()
    page.wait_for_function("document.querySelector('.fc-root')?.flowcanvas !== undefined")
    wait_for_canvas(page, storage.get_workflow_version(record.id).document)


def test_restore_an_older_version(page, server) -> None:
    _, storage = server
    first = swatch("Swatch draft", color="#111111")
    put_on_canvas(page, first)
    show_tab(page, "Library")
    field(page, "library-save-as-name").fill("Restore me")
    page.click("#library-save-as")  # the canvas is still linked to the last test's workflow: Save would add to it
    expect(status(page)).to_have_value("Saved as a new workflow 'Restore me' (version 1).")
    page.evaluate(f"{EDITOR}.edit((g) => g.setParam('swatch', 'color', '#222222'))")
    show_tab(page, "Library")
    page.click("#library-save")
    expect(status(page)).to_have_value("Saved 'Restore me' as version 2.")
    expect(version_row(page, 2)).to_contain_text("params swatch.color")
    assert broken_header_words(page, "library-versions") == []
    expect(page.locator("#library-restore")).to_be_disabled()  # version 2 is the current one

    version_row(page, 1).get_by_role("gridcell").first.click()
    expect(field(page, "library-version")).to_have_value("1")
    expect(page.locator("#library-restore")).to_be_enabled()
    page.click("#library-restore")
    expect(status(page)).to_have_value("Restored version 1 of 'Restore me' as version 3; open it to edit.")
    [record] = [r for r in storage.list_workflows() if r.name == "Restore me"]
    assert record.current_version == 3
    assert storage.get_workflow_version(record.id, 3).document == canonical(first)
    expect(version_row(page, 3)).to_contain_text("restored from version 1")
    expect(version_row(page, 3)).to_contain_text("params swatch.color")
    expect(page.locator("#library-restore")).to_be_disabled()


def test_export_a_png_and_drop_it_back(page, server) -> None:
    _, storage = server
    record = storage.create_workflow("Round trip", canonical(swatch("Round trip", "#0ea5e9")), tags=["share"])
    pick(page, "Round trip")
    with page.expect_download() as download:
        page.click("#library-export-png")
    exported = Path(download.value.path()).read_bytes()
    with Image.open(io.BytesIO(exported)) as image:
        assert image.text[PNG_WORKFLOW_KEY] == storage.get_workflow_version(record.id).document
    with page.expect_download() as download:
        page.click("#library-export-json")
    assert Path(download.value.path()).read_text(encoding="utf-8") == storage.get_workflow_version(record.id).document

    show_tab(page, "Canvas")
    page.click(".fc-cmd-new")
    # Outside the canvas: a PNG dropped on the canvas itself asks there first (app/ui/editor/static/drops.mjs).
    drop_file_at(page, 5, 5, "round-trip-v1.png", "image/png", exported)  # the page, outside any component
    wait_for_canvas(page, storage.get_workflow_version(record.id).document)
    expect(status(page)).to_have_value(
        "Opened on the canvas: round-trip-v1.png: an image carrying the FlowCanvas "
        "workflow 'Round trip' with 2 nodes. Save keeps it in the library."
    )

    # Foreign and bad files are described, and the canvas stays as it is.
    shown = canvas_document(page)
    comfy = png_bytes({"prompt": json.dumps({"3": {"class_type": "KSampler", "inputs": {}}})})
    for name, data, mime, said in [
        (
            "ComfyUI_0001.png",
            comfy,
            "image/png",
            (
                "ComfyUI_0001.png: a ComfyUI image carrying a ComfyUI API prompt "
                "with 1 node (KSampler); FlowCanvas cannot run it. Nothing was imported."
            ),
        ),
        ("photo.png", png_bytes(), "image/png", "photo.png: a PNG with no workflow in it. Nothing was imported."),
        (
            "cut.json",
            b'{"format": ',
            "application/json",
            ("cut.json: not valid JSON (Expecting value at line 1, column 12). Nothing was imported."),
        ),
    ]:
        drop_file_at(page, 5, 5, name, mime, data)
        expect(status(page)).to_have_value(said)
        assert canvas_document(page) == shown
    expect(page.locator(".toast-body").last).to_contain_text("Nothing was imported")


def test_the_gallery_shows_the_latest_output_as_thumbnail(page, server) -> None:
    _, storage = server
    document = canonical(swatch("With output", "#a855f7"))
    record = storage.create_workflow("With output", document)
    # A canvas run names no library workflow: it counts because it ran this version's document unchanged.
    run = storage.create_run(workflow=document, overrides={}, device="cpu")
    stored = storage.artifacts.put_bytes(png_bytes(size=(40, 24)), "png")
    storage.mark_run_started(run.id, {})
    storage.finish_run(
        run.id,
        RunStatus.SUCCEEDED,
        node_timings={},
        artifacts=[NewArtifact(node_id="save", kind="image", path=stored.path, sha256=stored.sha256, size=stored.size)],
    )
    assert storage.latest_images([record.id])[record.id].path == stored.path
    pick(page, "With output")
    size = page.locator("#library-list .thumbnail-item img").first.evaluate(
        "(img) => [img.naturalWidth, img.naturalHeight]"
    )
    assert size == [40, 24]  # the run's image, not the 256×256 "no output yet" card


def test_open_a_share_link_and_copy_it_to_my_library(context, server) -> None:
    url, storage = server
    record = storage.create_workflow(HOSTILE, canonical(swatch(HOSTILE, "#f97316")), description="<b>shared</b>")
    storage.save_workflow_version(record.id, canonical(swatch(HOSTILE, "#000000")))
    shared = open_page(context, f"{url}?workflow={record.id}&version=1")
    # The Library tab renders its children ahead (render_children, for the importer), so Gradio may hold two copies.
    expect(shared.locator("#library-shared:visible").first).to_be_visible()
    expect(field(shared, "library-shared-title")).to_have_value(f"{HOSTILE} · version 1 of 2")
    # Drawn on a read-only canvas (not listed in a table beside raw JSON): version 1's nodes and values, no palette.
    shown = "document.querySelector('#shared-canvas .fc-root')?.flowcanvas"
    shared.wait_for_function(f"{shown}?.graph.nodeIds().length === 2")
    assert shared.evaluate(f"{shown}.graph.node('swatch').params.color") == "#f97316"
    expect(shared.locator("#shared-canvas .fc-root[data-readonly]")).to_be_visible()
    expect(shared.locator("#shared-canvas .fc-palette")).to_be_hidden()
    expect(shared.locator("#shared-canvas .fc-node")).to_have_count(2)
    main_canvas = canonical(shared.evaluate(f"{EDITOR}.graph.toWorkflow()"))
    assert main_canvas != storage.get_workflow_version(record.id, 1).document  # the shared one is not opened there
    shared.click("#library-copy-shared")
    expect(field(shared, "library-status")).to_have_value(
        f"Copied '{HOSTILE}' (version 1) to your library as '{HOSTILE} (copy)'."
    )
    [copy] = [r for r in storage.list_workflows() if r.name == f"{HOSTILE} (copy)"]
    assert storage.get_workflow_version(copy.id).document == storage.get_workflow_version(record.id, 1).document
    expect(shared.locator("#library-shared:visible")).to_have_count(0)
    # The names went everywhere as text: no element came of the markup, no script ran.
    assert shared.locator("img[src=x]").count() == 0
    assert shared.locator("#library-list b, #library-details b").count() == 0
    assert DIALOGS == []

    missing = open_page(context, f"{url}?workflow=000000000000")
    expect(field(missing, "library-shared-title")).to_have_value(re.compile("not in this library"))
    missing.close()
    shared.close()


def test_delete_asks_first_and_runs_keep_their_records(page, server) -> None:
    _, storage = server
    document = canonical(swatch("Delete me"))
    record = storage.create_workflow("Delete me", document)
    run = storage.create_run(workflow=document, overrides={}, device="cpu", workflow_id=record.id)
    storage.finish_run(run.id, RunStatus.CANCELLED, node_timings={})
    pick(page, "Delete me")
    page.click("#library-delete")
    expect(field(page, "library-confirm-delete")).to_have_value(
        "Delete 'Delete me' and its 1 version(s)? Its 1 run(s) keep their records and images."
    )
    assert storage.get_workflow(record.id).name == "Delete me"  # asked, not done
    page.click("#library-confirm")
    expect(status(page)).to_have_value("Deleted 'Delete me'; its runs keep their records.")
    with pytest.raises(NotFound):
        storage.get_workflow(record.id)
    assert storage.get_run(run.id).workflow_id is None


def test_add_a_starter_template_to_the_library(page, server) -> None:
    _, storage = server
    show_tab(page, "Library")
    page.click("#starter-add-swatch")
    expect(status(page)).to_have_value("Added the template 'Colour swatch' to the library.")
    expect(field(page, "library-name")).to_have_value("Colour swatch")
    added = [r for r in storage.list_workflows() if r.name == "Colour swatch"]
    assert len(added) == 1
    assert storage.get_workflow_version(added[0].id).document == canonical_json(load_workflow(SWATCH))
