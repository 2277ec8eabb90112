"""The canvas in a real browser: Playwright driving Debian's Chromium against the Gradio app.

One app and one browser page for the module. Each test starts from an empty canvas (the toolbar's New) and
builds what it needs by dragging from the palette. The graph is read back through the debug hook that
bridge.mjs documents: `document.querySelector('.fc-root').flowcanvas` is the Editor, its `graph.toWorkflow()`
the document that was committed to the gr.HTML value. Validation goes through Python, so it also checks
that the value Python holds is the edited one.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-test.txt")

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed (tests/run.sh installs it)", allow_module_level=True)

EDITOR = "document.querySelector('.fc-root').flowcanvas"
HOSTILE_TITLE = "<img src=x onerror=alert(1)>"
DIALOGS: list[str] = []  # alert/confirm/prompt messages the page opened


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def app_url():
    from app.ui.app import build_app

    demo = build_app()
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def page(app_url):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        page.on("dialog", lambda dialog: (DIALOGS.append(dialog.message), dialog.dismiss()))
        started = time.perf_counter()
        page.goto(app_url)
        page.wait_for_function("document.querySelector('.fc-root')?.flowcanvas?.graph.nodeIds().length > 0")
        print(f"\neditor first load: {time.perf_counter() - started:.3f} s (page request to the starter workflow on the canvas)")
        yield page
        browser.close()


# ---------------------------------------------------------------- helpers


def workflow(page) -> dict:
    return page.evaluate(f"{EDITOR}.graph.toWorkflow()")


def nodes(page) -> dict:
    return workflow(page)["nodes"]


def new_canvas(page) -> None:
    page.click(".fc-cmd-new")
    assert nodes(page) == {}
    page.wait_for_function(f"{EDITOR}.viewport.zoom === 1")  # the empty canvas's view: world (0, 0) at (40, 40)


def add_from_palette(page, node_type: str, x: float, y: float) -> None:
    """Drag a palette item to canvas point (x, y) (relative to the canvas's top-left)."""
    page.locator(f'.fc-palette .fc-item[data-type="{node_type}"]').drag_to(page.locator(".fc-canvas"), target_position={"x": x, "y": y})


def socket_dot(page, node: str, side: str, name: str):
    return page.locator(f'.fc-socket.fc-{side}[data-node="{node}"][data-name="{name}"]')


def centre(locator) -> tuple[float, float]:
    box = locator.bounding_box()
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def drag_wire(page, source, target, *, inspect=None) -> None:
    """Press on `source`, move onto `target`, call `inspect()` while hovering, release."""
    page.mouse.move(*centre(source))
    page.mouse.down()
    page.mouse.move(*centre(target), steps=6)
    if inspect is not None:
        inspect()
    page.mouse.up()


def click_background(page) -> None:
    """Give the canvas the keyboard focus (and clear the selection) with a click on empty space."""
    box = page.locator(".fc-canvas").bounding_box()
    page.mouse.click(box["x"] + box["width"] - 20, box["y"] + box["height"] - 20)


def build_pair(page) -> None:
    """LoadFlowModel → TextEncode, wired by dragging from the text_encoder output."""
    add_from_palette(page, "LoadFlowModel", 100, 60)
    add_from_palette(page, "TextEncode", 420, 60)
    drag_wire(page, socket_dot(page, "load_flow_model", "out", "text_encoder"), socket_dot(page, "text_encode", "in", "encoder"))


# ---------------------------------------------------------------- tests


def test_build_wire_edit_and_validate_from_an_empty_canvas(page):
    new_canvas(page)
    add_from_palette(page, "LoadFlowModel", 100, 60)
    add_from_palette(page, "TextEncode", 420, 60)
    add_from_palette(page, "EmptyLatent", 420, 300)
    graph = nodes(page)
    assert {nid: entry["type"] for nid, entry in graph.items()} == {
        "load_flow_model": "LoadFlowModel", "text_encode": "TextEncode", "empty_latent": "EmptyLatent"}
    assert graph["load_flow_model"]["position"] == [60, 20]  # dropped at canvas (100, 60), world origin at (40, 40)
    assert graph["text_encode"]["params"] == {"text": "", "negative_text": ""}

    drag_wire(page, socket_dot(page, "load_flow_model", "out", "text_encoder"), socket_dot(page, "text_encode", "in", "encoder"))
    assert nodes(page)["text_encode"]["inputs"] == {"encoder": {"node": "load_flow_model", "output": "text_encoder"}}
    assert page.locator(".fc-wires path.fc-wire[data-to='text_encode']").count() == 1

    # An incompatible wire (VAE into a TEXT_ENCODER input): marked while dragging, refused on drop.
    encoder = socket_dot(page, "text_encode", "in", "encoder")
    model_input = socket_dot(page, "empty_latent", "in", "model")

    def while_dragging():
        assert "fc-unfit" in encoder.get_attribute("class")
        assert "fc-fit" not in model_input.get_attribute("class")  # FLOW_MODEL: not for a VAE either

    drag_wire(page, socket_dot(page, "load_flow_model", "out", "vae"), encoder, inspect=while_dragging)
    assert nodes(page)["text_encode"]["inputs"] == {"encoder": {"node": "load_flow_model", "output": "text_encoder"}}
    assert "Refused" in page.locator(".fc-status").text_content()
    assert "expects TEXT_ENCODER" in page.locator(".fc-status").text_content()

    # A param changed in its widget; an out-of-bounds value is refused and the widget shows the old one.
    text = page.locator('.fc-node[data-node="text_encode"] .fc-param[data-name="text"] textarea')
    text.fill("a small green square")
    text.press("Tab")
    assert nodes(page)["text_encode"]["params"]["text"] == "a small green square"
    batch = page.locator('.fc-node[data-node="empty_latent"] .fc-param[data-name="batch_size"] input')
    batch.fill("999")
    batch.press("Tab")
    assert nodes(page)["empty_latent"]["params"]["batch_size"] == 1
    assert batch.input_value() == "1"
    assert "at most 64" in page.locator(".fc-status").text_content()

    # Validate (in Python, on the value the editor committed): EmptyLatent's unwired model is marked.
    page.click("#fc-validate button, button#fc-validate")
    latent = page.locator('.fc-node[data-node="empty_latent"]')
    page.wait_for_selector('.fc-node[data-node="empty_latent"].fc-has-error')
    assert "fc-field-error" in latent.locator('.fc-field[data-name="model"]').get_attribute("class")
    assert "not connected" in latent.locator(".fc-errors").text_content()
    assert page.locator(".fc-node.fc-has-error").count() == 1
    assert "no output node" in page.locator(".fc-status").text_content()


def test_undo_and_redo_restore_exact_graphs(page):
    new_canvas(page)
    states = [workflow(page)]
    add_from_palette(page, "LoadFlowModel", 100, 60)
    states.append(workflow(page))
    add_from_palette(page, "TextEncode", 420, 60)
    states.append(workflow(page))
    drag_wire(page, socket_dot(page, "load_flow_model", "out", "text_encoder"), socket_dot(page, "text_encode", "in", "encoder"))
    states.append(workflow(page))
    text = page.locator('.fc-node[data-node="text_encode"] .fc-param[data-name="text"] textarea')
    text.fill("a blue star")
    text.press("Tab")
    states.append(workflow(page))
    header = page.locator('.fc-node[data-node="text_encode"] .fc-header')
    x, y = centre(header)
    page.mouse.move(x, y)
    page.mouse.down()
    for step in range(1, 6):  # one drag of many moves is one step
        page.mouse.move(x + 20 * step, y + 10 * step)
    page.mouse.up()
    states.append(workflow(page))
    assert states[-1]["nodes"]["text_encode"]["position"] == [states[-2]["nodes"]["text_encode"]["position"][0] + 100,
                                                             states[-2]["nodes"]["text_encode"]["position"][1] + 50]
    assert len({repr(s) for s in states}) == len(states)

    click_background(page)
    for expected in reversed(states[:-1]):
        page.keyboard.press("Control+z")
        assert workflow(page) == expected
    for i, expected in enumerate(states[1:]):
        page.keyboard.press("Control+Shift+z" if i % 2 == 0 else "Control+y")  # both redo shortcuts
        assert workflow(page) == expected


def test_copy_and_paste_duplicate_nodes_through_the_clipboard(page):
    new_canvas(page)
    build_pair(page)
    click_background(page)
    page.keyboard.press("Control+a")
    page.keyboard.press("Control+c")
    box = page.locator(".fc-canvas").bounding_box()
    page.mouse.move(box["x"] + 140, box["y"] + 360)
    page.keyboard.press("Control+v")
    graph = nodes(page)
    assert sorted(graph) == ["load_flow_model", "load_flow_model_2", "text_encode", "text_encode_2"]
    assert graph["text_encode_2"]["inputs"] == {"encoder": {"node": "load_flow_model_2", "output": "text_encoder"}}
    assert graph["load_flow_model_2"]["position"] == [100, 320]  # the pasted block's top-left at the pointer
    assert page.evaluate(f"[...{EDITOR}.selection].sort()") == ["load_flow_model_2", "text_encode_2"]
    page.keyboard.press("Delete")
    assert sorted(nodes(page)) == ["load_flow_model", "text_encode"]


def test_a_title_with_markup_is_shown_as_text(page):
    new_canvas(page)
    add_from_palette(page, "TextEncode", 300, 100)
    page.locator('.fc-node[data-node="text_encode"] .fc-title').dblclick()
    rename = page.locator(".fc-node .fc-rename")
    rename.fill(HOSTILE_TITLE)
    rename.press("Enter")
    assert nodes(page)["text_encode"]["title"] == HOSTILE_TITLE
    assert page.locator('.fc-node[data-node="text_encode"] .fc-title').text_content() == HOSTILE_TITLE
    assert page.locator(".fc-root img").count() == 0
    page.wait_for_timeout(200)
    assert DIALOGS == []


def test_pan_zoom_marquee_and_quick_add(page):
    new_canvas(page)
    build_pair(page)
    canvas = page.locator(".fc-canvas").bounding_box()
    # Wheel zoom keeps the world point under the cursor in place.
    px, py = canvas["x"] + 700, canvas["y"] + 400  # empty canvas
    before = page.evaluate(f"{EDITOR}.viewport.toWorld({px}, {py})")
    page.mouse.move(px, py)
    page.mouse.wheel(0, -240)
    page.wait_for_function(f"{EDITOR}.viewport.zoom > 1")
    after = page.evaluate(f"{EDITOR}.viewport.toWorld({px}, {py})")
    assert after == pytest.approx(before, abs=0.5)
    # Background drag pans; it is not an edit.
    edits_before = workflow(page)
    x0 = page.evaluate(f"{EDITOR}.viewport.x")
    page.mouse.move(canvas["x"] + 600, canvas["y"] + 420)
    page.mouse.down()
    page.mouse.move(canvas["x"] + 650, canvas["y"] + 420, steps=4)
    page.mouse.up()
    assert page.evaluate(f"{EDITOR}.viewport.x") == pytest.approx(x0 + 50)
    assert workflow(page) == edits_before
    # Ctrl+drag draws a marquee that selects the nodes it touches.
    page.click(".fc-cmd-fit")
    page.keyboard.down("Control")
    page.mouse.move(canvas["x"] + 5, canvas["y"] + 5)
    page.mouse.down()
    page.mouse.move(canvas["x"] + canvas["width"] - 5, canvas["y"] + canvas["height"] - 5, steps=4)
    page.mouse.up()
    page.keyboard.up("Control")
    assert page.evaluate(f"[...{EDITOR}.selection].sort()") == ["load_flow_model", "text_encode"]
    # Double-click on empty canvas: search and add.
    page.mouse.dblclick(canvas["x"] + canvas["width"] - 60, canvas["y"] + canvas["height"] - 60)
    page.keyboard.type("savei")
    page.keyboard.press("Enter")
    assert nodes(page)["save_image"]["type"] == "SaveImage"
