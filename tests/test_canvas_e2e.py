"""The canvas in a real browser: Playwright driving Debian's Chromium against the Gradio app.

One app (on its own data folder and worker pool) and one browser page for the module; tests that close and
reopen pages use more pages of the same browser context (same localStorage, as one user's browser). Editing
tests start from an empty canvas (the toolbar's New) and build what they need by dragging from the palette;
running tests run on the committed embedded model. The graph is read back through the debug hook that
bridge.mjs documents: `document.querySelector('.fc-root').flowcanvas` is the Editor, its `graph.toWorkflow()`
the document it edits, `runView.state` the run state Python last sent.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from tests.conftest import running_app
from tests.studio_e2e import CHROMIUM, EDITOR, chromium
from tests.studio_e2e import open_page as open_editor_page

pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-test.txt")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed (tests/run.sh installs it)", allow_module_level=True)

HOSTILE_TITLE = "<img src=x onerror=alert(1)>"
DIALOGS: list[str] = []  # alert/confirm/prompt messages the page opened


STARTER = Path(__file__).resolve().parents[1] / "pipelines" / "templates" / "txt2img-embedded.json"
RUN_TIMEOUT_MS = 180_000  # the first run loads the embedded model


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """The app on its own data folder and worker pool: (url, storage)."""
    with running_app(tmp_path_factory.mktemp("canvas-data")) as running:
        yield running


@pytest.fixture(scope="module")
def app_url(server) -> str:
    return server[0]


@pytest.fixture(scope="module")
def context(app_url):
    with chromium() as browser:
        yield browser.new_context(viewport={"width": 1366, "height": 768})


def open_page(context, url: str):
    return open_editor_page(context, url, DIALOGS)


@pytest.fixture(scope="module")
def page(context, app_url):
    started = time.perf_counter()
    page = open_page(context, app_url)
    page.wait_for_function("document.querySelector('.fc-root')?.flowcanvas?.graph.nodeIds().length > 0")
    print(f"\neditor first load: {time.perf_counter() - started:.3f} s (page request to the starter workflow on the canvas)")
    yield page


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


def add_at_world(page, node_type: str, x: float, y: float) -> None:
    """Drag a palette item so that the node's top-left lands at world point (x, y), whatever the view."""
    view = page.evaluate(f"(({{x, y, zoom}}) => ({{x, y, zoom}}))({EDITOR}.viewport)")
    add_from_palette(page, node_type, view["x"] + x * view["zoom"], view["y"] + y * view["zoom"])


def open_starter(page, **params: dict[str, object]) -> None:
    """Open the embedded txt2img starter, with `node={param: value}` changes, as the document being edited."""
    document = json.loads(STARTER.read_text(encoding="utf-8"))
    for node, values in params.items():
        document["nodes"][node]["params"].update(values)
    page.evaluate(f"(w) => {{ {EDITOR}.load(w); {EDITOR}.commit(); }}", document)
    page.wait_for_function(f"{EDITOR}.graph.nodeIds().length === {len(document['nodes'])}")


def run_status(page) -> str | None:
    return page.evaluate(f"{EDITOR}.runView.state.status")


def wait_for_run(page, *statuses: str) -> dict:
    page.wait_for_function(f"{json.dumps(list(statuses))}.includes({EDITOR}.runView.state.status)", timeout=RUN_TIMEOUT_MS)
    return page.evaluate(f"{EDITOR}.runView.state")


def wait_until_stepping(page, node: str) -> None:
    """Until `node` runs and has reported a step (its progress bar is up); fails at once if the run ends first."""
    state = f"{EDITOR}.runView.state"
    page.wait_for_function(f"{state}.nodes?.[{json.dumps(node)}]?.step > 0 || ['invalid', 'failed', 'succeeded', 'cancelled'].includes({state}.status)",
                           timeout=RUN_TIMEOUT_MS)
    assert run_status(page) == "running", page.evaluate(f"JSON.stringify({state})")[:500]


def image_at(page, src: str):
    from PIL import Image

    response = page.request.get(src)
    assert response.status == 200
    return Image.open(io.BytesIO(response.body()))


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

    # Validate (in Python, on the workflow the editor sends): EmptyLatent's unwired model is marked.
    page.click(".fc-cmd-validate")
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
    assert page.locator('.fc-node[data-node="text_encode"] img').count() == 0
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


def test_help_overlay_lists_the_shortcuts(page):
    click_background(page)
    page.keyboard.press("?")
    help_box = page.locator(".fc-help")
    assert help_box.is_visible()
    assert "Ctrl+Enter" in help_box.text_content() and "Undo / redo" in help_box.text_content()
    page.keyboard.press("Escape")
    assert not help_box.is_visible()
    page.click(".fc-cmd-help")
    assert help_box.is_visible()
    page.click(".fc-help-close")
    assert not help_box.is_visible()


def test_an_invalid_workflow_is_marked_and_nothing_runs(page, server):
    _, storage = server
    runs_before = len(storage.list_runs())
    new_canvas(page)
    add_from_palette(page, "VAEDecode", 300, 100)
    add_from_palette(page, "SaveImage", 620, 100)
    drag_wire(page, socket_dot(page, "vae_decode", "out", "image"), socket_dot(page, "save_image", "in", "images"))
    page.click(".fc-cmd-run")
    page.wait_for_selector('.fc-node[data-node="vae_decode"].fc-has-error')
    assert "fc-field-error" in page.locator('.fc-node[data-node="vae_decode"] .fc-field[data-name="vae"]').get_attribute("class")
    assert run_status(page) == "invalid"
    assert page.locator(".fc-node.fc-state-running, .fc-node.fc-state-done").count() == 0
    assert len(storage.list_runs()) == runs_before, "an invalid workflow leaves no run row"


TXT2IMG_NODES = {  # type → world position: the embedded txt2img graph, laid out at zoom 0.5
    "LoadFlowModel": (0, 0), "TextEncode": (300, 0), "EmptyLatent": (300, 200), "ModelSchedule": (300, 360),
    "Noise": (300, 540), "EulerSolver": (300, 660), "Sampler": (600, 120), "VAEDecode": (900, 120),
    "SaveImage": (1160, 120),
}
TXT2IMG_WIRES = [
    ("load_flow_model", "text_encoder", "text_encode", "encoder"),
    ("load_flow_model", "model", "empty_latent", "model"),
    ("load_flow_model", "model", "model_schedule", "model"),
    ("load_flow_model", "model", "sampler", "model"),
    ("text_encode", "positive", "sampler", "positive"),
    ("text_encode", "negative", "sampler", "negative"),
    ("empty_latent", "latent", "sampler", "latent"),
    ("model_schedule", "sigmas", "sampler", "sigmas"),
    ("euler_solver", "solver", "sampler", "solver"),
    ("noise", "noise", "sampler", "noise"),
    ("sampler", "latent", "vae_decode", "latent"),
    ("load_flow_model", "vae", "vae_decode", "vae"),
    ("vae_decode", "image", "save_image", "images"),
]


def set_widget(page, node: str, param: str, value: str) -> None:
    widget = page.locator(f'.fc-node[data-node="{node}"] .fc-param[data-name="{param}"] .fc-widget')
    widget.fill(value)
    widget.press("Tab")


def test_build_txt2img_from_the_palette_and_run_it_on_the_embedded_model(page, server):
    from nodes.shapes.analyzer import analyze
    import numpy as np
    import torch

    _, storage = server
    new_canvas(page)
    canvas = page.locator(".fc-canvas").bounding_box()
    page.mouse.move(canvas["x"] + 1, canvas["y"] + 1)
    page.mouse.wheel(0, 462)  # zoom to about 0.5, so the whole graph fits
    page.wait_for_function(f"{EDITOR}.viewport.zoom < 0.6")
    for node_type, (x, y) in TXT2IMG_NODES.items():
        add_at_world(page, node_type, x, y)
    assert len(nodes(page)) == len(TXT2IMG_NODES)
    for source, output, target, name in TXT2IMG_WIRES:
        drag_wire(page, socket_dot(page, source, "out", output), socket_dot(page, target, "in", name))
    links = page.evaluate(f"{EDITOR}.graph.links().map((l) => [l.from, l.output, l.to, l.input])")
    assert sorted(map(tuple, links)) == sorted(TXT2IMG_WIRES)
    assert page.locator(".fc-wires path.fc-wire[data-to]").count() == len(TXT2IMG_WIRES)
    set_widget(page, "text_encode", "text", "a large yellow square on a purple background")
    set_widget(page, "empty_latent", "width", "64")
    set_widget(page, "empty_latent", "height", "64")
    graph = nodes(page)
    assert graph["empty_latent"]["params"]["width"] == 64 and graph["load_flow_model"]["params"]["source"] == "embedded:shapes"

    page.click(".fc-cmd-run")
    state = wait_for_run(page, "succeeded", "failed")
    assert state["status"] == "succeeded", state.get("error")
    assert {node: entry["state"] for node, entry in state["nodes"].items()} == {node: "done" for node in graph}
    # The image is on the output node and in the outputs panel, served from the run's stored artifact.
    on_node = page.locator('.fc-node[data-node="save_image"] img.fc-output-image')
    assert on_node.count() == 1
    assert page.locator(".fc-output-list img").count() == 1
    picture = image_at(page, on_node.get_attribute("src"))
    assert picture.size == (64, 64)
    pixels = torch.from_numpy(np.asarray(picture.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
    found = analyze(pixels)
    assert (found.background, found.colour) == ("purple", "yellow")
    [record] = storage.list_runs(limit=1)
    assert record.id == state["run_id"] and str(record.status) == "succeeded"
    assert "Done in" in page.locator(".fc-status").text_content()


def test_a_run_goes_on_after_the_page_is_closed_and_a_reopened_page_shows_it(context, app_url, server):
    _, storage = server
    first = open_page(context, app_url)
    open_starter(first, schedule={"steps": 600}, prompt={"text": "a small red ring on a green background"})
    first.click(".fc-cmd-run")
    wait_until_stepping(first, "sampler")
    first.wait_for_selector('.fc-node[data-node="sampler"] .fc-progress .fc-bar')
    run_id = first.evaluate(f"{EDITOR}.runView.state.run_id")
    first.close()  # the browser stops following; the worker does not stop running
    assert str(storage.get_run(run_id).status) in ("running", "queued")

    second = open_page(context, app_url)
    assert second.evaluate(f"{EDITOR}.graph.node('schedule').params.steps") == 600, "the draft is restored"
    state = wait_for_run(second, "succeeded", "failed")
    assert state["run_id"] == run_id and state["status"] == "succeeded", state.get("error")
    assert second.locator('.fc-node[data-node="save"] img.fc-output-image').count() == 1
    assert str(storage.get_run(run_id).status) == "succeeded"
    second.close()


def test_cancel_stops_a_running_run(page, server):
    _, storage = server
    open_starter(page, schedule={"steps": 1000}, noise={"seed": 11})
    page.click(".fc-cmd-run")
    wait_until_stepping(page, "sampler")
    assert page.locator(".fc-cmd-run").is_disabled()
    page.click(".fc-cmd-cancel")
    state = wait_for_run(page, "cancelled", "succeeded", "failed")
    assert state["status"] == "cancelled"
    assert "fc-state-stopped" in page.locator('.fc-node[data-node="sampler"]').get_attribute("class")
    assert str(storage.get_run(state["run_id"]).status) == "cancelled"
    assert not page.locator(".fc-cmd-run").is_disabled()


def test_run_up_to_a_node_from_its_menu(page):
    open_starter(page, noise={"seed": 5})
    page.locator('.fc-node[data-node="decode"] .fc-header').click(button="right")
    page.click('.fc-menu [data-action="run-to"]')
    state = wait_for_run(page, "succeeded", "failed")
    assert state["status"] == "succeeded", state.get("error")
    assert state["nodes"]["decode"]["state"] == "done"
    assert "save" not in state["nodes"], "the output node is past the target: not run"
    assert state["outputs"] == []


def test_an_uploaded_image_is_kept_in_the_data_folder_and_shown(page, server, tmp_path):
    from PIL import Image

    _, storage = server
    new_canvas(page)
    add_from_palette(page, "LoadImage", 200, 100)
    picture = tmp_path / "picture.png"
    Image.new("RGB", (16, 12), "orange").save(picture)
    page.locator('.fc-node[data-node="load_image"] input[type=file]').set_input_files(str(picture))
    page.wait_for_function(f"!!{EDITOR}.graph.node('load_image').params.path")
    kept = Path(nodes(page)["load_image"]["params"]["path"])
    assert kept.parent == storage.home / "uploads" and kept.read_bytes() == picture.read_bytes()
    page.wait_for_selector('.fc-node[data-node="load_image"] img.fc-thumb:not([hidden])')


def test_open_a_subgraph_edit_inside_and_come_back(page):
    open_starter(page, noise={"seed": 9}, schedule={"steps": 6})
    page.locator('.fc-node[data-node="schedule"] .fc-header').click()
    page.locator('.fc-node[data-node="solver"] .fc-header').click(modifiers=["Shift"])
    page.locator('.fc-node[data-node="schedule"] .fc-header').click(button="right")
    page.click('.fc-menu [data-action="group"]')
    page.wait_for_function(f"!{EDITOR}.graph.hasNode('schedule')")
    [outer] = [node for node, entry in nodes(page).items() if entry["type"] == "Subgraph"]
    definition = nodes(page)[outer]["subgraph"]

    page.locator(f'.fc-node[data-node="{outer}"] .fc-ports').dblclick()
    page.wait_for_selector(".fc-scope:not([hidden])")
    assert sorted(page.evaluate(f"{EDITOR}.graph.nodeIds()")) == ["schedule", "solver"]
    crumbs = page.locator(".fc-scope .fc-crumb").all_text_contents()
    assert crumbs[0] == "Workflow" and len(crumbs) == 2
    assert page.locator('.fc-node[data-node="schedule"] .fc-port-in').count() >= 1, "the ports show where values come in"
    assert page.locator('.fc-node[data-node="schedule"] .fc-port-out').count() == 1

    set_widget(page, "schedule", "steps", "4")
    page.wait_for_function(f"{EDITOR}.graph.node('schedule').params.steps === 4")
    document = workflow(page)
    assert document["subgraphs"][definition]["nodes"]["schedule"]["params"]["steps"] == 4, "the edit lands in the definition"
    assert {"label": "Steps", "node": f"{outer}/schedule", "param": "steps"} in document["exposed"]

    page.click('.fc-scope button[data-depth="0"]')
    page.wait_for_selector(".fc-scope", state="hidden")
    assert page.evaluate(f"{EDITOR}.graph.hasNode({json.dumps(outer)})")
    page.click(".fc-cmd-validate")
    page.wait_for_function(f"{EDITOR}.statusLine.textContent.startsWith('Valid')")

    page.click(".fc-cmd-run")
    state = wait_for_run(page, "succeeded", "failed")
    assert state["status"] == "succeeded", state.get("error")
    assert state["nodes"][f"{outer}/schedule"]["state"] == "done"
    page.locator(f'.fc-node[data-node="{outer}"] .fc-header').click()
    page.keyboard.press("Tab")
    page.wait_for_selector('.fc-node[data-node="schedule"].fc-state-done')
    page.keyboard.press("Shift+Tab")
    page.wait_for_selector(".fc-scope", state="hidden")
